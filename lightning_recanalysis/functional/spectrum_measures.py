"""Collapse measures of a singular-value spectrum ``s_1 >= s_2 >= ...`` (any float dtype, computed in float64).

The spectra come from :mod:`lightning_recanalysis.functional.spectrum`; every measure here is a function of the
spectrum alone, batched over leading axes where it says so.
"""

from __future__ import annotations

import torch

__all__ = ["normalized_spectrum", "information_abundance", "effective_rank", "stable_rank"]


def normalized_spectrum(sv: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """``s / s_1`` zero-padded to ``length`` (the rows of the paper's spectrum heatmap). All-zero -> zeros.

    Example:
        >>> normalized_spectrum(torch.tensor([4.0, 2.0, 1.0]), length=4)
        tensor([1.0000, 0.5000, 0.2500, 0.0000], dtype=torch.float64)
    """
    sv = sv.to(torch.float64)
    top = sv.max() if sv.numel() else sv.new_zeros(())
    out = sv / top if float(top) > 0 else torch.zeros_like(sv)
    if length is not None and length > out.numel():
        out = torch.cat([out, out.new_zeros(length - out.numel())])
    return out


def information_abundance(sv: torch.Tensor) -> torch.Tensor:
    """``IA = sum(s) / max(s)`` (Guo et al. 2024): 1 for a rank-one table, K for an isotropic one.

    Returns 0 for an all-zero spectrum (an empty table has no information), never NaN.

    Example:
        >>> information_abundance(torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))  # rank one, isotropic
        tensor([1., 3.], dtype=torch.float64)
    """
    sv = sv.to(torch.float64)
    top = sv.max(dim=-1).values
    return torch.where(top > 0, sv.sum(dim=-1) / top.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(top))


def effective_rank(sv: torch.Tensor) -> torch.Tensor:
    """``exp(H(p))``, ``p_k = s_k / sum(s)`` (Roy and Vetterli 2007; "RankMe"). 0 for an all-zero spectrum.

    Example:
        >>> effective_rank(torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])).round(decimals=4)
        tensor([1., 3.], dtype=torch.float64)
    """
    sv = sv.to(torch.float64)
    total = sv.sum(dim=-1, keepdim=True)
    p = sv / total.clamp_min(torch.finfo(torch.float64).tiny)
    entropy = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))


def stable_rank(sv: torch.Tensor) -> torch.Tensor:
    """``sum(s^2) / max(s)^2``, the squared Frobenius over squared spectral norm. 0 for an all-zero spectrum.

    Example:
        >>> stable_rank(torch.tensor([2.0, 1.0, 1.0]))
        tensor(1.5000, dtype=torch.float64)
    """
    sv = sv.to(torch.float64)
    top = sv.max(dim=-1).values
    return torch.where(top > 0, (sv**2).sum(dim=-1) / top.clamp_min(1e-300) ** 2, torch.zeros_like(top))
