"""Findings of ``correlation/field_pair/``: does the cross layer couple the field pairs the data says carry the label?

The data ranks the pairs i < j by interaction information MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y); the
model by its learned pair strength (the Frobenius norm of the cross layer's blocks). The finding names the data's
three strongest pairs and how many of them are among the model's three strongest, with Spearman's rho of the
learned strengths with the pair MI and its interval: **fine** when all of the data's strongest pairs are among the
model's, a **problem** when none are and the interval's upper end is below ``min_agreement``, else
**inconclusive**.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..records import FieldPairRecord
from .formatting import format_value
from .finding import Finding
from .thresholds import ReportThresholds
from .uncertainty import spearman_interval

__all__ = ["field_pair_findings", "pairs_by_interaction"]


def pairs_by_interaction(record: FieldPairRecord) -> list[tuple[int, int]]:
    """The field pairs (i, j), i < j, strongest interaction information first.

    Example:
        >>> from lightning_recanalysis.records import FieldPairRecord
        >>> record = FieldPairRecord(fields=["a", "b", "c"],
        ...                          interaction_information=[[0, 0.1, 0.5], [0.1, 0, 0.3], [0.5, 0.3, 0]])
        >>> pairs_by_interaction(record)
        [(0, 2), (1, 2), (0, 1)]
    """
    ii = np.asarray(record.interaction_information, dtype=float)
    iu = np.triu_indices(len(record.fields), 1)
    return [(int(iu[0][k]), int(iu[1][k])) for k in np.argsort(-ii[iu])]


def field_pair_findings(records: Sequence[FieldPairRecord], thresholds: ReportThresholds) -> list[Finding]:
    """The finding on the last record with counted samples, when it has a learned pair strength; else none.

    Example:
        >>> ii = [[0, 0.1, 0.5], [0.1, 0, 0.3], [0.5, 0.3, 0]]
        >>> learned = [[0, 1.0, 3.0], [1.0, 0, 2.0], [3.0, 2.0, 0]]
        >>> record = FieldPairRecord(fields=["a", "b", "c"], samples=100, interaction_information=ii,
        ...                          learned=learned, agreement=0.9, agreement_interaction=1.0)
        >>> finding = field_pair_findings([record], ReportThresholds())[0]
        >>> finding.verdict, finding.kind
        ('fine', 'top_pairs')
        >>> print(finding.text)
        The data's 3 strongest field pairs by interaction information are a x c, b x c, a x b; the cross layer
        couples 3 of them among its own 3 strongest (a x c, b x c, a x b). Over all 3 pairs: Spearman 0.90 with
        pair MI (95% interval -1.00 to +1.00), 1.00 with interaction information.
    """
    counted = [r for r in records if r.stage == "epoch" and r.samples > 0]
    if not counted or counted[-1].learned is None:
        return []
    last = counted[-1]
    names = last.fields
    learned = np.asarray(last.learned, dtype=float)
    order = pairs_by_interaction(last)
    k = min(3, len(order))
    data_top = order[:k]
    iu = np.triu_indices(len(names), 1)
    model_top = [(int(iu[0][m]), int(iu[1][m])) for m in np.argsort(-learned[iu])[:k]]
    overlap = len(set(data_top) & set(model_top))
    name = lambda p: f"{names[p[0]]} x {names[p[1]]}"  # noqa: E731
    n_pairs = len(order)
    low, high = spearman_interval(last.agreement if last.agreement is not None else float("nan"), n_pairs)
    text = (f"The data's {k} strongest field pairs by interaction information are {', '.join(map(name, data_top))}; "
            f"the cross layer couples {overlap} of them among its own {k} strongest "
            f"({', '.join(map(name, model_top))}). Over all {n_pairs} pairs: Spearman {format_value(last.agreement)} "
            f"with pair MI (95% interval {low:+.2f} to {high:+.2f}), {format_value(last.agreement_interaction)} with "
            "interaction information.")
    subject = "field_pairs"
    if overlap == k:
        return [Finding("correlation/field_pair", "top_pairs", "fine", subject, text,
                        "The interaction layer couples the pairs that carry the label.")]
    if overlap == 0 and high < thresholds.min_agreement:
        return [Finding("correlation/field_pair", "missed_correlation", "problem", subject, text,
                        "The cross layer couples other pairs than the data's: check that the strong pairs' fields "
                        "reach the cross layer, and give it capacity (more cross layers, a larger K).",
                        severity=0.5)]
    return [Finding("correlation/field_pair", "top_pairs", "inconclusive", subject, text,
                    "Train longer or count more samples before reading the ranking.", severity=0.1)]
