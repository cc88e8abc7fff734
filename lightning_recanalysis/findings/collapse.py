"""Findings of ``collapse/``: which fields waste their dimensions, and whether collapse spreads through the cross
layer (Guo et al., ICML 2024).

**Yardstick.** A field of cardinality D in a width-K table has at most r = min(D, K) singular values; a random
table of that shape uses all of them (its smallest normalised singular values are a sizeable fraction of the
largest). A direction is *unused* when its singular value is below ``unused_dimension`` (5%) of the largest: it
carries under 0.25% of the top direction's variance. The paper's point is not that a learned table's IA is below
a random one's (every field that learns something concentrates its spectrum); it is that the lost dimensions are
wasted: enlarging K barely raises IA. So:

- **problem** (``collapse``): at least ``collapsed_fraction`` of the r dimensions the shape allows are unused, and
  at least two. Ranked by the unused share. The spectrum is computed from every row, so the count is exact.
- **fine** (``concentrated``): IA fell below ``collapsed_vs_init`` of its value at initialisation while (nearly)
  every dimension stayed in use: the field learned a few dominant directions, which is learning, not collapse.
- **fine** (``bounded``): a field with fewer categories than K: its IA cannot exceed D, whatever K.
- **problem** (``interaction_collapse``): a view with a collapsed field whose interaction matrix shows the
  mechanism beyond what the same layer showed at fit start: the matrix's column means (a partner's effect on the
  sub-embeddings E_i W_ij^T) track the partners' own IA with Pearson r >= ``interaction_min_r``, at least
  ``interaction_min_rise`` above the same r at initialisation.

Read by :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` (its live ``collapse/findings`` Text tab) and by
the report's collapse section, so both say the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..records import SpectrumRecord
from .finding import Finding
from .thresholds import ReportThresholds

__all__ = ["FieldCollapse", "baseline_and_last", "collapse_findings", "field_collapse",
           "information_abundance_ceiling", "interaction_correlations"]

COLLAPSE_ADVICE = ("These dimensions are wasted: a larger K will not raise IA. Try multi-embedding (several smaller "
                   "tables per field, each with its own interaction; Guo et al., ICML 2024).")
FROZEN_ADVICE = ("The rows were already this low-rank at initialisation: check whether the table is frozen, tied or "
                 "initialised low-rank before trying multi-embedding.")
INTERACTION_ADVICE = ("Collapsed fields drag down the fields they interact with: fix the collapsed fields first "
                      "(multi-embedding), then check this view again.")


def baseline_and_last(records: Sequence[SpectrumRecord]) -> tuple[SpectrumRecord | None, SpectrumRecord | None]:
    """The fit-start baseline (stage ``"init"``) and the record the findings describe: the last epoch's, or the
    baseline when no epoch was analysed yet.

    Example:
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


@dataclass
class FieldCollapse:
    """One field measured against its yardstick (see the module's docstring)."""

    view: str
    field: str
    ceiling: int
    used: int
    information_abundance: float
    initial: float | None = None
    used_initially: int | None = None
    history: list[float] = field(default_factory=list)

    @property
    def unused(self) -> int:
        return self.ceiling - self.used


def _used(spectrum: Sequence[float], ceiling: int, level: float) -> int:
    return int(sum(1 for s in list(spectrum)[:ceiling] if s >= level))


def field_collapse(view_name: str, field_name: str, records: Sequence[SpectrumRecord],
                   thresholds: ReportThresholds) -> FieldCollapse:
    """The field's numbers in the last record, beside the baseline's and its IA over the records.

    Example:
        >>> rec = lambda stage, spectrum: SpectrumRecord.from_dict({"stage": stage, "views": {"t": {"width": 4,
        ...     "fields": {"f": {"cardinality": 9, "information_abundance": sum(spectrum),
        ...                      "normalized_spectrum": spectrum}}}}})
        >>> c = field_collapse("t", "f", [rec("init", [1, 0.8, 0.7, 0.6]), rec("epoch", [1, 0.5, 0.01, 0.0])],
        ...                    ReportThresholds())
        >>> c.ceiling, c.used, c.unused, c.used_initially, c.history
        (4, 2, 2, 4, [3.1, 1.51])
    """
    initial, last = baseline_and_last(records)
    view = last.views[view_name]
    fld = view.fields[field_name]
    ceiling = information_abundance_ceiling(fld.cardinality, view.width)
    init_fld = initial.views[view_name].fields.get(field_name) if initial and view_name in initial.views else None
    history = [r.views[view_name].fields[field_name].information_abundance for r in records
               if view_name in r.views and field_name in r.views[view_name].fields]
    return FieldCollapse(
        view_name, field_name, ceiling, _used(fld.normalized_spectrum, ceiling, thresholds.unused_dimension),
        fld.information_abundance, None if init_fld is None else init_fld.information_abundance,
        None if init_fld is None else _used(init_fld.normalized_spectrum, ceiling, thresholds.unused_dimension),
        history)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _source_information_abundance(interaction: Mapping[str, Any], view_fields: Mapping[str, Any]) -> np.ndarray:
    sources = interaction.get("source_fields") or interaction["fields"]
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


def _trend(history: Sequence[float]) -> str:
    shown = list(history) if len(history) <= 4 else [*history[:2], *history[-2:]]
    sep = " → ".join(f"{v:.2f}" for v in shown)
    return sep if len(history) <= 4 else sep.replace(f"{shown[1]:.2f} → ", f"{shown[1]:.2f} → … → ", 1)


