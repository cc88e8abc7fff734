"""Report section for ``correlation/``: ground-truth vs learned target-behaviour correlation (Zhou et al. 2024)."""

from __future__ import annotations


from ...figures.correlation import correlation_maps_image, same_category_image
from ...figures.line import agreement_image
from ...findings.correlation import correlation_findings, own_category_pattern
from ...records import BehaviorTargetRecord
from ..model import ReportFigure, ReportTable, ReportThresholds, Section, format_value, records_of_stage

__all__ = ["correlation_section"]


def correlation_section(records: list[BehaviorTargetRecord], thresholds: ReportThresholds, figures: bool = True) -> Section:
    """The correlation section from the monitor's published records
    (:class:`~lightning_recanalysis.records.BehaviorTargetRecord` dicts): per target category of the last epoch
    the data's own-category pattern beside the learned map's (table, findings, the two maps side by side), the
    agreement over training and the same-category MI by position. ``figures=False`` leaves the figures out.

    Example:
        >>> from lightning_recanalysis.report.model import ReportThresholds
        >>> from lightning_recanalysis.records import BehaviorTargetRecord
        >>> target = {"target_category": 2, "name": "shoes", "samples": 50, "behavior_categories": [2, 7],
        ...           "behavior_names": ["shoes", "hats"], "positions": [1, 2, 3],
        ...           "ground_truth_mi": [[0.3, 0.2, 0.1], [0.0, 0.1, 0.0]], "learned": [[3, 2, 1], [1, 1, 1]],
        ...           "agreement": 0.8}
        >>> record = BehaviorTargetRecord(stage="epoch", epoch=0, step=4, samples=50, targets=[target], agreement=0.8)
        >>> section = correlation_section([record], ReportThresholds(), figures=False)
        >>> section.tables[0].rows
        [['shoes', 50, '0.80', '-1.00', '-1.00']]
        >>> section.numbers["agreement_history"]
        [[4, 0.8]]
    """
    section = Section("correlation", "Target-behaviour correlation: the data beside what the model learned")
    epochs = records_of_stage(records, "epoch", section, "no correlation analysis was recorded")
    if not epochs:
        return section
    last = epochs[-1]
    when = f"epoch {last.epoch}"
    rows, numbers_targets = [], []
    for target in last.targets:
        entry = {"target_category": target["target_category"], "name": target["name"], "samples": target["samples"],
                 "agreement": target.get("agreement")}
        entry.update(own_category_pattern(target) or {})
        numbers_targets.append(entry)
        rows.append([target["name"], target["samples"], format_value(target.get("agreement")),
                     format_value(entry.get("own_row_vs_position_spearman")),
                     format_value(entry.get("learned_own_row_vs_position_spearman"))])
    section.findings = correlation_findings(epochs, thresholds)
    section.tables.append(ReportTable(
        f"Per target category ({when})", ["target", "samples", "learned vs data (Spearman)",
                                          "data: own row vs position", "learned: own row vs position"], rows))
    history = [(r.step, r.agreement) for r in epochs if r.agreement is not None]
    section.numbers = {"last_epoch": last.epoch, "samples": last.samples, "targets": numbers_targets,
                       "maps": last.targets, "same_category_positions": last.same_category_positions,
                       "same_category_mi": last.same_category_mi,
                       "agreement_history": [[s, a] for s, a in history]}
    if not figures:
        return section
    for target in last.targets[:4]:
        if target["behavior_names"]:
            section.figures.append(ReportFigure(
                f"correlation_target_{target['target_category']}", f"Target {target['name']}: data vs learned",
                correlation_maps_image(target, when),
                "Rows: the most informative behaviour categories; columns: positions 1..P. Left: mutual information "
                "between 'the behaviour at p has this category' and the label (bits, min-max normalised); right: "
                "the same cells read from the model's embeddings (softmax of z-scored <e, v> times ||r||)."))
    if history:
        lines = {"mean over targets": history}
        for target in last.targets[:6]:  # each target's own line, as the table gives each its number
            points = [(r.step, t["agreement"]) for r in epochs for t in r.targets
                      if t["target_category"] == target["target_category"] and t.get("agreement") is not None]
            if points and len(last.targets) > 1:
                lines[f"target {target['name']}"] = points
        section.figures.append(ReportFigure(
            "correlation_agreement", "Agreement of the learned map with the data over training",
            agreement_image(lines, title="learned vs ground truth: Spearman over map cells", ylabel="rank correlation"),
            "Spearman's rho between the learned map and the data's, over the map's cells: the mean over the target "
            "categories" + (" and each target's own" if len(lines) > 1 else "") + ", epoch by epoch."))
    section.figures.append(ReportFigure(
        "correlation_same_category", "Same-category mutual information by position",
        same_category_image(last),
        "Needs no choice of categories: how much 'the p-th most recent behaviour shares the target's category' "
        "tells about the label. A falling curve is the temporal decay."))
    return section

