"""Conflict findings: a conflict is claimed only where the probes support it (scipy's t interval and binomial
test as oracles), noise and few probes are inconclusive, agreeing tasks are said nothing of; and the intervals and
tests of ``findings.uncertainty`` against scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from lightning_recanalysis.findings import ReportThresholds, conflict_findings
from lightning_recanalysis.findings.uncertainty import (g_test_p, mean_interval, normal_quantile, sign_test,
                                                          spearman_interval, t_quantile)
from lightning_recanalysis.records import ConflictRecord, ConflictView, PairStatistics


def _epoch(cosines, epoch=0, field="user"):
    c = np.asarray(cosines, dtype=float)
    stats_ = PairStatistics(cosine_mean=float(c.mean()), negative_fraction=float((c < 0).mean()), probes=len(c),
                            cosine_std=float(c.std(ddof=1)) if len(c) > 1 else None)
    view = ConflictView(fields={field: {("click", "buy"): stats_}, "other": {}})
    return ConflictRecord(stage="train", epoch=epoch, tasks=["click", "buy"], measured_steps=len(c), views={"emb": view})


def test_a_consistent_negative_cosine_over_enough_probes_is_a_conflict():
    rng = np.random.default_rng(0)
    cosines = -0.4 + 0.1 * rng.normal(size=16)
    [finding] = conflict_findings([_epoch(cosines)], ReportThresholds())
    assert (finding.verdict, finding.kind, finding.subject) == ("problem", "conflict", "emb/user/click_vs_buy")
    low, high = stats.t.interval(0.95, 15, loc=cosines.mean(), scale=stats.sem(cosines))
    assert f"95% interval {low:+.2f} to {high:+.2f}, 16 probes" in finding.text
    assert "STEM" in finding.advice


def test_four_probes_are_inconclusive_and_say_what_gives_more():
    [finding] = conflict_findings([_epoch([-0.3, -0.2, 0.1, -0.5])], ReportThresholds())
    assert finding.verdict == "inconclusive" and "only 4 probes" in finding.text
    assert "every_n_steps" in finding.advice


def test_noise_around_zero_is_inconclusive_and_agreement_says_nothing():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.3, size=40)
    noise -= noise.mean() + 0.02  # mean -0.02: well inside its interval
    [finding] = conflict_findings([_epoch(noise)], ReportThresholds())
    assert finding.verdict == "inconclusive" and "noise" in finding.text
    assert conflict_findings([_epoch(0.5 + 0.1 * rng.normal(size=20))], ReportThresholds()) == []


def test_probes_pool_over_the_window_of_epochs():
    cosines = [-0.4, -0.35, -0.5, -0.45]
    epochs = [_epoch(cosines, epoch=e) for e in range(4)]
    [finding] = conflict_findings(epochs, ReportThresholds())
    assert finding.verdict == "problem" and "16 probes over the last 4 epochs" in finding.text
    [alone] = conflict_findings(epochs, ReportThresholds(conflict_window=1))
    assert alone.verdict == "inconclusive"


def test_the_tests_match_scipy():
    assert sign_test(7, 8) == pytest.approx(stats.binom.sf(6, 8, 0.5))
    assert sign_test(12, 20) == pytest.approx(stats.binom.sf(11, 20, 0.5))
    for df in (1, 2, 3, 5, 12, 60):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-4)
    for p in (1e-6, 0.01, 0.3, 0.8, 0.999):
        assert normal_quantile(p) == pytest.approx(stats.norm.ppf(p), abs=1e-8)
    values = np.array([0.2, -0.1, 0.4, 0.05, -0.3])
    mean, low, high = mean_interval(5, values.sum(), (values ** 2).sum())
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values)))
    assert g_test_p(0.003, 2000) == pytest.approx(stats.chi2.sf(2 * 2000 * math.log(2) * 0.003, 1))
    low, high = spearman_interval(0.4, 30)
    z = stats.norm.ppf(0.975) * math.sqrt(1.06 / 27)
    assert (low, high) == pytest.approx((math.tanh(math.atanh(0.4) - z), math.tanh(math.atanh(0.4) + z)))
