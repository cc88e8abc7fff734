"""Findings of ``correlation/field_pair/``: does the cross layer couple the field pairs the data says carry the label?

The data ranks the pairs i < j by interaction information MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y); the
model by its learned pair strength (the Frobenius norm of the cross layer's blocks). The finding names the data's
three strongest pairs, how many of them are among the model's three strongest, and whether Spearman's rho of the
learned strengths with the pair MI reaches ``min_agreement``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..records import FieldPairRecord
from .formatting import format_value
from .thresholds import ReportThresholds

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


def field_pair_findings(records: Sequence[FieldPairRecord], thresholds: ReportThresholds) -> list[str]:
    """One sentence on the last record with counted samples, when it has a learned pair strength; else none.

    Example:
        >>> from lightning_recanalysis.records import FieldPairRecord
        >>> ii = [[0, 0.1, 0.5], [0.1, 0, 0.3], [0.5, 0.3, 0]]
        >>> learned = [[0, 1.0, 3.0], [1.0, 0, 2.0], [3.0, 2.0, 0]]
        >>> record = FieldPairRecord(fields=["a", "b", "c"], samples=100, interaction_information=ii,
        ...                          learned=learned, agreement=0.9, agreement_interaction=1.0)
        >>> print(field_pair_findings([record], ReportThresholds())[0])
        The data's 3 strongest field pairs by interaction information are a x c, b x c, a x b; the cross layer
        couples 3 of them among its own 3 strongest (a x c, b x c, a x b). Over all pairs the learned strengths
        agree with the data (Spearman 0.90 with pair MI, 1.00 with interaction information).
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
    agreement = last.agreement
    verdict = "agree" if agreement is not None and agreement >= thresholds.min_agreement else "disagree"
    return [f"The data's {k} strongest field pairs by interaction information are {', '.join(map(name, data_top))}; "
            f"the cross layer couples {overlap} of them among its own {k} strongest ({', '.join(map(name, model_top))}). "
            f"Over all pairs the learned strengths {verdict} with the data (Spearman {format_value(agreement)} "
            f"with pair MI, {format_value(last.agreement_interaction)} with interaction information)."]

