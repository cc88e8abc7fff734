"""``compare``'s view of gradient conflict and of the conflict subsets (e.g. an MMoE run against a STEM run).

Gradient conflict (``conflict/``, :func:`add_gradient_conflict_comparison`): the mean cosine and the share of
negative cosines of every field and task pair, run by run, the views matched by name or by their field names (an
MMoE's shared ``embedding`` against STEM's ``embedding[shared]``: STEM's task chunks get one task's gradient each,
so no cosine), with the difference; the runs' cosine maps side by side.

Conflict subsets (``entanglement/``, :func:`add_conflict_comparison`): each run's figure per view, the agreements
side by side, view by view, and which embedding reproduces the single-task geometries.

A shared embedding has one distance per (user, item) pair; the conflict pairs are exactly the ones the two
single-task models place far for one task and near for the other, so its agreements with the two tasks are
opposite numbers and it can reproduce at most one geometry. STEM's task chunks can reproduce each its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..figures.conflict import field_pair_cosine_image
from ..figures.conflict_subset import conflict_subset_image
from ..figures.pillow import side_by_side
from ..records import ConflictRecord, ConflictView, PairStatistics, TaskPair, pair_name
from .compare_views import difference_headers, mapping_notes, match_views, value_cells
from .model import ReportFigure, ReportTable, Section, format_value
from .run_data import RunData
from ..findings.entanglement import own_task, view_reproduction

__all__ = ["add_conflict_comparison", "add_gradient_conflict_comparison", "own_task_agreement", "serving_views"]

WHOLE = ConflictView.WHOLE


def _rows(view: ConflictView) -> dict[str, dict[TaskPair, PairStatistics]]:
    return {WHOLE: view.pairs, **view.fields}


def _has_cosine(view: ConflictView) -> bool:
    return any(s.cosine_mean is not None for by_pair in _rows(view).values() for s in by_pair.values())


def add_gradient_conflict_comparison(section: Section, runs: list[RunData], labels: dict[str, str]) -> None:
    """The last epoch's mean gradient cosine and negative fraction per field and task pair, run by run with the
    differences, views matched across the runs (:func:`~.compare_views.match_views`, on their field names); a
    view with no cosine at all (a STEM task chunk) is named in a note and left out.

    Example:
        >>> from lightning_recanalysis.records import ConflictRecord, ConflictView, PairStatistics
        >>> def run(name, view, cosine):
        ...     fields = {"user": {("a", "b"): PairStatistics(cosine, 0.5)}, "item": {("a", "b"): PairStatistics(0.1)}}
        ...     record = ConflictRecord(stage="train", tasks=["a", "b"], views={view: ConflictView(fields=fields)})
        ...     return RunData(name, name, records={"conflict": [record]})
        >>> section = Section("conflict", "Gradient conflict")
        >>> add_gradient_conflict_comparison(section, [run("mmoe", "emb", -0.25), run("stem", "emb[shared]", 0.25)],
        ...                                   {"mmoe": "mmoe", "stem": "stem"})
        >>> section.tables[0].rows[0]
        ['user', 'a vs b', '-0.250', '0.250', '+0.500']
        >>> print(section.notes[0])
        conflict: emb (mmoe) = emb[shared] (stem), matched by their 2 field names (the runs name the view differently).
    """
    last: dict[str, ConflictRecord] = {}
    for run in runs:
        epochs = [r for r in run.records.get("conflict", []) if r.stage == "train"]
        if epochs:
            last[run.name] = epochs[-1]
    if len(last) < 2:
        return
    names = list(last)
    for n in names:
        for view, typed in last[n].views.items():
            if not _has_cosine(typed):
                section.notes.append(f"{labels[n]}: {view} has no gradient cosine (fewer than two tasks' gradients "
                                     "reach it), left out of the comparison.")
    matches = match_views({n: {v: list(typed.fields) for v, typed in last[n].views.items() if _has_cosine(typed)}
                           for n in names})
    section.notes += mapping_notes(matches, labels, "conflict")
    heads = ["field", "task pair"] + [labels[n] for n in names] + difference_headers([labels[n] for n in names])
    numbers = []
    for match in matches:
        where = match.title(labels) + (f", {match.how}" if match.how else "")
        views = {n: _rows(last[n].views[v]) for n, v in match.views.items()}
        pairs = list(dict.fromkeys(p for by_field in views.values() for by_pair in by_field.values() for p in by_pair))
        fields = [WHOLE] + match.fields

        def value(n, f, p, stat):
            s = views[n].get(f, {}).get(p) if n in views else None
            return None if s is None else getattr(s, stat)

        for stat, what in (("cosine_mean", "Mean gradient cosine"), ("negative_fraction", "Share of negative cosines")):
            rows = [[f, pair_name(p).replace("_vs_", " vs ")] + value_cells([value(n, f, p, stat) for n in names])
                    for f in fields for p in pairs if any(value(n, f, p, stat) is not None for n in names)]
            if rows:
                section.tables.append(ReportTable(f"{what} per field and task pair, last epoch: {where}", heads, rows))
        numbers.append({"views": match.views, "how": match.how, "cosine_mean": {
            f"{f}/{pair_name(p)}": {n: value(n, f, p, "cosine_mean") for n in names} for f in fields for p in pairs}})
        images, titles = [], []
        for n, view in match.views.items():
            rows, view_pairs, matrix = last[n].views[view].cosine_matrix()
            if view_pairs and np.isfinite(np.array(matrix, dtype=float)).any():
                images.append(field_pair_cosine_image(view, np.array(matrix, dtype=float), rows,
                                                      [pair_name(p) for p in view_pairs], last[n].epoch))
                titles.append(labels[n])
        if len(images) > 1:
            first = next(iter(match.views.values())).replace("[", "_").replace("]", "").replace("/", "_")
            section.figures.append(ReportFigure(
                f"compare_{first}_cosines", f"{match.title(labels)}: mean gradient cosine per field, run by run",
                side_by_side(images, gap=24, titles=titles),
                "Each run's field x task-pair map of the mean gradient cosine (red: the tasks pull apart)."))
    section.numbers["gradient_conflict"] = numbers


def _last_conflict(run: RunData) -> dict[str, Any] | None:
    records = [r for r in run.records.get("entanglement", []) if r.stage == "validation" and r.conflict]
    return records[-1].conflict if records else None


def serving_views(part: dict[str, Any]) -> dict[str, str]:
    """For each task the view that serves it: its own chunk if the table has one, else the shared view.

    Example:
        >>> from lightning_recanalysis.toy import toy_conflict_subsets
        >>> serving_views(toy_conflict_subsets({"emb[a]": (0.5, 0.25, 0.25, 0.5), "emb[shared]": (0.5, 0.25, 0.5, 0.25)}))
        {'a': 'emb[a]', 'b': 'emb[shared]'}
    """
    views = list(part["views"])
    shared = [v for v in views if own_task(v, part["tasks"]) is None]
    return {t: next((v for v in views if own_task(v, part["tasks"]) == t), shared[0] if shared else views[0])
            for t in part["tasks"]}


def own_task_agreement(part: dict[str, Any],
                       agreement: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """For each task, the mean agreement with its single-task geometry (:func:`~lightning_recanalysis.report.
    findings.entanglement.view_reproduction`) in the view that serves it (:func:`serving_views`); NaN where
    that view has none. ``agreement``: ``view_reproduction(part)`` if already computed.

    Example:
        >>> from lightning_recanalysis.toy import toy_conflict_subsets
        >>> own_task_agreement(toy_conflict_subsets({"emb[a]": (0.5, 0.25, 0.25, 0.5), "emb[shared]": (0.5, 0.25, 0.5, 0.25)}))
        {'a': 0.25, 'b': 0.0}
    """
    agreement = view_reproduction(part) if agreement is None else agreement
    return {t: agreement[v].get(t, float("nan")) for t, v in serving_views(part).items()}


def add_conflict_comparison(section: Section, runs: list[RunData], labels: dict[str, str] | None = None) -> None:
    """Figures, a table and findings of the conflict subsets of every run that has them.

    Example:
        An MMoE run (one shared view) against a STEM run (a chunk per task):

        >>> from lightning_recanalysis.records import EntanglementRecord
        >>> from lightning_recanalysis.toy import toy_conflict_subsets
        >>> def run(name, views):
        ...     record = EntanglementRecord(stage="validation", conflict=toy_conflict_subsets(views))
        ...     return RunData(name=name, path=name, records={"entanglement": [record]})
        >>> mmoe = run("mmoe", {"emb": (0.5, 0.25, 0.25, 0.25)})
        >>> stem = run("stem", {"emb[a]": (0.75, 0.25, 0.25, 0.5), "emb[b]": (0.25, 0.5, 0.75, 0.25)})
        >>> section = Section("entanglement", "Interest entanglement")
        >>> add_conflict_comparison(section, [mmoe, stem])
        >>> {name: numbers["own_task_agreement"] for name, numbers in section.numbers["conflict"].items()}
        {'mmoe': {'a': 0.125, 'b': -0.125}, 'stem': {'a': 0.375, 'b': 0.375}}
        >>> len(section.figures)  # each run's figure per view
        3
    """
    parts = {run.name: part for run in runs if (part := _last_conflict(run)) is not None}
    if not parts:
        return
    if len(parts) < len(runs):
        section.notes.append("conflict subsets only in " + ", ".join(parts) + " (the others had no references)")
    rows, numbers, summary = [], {}, []
    for name, part in parts.items():
        agreement = view_reproduction(part)
        for view, values in agreement.items():
            rows.append([name, view, part["pairs"]] + [format_value(values.get(t), 2) for t in part["tasks"]]
                        + [format_value(part["views"][view]["rank_correlation"].get(t), 2) for t in part["tasks"]])
        serving = serving_views(part)
        own = own_task_agreement(part, agreement)
        numbers[name] = {"agreement": agreement, "serving_views": serving, "own_task_agreement": own,
                         "modes": part["modes"], "selected_pairs": part["pairs"]}
        summary.append((min(own.values()), name, serving, own))
    tasks = next(iter(parts.values()))["tasks"]
    section.tables.append(ReportTable(
        "Conflict subsets, run by run and view by view: mean agreement with each single-task geometry (1 = as "
        "that task's single-task model, 0 = chance) and Spearman's rho with each reference",
        ["run", "view", "pairs"] + [f"agreement with {t}" for t in tasks] + [f"rho with {t}" for t in tasks], rows))
    summary.sort(reverse=True)
    for _, name, serving, own in summary:
        text = ", ".join(f"{t} {a:+.2f} in `{serving[t]}`" for t, a in own.items())
        section.findings.append(f"**{name}**: agreement with each task's single-task geometry on the conflict pairs, "
                                f"in the view that serves the task: {text}.")
    if len(summary) > 1:
        best, worst = summary[0], summary[-1]
        section.findings.append(
            f"**{best[1]}** reproduces both single-task geometries better than **{worst[1]}**: its weaker task "
            f"agrees at {best[0]:+.2f} against {worst[0]:+.2f} (a shared view cannot exceed 0 for both tasks).")
    section.numbers["conflict"] = numbers
    views_in_order = []
    for name, part in parts.items():
        views_in_order += [(view, name, part) for view in part["views"]]
    for view, name, part in sorted(views_in_order, key=lambda x: (x[0], x[1])):
        safe = f"{name}_{view}".replace("[", "_").replace("]", "").replace("/", "_")
        section.figures.append(ReportFigure(
            f"compare_{safe}_conflict_subsets", f"{name}, {view}: the conflict subsets",
            conflict_subset_image(f"{(labels or {}).get(name, name)}, {view}", part["views"][view], low_q=part["low"],
                                  high_q=part["high"]),
            f"{part['pairs']} pairs in {part['bins']} equal-width bins; dark: the conflict pairs of each mode, "
            "light: the rest; blue/red: the view's own bottom/top percentiles."))
