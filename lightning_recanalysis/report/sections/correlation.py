"""Report section for ``correlation/``: ground-truth vs learned target-behaviour correlation (Zhou et al. 2024)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...figures.correlation import correlation_maps_image, same_category_image
from ...figures.line import agreement_image
from ...functional.correlation import rank_correlation
from ..model import ReportFigure, ReportTable, ReportThresholds, Section, format_value, records_of_stage


def correlation_section(records: list[dict[str, Any]], thresholds: ReportThresholds, figures: bool = True) -> Section:
    section = Section("correlation", "Target-behaviour correlation: the data beside what the model learned")
    epochs = records_of_stage(records, "epoch", section, "no correlation analysis was recorded")
    if not epochs:
        return section
    last = epochs[-1]
    when = f"epoch {last['epoch']}"
    rows, numbers_targets = [], []
    for target in last["targets"]:
        gt = np.asarray(target["ground_truth_mi"], dtype=float)
        cats = target["behavior_categories"]
        own = cats.index(target["target_category"]) if target["target_category"] in cats else None
        entry = {"target_category": target["target_category"], "name": target["name"], "samples": target["samples"],
                 "agreement": target.get("agreement")}
        if own is not None and gt.size:
            own_row = gt[own]
            entry["own_category_is_top_row"] = bool(own_row.sum() >= gt.sum(axis=1).max())
            entry["own_row_vs_position_spearman"] = rank_correlation(own_row, target["positions"])
            entry["own_row_normalized"] = (own_row / own_row.max()).tolist() if own_row.max() > 0 else own_row.tolist()
            if target.get("learned") is not None:
                learned_row = target["learned"][own]
                entry["learned_own_row_vs_position_spearman"] = rank_correlation(learned_row, target["positions"])
            decay = entry["own_row_vs_position_spearman"]
            pattern = ("is the most informative row" if entry["own_category_is_top_row"] else "is not the top row")
            sentence = (f"Target category **{target['name']}** ({target['samples']:,} samples): in the data its own "
                        f"category {pattern}, and its information {'decays' if decay < 0 else 'does not decay'} with "
                        f"position (Spearman vs position {decay:+.2f}).")
            if target.get("agreement") is not None:
                verb = "agrees with" if target["agreement"] >= thresholds.min_agreement else "**disagrees** with"
                learned_decay = entry.get("learned_own_row_vs_position_spearman", float("nan"))
                shape = ("flat: it does not depend on position" if not np.isfinite(learned_decay)
                         else f"Spearman vs position {learned_decay:+.2f}")
                sentence += (f" The model's learned map {verb} it (rank correlation {target['agreement']:.2f}); its "
                             f"own-category row is {shape}.")
            section.findings.append(sentence)
        numbers_targets.append(entry)
        rows.append([target["name"], target["samples"], format_value(target.get("agreement")),
                     format_value(entry.get("own_row_vs_position_spearman")),
                     format_value(entry.get("learned_own_row_vs_position_spearman"))])
    section.findings = section.findings[: thresholds.max_findings_per_section]
    section.tables.append(ReportTable(
        f"Per target category ({when})", ["target", "samples", "learned vs data (Spearman)",
                                          "data: own row vs position", "learned: own row vs position"], rows))
    history = [(r["step"], r["agreement"]) for r in epochs if r.get("agreement") is not None]
    section.numbers = {"last_epoch": last["epoch"], "samples": last["samples"], "targets": numbers_targets,
                       "maps": last["targets"], "same_category_positions": last["same_category_positions"],
                       "same_category_mi": last["same_category_mi"],
                       "agreement_history": [[s, a] for s, a in history]}
    if not figures:
        return section
    for target in last["targets"][:4]:
        if target["behavior_names"]:
            section.figures.append(ReportFigure(
                f"correlation_target_{target['target_category']}", f"Target {target['name']}: data vs learned",
                correlation_maps_image(target, when),
                "Rows: the most informative behaviour categories; columns: positions 1..P. Left: mutual information "
                "between 'the behaviour at p has this category' and the label (bits, min-max normalised); right: "
                "the same cells read from the model's embeddings (softmax of z-scored <e, v> times ||r||)."))
    if history:
        section.figures.append(ReportFigure(
            "correlation_agreement", "Agreement of the learned map with the data over training",
            agreement_image(history, name="mean over targets", title="learned vs ground truth: Spearman over map cells",
                            ylabel="rank correlation"), ""))
    section.figures.append(ReportFigure(
        "correlation_same_category", "Same-category mutual information by position",
        same_category_image(last),
        "Needs no choice of categories: how much 'the p-th most recent behaviour shares the target's category' "
        "tells about the label. A falling curve is the temporal decay."))
    return section

