"""Correlation between a target and a user's past behaviours: from the data, and as a model has learned it.

Zhou et al., "Temporal Interest Network for User Response Prediction" (WWW 2024), and Pan et al., "Ad
Recommendation in a Collapsed and Entangled World" (KDD 2024), measure two things for a target category c_t:

**Ground truth (category-wise target-aware correlation, CTC).** Over the samples whose target has category c_t,
X = 1 when the behaviour at target-relative position p has category c (else 0), Y = the label, and

    CTC(c_t; c, p) = MI(X; Y) = sum_{x, y} p(x, y) log_b( p(x, y) / (p(x) p(y)) )

from the 2 x 2 table of counts (:func:`mutual_information`). Position p = 1 is the most recent behaviour.

**Learned correlation.** From the model's embeddings, behaviour e = c_i (+ position embedding p_j) and target
v = c_t (+ p_0): ``exp(<e, v>) * ||r||_2`` with r = e * v for TIN's target-aware representation, r = e for DIN
(:func:`learned_correlation`).

Comparing the two maps cell by cell (:func:`rank_correlation`) says whether the model has learned the data's
semantic pattern (the target's own category matters most) and temporal decay (recent behaviours matter most).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .field_pair import table_mutual_information

__all__ = ["mutual_information", "learned_correlation", "rank_correlation", "target_relative_positions"]


def mutual_information(counts: torch.Tensor, *, base: float = 2.0) -> torch.Tensor:
    """Plug-in mutual information of binary X and Y from their 2 x 2 tables of joint counts.

    ``MI = sum_{x, y} (n_xy / N) log_b( n_xy N / (n_x. n_.y) )`` with ``n_x. = sum_y n_xy``, ``n_.y = sum_x n_xy``.

    Args:
        counts: ``[..., 2, 2]`` counts (or probabilities) of (X, Y), X on the second-to-last axis.
        base: logarithm base; 2 gives bits, as Pan et al. report them (``math.e`` gives nats).

    Returns:
        ``[...]`` float64 MI. An empty cell contributes 0, the limit of p log p (the authors' script instead
        adds 1e-5 to empty cells, which biases tables with few samples); an all-empty table gives 0, never
        NaN. The plug-in estimate of independent variables is not 0 but about ``chi2(1) / (2 N ln b)``: a
        G-test statistic ``G = 2 N ln(b) MI`` follows chi-square with one degree of freedom.

    Example:
        >>> mutual_information(torch.tensor([[50.0, 0.0], [0.0, 50.0]]))  # Y = X: one bit
        tensor(1., dtype=torch.float64)
        >>> mutual_information(torch.tensor([[25.0, 25.0], [25.0, 25.0]]))  # independent
        tensor(0., dtype=torch.float64)
    """
    if counts.shape[-2:] != (2, 2):
        raise ValueError(f"counts must have shape [..., 2, 2], got {tuple(counts.shape)}")
    # The 2 x 2 case of the general joint-table MI (plug-in, no bias correction), which does the masking of
    # empty cells and the non-negativity clamp.
    return table_mutual_information(counts, base=base)


def learned_correlation(
    behavior: torch.Tensor,
    target: torch.Tensor,
    *,
    representation: str = "product",
    scaled: bool = False,
) -> torch.Tensor:
    """The correlation a model has learned between behaviour categories x positions and one target.

    Pan et al. (KDD 2024, after Zhou et al., WWW 2024), as their released script computes it:

        a_cp   = <e_cp, v>            (divided by sqrt(d) when ``scaled``, as in the paper's formula)
        z_cp   = (a_cp - mean(a)) / std(a)                 over all C x P entries (population std)
        w_cp   = softmax(z)_cp                             over all C x P entries
        s_cp   = w_cp * ||r_cp||_2,   r = e * v ("product", TIN)  or  r = e ("behavior", DIN)
        out    = (s - min(s)) / (max(s) - min(s))

    Args:
        behavior: ``[C, P, d]`` embedding of behaviour category c at position p: the category embedding plus
            the position embedding for models that have one (TIN), the category embedding alone otherwise.
        target: ``[d]`` the target's embedding (its category embedding, plus the target's own position
            embedding p_0 in TIN).
        representation: ``"product"`` for TIN's target-aware representation e * v, ``"behavior"`` for DIN's e.
        scaled: divide the logits by sqrt(d). The z-score makes this a no-op up to rounding; it is kept so that
            the paper's formula and the script's can be named exactly.

    Returns:
        ``[C, P]`` float64 in [0, 1]. A constant map (all logits and norms equal) gives zeros, never NaN.

    Example:
        >>> behavior = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]])  # [C=2, P=2, d=2]
        >>> learned_correlation(behavior, torch.tensor([1.0, 0.0])).round(decimals=3)
        tensor([[0.1500, 0.0000],
                [1.0000, 0.0000]], dtype=torch.float64)
    """
    if representation not in ("product", "behavior"):
        raise ValueError(f"representation must be 'product' (TIN) or 'behavior' (DIN), got {representation!r}")
    if behavior.dim() != 3:
        raise ValueError(f"behavior must be [C, P, d], got shape {tuple(behavior.shape)}")
    if target.dim() != 1 or target.shape[0] != behavior.shape[-1]:
        raise ValueError(f"target must be [d] with d = {behavior.shape[-1]}, got shape {tuple(target.shape)}")
    e = behavior.detach().to(torch.float64)
    v = target.detach().to(torch.float64).to(e.device)
    logits = e @ v
    if scaled:
        logits = logits / math.sqrt(e.shape[-1])
    std = logits.std(unbiased=False)
    # Equal logits everywhere (e.g. a freshly zero-initialised table) have no ranking to show: z = 0.
    z = (logits - logits.mean()) / std if float(std) > 0 else torch.zeros_like(logits)
    weights = torch.softmax(z.flatten(), dim=0).view_as(z)
    r = e * v if representation == "product" else e
    score = weights * torch.linalg.vector_norm(r, dim=-1)
    low, high = score.min(), score.max()
    if not float(high - low) > 0:
        return torch.zeros_like(score)
    return (score - low) / (high - low)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D float64 tensor, ties sharing their average rank (as Spearman's rho defines them).

    Ranked in numpy on the host: on the few thousand values of a map or a conflict subset each torch call costs
    more than its work (half the time, side by side). The ranks are exact half-integers whatever the order the
    sort leaves equal values in, so an unstable sort gives the same ranks."""
    values = x.detach().cpu().numpy()
    n = values.size
    order = np.argsort(values)
    sorted_x = values[order]
    # Group equal values: a new group starts wherever the sorted value changes.
    starts = np.empty(n, dtype=bool)
    starts[:1], starts[1:] = True, sorted_x[1:] != sorted_x[:-1]
    first = np.flatnonzero(starts)
    last = np.append(first[1:], n) - 1
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat((first + last) / 2.0 + 1.0, last - first + 1)
    return torch.from_numpy(ranks).to(x.device)