def _collapse_finding(c: FieldCollapse) -> Finding:
    already = c.used_initially is not None and c.used_initially <= c.used
    since = (f"; at initialisation it used {c.used_initially} (IA {c.initial:.2f})" if c.initial is not None else "")
    return Finding(
        "collapse", "collapse", "problem", f"{c.view}/{c.field}",
        f"**{c.field}** of `{c.view}` uses {c.used} of the {c.ceiling} dimensions its shape allows, "
        f"min(cardinality, K): {c.unused} carry under 5% of the top direction's scale. IA {c.information_abundance:.2f} "
        f"of {c.ceiling}{since}; IA over the analyses {_trend(c.history)} (exact: every row counted).",
        FROZEN_ADVICE if already else COLLAPSE_ADVICE, severity=c.unused / max(1, c.ceiling))


def _view_findings(view_name: str, records: Sequence[SpectrumRecord], thresholds: ReportThresholds
                   ) -> tuple[list[Finding], list[FieldCollapse]]:
    _, last = baseline_and_last(records)
    view = last.views[view_name]
    found, collapsed, concentrated, bounded = [], [], [], []
    for name, fld in view.fields.items():
        c = field_collapse(view_name, name, records, thresholds)
        if c.ceiling > 1 and c.unused >= max(2, thresholds.collapsed_fraction * c.ceiling):
            collapsed.append(c)
            found.append(_collapse_finding(c))
            continue
        if c.initial and c.information_abundance < thresholds.collapsed_vs_init * c.initial:
            concentrated.append(c)
        if fld.cardinality < view.width:
            bounded.append((name, fld.cardinality))
    if concentrated:
        names = ", ".join(f"**{c.field}** ({c.information_abundance:.2f}, {c.information_abundance / c.initial:.0%} of "
                          f"its {c.initial:.2f} at init; {c.used} of {c.ceiling} dimensions used)" for c in concentrated)
        found.append(Finding(
            "collapse", "concentrated", "fine", view_name,
            f"{len(concentrated)} field(s) of `{view_name}` concentrated their spectrum as they learned, keeping their "
            f"dimensions: {names}.",
            "Not collapse: a field that learns a few strong directions lowers IA without wasting dimensions.",
            severity=0.0))
    if bounded:
        names = ", ".join(f"**{n}** ({d} categories)" for n, d in bounded)
        found.append(Finding(
            "collapse", "bounded", "fine", view_name,
            f"Fields of `{view_name}` with fewer categories than K = {view.width}: {names}: their IA cannot exceed "
            "their cardinality, whatever K.", "Harmless: no width change helps these fields.", severity=0.0))
    return found, collapsed


def _interaction_finding(records: Sequence[SpectrumRecord], collapsed: Sequence[FieldCollapse],
                         thresholds: ReportThresholds) -> Finding | None:
    initial, last = baseline_and_last(records)
    interaction = last.interaction
    if interaction is None or not collapsed:
        return None
    view_fields = last.views[interaction.view].fields
    rows_r, cols_r = interaction_correlations(interaction, view_fields)
    before = float("nan")
    if initial is not None and initial.interaction is not None and interaction.view in initial.views:
        before = interaction_correlations(initial.interaction, initial.views[interaction.view].fields)[1]
    rise = cols_r - before if np.isfinite(before) else float("nan")
    if not (np.isfinite(cols_r) and cols_r >= thresholds.interaction_min_r
            and (not np.isfinite(before) or rise >= thresholds.interaction_min_rise)):
        return None
    at_init = f" (r = {before:.2f} at initialisation)" if np.isfinite(before) else ""
    kernel = f" (kernel: {interaction.kernel})" if interaction.kernel else ""
    names = ", ".join(f"**{c.field}**" for c in collapsed if c.view == interaction.view) or "its collapsed fields"
    return Finding(
        "collapse", "interaction_collapse", "problem", interaction.view,
        f"Interaction collapse in `{interaction.view}`{kernel}: with {names} collapsed, a field's sub-embeddings "
        f"through the cross layer follow its partner's own IA: Pearson r = {cols_r:.2f} over the interaction "
        f"matrix's columns{at_init}, r = {rows_r:.2f} over its rows.", INTERACTION_ADVICE, severity=0.5)


def collapse_findings(records: Sequence[SpectrumRecord], thresholds: ReportThresholds) -> list[Finding]:
    """The collapse findings of the last record (see the module's rules), problems first.

    Example:
        >>> rec = lambda stage, spectrum: SpectrumRecord.from_dict({"stage": stage, "views": {"emb": {"width": 8,
        ...     "fields": {"user": {"cardinality": 50, "information_abundance": sum(spectrum),
        ...                         "normalized_spectrum": spectrum}}}}})
        >>> random, frozen = [1, .9, .8, .7, .6, .5, .4, .3], [1, .5, .01, 0, 0, 0, 0, 0]
        >>> [(f.verdict, f.kind, f.subject) for f in collapse_findings([rec("init", random), rec("epoch", frozen)],
        ...                                                              ReportThresholds())]
        [('problem', 'collapse', 'emb/user')]
        >>> collapse_findings([rec("init", random), rec("epoch", random)], ReportThresholds())  # barely trained
        []
    """
    _, last = baseline_and_last(records)
    if last is None:
        return []
    found, collapsed = [], []
    for view_name in last.views:
        view_found, view_collapsed = _view_findings(view_name, records, thresholds)
        found += view_found
        collapsed += view_collapsed
    if (interaction := _interaction_finding(records, collapsed, thresholds)) is not None:
        found.append(interaction)
    return found
