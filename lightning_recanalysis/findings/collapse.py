"""Findings of ``collapse/``: which fields collapsed, and whether interaction collapse shows (Guo et al., ICML 2024).

A field of a width-K table is *collapsed* when its information abundance IA = sum(s) / s_1 is below
``collapsed_fraction`` of the most it could reach, min(cardinality, K), or fell below ``collapsed_vs_init`` of its
IA at initialisation. Interaction collapse: the mean IA of a field's sub-embeddings through the cross layer (a row
of the interaction matrix) tracks the field's own IA; the Pearson r over rows and over columns says how closely.

Read by :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` (its live ``collapse/findings`` Text tab) and by
the report's collapse section, so both say the same sentences.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..records import SpectrumRecord
from .thresholds import ReportThresholds

__all__ = ["baseline_and_last", "collapse_findings", "collapsed_fields", "information_abundance_ceiling",
           "interaction_correlations"]


def baseline_and_last(records: Sequence[SpectrumRecord]) -> tuple[SpectrumRecord | None, SpectrumRecord | None]:
    """The fit-start baseline (stage ``"init"``) and the record the findings describe: the last epoch's, or the
    baseline when no epoch was analysed yet.

    Example:
        >>> from lightning_recanalysis.records import SpectrumRecord
        >>> init, last = baseline_and_last([SpectrumRecord(stage="init"), SpectrumRecord(stage="epoch", epoch=3)])
        >>> init.stage, last.epoch
        ('init', 3)
    """
    initial = next((r for r in records if r.stage == "init"), None)
    epochs = [r for r in records if r.stage == "epoch"]
    return initial, (epochs[-1] if epochs else initial)


def information_abundance_ceiling(cardinality: int, width: int) -> int:
    """The most IA a field can reach: its table has min(cardinality, width) singular values.

    Example:
        >>> information_abundance_ceiling(cardinality=3, width=16), information_abundance_ceiling(1000, 16)
        (3, 16)
    """
    return min(cardinality, width)


def collapsed_fields(view: Mapping[str, Any], init_view: Mapping[str, Any] | None,
                     thresholds: ReportThresholds) -> list[tuple[float, str]]:
    """The collapsed fields of one view as (severity, sentence part), most collapsed first; severity is the
    smaller of IA / ceiling and IA / IA at init (a field with a ceiling of 1 cannot collapse).

    Example:
        >>> view = {"width": 8, "fields": {"user": {"cardinality": 100, "information_abundance": 1.5},
        ...                                "item": {"cardinality": 100, "information_abundance": 6.0}}}
        >>> collapsed_fields(view, None, ReportThresholds())
        [(0.1875, '**user** (1.50 of 8)')]
    """
    width = view["width"]
    found = []
    for name, fld in view["fields"].items():
        ceiling = information_abundance_ceiling(fld["cardinality"], width)
        ia = fld["information_abundance"]
        ia0 = init_view["fields"][name]["information_abundance"] if init_view and name in init_view["fields"] else None
        fraction = ia / ceiling if ceiling else 1.0
        drop = ia / ia0 if ia0 else 1.0
        if ceiling > 1 and (fraction < thresholds.collapsed_fraction or drop < thresholds.collapsed_vs_init):
            since = f", {drop:.0%} of its {ia0:.2f} at init" if ia0 else ""
            found.append((min(fraction, drop), f"**{name}** ({ia:.2f} of {ceiling}{since})"))
    found.sort()
    return found


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _source_information_abundance(interaction: Mapping[str, Any], view_fields: Mapping[str, Any]) -> np.ndarray:
    sources = interaction.get("source_fields", interaction["fields"])
    return np.array([view_fields[n]["information_abundance"] for n in sources])


def interaction_correlations(interaction: Mapping[str, Any], view_fields: Mapping[str, Any]) -> tuple[float, float]:
    """Pearson r between the interaction matrix's row means and the source fields' own IA, and between its
    column means and the same IA (NaN where a side is constant or has fewer than two fields).

    Example:
        >>> interaction = {"fields": ["a", "b", "c"], "matrix": [[1, 1, 1], [2, 2, 2], [3, 3, 4]]}
        >>> fields = {"a": {"information_abundance": 1.0}, "b": {"information_abundance": 2.0},
        ...           "c": {"information_abundance": 3.0}}
        >>> [round(r, 3) for r in interaction_correlations(interaction, fields)]
        [0.997, 0.866]
    """
    matrix = np.asarray(interaction["matrix"], dtype=float)
    own = _source_information_abundance(interaction, view_fields)
    return _pearson(matrix.mean(axis=1), own), _pearson(matrix.mean(axis=0), own)


def _view_finding(view_name: str, view: Mapping[str, Any], init_view: Mapping[str, Any] | None,
                  thresholds: ReportThresholds) -> tuple[float, str] | None:
    collapsed = collapsed_fields(view, init_view, thresholds)
    if not collapsed:
        return None
    shown = [text for _, text in collapsed[: thresholds.max_findings_per_section]]
    more = f" and {len(collapsed) - len(shown)} more" if len(collapsed) > len(shown) else ""
    return (collapsed[0][0], f"{len(collapsed)} of {len(view['fields'])} fields of `{view_name}` are "
            f"collapsed (IA below {thresholds.collapsed_fraction:.0%} of min(cardinality, K) or below "
            f"{thresholds.collapsed_vs_init:.0%} of its value at initialisation), most collapsed first: "
            + ", ".join(shown) + more + ".")


def _interaction_finding(interaction: Mapping[str, Any], view_fields: Mapping[str, Any]) -> str:
    rows_r, cols_r = interaction_correlations(interaction, view_fields)
    own = _source_information_abundance(interaction, view_fields)
    low = [interaction["fields"][i] for i in np.argsort(own)[:2]]
    kernel = f" (kernel: {interaction['kernel']})" if interaction.get("kernel") else ""
    return (f"Interaction collapse in `{interaction['view']}`: the IA of a field's sub-embeddings "
            f"tracks the source field's own IA (Pearson r = {rows_r:.2f} over rows) and the partner's "
            f"(r = {cols_r:.2f} over columns); the lowest-IA fields are {', '.join(low)}{kernel}.")


def collapse_findings(records: Sequence[SpectrumRecord], thresholds: ReportThresholds) -> list[str]:
    """The sentences of the collapse analysis, most severe first, at most ``max_findings_per_section``: one per
    view with collapsed fields (ranked by its most collapsed field) and, with a cross layer, one on interaction
    collapse (ranked as a field at half its ceiling).

    Example:
        >>> from lightning_recanalysis.records import SpectrumRecord
        >>> def record(stage, ia):
        ...     fields = {"user": {"cardinality": 50, "information_abundance": ia}}
        ...     return SpectrumRecord(stage=stage, views={"emb": {"width": 8, "fields": fields}})
        >>> collapse_findings([record("init", 6.0), record("epoch", 3.0)], ReportThresholds())
        ['1 of 1 fields of `emb` are collapsed (IA below 25% of min(cardinality, K) or below 70% of its value at
        initialisation), most collapsed first: **user** (3.00 of 8, 50% of its 6.00 at init).']
    """
    initial, last = baseline_and_last(records)
    if last is None:
        return []
    findings: list[tuple[float, str]] = []
    for view_name, view in last.views.items():
        init_view = initial.views.get(view_name) if initial else None
        if (finding := _view_finding(view_name, view, init_view, thresholds)) is not None:
            findings.append(finding)
    if last.interaction is not None:
        findings.append((0.5, _interaction_finding(last.interaction, last.views[last.interaction["view"]]["fields"])))
    findings.sort(key=lambda f: f[0])
    return [text for _, text in findings[: thresholds.max_findings_per_section]]
