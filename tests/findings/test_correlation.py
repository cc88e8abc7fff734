"""Target-behaviour findings: the own-category pattern of a planted ground-truth map against scipy's Spearman,
the verdict on the learned map from its interval, and data without signal against scipy's chi-squared."""

import numpy as np
import pytest
from scipy.stats import chi2, spearmanr

from lightning_recanalysis.findings import ReportThresholds, correlation_findings
from lightning_recanalysis.findings.correlation import data_signal, own_category_pattern
from lightning_recanalysis.records import BehaviorTargetRecord


def _target(gt, learned=None, agreement=None, category=3):
    return {"target_category": category, "name": f"cat{category}", "samples": 2000, "behavior_categories": [7, 3],
            "positions": [1, 2, 3, 4], "ground_truth_mi": gt, "learned": learned, "agreement": agreement}


def test_a_planted_decaying_own_row_is_the_top_row_and_decays():
    own = [0.40, 0.25, 0.30, 0.05]  # not monotone: Spearman with the position is -0.8, not -1
    pattern = own_category_pattern(_target([[0.1, 0.1, 0.1, 0.1], own]))
    assert pattern["own_category_is_top_row"] is True
    assert pattern["own_row_vs_position_spearman"] == pytest.approx(spearmanr(own, [1, 2, 3, 4])[0])
    assert pattern["own_row_normalized"] == pytest.approx(np.array(own) / 0.40)
    assert "learned_own_row_vs_position_spearman" not in pattern


def test_an_other_category_on_top_and_a_learned_row_that_grows():
    learned = [[1, 1, 1, 1], [1, 2, 3, 4]]
    pattern = own_category_pattern(_target([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1]], learned=learned))
    assert pattern["own_category_is_top_row"] is False
    assert pattern["learned_own_row_vs_position_spearman"] == pytest.approx(1.0)
    assert own_category_pattern(_target([[0.5, 0.5, 0.5, 0.5]], category=9)) is None  # not among the rows


def _verdict(gt, learned, agreement, samples=2000):
    target = {**_target(gt, learned, agreement), "samples": samples, "positions": list(range(1, len(gt[0]) + 1))}
    [finding] = correlation_findings([BehaviorTargetRecord.from_dict({"targets": [target]})], ReportThresholds())
    return finding


def test_the_verdict_follows_the_interval_of_the_agreement():
    gt = [[0.01] * 10, [0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01, 0.0]]
    learned = [[0] * 10, list(range(10, 0, -1))]
    n = 20  # cells
    for agreement, verdict in ((0.95, "fine"), (0.6, "inconclusive"), (0.05, "problem")):
        low, high = np.tanh(np.arctanh(agreement) + np.array([-1, 1]) * 1.959964 * np.sqrt(1.06 / (n - 3)))
        assert (high < 0.5) == (verdict == "problem") and (low >= 0.5) == (verdict == "fine")  # premise
        finding = _verdict(_rows(gt), _rows(learned), agreement)
        assert finding.verdict == verdict, (agreement, finding.text)
        assert f"95% interval {low:+.2f} to {high:+.2f} over {n} cells" in finding.text
    assert _verdict(_rows(gt), _rows(learned), 0.05).kind == "missed_correlation"
    assert "TIN" in _verdict(_rows(gt), _rows(learned), 0.05).advice


def _rows(rows):
    return [list(r) for r in rows]


def test_data_without_signal_is_said_so_and_the_model_is_not_judged():
    # MI that shuffled labels give at 2,000 samples: G = 2 N ln2 MI well inside chi^2(1) for every cell.
    gt = [[1e-5] * 4, [2e-5, 1e-5, 0.0, 1e-5]]
    smallest = min(chi2.sf(2 * 2000 * np.log(2) * v, 1) for row in gt for v in row)
    assert smallest > 0.05 / 8  # premise: no cell significant after Bonferroni
    finding = _verdict(gt, [[0, 0, 0, 0], [4, 3, 2, 1]], 0.0)
    assert (finding.verdict, finding.kind) == ("fine", "no_signal")
    assert f"smallest p = {smallest:.2g} over 8 cells" in finding.text
    assert data_signal({"samples": 2000, "ground_truth_mi": gt}, 0.05) == (False, pytest.approx(smallest), 8)


def test_only_the_last_epoch_speaks_and_the_baseline_says_nothing():
    gt = [[0.1, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]]
    first = BehaviorTargetRecord.from_dict({"stage": "epoch", "epoch": 0, "targets": [_target(gt, category=3)]})
    second = BehaviorTargetRecord(stage="epoch", epoch=1, targets=[])
    assert correlation_findings([first, second], ReportThresholds()) == []
    init = BehaviorTargetRecord.from_dict({"stage": "init", "targets": [_target(gt)]})
    assert correlation_findings([init], ReportThresholds()) == []
