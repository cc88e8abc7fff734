"""Singular-value spectra of embedding tables and the collapse measures built on them.

Guo et al., "On the Embedding Collapse when Scaling up Recommendation Models" (ICML 2024) measure how much of
an embedding table's K-dimensional space is used by the *information abundance* of its row-normalised table:

    E_hat = rows of E divided by (||row||_2 + 1e-8)      (rows are not mean-centred)
    s_1 >= ... >= s_r  singular values of E_hat,  r = min(rows, K)
    IA(E) = sum_k s_k / s_1                                in [1, r]

The singular values are the square roots of the eigenvalues of the K x K Gram matrix G = E_hat^T E_hat, a sum
over rows. :func:`row_normalized_gram` accumulates G chunk by chunk in one pass, so memory does not grow with the
row count, and sums of G over shards or ranks give the G of the whole table.

Why the rotation: a float32 Gram loses every singular value below about sqrt(eps_32) * s_1 ~ 3e-4 * s_1,
because the rounding error of a float32 product sum is relative to the *largest* direction. A float64 Gram is
exact but runs at half the float32 rate. Here each chunk is first rotated into the current eigenbasis V of the
Gram accumulated so far (a K x K float64 ``eigh``, cheap next to the chunk's N_chunk x K^2 work), so the chunk's
float32 Gram is nearly diagonal and the rounding error of each entry (i, j) is relative to sqrt(lambda_i *
lambda_j) instead of lambda_1. The small singular values then keep float32 *relative* accuracy, the rotated
chunk Gram is added back in float64, and the heavy work stays in float32 matrix multiplies.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

__all__ = [
    "RowNormalizedGram",
    "row_normalized_gram",
    "singular_values_from_gram",
    "singular_values",
    "all_reduce_gram",
    "sharded_singular_values",
    "normalized_spectrum",
    "information_abundance",
    "effective_rank",
    "stable_rank",
]

#: The epsilon that Guo et al. add to each row norm before dividing.
ROW_NORM_EPS = 1e-8

# Rows per chunk: large enough that the per-chunk eigh and Python overhead vanish, small enough that the
# chunk's three float32 buffers stay a few MB (a few percent of any table worth streaming).
_MAX_CHUNK_ROWS = 16384
_EIGH_EVERY = 4
_FIRST_CHUNK_ROWS = 1024
_MIN_CHUNK_ROWS = 1024
# On a GPU a 16384-row chunk is a few microseconds of work and the pass would be all launch overhead: chunks
# there hold up to 2^23 values (32 MiB in float32), still a small fraction of any table worth streaming.
_CUDA_CHUNK_VALUES = 1 << 23


@dataclass
class RowNormalizedGram:
    """The float64 Gram matrix of a row-normalised table and the row counts behind it.

    Attributes:
        gram: ``[K, K]`` float64, ``sum_rows e_hat^T e_hat`` over the rows that were kept.
        rows: rows kept (finite and not all zero).
        excluded_rows: rows left out because they held a NaN/inf or were all zero.
    """

    gram: torch.Tensor
    rows: int
    excluded_rows: int

    def __add__(self, other: "RowNormalizedGram") -> "RowNormalizedGram":
        return RowNormalizedGram(self.gram + other.gram, self.rows + other.rows, self.excluded_rows + other.excluded_rows)


def _chunk_rows(n_rows: int, n_cols: int, device: torch.device) -> int:
    if device.type == "cuda":
        return int(max(_MIN_CHUNK_ROWS, min(_CUDA_CHUNK_VALUES // max(n_cols, 1), n_rows // 8)))
    return int(max(_MIN_CHUNK_ROWS, min(_MAX_CHUNK_ROWS, n_rows // 64)))


@contextlib.contextmanager
def _ieee_float32_matmul() -> Iterator[None]:
    """Full float32 products for the duration, whatever the user chose for training.

    ``torch.set_float32_matmul_precision("high")`` (which Lightning suggests on GPUs) lets float32 products run
    in TF32 with a 10-bit mantissa: fine for training, but it would put a 1e-3 relative error on every entry
    of the Gram. The setting is global, so it is restored afterwards; callbacks run between training steps, so
    nothing of training runs in between.
    """
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _eigenbasis(gram: torch.Tensor) -> torch.Tensor:
    """Orthonormal eigenvectors of a small symmetric float64 matrix, on its device.

    On a GPU a K x K ``eigh`` is a solver launch that costs more than a chunk's products; the K^2 values go
    to the host and back instead (a few kB, never the table).
    """
    symmetric = (gram + gram.T) * 0.5
    if gram.is_cuda:
        return torch.linalg.eigh(symmetric.cpu()).eigenvectors.to(gram.device, non_blocking=True)
    return torch.linalg.eigh(symmetric).eigenvectors


def row_normalized_gram(
    weight: torch.Tensor,
    *,
    normalize_rows: bool = True,
    chunk_rows: int | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RowNormalizedGram:
    """Accumulate ``G = E_hat^T E_hat`` over row chunks of ``weight`` in one pass.

    Args:
        weight: ``[rows, K]`` table, any float dtype, any device. It is read, never copied whole.
        normalize_rows: divide each row by ``||row|| + 1e-8`` first (the paper's definition).
        chunk_rows: rows per chunk; by default chosen from the table's shape.
        transform: applied to each chunk before normalising (e.g. ``chunk @ W.T`` for the sub-embeddings of
            an interaction layer), so a derived table is analysed without ever being materialised.

    Returns:
        :class:`RowNormalizedGram` with a float64 ``[K, K]`` Gram on ``weight``'s device. Rows that hold a
        non-finite value, and all-zero rows, are excluded and counted.

    Float32 products run at full precision (TF32 is switched off for the call, see :func:`_ieee_float32_matmul`).
    """
    with _ieee_float32_matmul():
        return _row_normalized_gram(weight, normalize_rows, chunk_rows, transform)


def _row_normalized_gram(weight, normalize_rows, chunk_rows, transform) -> RowNormalizedGram:
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D table [rows, columns], got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise TypeError(f"expected a floating-point table, got dtype {weight.dtype}")
    weight = weight.detach()
    n_rows = weight.shape[0]
    # float64 tables keep float64 throughout; anything narrower is computed in float32.
    work_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    gram: torch.Tensor | None = None
    basis: torch.Tensor | None = None
    kept = 0
    step = chunk_rows or _chunk_rows(n_rows, weight.shape[1], weight.device)
    # The first chunk is small: it is Gram-ed in float64 (exact) only to seed the eigenbasis, and float64 buffers
    # of a full chunk would be the largest allocation of the whole pass.
    starts = [0] + list(range(min(step, _FIRST_CHUNK_ROWS), n_rows, step)) if n_rows else []
    for index, start in enumerate(starts):
        stop = starts[index + 1] if index + 1 < len(starts) else n_rows
        chunk = weight[start:stop].to(work_dtype)
        if transform is not None:
            chunk = transform(chunk)
        if gram is None:
            gram = torch.zeros(chunk.shape[1], chunk.shape[1], dtype=torch.float64, device=weight.device)
        norms = torch.linalg.vector_norm(chunk, dim=1)
        # A NaN/inf anywhere in a row makes its norm non-finite; a zero row has norm 0.
        valid = torch.isfinite(norms) & (norms > 0)
        n_valid = int(valid.sum())
        if n_valid < chunk.shape[0]:
            chunk, norms = chunk[valid], norms[valid]
        kept += n_valid
        if n_valid == 0:
            continue
        scale = 1.0 / (norms + ROW_NORM_EPS) if normalize_rows else torch.ones_like(norms)
        if basis is None:
            # First chunk: exact float64 Gram gives the starting eigenbasis.
            c64 = chunk.to(torch.float64) * scale.to(torch.float64)[:, None]
            gram.addmm_(c64.T, c64)
        else:
            rotated = (chunk @ basis.to(work_dtype)).mul_(scale[:, None])
            gram += basis @ (rotated.T @ rotated).to(torch.float64) @ basis.T
        last_chunk = index + 1 == len(starts)
        if not last_chunk and (basis is None or index < _EIGH_EVERY or index % _EIGH_EVERY == 0):
            # Orthonormal eigenvectors of the Gram so far. Refreshing it every chunk early on, then every few
            # chunks, keeps the basis current at a fraction of the chunk's own cost (a stale basis only costs
            # accuracy in proportion to how much the new rows' directions differ from all earlier rows').
            basis = _eigenbasis(gram)
    if gram is None:  # a table with no rows
        width = weight.shape[1] if transform is None else transform(weight[:0].to(work_dtype)).shape[1]
        gram = torch.zeros(width, width, dtype=torch.float64, device=weight.device)
    return RowNormalizedGram(gram=gram, rows=kept, excluded_rows=n_rows - kept)


def singular_values_from_gram(gram: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Descending singular values ``sqrt(eig(G))`` in float64, optionally cut or zero-padded to ``length``."""
    eig = torch.linalg.eigvalsh((gram.to(torch.float64) + gram.to(torch.float64).T) * 0.5)
    sv = eig.clamp_min(0.0).sqrt().flip(0)
    if length is not None:
        if length <= sv.numel():
            sv = sv[:length]
        else:
            sv = torch.cat([sv, sv.new_zeros(length - sv.numel())])
    return sv


def singular_values(weight: torch.Tensor, *, normalize_rows: bool = True) -> torch.Tensor:
    """Descending float64 singular values of the (row-normalised) table, length ``min(rows, K)``.

    Computed from the streamed Gram of :func:`row_normalized_gram` (one pass, memory independent of the row
    count). Excluded rows (non-finite or all-zero) do not contribute; a table with fewer valid rows than ``K``
    has zeros past its rank.
    """
    result = row_normalized_gram(weight, normalize_rows=normalize_rows)
    return singular_values_from_gram(result.gram, min(weight.shape[0], weight.shape[1]))


def all_reduce_gram(result: RowNormalizedGram, group=None) -> RowNormalizedGram:
    """Sum a rank-local :class:`RowNormalizedGram` over a process group: one all-reduce of K*K + 2 float64s.

    For row-sharded tables (TorchRec-style model parallel, FSDP shards): each rank streams its own rows, and
    because G and the row counts are sums, the reduced result is exactly the whole table's. Every rank of the
    group must call this, in the same order for the same tables. Without an initialised process group it
    returns ``result`` unchanged.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return result
    gram = result.gram
    packed = torch.cat([gram.flatten(), torch.tensor([float(result.rows), float(result.excluded_rows)],
                                                     dtype=torch.float64, device=gram.device)])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    k = gram.shape[0]
    return RowNormalizedGram(gram=packed[: k * k].view(k, k), rows=int(round(float(packed[-2]))),
                             excluded_rows=int(round(float(packed[-1]))))


def sharded_singular_values(local_weight: torch.Tensor, *, normalize_rows: bool = True, group=None) -> torch.Tensor:
    """:func:`singular_values` of a table whose rows are split across ranks; each rank passes its own rows.

    Length ``min(total rows, K)``; equal on every rank.
    """
    total = all_reduce_gram(row_normalized_gram(local_weight, normalize_rows=normalize_rows), group=group)
    all_rows = total.rows + total.excluded_rows
    return singular_values_from_gram(total.gram, min(all_rows, local_weight.shape[1]))


def normalized_spectrum(sv: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """``s / s_1`` zero-padded to ``length`` (the rows of the paper's spectrum heatmap). All-zero -> zeros."""
    sv = sv.to(torch.float64)
    top = sv.max() if sv.numel() else sv.new_zeros(())
    out = sv / top if float(top) > 0 else torch.zeros_like(sv)
    if length is not None and length > out.numel():
        out = torch.cat([out, out.new_zeros(length - out.numel())])
    return out


def information_abundance(sv: torch.Tensor) -> torch.Tensor:
    """``IA = sum(s) / max(s)`` (Guo et al. 2024): 1 for a rank-one table, K for an isotropic one.

    Returns 0 for an all-zero spectrum (an empty table has no information), never NaN.
    """
    sv = sv.to(torch.float64)
    top = sv.max(dim=-1).values
    return torch.where(top > 0, sv.sum(dim=-1) / top.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(top))


def effective_rank(sv: torch.Tensor) -> torch.Tensor:
    """``exp(H(p))``, ``p_k = s_k / sum(s)`` (Roy and Vetterli 2007; "RankMe"). 0 for an all-zero spectrum."""
    sv = sv.to(torch.float64)
    total = sv.sum(dim=-1, keepdim=True)
    p = sv / total.clamp_min(torch.finfo(torch.float64).tiny)
    entropy = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))


def stable_rank(sv: torch.Tensor) -> torch.Tensor:
    """``sum(s^2) / max(s)^2``, the squared Frobenius over squared spectral norm. 0 for an all-zero spectrum."""
    sv = sv.to(torch.float64)
    top = sv.max(dim=-1).values
    return torch.where(top > 0, (sv**2).sum(dim=-1) / top.clamp_min(1e-300) ** 2, torch.zeros_like(top))
