"""The authors' interest-entanglement analysis: conflict subsets from single-task reference models (METHODS.md 3).

Pan et al. ("Ad Recommendation in a Collapsed and Entangled World", KDD 2024) train one single-task model per
task and measure, for (user, item) pairs, the L2 distance ``d_t(u, i) = ||e_u - e_i||_2`` between the user's and
the item's embedding in task t's model. A pair that task ``f``'s model places far and task ``n``'s model places
near belongs to the **conflict subset** of mode ``f_far_n_near``:

    d_f(u, i) > P_high(d_f)   and   d_n(u, i) <= P_low(d_n)

with ``P_q`` the q-th percentile over the selected pairs (the authors: 60 and 40; 11% of their test pairs fell
in one of the two modes of two tasks). Then every embedding *view* of a multi-task model (the shared table, or
one STEM chunk) is read on the same pairs: where does it put the conflict pairs, by its own percentiles? A
shared embedding has one distance per pair and so cannot put a pair far for one task and near for the other.

Percentiles are numpy's default (``method="linear"``): ``h = (n - 1) q / 100``,
``P_q = x_(floor h) + (h - floor h) (x_(floor h + 1) - x_(floor h))`` on the sorted values.

Everything is computed in float64; percentiles and bin counts on the host (numpy), the rest on the inputs' device.
"""

from __future__ import annotations

from itertools import permutations
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .correlation import rank_correlation

__all__ = ["percentile", "percentiles", "pair_distances", "conflict_mode_name", "conflict_subsets", "frequent_ids",
           "placement_shares", "geometry_agreement", "conflict_histograms", "conflict_rank_correlations"]

#: The authors' thresholds: far means above the 60th percentile, near at or below the 40th.
AUTHORS_HIGH, AUTHORS_LOW = 60.0, 40.0


