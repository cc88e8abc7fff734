"""Ranking quality of scores: the AUROC of many subsets of one set of scored pairs, from one sort."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

__all__ = ["subset_aurocs"]


def subset_aurocs(scores: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                  masks: Iterable[torch.Tensor | np.ndarray]) -> list[float | None]:
    """AUROC of ``scores`` against the 0/1 ``target`` within each boolean mask (None where a subset lacks
    positives or negatives).

    AUROC = P(s+ > s-) + P(s+ = s-) / 2 over the subset's positive/negative pairs, computed as Mann-Whitney's
    U / (P N) with U = (sum of the positives' ranks) - P (P + 1) / 2 and tied scores given their average rank:
    the area under the exact ROC curve (``torchmetrics``' ``binary_auroc`` without thresholds, trapezoids
    between distinct scores), on the scores as given: logits far from 0 keep their order, where a float32
    sigmoid first (as ``binary_auroc`` applies to scores outside [0, 1]) can round them to ties. The scores are
    sorted once for all subsets; each subset is then one linear pass, where a call per subset would sort again
    every time.

    Example:
        >>> scores = torch.tensor([0.9, 0.8, 0.3, 0.1, 0.7, 0.2])
        >>> target = torch.tensor([1, 0, 1, 0, 1, 0])
        >>> subset_aurocs(scores, target, [torch.tensor([True, True, True, True, False, False]), target == 1])
        [0.75, None]
    """
    s = _numpy(scores).astype(np.float64, copy=False).reshape(-1)
    y = _numpy(target).reshape(-1) > 0.5
    if s.shape != y.shape:
        raise ValueError(f"scores and target must have the same number of values, got {s.size} and {y.size}")
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    out: list[float | None] = []
    for mask in masks:
        keep = _numpy(mask).reshape(-1)
        if keep.dtype != np.bool_:
            # An integer array would index, not select: the subset would be silently wrong.
            raise ValueError(f"masks must be boolean, got dtype {keep.dtype}; pass mask.bool() / mask != 0")
        if keep.shape != s.shape:
            raise ValueError(f"each mask must have {s.size} values, got {keep.size}")
        kept = keep[order]
        ss, yy = s_sorted[kept], y_sorted[kept]
        positives = int(yy.sum())
        negatives = yy.size - positives
        if positives == 0 or negatives == 0:
            out.append(None)
            continue
        # Runs of equal scores in the sorted subset share the mean of their 1-based ranks.
        starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
        lengths = np.diff(np.r_[starts, ss.size])
        ranks = np.repeat(starts + (lengths + 1) / 2.0, lengths)
        u = float(ranks[yy].sum()) - positives * (positives + 1) / 2.0
        out.append(u / (positives * negatives))
    return out


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
