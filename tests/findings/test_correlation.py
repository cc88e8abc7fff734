"""Target-behaviour findings: the own-category pattern of a planted ground-truth map against scipy's Spearman,
and the verdict on the learned map at the threshold."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from lightning_recanalysis.findings import ReportThresholds, correlation_findings
from lightning_recanalysis.findings.correlation import own_category_pattern
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


def test_the_verdict_turns_at_min_agreement():
    gt = [[0.1, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]]
    learned = [[0, 0, 0, 0], [4, 3, 2, 1]]
    at = correlation_findings([BehaviorTargetRecord(targets=[_target(gt, learned, agreement=0.5)])], ReportThresholds())
    below = correlation_findings([BehaviorTargetRecord(targets=[_target(gt, learned, agreement=0.49)])],
                                 ReportThresholds())
    assert "learned map agrees with it (rank correlation 0.50)" in at[0]
    assert "**disagrees** with it (rank correlation 0.49)" in below[0]
    assert "decays with position (Spearman vs position -1.00)" in at[0]


def test_only_the_last_epoch_speaks_and_the_baseline_says_nothing():
    gt = [[0.1, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]]
    first = BehaviorTargetRecord(stage="epoch", epoch=0, targets=[_target(gt, category=3)])
    second = BehaviorTargetRecord(stage="epoch", epoch=1, targets=[])
    assert correlation_findings([first, second], ReportThresholds()) == []
    assert correlation_findings([BehaviorTargetRecord(stage="init", targets=[_target(gt)])], ReportThresholds()) == []
