"""Collapse findings: a field is collapsed when it wastes dimensions its shape allows, measured on spectra computed
by numpy from planted tables (rank, cardinality), not when a learned spectrum merely concentrates; interaction
collapse only beyond what the layer showed at initialisation. The interaction correlations against scipy."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from helpers import numpy_information_abundance, numpy_row_normalized_singular_values
from lightning_recanalysis.findings import ReportThresholds, collapse_findings, field_collapse, interaction_correlations
from lightning_recanalysis.records import SpectrumRecord

RNG = np.random.default_rng(0)
K = 16


def _field(table: np.ndarray) -> dict:
    """A field's published numbers from a numpy table: the oracle the monitor's float64 spectrum matches."""
    sv = numpy_row_normalized_singular_values(table)
    spectrum = np.zeros(table.shape[1])
    spectrum[: len(sv)] = sv / sv[0]
    return {"cardinality": table.shape[0], "information_abundance": numpy_information_abundance(sv),
            "normalized_spectrum": spectrum.tolist()}


def _record(stage: str, tables: dict[str, np.ndarray], interaction=None) -> SpectrumRecord:
    view = {"width": K, "table": "emb", "group": "all", "fields": {n: _field(t) for n, t in tables.items()}}
    return SpectrumRecord.from_dict({"stage": stage, "views": {"emb": view},
                                     **({"interaction": interaction} if interaction else {})})


def _low_rank(rows: int, rank: int) -> np.ndarray:
    return RNG.normal(size=(rows, rank)) @ RNG.normal(size=(rank, K))


def test_a_table_of_rank_two_among_random_ones_is_the_one_collapsed():
    random = {f"f{i}": RNG.normal(size=(200, K)) for i in range(3)}
    frozen = _low_rank(200, 2)
    tables = {**random, "frozen": frozen}
    findings = collapse_findings([_record("init", tables), _record("epoch", tables)], ReportThresholds())
    problems = [f for f in findings if f.is_problem]
    assert [(f.kind, f.subject) for f in problems] == [("collapse", "emb/frozen")]
    assert "uses 2 of the 16 dimensions" in problems[0].text
    assert problems[0].severity == pytest.approx(14 / 16)
    assert "initialisation" in problems[0].advice  # low-rank from the start: frozen, tied or initialised so


def test_a_field_that_lost_dimensions_while_training_gets_the_multi_embedding_advice():
    before, after = {"user": RNG.normal(size=(300, K))}, {"user": _low_rank(300, 3)}
    [finding] = [f for f in collapse_findings([_record("init", before), _record("epoch", after)], ReportThresholds())
                 if f.is_problem]
    assert "multi-embedding" in finding.advice and "3 of the 16" in finding.text


def test_a_spectrum_that_concentrated_but_kept_its_dimensions_is_fine_not_collapse():
    # Two strong directions on top of a full-rank tail: IA falls far below init, every dimension stays in use.
    init = {"item": RNG.normal(size=(500, K))}
    spiky = RNG.normal(size=(500, K)) * 0.4 + _low_rank(500, 2) * 2
    sv = numpy_row_normalized_singular_values(spiky)
    assert (sv / sv[0]).min() > 0.05  # premise: no direction unused
    assert numpy_information_abundance(sv) < 0.7 * numpy_information_abundance(
        numpy_row_normalized_singular_values(init["item"]))  # premise: IA below 70% of init
    findings = collapse_findings([_record("init", init), _record("epoch", {"item": spiky})], ReportThresholds())
    assert [(f.verdict, f.kind) for f in findings] == [("fine", "concentrated")]


def test_a_barely_trained_model_gets_no_finding():
    tables = {f"f{i}": RNG.normal(size=(100, K)) for i in range(4)}
    nudged = {n: t + 0.01 * RNG.normal(size=t.shape) for n, t in tables.items()}
    assert collapse_findings([_record("init", tables), _record("epoch", nudged)], ReportThresholds()) == []


def test_a_field_bounded_by_its_cardinality_is_fine_and_can_still_collapse_within_it():
    small = RNG.normal(size=(4, K))  # 4 categories: IA <= 4 whatever K
    findings = collapse_findings([_record("epoch", {"small": small})], ReportThresholds())
    assert [(f.verdict, f.kind) for f in findings] == [("fine", "bounded")]
    assert field_collapse("emb", "small", [_record("epoch", {"small": small})], ReportThresholds()).ceiling == 4
    one = np.outer(np.ones(12), RNG.normal(size=K)) + 0 * RNG.normal(size=(12, K))  # 12 identical rows: rank 1
    problems = [f for f in collapse_findings([_record("epoch", {"tied": one})], ReportThresholds()) if f.is_problem]
    assert [f.subject for f in problems] == ["emb/tied"]  # 11 of its 12 dimensions unused


def test_interaction_collapse_needs_a_collapsed_field_and_a_rise_over_initialisation():
    tables = {"a": RNG.normal(size=(100, K)), "b": RNG.normal(size=(100, K)), "c": _low_rank(100, 2)}
    ia = {n: _field(t)["information_abundance"] for n, t in tables.items()}
    names = list(tables)
    tracking = [[min(ia[i], ia[j]) for j in names] for i in names]  # columns follow the partner's own IA
    flat = [[5.0, 6.0, 5.5], [6.0, 5.0, 5.5], [5.5, 5.0, 6.0]]  # r with own IA near 0 at init
    at_init = {"view": "emb", "layer": "cross", "fields": names, "matrix": flat}
    trained = {"view": "emb", "layer": "cross", "fields": names, "matrix": tracking}
    cols_r = interaction_correlations(trained, {n: {"information_abundance": v} for n, v in ia.items()})[1]
    assert cols_r > 0.9  # premise
    found = collapse_findings([_record("init", tables, at_init), _record("epoch", tables, trained)], ReportThresholds())
    assert ("interaction_collapse", "emb") in [(f.kind, f.subject) for f in found if f.is_problem]
    # The same matrix already at initialisation: no rise, no interaction finding (the collapse finding stays).
    same = collapse_findings([_record("init", tables, trained), _record("epoch", tables, trained)], ReportThresholds())
    assert [f.kind for f in same if f.is_problem] == ["collapse"]
    # No collapsed field: an untrained layer whose matrix tracks IA is no finding.
    healthy = {n: RNG.normal(size=(100, K)) for n in names}
    assert not [f for f in collapse_findings([_record("epoch", healthy, trained)], ReportThresholds()) if f.is_problem]


def test_no_records_no_findings():
    assert collapse_findings([], ReportThresholds()) == []


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