def percentile(values: torch.Tensor, q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear interpolation between order statistics (as
    ``numpy.percentile``'s default).

    Example:
        >>> percentile(torch.tensor([1.0, 2.0, 3.0, 4.0]), 40)
        2.2
    """
    return percentiles(values, [q])[0]


def percentiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """:func:`percentile` for several ``qs`` from one sort of ``values``.

    Example:
        >>> percentiles(torch.tensor([1.0, 2.0, 3.0, 4.0]), [40, 60])
        [2.2, 2.8]
    """
    if any(not 0.0 <= q <= 100.0 for q in qs):
        raise ValueError(f"percentiles must lie in [0, 100], got {list(qs)}")
    x = values.detach().reshape(-1).to(torch.float64).cpu().numpy()
    if x.size == 0:
        raise ValueError("percentile of no values")
    positions = []
    for q in qs:
        h = (x.size - 1) * q / 100.0
        positions.append((h, int(h), min(int(h) + 1, x.size - 1)))
    # Only the order statistics the interpolation reads: a partition around them (linear time) places exactly
    # the values a full sort would put there, at a tenth of a sort's cost on 10,000 pairs.
    x = np.partition(x, sorted({k for _, lo, hi in positions for k in (lo, hi)}))
    return [float(x[lo] + (h - lo) * (x[hi] - x[lo])) for h, lo, hi in positions]


def pair_distances(user_rows: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
    """``||e_u - e_i||_2`` per pair: ``[n, width]`` user and item embeddings -> ``[n]`` float64.

    Example:
        >>> pair_distances(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0], [1.0, 1.0]]))
        tensor([5., 0.], dtype=torch.float64)
    """
    if user_rows.shape != item_rows.shape:
        raise ValueError(f"user and item rows must have one shape, got {tuple(user_rows.shape)} and "
                         f"{tuple(item_rows.shape)}")
    return torch.linalg.vector_norm(user_rows.to(torch.float64) - item_rows.to(torch.float64), dim=-1)


def conflict_mode_name(far: str, near: str) -> str:
    """The mode whose pairs task ``far``'s reference places far and task ``near``'s near: ``far_far_near_near``.

    Example:
        >>> conflict_mode_name('click', 'purchase')
        'click_far_purchase_near'
    """
    return f"{far}_far_{near}_near"


def conflict_subsets(reference_distances: Mapping[str, torch.Tensor], high: float = AUTHORS_HIGH,
                     low: float = AUTHORS_LOW) -> dict[str, torch.Tensor]:
    """Boolean masks of the conflict subsets, one per ordered pair of tasks (two modes for two tasks).

    ``reference_distances`` maps each task to its single-task model's distances of the same ``n`` pairs.
    Mode ``f_far_n_near`` holds the pairs with ``d_f > P_high(d_f)`` and ``d_n <= P_low(d_n)``; the percentiles
    are taken over all ``n`` pairs. Requires ``low <= high`` (otherwise a pair could be far and near at once).

    Example:
        >>> d = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
        >>> for mode, mask in conflict_subsets({'click': d, 'buy': d.flip(0)}).items():
        ...     print(mode, mask.tolist())
        click_far_buy_near [False, False, False, True, True]
        buy_far_click_near [True, True, False, False, False]
    """
    if not 0.0 <= low <= high <= 100.0:
        raise ValueError(f"conflict percentiles need 0 <= low <= high <= 100, got high={high}, low={low}")
    tasks = list(reference_distances)
    if len(tasks) < 2:
        raise ValueError(f"conflict subsets compare two tasks or more, got {tasks}")
    lengths = {t: d.numel() for t, d in reference_distances.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every reference must measure the same pairs, got pair counts {lengths}")
    thresholds = {t: percentiles(d, [low, high]) for t, d in reference_distances.items()}
    far = {t: reference_distances[t].reshape(-1) > thresholds[t][1] for t in tasks}
    near = {t: reference_distances[t].reshape(-1) <= thresholds[t][0] for t in tasks}
    return {conflict_mode_name(f, n): far[f] & near[n] for f, n in permutations(tasks, 2)}


def frequent_ids(counts: torch.Tensor, q: float = AUTHORS_HIGH) -> torch.Tensor:
    """Ids counted more often than the ``q``-th percentile of the counts of the ids that occur at all.

    ``counts[k]`` is how often id ``k`` occurs in the training data. The authors keep users and items above the
    60th percentile of training frequency; ids never seen take no part in the percentile (a large vocabulary of
    unseen ids would otherwise pull it to zero) and are never frequent.

    Example:
        >>> frequent_ids(torch.tensor([0, 5, 1, 9, 2]))  # ids 1 and 3 are above the 60th percentile of 5, 1, 9, 2
        tensor([False,  True, False,  True, False])
    """
    seen = counts[counts > 0]
    if seen.numel() == 0:
        return torch.zeros_like(counts, dtype=torch.bool)
    return counts.to(torch.float64) > percentile(seen, q)


def placement_shares(view_distances: torch.Tensor, mask: torch.Tensor, high: float = AUTHORS_HIGH,
                     low: float = AUTHORS_LOW, thresholds: tuple[float, float] | None = None) -> dict[str, float]:
    """Where a view puts the pairs of ``mask``, by the view's own percentiles over all its pairs.

    ``top`` = share of the masked pairs with ``d > P_high(d)`` (the view's top 40% by default), ``bottom`` = share
    with ``d <= P_low(d)`` (its bottom 40%), ``middle`` = the rest; they sum to 1. NaN for an empty mask.
    ``thresholds``: ``(P_low, P_high)`` of the view when already known (one sort per view, not per mode).

    Example:
        >>> d = torch.arange(10, dtype=torch.float64)
        >>> placement_shares(d, d >= 7)
        {'top': 1.0, 'middle': 0.0, 'bottom': 0.0}
    """
    d = view_distances.reshape(-1).to(torch.float64)
    chosen = d[mask.reshape(-1)]
    if chosen.numel() == 0:
        return {"top": float("nan"), "middle": float("nan"), "bottom": float("nan")}
    p_low, p_high = thresholds if thresholds is not None else percentiles(d, [low, high])
    top = float((chosen > p_high).to(torch.float64).mean())
    bottom = float((chosen <= p_low).to(torch.float64).mean())
    return {"top": top, "middle": 1.0 - top - bottom, "bottom": bottom}


def geometry_agreement(shares: Mapping[str, float], far: bool) -> float:
    """How far a view reproduces one single-task geometry on one conflict mode, in [-1, 1].

    For mode ``f_far_n_near`` and the reference of task ``f`` (``far=True``): ``top - bottom``, the share of the
    mode's pairs that the view also places far minus the share it places near; for task ``n`` (``far=False``):
    ``bottom - top``. 1: the view places every conflict pair where that task's single-task model does; -1: where
    the other task's does; 0: no preference (a view that ignores the references scores ``0.4 - 0.4 = 0``). On one
    mode the two tasks' agreements are opposite numbers: one distance per pair cannot serve both.

    Example:
        >>> shares = {'top': 0.75, 'middle': 0.25, 'bottom': 0.0}
        >>> geometry_agreement(shares, far=True), geometry_agreement(shares, far=False)
        (0.75, -0.75)
    """
    difference = shares["top"] - shares["bottom"]
    return difference if far else -difference


def conflict_histograms(view_distances: torch.Tensor, masks: Mapping[str, torch.Tensor], bins: int = 39,
                        high: float = AUTHORS_HIGH, low: float = AUTHORS_LOW) -> dict[str, Any]:
    """The authors' figure for one view: ``bins`` equal-width bins over all the view's pairs and, per mode, the
    counts of its conflict pairs (``masks[mode]``) and of the rest per bin; the view's own ``P_low``/``P_high``
    colour the bins. Returns ``{"edges", "low", "high", "modes": {mode: {"conflict", "rest"}}}`` (plain lists).

    Example:
        >>> d = torch.tensor([0.0, 1.0, 2.0, 3.0])
        >>> out = conflict_histograms(d, {'a_far_b_near': torch.tensor([False, False, True, True])}, bins=2)
        >>> out['edges'], out['modes']
        ([0.0, 1.5, 3.0], {'a_far_b_near': {'conflict': [0, 2], 'rest': [2, 0]}})
    """
    d = view_distances.reshape(-1).to(torch.float64).contiguous()
    lo, hi = float(d.min()), float(d.max())
    hi = hi if hi > lo else lo + 1.0
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    # Bin k holds [edge_k, edge_k+1), the last bin also its right edge (numpy.histogram's rule). Counted in
    # numpy on the host: these are a few thousand values, where each torch call costs more than the work.
    values = d.cpu().numpy()
    index = np.searchsorted(edges[1:-1].numpy(), values, side="right")
    every = np.bincount(index, minlength=bins)
    p_low, p_high = percentiles(d, [low, high])
    modes = {}
    for mode, mask in masks.items():
        conflict = np.bincount(index[mask.reshape(-1).cpu().numpy()], minlength=bins)
        modes[mode] = {"conflict": conflict.tolist(), "rest": (every - conflict).tolist()}
    return {"edges": edges.tolist(), "low": p_low, "high": p_high, "modes": modes}


def conflict_rank_correlations(view_distances: torch.Tensor, reference_distances: Mapping[str, torch.Tensor],
                               masks: Sequence[torch.Tensor]) -> dict[str, float]:
    """Spearman's rho between the view's distances and each reference's, over the union of the conflict subsets.

    On the conflict pairs the references disagree by construction (rho between two references there is strongly
    negative), so a view cannot correlate positively with both: a shared embedding's rhos sum to about zero or
    less, a task chunk that reproduces its task's geometry has a clearly positive rho with that task. 0.0 where
    a set of distances is constant (no ranking to compare).

    Example:
        >>> view = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> references = {'click': torch.tensor([1.0, 3.0, 2.0, 4.0]), 'buy': torch.tensor([4.0, 3.0, 2.0, 1.0])}
        >>> conflict_rank_correlations(view, references, [torch.tensor([True, True, True, False])])
        {'click': 0.5, 'buy': -1.0}
    """
    union = torch.zeros_like(view_distances.reshape(-1), dtype=torch.bool)
    for mask in masks:
        union |= mask.reshape(-1)
    view = view_distances.reshape(-1)[union]
    return {task: rank_correlation(view, d.reshape(-1)[union], undefined=0.0)
            for task, d in reference_distances.items()}
