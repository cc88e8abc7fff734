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
    sorted once for all subsets, and all subsets are then counted together, run of ties by run.

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
    masks = [_numpy(mask).reshape(-1) for mask in masks]
    for keep in masks:
        if keep.dtype != np.bool_:
            # An integer array would index, not select: the subset would be silently wrong.
            raise ValueError(f"masks must be boolean, got dtype {keep.dtype}; pass mask.bool() / mask != 0")
        if keep.shape != s.shape:
            raise ValueError(f"each mask must have {s.size} values, got {keep.size}")
    if not masks:
        return []
    # One sort for every subset. Runs of equal scores ("ties") share the mean of their ranks, so the order the
    # sort leaves equal scores in does not matter and the default (unstable) sort serves.
    order = np.argsort(s)
    s_sorted, y_sorted = s[order], y[order]
    changes = np.empty(s.size, dtype=bool)
    changes[:1], changes[1:] = True, s_sorted[1:] != s_sorted[:-1]
    kept = np.stack(masks)[:, order]
    if changes.all():
        # No ties (continuous scores, the usual case): within a subset a score's rank is how many of the subset's
        # scores are at or below it. Integer sums, exact; about 3 times faster than the runs below (10,000 pairs,
        # five subsets, side by side).
        ranks = np.cumsum(kept, axis=1)
        positive = kept & y_sorted
        rank_sums = np.where(positive, ranks, 0).sum(axis=1)
        positive_counts = positive.sum(axis=1)
        sizes = ranks[:, -1] if s.size else np.zeros(len(masks), np.int64)  # the last rank: the subset's size
    else:
        run = np.cumsum(changes) - 1  # the run of ties of each sorted score
        runs = int(run[-1]) + 1
        # Per subset and run: how many of the subset's scores, and how many of its positives, fall in the run.
        offset = np.arange(len(masks))[:, None] * runs
        members = np.bincount((offset + run)[kept], minlength=len(masks) * runs).reshape(len(masks), runs)
        positives_in = np.bincount((offset + run)[kept & y_sorted],
                                   minlength=len(masks) * runs).reshape(len(masks), runs)
        # Within a subset a run's scores have the mean rank (scores below it) + (its size + 1) / 2. Every term is
        # a half-integer below 2^53, so the float64 sums are exact: the same U as summing rank by rank.
        below = np.cumsum(members, axis=1) - members
        rank_sums = (positives_in * (below + (members + 1) / 2.0)).sum(axis=1)
        positive_counts, sizes = positives_in.sum(axis=1), members.sum(axis=1)
    out: list[float | None] = []
    for rank_sum, positives, size in zip(rank_sums, positive_counts, sizes):
        positives, negatives = int(positives), int(size - positives)
        if positives == 0 or negatives == 0:
            out.append(None)
            continue
        u = float(rank_sum) - positives * (positives + 1) / 2.0
        out.append(u / (positives * negatives))
    return out


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
