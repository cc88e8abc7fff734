"""Collapse findings: which fields cross the thresholds (hand-derived IA ratios), in what order, and the
interaction-collapse correlations against scipy's Pearson r."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from helpers import numpy_information_abundance, numpy_row_normalized_singular_values
from lightning_recanalysis.findings import ReportThresholds, collapse_findings, interaction_correlations
from lightning_recanalysis.findings.collapse import collapsed_fields
from lightning_recanalysis.records import SpectrumRecord


def _view(width, fields):
    """``fields``: name -> (cardinality, IA)."""
    return {"width": width, "fields": {n: {"cardinality": c, "information_abundance": ia} for n, (c, ia) in fields.items()}}


def test_collapsed_fields_by_ceiling_and_by_drop_most_collapsed_first():
    now = _view(8, {"low": (100, 1.0), "steady": (100, 7.0), "dropped": (100, 5.0), "single": (1, 1.0), "small": (3, 2.0)})
    init = _view(8, {"low": (100, 1.2), "steady": (100, 7.5), "dropped": (100, 8.0), "single": (1, 1.0), "small": (3, 3.0)})
    found = collapsed_fields(now, init, ReportThresholds())
    # low: 1/8 = 0.125 of its ceiling; dropped: 5/8 of its IA at init = 0.625 < 0.7; small: 2/3 = 0.667 < 0.7 of
    # init; steady: 7/7.5 = 0.93 and 7/8 of its ceiling: fine; single: a ceiling of 1 cannot collapse.
    assert [round(s, 4) for s, _ in found] == [0.125, 0.625, 0.6667]
    assert [text.split("**")[1] for _, text in found] == ["low", "dropped", "small"]
    assert found[1][1] == "**dropped** (5.00 of 8, 62% of its 8.00 at init)"


def test_a_field_exactly_at_the_threshold_is_not_collapsed():
    view = _view(8, {"edge": (100, 2.0)})  # 2 / 8 = 0.25, the default threshold itself
    assert collapsed_fields(view, None, ReportThresholds()) == []
    assert len(collapsed_fields(view, None, ReportThresholds(collapsed_fraction=0.2501))) == 1


def test_a_planted_rank_one_table_is_found_collapsed():
    rng = np.random.default_rng(0)
    rank_one = np.outer(rng.normal(size=40), rng.normal(size=8))
    full = rng.normal(size=(40, 8))
    ia = {name: numpy_information_abundance(numpy_row_normalized_singular_values(t))
          for name, t in (("rank_one", rank_one), ("full", full))}
    assert ia["rank_one"] == pytest.approx(1.0, abs=1e-6)
    record = SpectrumRecord(stage="epoch", views={"t": _view(8, {n: (40, v) for n, v in ia.items()})})
    findings = collapse_findings([record], ReportThresholds())
    assert len(findings) == 1 and findings[0].startswith("1 of 2 fields of `t` are collapsed")
    assert "**rank_one** (1.00 of 8)" in findings[0] and "full" not in findings[0]


def test_findings_are_ranked_by_severity_and_cut_at_the_maximum():
    mild = _view(10, {"a": (100, 2.0)})                      # 0.2 of its ceiling
    severe = _view(10, {f"f{i}": (100, 1.0) for i in range(4)})  # 0.1 each
    interaction = {"view": "mild", "layer": "cross", "fields": ["a"], "matrix": [[1.0]]}
    record = SpectrumRecord(stage="epoch", views={"mild": mild, "severe": severe}, interaction=interaction)
    findings = collapse_findings([record], ReportThresholds(max_findings_per_section=2))
    # severe (0.1) first, then mild (0.2); the interaction finding (ranked 0.5) is cut by the maximum of 2.
    assert [f.split("`")[1] for f in findings] == ["severe", "mild"]
    shorter = collapse_findings([record], ReportThresholds(max_findings_per_section=3))
    assert shorter[2].startswith("Interaction collapse in `mild`")
    assert "**f0** (1.00 of 10), **f1** (1.00 of 10), **f2** (1.00 of 10) and 1 more." in \
        collapse_findings([record], ReportThresholds(max_findings_per_section=3))[0]


def test_no_records_no_findings_and_the_baseline_alone_is_described():
    assert collapse_findings([], ReportThresholds()) == []
    init = SpectrumRecord(stage="init", views={"t": _view(8, {"a": (100, 1.0)})})
    assert collapse_findings([init], ReportThresholds())[0].startswith("1 of 1 fields of `t`")


def test_interaction_correlations_match_scipy_and_read_the_source_fields():
    rng = np.random.default_rng(1)
    matrix = rng.uniform(1, 4, size=(3, 3))
    own = {"a": 1.0, "b": 2.5, "c": 2.0, "d": 3.0}
    fields = {n: {"information_abundance": v} for n, v in own.items()}
    # Rows are the source fields b, c, d (their IA is what both means are compared with), columns the partners.
    interaction = {"fields": ["a", "b", "c"], "source_fields": ["b", "c", "d"], "matrix": matrix.tolist()}
    rows_r, cols_r = interaction_correlations(interaction, fields)
    assert rows_r == pytest.approx(pearsonr(matrix.mean(axis=1), [2.5, 2.0, 3.0])[0])
    assert cols_r == pytest.approx(pearsonr(matrix.mean(axis=0), [2.5, 2.0, 3.0])[0])
    without = interaction_correlations({"fields": ["a", "b", "c"], "matrix": matrix.tolist()}, fields)
    assert without[0] == pytest.approx(pearsonr(matrix.mean(axis=1), [1.0, 2.5, 2.0])[0])
    assert np.isnan(interaction_correlations({"fields": ["a"], "matrix": [[2.0]]}, fields)[0])  # one field: no r
