"""Report section for ``correlation/field_pair/``: which field pairs carry the label, in the data and the model."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...figures.field_pair import field_pair_image
from ...figures.line import agreement_image
from ...records import FieldPairRecord
from ..model import ReportFigure, ReportTable, ReportThresholds, Section, format_value


def field_pair_section(records: list[dict[str, Any]], thresholds: ReportThresholds, figures: bool = True) -> Section:
    section = Section("correlation/field_pair", "Field-pair correlation: the data beside the interaction layer")
    published = [r for r in records if r.get("stage") == "epoch" and r.get("samples", 0) > 0]
    if not published:
        section.notes.append("no field-pair analysis with counted samples was recorded")
        return section
    epochs = [FieldPairRecord.from_dict(r) for r in published]
    last = epochs[-1]
    names = last.fields
    mi = np.asarray(last.mutual_information, dtype=float)
    ii = np.asarray(last.interaction_information, dtype=float)
    learned = None if last.learned is None else np.asarray(last.learned, dtype=float)
    iu = np.triu_indices(len(names), 1)
    order = np.argsort(-ii[iu])
    rows = []
    for rank, k in enumerate(order[:10], 1):
        i, j = iu[0][k], iu[1][k]
        rows.append([rank, f"{names[i]} x {names[j]}", f"{mi[i, j]:.4f}", f"{ii[i, j]:+.4f}",
                     "-" if learned is None else f"{learned[i, j]:.3f}"])
    section.tables.append(ReportTable(f"Top field pairs by interaction information ({last.samples:,} samples)",
                                      ["rank", "pair", "pair MI", "interaction information", "learned strength"], rows))
    agreement = last.agreement
    if learned is not None:
        k = min(3, len(order))
        data_top = [(iu[0][m], iu[1][m]) for m in order[:k]]
        learned_order = np.argsort(-learned[iu])
        model_top = [(iu[0][m], iu[1][m]) for m in learned_order[:k]]
        overlap = len(set(data_top) & set(model_top))
        name = lambda p: f"{names[p[0]]} x {names[p[1]]}"  # noqa: E731
        verdict = "agree" if agreement is not None and agreement >= thresholds.min_agreement else "disagree"
        section.findings.append(
            f"The data's {k} strongest field pairs by interaction information are {', '.join(map(name, data_top))}; "
            f"the cross layer couples {overlap} of them among its own {k} strongest ({', '.join(map(name, model_top))}). "
            f"Over all pairs the learned strengths {verdict} with the data (Spearman {format_value(agreement)} "
            "with pair MI, "
            f"{format_value(last.agreement_interaction)} with interaction information).")
    # The numbers as published (a record written before a key existed leaves it out).
    section.numbers = {k: published[-1][k] for k in (
        "fields", "samples", "mutual_information", "interaction_information", "field_mutual_information", "learned",
        "learned_source", "agreement", "agreement_interaction", "other_fraction") if k in published[-1]}
    section.numbers["agreement_history"] = [[r.step, r.agreement] for r in epochs]
    if figures:
        for which, caption in (("mutual_information", "MI between the pair (value of i, value of j) and the label."),
                               ("interaction_information", "MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y): what the "
                                "pair tells beyond its two fields alone."),
                               ("learned", "Frobenius norm of the cross layer's blocks W[i, j] and W[j, i] (or the "
                                "user's pair strength).")):
            if which == "learned" and learned is None:
                continue
            section.figures.append(ReportFigure(f"field_pair_{which}", which.replace("_", " "),
                                                field_pair_image(published[-1], which), caption))
        history = [(r.step, r.agreement) for r in epochs if r.agreement is not None]
        if history:
            section.figures.append(ReportFigure(
                "field_pair_agreement", "Agreement between the learned and the ground-truth pair maps",
                agreement_image(history, name="Spearman rho", title="learned vs data: rank correlation over pairs",
                                ylabel="Spearman rho"),
                "1: the model couples the pairs in the order the data ranks them."))
    return section

