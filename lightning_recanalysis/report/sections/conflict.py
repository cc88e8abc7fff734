"""Report sections for ``conflict/`` (per-task gradient cosines on shared embeddings) and ``entanglement/``
(each task's view of user-item distances, by label subset), read from the monitors' typed records
(:class:`~lightning_recanalysis.records.ConflictRecord`, :class:`~lightning_recanalysis.records.EntanglementRecord`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ...figures.conflict import cosine_trend_image, field_pair_cosine_image
from ...figures.entanglement import distance_histogram_image
from ...records import ConflictRecord, EntanglementRecord
from ..model import ReportFigure, ReportTable, ReportThresholds, Section, format_value, records_of_stage
from .conflict_subset import add_conflict_subsets


def _parse_conflict(metrics: dict[str, float]) -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(view, field or "(whole view)", "a_vs_b"): {stat: value}}`` from the flat conflict metrics."""
    out: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for tag, value in metrics.items():
        parts = tag.split("/")
        if len(parts) == 4 and "_vs_" in parts[2]:
            out[(parts[1], "(whole view)", parts[2])][parts[3]] = value
        elif len(parts) == 5 and "_vs_" in parts[3]:
            out[(parts[1], parts[2], parts[3])][parts[4]] = value
    return out


def conflict_section(records: list[dict[str, Any]], thresholds: ReportThresholds, figures: bool = True) -> Section:
    """The ``conflict/`` section from the published records of :class:`~lightning_recanalysis.GradientConflictMonitor`:
    the last epoch's statistics per view, field and task pair in a table, a finding per field whose mean cosine
    is below ``thresholds.negative_cosine``, and (``figures``) a cosine map per view and the cosines over training.

    Example:
        >>> from lightning_recanalysis.records import ConflictRecord
        >>> from lightning_recanalysis.report.model import ReportThresholds
        >>> pair = "conflict/emb/user/click_vs_buy"
        >>> record = ConflictRecord(stage="train", epoch=0, step=10, tasks=["click", "buy"], measured_steps=5,
        ...                         metrics={f"{pair}/cosine_mean": -0.5, f"{pair}/negative_fraction": 0.8})
        >>> section = conflict_section([record.to_dict()], ReportThresholds(), figures=False)
        >>> section.findings
        ['Tasks **click** and **buy** pull field **user** of `emb` in opposite directions: mean gradient cosine -0.50, negative on 80% of measured steps (epoch 0).']
        >>> section.tables[0].rows
        [['emb', 'user', 'click vs buy', '-0.500', '0.800', '-']]
    """
    section = Section("conflict", "Gradient conflict between tasks on shared embeddings")
    published = records_of_stage(records, "train", section, "no gradient-conflict analysis was recorded")
    if not published:
        return section
    epochs = [ConflictRecord.from_dict(r) for r in published]
    last = epochs[-1]
    stats = _parse_conflict(last.metrics)
    if not stats:
        section.notes.append("no cosine could be measured (fewer than two tasks reached the embeddings)")
    rows, conflicts = [], []
    for (view, field, pair), s in sorted(stats.items()):
        cos = s.get("cosine_mean")
        rows.append([view, field, pair.replace("_vs_", " vs "), format_value(cos, 3),
                     format_value(s.get("negative_fraction"), 3), format_value(s.get("norm_ratio"), 3)])
        if cos is not None and cos < thresholds.negative_cosine and field != "(whole view)":
            conflicts.append((cos, f"Tasks **{pair.replace('_vs_', '** and **')}** pull field **{field}** of `{view}` "
                             f"in opposite directions: mean gradient cosine {cos:+.2f}, negative on "
                             f"{s.get('negative_fraction', float('nan')):.0%} of measured steps (epoch {last.epoch})."))
    conflicts.sort()
    section.findings = [t for _, t in conflicts[: thresholds.max_findings_per_section]]
    if len(conflicts) > thresholds.max_findings_per_section:
        section.findings.append(f"{len(conflicts) - thresholds.max_findings_per_section} more task-pair/field "
                                "conflicts are in the table.")
    section.tables.append(ReportTable(
        f"Task-pair gradient statistics, epoch {last.epoch} ({last.measured_steps} measured steps; "
        f"{'per rank' if last.world_size > 1 else 'single process'})",
        ["view", "field", "task pair", "mean cosine", "negative fraction", "norm ratio"], rows))
    history: dict[str, list[list[float]]] = defaultdict(list)
    for record in epochs:
        for (view, field, pair), s in _parse_conflict(record.metrics).items():
            if "cosine_mean" in s:
                history[f"{view}/{field}/{pair}"].append([record.step, s["cosine_mean"]])
    section.numbers = {"last_epoch": last.epoch, "tasks": last.tasks, "measured_steps": last.measured_steps,
                       "skipped_steps": last.skipped_steps, "problems": last.problems,
                       "statistics": {"/".join(k): v for k, v in stats.items()}, "cosine_history": dict(history)}
    if not figures:
        return section
    by_view: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for (view, field, pair), s in stats.items():
        if "cosine_mean" in s:
            by_view[view][(field, pair)] = s["cosine_mean"]
    for view, cells in by_view.items():
        fields = sorted({f for f, _ in cells}, key=lambda f: (f != "(whole view)", f))
        pairs = sorted({p for _, p in cells})
        matrix = np.array([[np.nan if cells.get((f, p)) is None else cells[(f, p)] for p in pairs] for f in fields])
        if not np.isfinite(matrix).any():  # no cosine was defined in this view: a blank map tells nothing
            continue
        safe = view.replace("[", "_").replace("]", "").replace("/", "_")
        section.figures.append(ReportFigure(
            f"conflict_{safe}_cosines", f"{view}: mean gradient cosine per field and task pair",
            field_pair_cosine_image(view, matrix, fields, pairs, last.epoch),
            "Mean over the epoch's measured steps of the cosine between two tasks' loss gradients on the field's "
            "looked-up rows. Red: the tasks pull the shared embedding apart; blank: undefined (a task's gradient "
            "never reaches this view, as for another task's STEM chunk)."))
    if history:
        def points(steps_and_cosines):
            return [s for s, _ in steps_and_cosines], [c for _, c in steps_and_cosines]

        per_field = [(k, points(v)) for k, v in sorted(history.items()) if "(whole view)" not in k]
        series = dict(per_field[:10]) or {k: points(v) for k, v in history.items()}
        section.figures.append(ReportFigure(
            "conflict_trend", "Mean gradient cosine over training",
            cosine_trend_image(series),
            "One line per field and task pair (first ten): below 0 the tasks conflict on that field."))
    return section


