"""Report section for ``correlation/field_pair/``: which field pairs carry the label, in the data and the model."""

from __future__ import annotations


import numpy as np

from ...figures.field_pair import field_pair_image
from ...figures.line import agreement_image
from ...findings.field_pair import field_pair_findings, pairs_by_interaction
from ...records import FieldPairRecord
from ..model import ReportFigure, ReportTable, ReportThresholds, Section

__all__ = ["field_pair_section"]


def field_pair_section(records: list[FieldPairRecord], thresholds: ReportThresholds, figures: bool = True) -> Section:
    """The field-pair section from the monitor's published records
    (:class:`~lightning_recanalysis.records.FieldPairRecord` dicts with counted samples): the ten strongest pairs
    by interaction information beside their pair MI and learned strength, the finding, the three pair maps and
    the agreement over training. ``figures=False`` leaves the figures out.

    Example:
        >>> from lightning_recanalysis.report.model import ReportThresholds
        >>> from lightning_recanalysis.records import FieldPairRecord
        >>> record = FieldPairRecord(stage="epoch", epoch=0, step=8, fields=["a", "b", "c"], samples=100,
        ...                          mutual_information=[[0.2, 0.3, 0.6], [0.3, 0.1, 0.4], [0.6, 0.4, 0.1]],
        ...                          interaction_information=[[0, 0.0, 0.3], [0.0, 0, 0.2], [0.3, 0.2, 0]])
        >>> section = field_pair_section([record], ReportThresholds(), figures=False)
        >>> section.tables[0].rows[0]
        [1, 'a x c', '0.6000', '+0.3000', '-']
        >>> section.findings, section.numbers["agreement_history"]  # no learned strength: nothing to compare
        ([], [[8, None]])
    """
    section = Section("correlation/field_pair", "Field-pair correlation: the data beside the interaction layer")
    published = [r for r in records if r.stage == "epoch" and r.samples > 0]
    if not published:
        section.notes.append("no field-pair analysis with counted samples was recorded")
        return section
    epochs = published
    last = epochs[-1]
    names = last.fields
    mi = np.asarray(last.mutual_information, dtype=float)
    ii = np.asarray(last.interaction_information, dtype=float)
    learned = None if last.learned is None else np.asarray(last.learned, dtype=float)
    rows = [[rank, f"{names[i]} x {names[j]}", f"{mi[i, j]:.4f}", f"{ii[i, j]:+.4f}",
             "-" if learned is None else f"{learned[i, j]:.3f}"]
            for rank, (i, j) in enumerate(pairs_by_interaction(last)[:10], 1)]
    section.tables.append(ReportTable(f"Top field pairs by interaction information ({last.samples:,} samples)",
                                      ["rank", "pair", "pair MI", "interaction information", "learned strength"], rows))
    section.findings = field_pair_findings(epochs, thresholds)
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
        history = {"with pair MI": [(r.step, r.agreement) for r in epochs if r.agreement is not None],
                   "with interaction information": [(r.step, r.agreement_interaction) for r in epochs
                                                    if r.agreement_interaction is not None]}
        history = {name: points for name, points in history.items() if points}
        if history:
            section.figures.append(ReportFigure(
                "field_pair_agreement", "Agreement between the learned and the ground-truth pair maps",
                agreement_image(history, title="learned pair strength vs the data: Spearman rho over pairs",
                                ylabel="Spearman rho"),
                "The two rank correlations the finding quotes, epoch by epoch: the learned pair strength against "
                "the pair MI and against the interaction information. 1: the model couples most the pairs the "
                "data ranks first."))
    return section