def rank_correlation(a, b, *, undefined: float = float("nan")) -> float:
    """Spearman's rank correlation of two maps (tensors, arrays or sequences) of the same shape, cell by cell.

    ``rho = Pearson correlation of rank(a) and rank(b)``, ties sharing their average rank: what
    ``scipy.stats.spearmanr`` computes. Where a map is constant, or has fewer than two cells, there is no ranking
    to compare and rho is undefined: ``undefined`` is returned, by default NaN as scipy returns. The monitors
    pass ``undefined=0.0`` for the agreement they log (a number on every chart: no ranking, no agreement).

    Example:
        >>> import torch
        >>> rank_correlation(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 30.0, 20.0, 40.0]))
        0.8
        >>> rank_correlation([1, 2, 2], [3, 1, 1])
        -1.0
        >>> flat, other = torch.ones(3), torch.tensor([1.0, 3.0, 2.0])
        >>> rank_correlation(flat, other), rank_correlation(flat, other, undefined=0.0)
        (nan, 0.0)
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"maps to compare must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    x = a.detach().to(torch.float64).flatten()
    y = b.detach().to(torch.float64).flatten().to(x.device)
    if x.numel() < 2:
        return undefined
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = torch.sqrt((rx * rx).sum() * (ry * ry).sum())
    if not float(denom) > 0:
        return undefined
    return float((rx * ry).sum() / denom)


def target_relative_positions(mask: torch.Tensor) -> torch.Tensor:
    """Target-relative position of every behaviour: 1 for the most recent real one, 2 for the one before, ...

    ``mask`` is ``[B, L]``, true for real behaviours, the most recent in the last column. The position of a
    real behaviour is the number of real behaviours at or after its column, so padding anywhere in a row is
    skipped; with the usual left padding it is simply ``L - column``. Padding cells get 0.

    Example:
        >>> target_relative_positions(torch.tensor([[0, 1, 1, 1], [1, 0, 1, 0]]))
        tensor([[0, 3, 2, 1],
                [2, 0, 1, 0]])
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, L], got shape {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    positions = mask.flip(1).cumsum(1).flip(1)
    return torch.where(mask, positions, torch.zeros_like(positions))
