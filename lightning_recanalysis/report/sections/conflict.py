"""Report sections for ``conflict/`` (per-task gradient cosines on shared embeddings) and ``entanglement/``
(each task's view of user-item distances, by label subset), read from the monitors' typed records
(:class:`~lightning_recanalysis.records.ConflictRecord`, :class:`~lightning_recanalysis.records.EntanglementRecord`)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ...figures.conflict import cosine_trend_image, field_pair_cosine_image
from ...figures.entanglement import distance_histogram_image
from ...records import ConflictRecord, ConflictView, EntanglementRecord, EntanglementView, pair_name
from ...findings.conflict import conflict_findings
from ..model import ReportFigure, ReportTable, ReportThresholds, Section, format_value, records_of_stage
from .conflict_subset import add_conflict_subsets

WHOLE = ConflictView.WHOLE


def conflict_section(records: list[ConflictRecord], thresholds: ReportThresholds, figures: bool = True) -> Section:
    """The ``conflict/`` section from the records of :class:`~lightning_recanalysis.GradientConflictMonitor`: the
    last epoch's statistics per view, field and task pair in a table, the findings of
    :func:`~lightning_recanalysis.findings.conflict_findings` (a conflict only where the pooled probes support it),
    and (``figures``) a cosine map per view and the cosines over training.

    Example:
        >>> from lightning_recanalysis.records import ConflictRecord, ConflictView, PairStatistics
        >>> from lightning_recanalysis.report.model import ReportThresholds
        >>> stats = PairStatistics(cosine_mean=-0.5, negative_fraction=0.8, probes=5, cosine_std=0.4)
        >>> record = ConflictRecord(stage="train", epoch=0, step=10, tasks=["click", "buy"], measured_steps=5,
        ...                         views={"emb": ConflictView(fields={"user": {("click", "buy"): stats}})})
        >>> section = conflict_section([record], ReportThresholds(), figures=False)
        >>> [(f.verdict, f.subject) for f in section.findings]  # 5 probes: too few to claim a conflict
        [('inconclusive', 'emb/user/click_vs_buy')]
        >>> section.tables[0].rows
        [['emb', 'user', 'click vs buy', '-0.500', '0.800', '-', 5, '0.400']]
    """
    section = Section("conflict", "Gradient conflict between tasks on shared embeddings")
    epochs = records_of_stage(records, "train", section, "no gradient-conflict analysis was recorded")
    if not epochs:
        return section
    last = epochs[-1]
    stats = {(view, WHOLE if fld is None else fld, pair_name(pair)): s
             for (view, fld, pair), s in last.pair_statistics().items()}
    if not stats:
        section.notes.append("no cosine could be measured (fewer than two tasks reached the embeddings)")
    # A row without a cosine (a task's gradient never reaches the view, as another task's STEM chunk) says
    # nothing: such rows are left out, and a note names their views.
    empty = sorted({view for (view, _, _), st in stats.items() if st.cosine_mean is None})
    for view in empty:
        gone = sum(k[0] == view and st.cosine_mean is None for k, st in stats.items())
        of = sum(k[0] == view for k in stats)
        section.notes.append(f"{view}: {'no' if gone == of else f'{gone} of its {of} rows have no'} gradient cosine "
                             f"(fewer than two tasks' gradients reach {'it' if gone == of else 'them'}): "
                             f"{'its' if gone == of else 'those'} {gone} rows are left out of the table")
    rows = [[view, field, pair.replace("_vs_", " vs "), format_value(st.cosine_mean, 3),
             format_value(st.negative_fraction, 3), format_value(st.norm_ratio, 3),
             "-" if st.probes is None else st.probes, format_value(st.cosine_std, 3)]
            for (view, field, pair), st in sorted(stats.items()) if st.cosine_mean is not None]
    section.findings = conflict_findings(epochs, thresholds)
    if rows:
        section.tables.append(ReportTable(
            f"Task-pair gradient statistics, epoch {last.epoch} ({last.measured_steps} measured steps; "
            f"{'per rank' if last.world_size > 1 else 'single process'})",
            ["view", "field", "task pair", "mean cosine", "negative fraction", "norm ratio", "probes", "cosine sd"],
            rows))
    history: dict[str, list[list[float]]] = defaultdict(list)
    for record in epochs:
        for (view, fld, pair), s in record.pair_statistics().items():
            if s.cosine_mean is not None:
                history[f"{view}/{WHOLE if fld is None else fld}/{pair_name(pair)}"].append([record.step, s.cosine_mean])
    section.numbers = {"last_epoch": last.epoch, "tasks": last.tasks, "measured_steps": last.measured_steps,
                       "skipped_steps": last.skipped_steps, "problems": last.problems,
                       "statistics": {"/".join(k): v.to_dict() for k, v in stats.items()},
                       "cosine_history": dict(history)}
    if not figures:
        return section
    for view, typed in last.views.items():
        fields, pairs, matrix = typed.cosine_matrix()
        matrix = np.array(matrix, dtype=float)
        if not pairs or not np.isfinite(matrix).any():  # no cosine was defined in this view: a blank map tells nothing
            continue
        pairs = [pair_name(p) for p in pairs]
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


def entanglement_section(records: list[EntanglementRecord], thresholds: ReportThresholds, figures: bool = True) -> Section:
    """The ``entanglement/`` section from the published records of :class:`~lightning_recanalysis.EntanglementMonitor`:
    the last epoch's mean distance per view and label subset and each task's AUROC per subset in tables, the
    conflict subsets (:func:`~.conflict_subset.add_conflict_subsets`) and (``figures``) each view's distance
    histograms by label subset.

    Example:
        >>> from lightning_recanalysis.records import EntanglementRecord, EntanglementView
        >>> from lightning_recanalysis.report.model import ReportThresholds
        >>> record = EntanglementRecord(stage="validation", epoch=1, step=20, tasks=["click", "buy"], views=["emb"],
        ...                             pairs=30, subset_pairs={"both": 30}, auroc={"click": {"all": 0.75}},
        ...                             distances={"emb": EntanglementView(1.25, {"both": 1.25})})
        >>> section = entanglement_section([record], ReportThresholds(), figures=False)
        >>> [table.rows for table in section.tables]
        [[['both', 30, '1.250']], [['all', '0.750', '-']]]
    """
    section = Section("entanglement", "Interest entanglement: each task's embedding view of user-item pairs")
    published = records_of_stage(records, "validation", section, "no entanglement analysis was recorded")
    if not published:
        return section
    last = published[-1]
    views = last.views
    no_view = EntanglementView()
    rows = [[subset, last.subset_pairs[subset]]
            + [format_value(last.distances.get(v, no_view).subsets.get(subset), 3) for v in views]
            for subset in sorted(last.subset_pairs)]
    section.tables.append(ReportTable(
        f"Mean user-item distance per view, by which tasks' labels are positive (epoch {last.epoch})",
        ["label subset", "pairs"] + [f"distance in {v}" for v in views], rows))
    auroc_subsets = sorted({name for by_subset in last.auroc.values() for name in by_subset},
                           key=lambda n: (n != "all", n))
    section.tables.append(ReportTable(
        f"Each task's AUROC by sample subset (epoch {last.epoch}; '-' where the task's label is constant)",
        ["subset"] + list(last.tasks),
        [[name] + [format_value(last.auroc.get(t, {}).get(name), 3) for t in last.tasks] for name in auroc_subsets
         if any(last.auroc.get(t, {}).get(name) is not None for t in last.tasks)]))
    section.numbers = {"last_epoch": last.epoch, "tasks": last.tasks, "views": views, "metrics": last.metrics}
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