def entanglement_section(records: list[dict[str, Any]], thresholds: ReportThresholds, figures: bool = True) -> Section:
    """The ``entanglement/`` section from the published records of :class:`~lightning_recanalysis.EntanglementMonitor`:
    the last epoch's mean distance per view and label subset and each task's AUROC per subset in tables, the
    conflict subsets (:func:`~.conflict_subset.add_conflict_subsets`) and (``figures``) each view's distance
    histograms by label subset.

    Example:
        >>> from lightning_recanalysis.records import EntanglementRecord
        >>> from lightning_recanalysis.report.model import ReportThresholds
        >>> record = EntanglementRecord(stage="validation", epoch=1, step=20, tasks=["click", "buy"], views=["emb"],
        ...                             metrics={"entanglement/both/pairs": 30.0, "entanglement/emb/both/distance_mean": 1.25,
        ...                                      "entanglement/click/auroc/all": 0.75})
        >>> section = entanglement_section([record.to_dict()], ReportThresholds(), figures=False)
        >>> [table.rows for table in section.tables]
        [[['both', 30, '1.250']], [['all', '0.750', '-']]]
    """
    section = Section("entanglement", "Interest entanglement: each task's embedding view of user-item pairs")
    published = records_of_stage(records, "validation", section, "no entanglement analysis was recorded")
    if not published:
        return section
    last = EntanglementRecord.from_dict(published[-1])
    metrics = last.metrics
    views = last.views
    subsets = sorted({t.split("/")[1] for t in metrics if t.endswith("/pairs") and len(t.split("/")) == 3})
    rows = [[subset, int(metrics.get(f"entanglement/{subset}/pairs", 0))]
            + [format_value(metrics.get(f"entanglement/{v}/{subset}/distance_mean"), 3) for v in views]
            for subset in subsets]
    section.tables.append(ReportTable(
        f"Mean user-item distance per view, by which tasks' labels are positive (epoch {last.epoch})",
        ["label subset", "pairs"] + [f"distance in {v}" for v in views], rows))
    auroc_subsets = sorted({t.split("/")[3] for t in metrics if t.count("/") == 3 and t.split("/")[2] == "auroc"},
                           key=lambda n: (n != "all", n))
    section.tables.append(ReportTable(
        f"Each task's AUROC by sample subset (epoch {last.epoch}; '-' where the task's label is constant)",
        ["subset"] + list(last.tasks),
        [[name] + [format_value(metrics.get(f"entanglement/{t}/auroc/{name}"), 3) for t in last.tasks]
         for name in auroc_subsets]))
    section.numbers = {"last_epoch": last.epoch, "tasks": last.tasks, "views": views, "metrics": metrics}
    add_conflict_subsets(section, last, figures)
    histograms = last.histograms
    if figures and histograms:
        for view, by_subset in histograms.items():
            safe = view.replace("[", "_").replace("]", "").replace("/", "_")
            section.figures.append(ReportFigure(
                f"entanglement_{safe}_distances", f"{view}: user-item distance by label subset",
                distance_histogram_image(view, by_subset),
                "Where the view puts user-item pairs of each label subset; a view that separates one task's "
                "positives from the other's has room for both tasks."))
    return section

