"""Singular-value spectra of embedding tables and the collapse measures built on them.

Guo et al., "On the Embedding Collapse when Scaling up Recommendation Models" (ICML 2024) measure how much of
an embedding table's K-dimensional space is used by the *information abundance* of its row-normalised table:

    E_hat = rows of E divided by (||row||_2 + 1e-8)      (rows are not mean-centred)
    s_1 >= ... >= s_r  singular values of E_hat,  r = min(rows, K)
    IA(E) = sum_k s_k / s_1                                in [1, r]

The singular values are the square roots of the eigenvalues of the K x K Gram matrix G = E_hat^T E_hat, a sum
over rows. :func:`row_normalized_gram` accumulates G chunk by chunk in one pass, so memory does not grow with the
row count, and sums of G over shards or ranks give the G of the whole table.

Why two passes: a float32 Gram loses every singular value below about sqrt(eps_32) * s_1 ~ 3e-4 * s_1, because
the rounding error of a float32 product sum is relative to the *largest* direction. A float64 Gram is exact but
runs at half the float32 rate. Here the first pass forms the float32 Gram (chunk products summed in float64),
whose error is bounded by a small multiple of eps_32 * trace(G). Its eigenvalues that are large enough for that
error not to matter are kept as they are; the few directions V_s whose eigenvalues are too small to trust get a
second, narrow pass: the normalised rows are projected onto V_s (N x m, in float32: the projections are small,
so their rounding error is relative to them and not to s_1) and the m x m block V_s^T G V_s is recomputed from
them. A table with no such directions (the common, uncollapsed case) is read once.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

# The measures of a spectrum live in their own module; imported here so that this module serves them too.
from .spectrum_measures import effective_rank, information_abundance, normalized_spectrum, stable_rank


__all__ = [
    "RowNormalizedGram",
    "row_normalized_gram",
    "singular_values_from_gram",
    "singular_values",
    "normalized_spectrum",
    "information_abundance",
    "effective_rank",
    "stable_rank",
]

#: The epsilon that Guo et al. add to each row norm before dividing.
ROW_NORM_EPS = 1e-8

# Rows per chunk on a CPU: a float32 chunk of about 1 MiB stays in the cache from its row norms through its
# scaling to its product, so the table is read from memory once, as by a single A^T A (512 KiB chunks, with
# twice the per-chunk Python overhead, were 10 to 15% slower at 16 columns; 2 MiB about as fast).
_CPU_CHUNK_BYTES = 1 << 20
_MIN_CHUNK_ROWS = 256
# Chunks per task handed to a worker thread (see _map_row_ranges): enough work per task that a task's Python
# overhead vanishes, enough tasks that a worker slowed by another process on its core is balanced by the others.
_CHUNKS_PER_TASK = 8
# On a GPU a small chunk is a few microseconds of work and the pass would be all launch overhead: chunks
# there hold up to 2^23 values (32 MiB in float32), still a small fraction of any table worth streaming.
_CUDA_CHUNK_VALUES = 1 << 23
# Tables of at most this many values take one exact float64 product (8 MiB at most): at that size the float32
# pass, its eigendecomposition and a possible second pass cost more than the float64 product itself.
_EXACT_MAX_VALUES = 1 << 20
# ||G_32 - G||_2 <= _FLOAT32_GRAM_ERROR * trace(G) for the float32 Gram summed chunk by chunk in float64: ten
# times the largest ratio measured on Gaussian, uniform-positive, near-constant, heavy-tailed and low-rank
# tables of 400,000 rows (8e-9 at most).
_FLOAT32_GRAM_ERROR = 1e-7
# An eigenvalue is taken from the float32 Gram only when that error moves its singular value by at most this
# fraction of s_1 (a third of the 3e-5 accuracy the tests hold every singular value to).
_TRUSTED_SV_ERROR = 1e-5



@dataclass
class RowNormalizedGram:
    """The float64 Gram matrix of a row-normalised table and the row counts behind it.

    Attributes:
        gram: ``[K, K]`` float64, ``sum_rows e_hat^T e_hat`` over the rows that were kept.
        rows: rows kept (finite and not all zero).
        excluded_rows: rows left out because they held a NaN/inf or were all zero.

    Example:
        >>> a = row_normalized_gram(torch.tensor([[3.0, 4.0]]))
        >>> b = row_normalized_gram(torch.tensor([[0.0, 2.0], [0.0, 0.0]]))
        >>> total = a + b  # the Gram of the two tables' rows together
        >>> total.gram.round(decimals=4), total.rows, total.excluded_rows
        (tensor([[0.3600, 0.4800],
                [0.4800, 1.6400]], dtype=torch.float64), 2, 1)
    """

    gram: torch.Tensor
    rows: int
    excluded_rows: int

    def __add__(self, other: "RowNormalizedGram") -> "RowNormalizedGram":
        return RowNormalizedGram(self.gram + other.gram, self.rows + other.rows,
                                 self.excluded_rows + other.excluded_rows)


def _chunk_rows(n_rows: int, n_cols: int, device: torch.device) -> int:
    if device.type == "cuda":
        return int(max(_MIN_CHUNK_ROWS, min(_CUDA_CHUNK_VALUES // max(n_cols, 1), n_rows // 8)))
    return int(max(_MIN_CHUNK_ROWS, _CPU_CHUNK_BYTES // (4 * max(n_cols, 1))))


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


def _eigh(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending eigenvalues and orthonormal eigenvectors of a small symmetric float64 matrix, on its device.

    On a GPU a K x K ``eigh`` is a solver launch that costs more than a chunk's products; the K^2 values go
    to the host and back instead (a few kB, never the table).
    """
    symmetric = (gram + gram.T) * 0.5
    values, vectors = torch.linalg.eigh(symmetric.cpu())
    return values, vectors.to(gram.device, non_blocking=True)


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Torch operators run single-threaded for the duration (the worker threads parallelise instead).

    The setting is global and is restored afterwards; callbacks run between training steps, so nothing of
    training runs in between.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _map_row_ranges(task: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]], n_rows: int, step: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum ``task(start, stop)`` (a float64 Gram block and a kept-row count) over the table's rows.

    On a CPU with several torch threads, runs of ``_CHUNKS_PER_TASK`` chunks go to as many worker threads, each
    operator single-threaded (torch releases the GIL inside operators). A chunk's operators, each split over
    all threads, would wait on every thread at every operator: on this project's 2-core machine, a second busy
    process slowed that 5 to 20 times, while workers that each take the next run of chunks when done only lose
    the busy core's share. The results are summed in row order, so the sum does not depend on the scheduling.
    """
    threads = torch.get_num_threads()
    span = step * _CHUNKS_PER_TASK
    if device.type != "cpu" or threads == 1 or n_rows <= span:
        return task(0, n_rows)
    ranges = [(start, min(start + span, n_rows)) for start in range(0, n_rows, span)]
    with _one_intra_op_thread(), ThreadPoolExecutor(min(threads, len(ranges))) as pool:
        parts = list(pool.map(lambda r: task(*r), ranges))
    return sum(p[0] for p in parts[1:]) + parts[0][0], sum(p[1] for p in parts[1:]) + parts[0][1]


def _gram_of_rows(weight: torch.Tensor, start: int, stop: int, step: int, work_dtype: torch.dtype,
                  transform, normalize_rows: bool,
                  basis: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | int]:
    """Float64 ``sum Y^T Y`` over rows ``start:stop`` in chunks of ``step``, and the rows kept.

    ``Y`` holds the chunk's finite, non-zero rows (after ``transform``), divided by their norm plus 1e-8 when
    ``normalize_rows``, and projected onto ``basis`` (``[K, m]``) when one is given. Each chunk's product runs
    in ``work_dtype`` and is added in float64.
    """
    width = basis.shape[1] if basis is not None else None
    gram: torch.Tensor | None = None
    # A count on the device for a GPU (read once, at the end), a plain int on a CPU.
    kept = torch.zeros((), dtype=torch.int64, device=weight.device) if weight.is_cuda else 0
    scaled_buffer = None
    for first in range(start, stop, step):
        chunk = weight[first : min(first + step, stop)]
        if transform is not None:  # given the table's own precision (float64, else float32) in either pass
            chunk = transform(chunk.to(torch.float64 if weight.dtype == torch.float64 else torch.float32))
        if chunk.dtype != work_dtype:
            chunk = chunk.to(work_dtype)
        if gram is None:
            width = width or chunk.shape[1]
            gram = torch.zeros(width, width, dtype=torch.float64, device=weight.device)
        norms = torch.linalg.vector_norm(chunk, dim=1)
        # A NaN/inf anywhere in a row makes its norm non-finite; a zero row has norm 0.
        if chunk.is_cuda:  # masked rather than compacted: no synchronisation per chunk
            valid = torch.isfinite(norms) & (norms > 0)
            kept += valid.sum()
            scale = torch.where(valid, 1.0 / (norms + ROW_NORM_EPS) if normalize_rows else 1.0, 0.0)
            scaled = torch.where(valid[:, None], chunk * scale[:, None], 0.0)
            if basis is not None:
                scaled = scaled @ basis
        else:
            # One reduction answers "are all rows valid?" (a NaN fails both comparisons); the mask only if not.
            smallest, largest = torch.aminmax(norms)
            if float(smallest) > 0 and float(largest) < float("inf"):
                kept += chunk.shape[0]
            else:
                valid = torch.isfinite(norms) & (norms > 0)
                chunk, norms = chunk[valid], norms[valid]
                kept += chunk.shape[0]
                if chunk.shape[0] == 0:
                    continue
            if basis is not None:
                # Projected first, then scaled: a row's scale is one factor, so this is the same as scaling
                # first, with m columns to scale instead of K.
                scaled = chunk @ basis
                if normalize_rows:
                    scaled.mul_(norms.add_(ROW_NORM_EPS).reciprocal_()[:, None])
            elif normalize_rows:
                if scaled_buffer is None:
                    scaled_buffer = torch.empty(step, chunk.shape[1], dtype=work_dtype)
                # norms is a fresh tensor: scaling in place saves an allocation per chunk.
                scaled = torch.mul(chunk, norms.add_(ROW_NORM_EPS).reciprocal_()[:, None],
                                   out=scaled_buffer[: chunk.shape[0]])
            else:
                scaled = chunk
        gram += (scaled.T @ scaled).to(torch.float64)
    if gram is None:
        gram = torch.zeros(width or 0, width or 0, dtype=torch.float64, device=weight.device)
    return gram, kept


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

    Example:
        >>> result = row_normalized_gram(torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]]))
        >>> result.gram.round(decimals=4), result.rows
        (tensor([[1.5000, 0.5000],
                [0.5000, 1.5000]], dtype=torch.float64), 3)
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
    # float64 tables, and tables small enough for one float64 product, are exact in one pass; anything else
    # is computed in float32 with the second pass below for the directions float32 cannot resolve.
    exact = weight.dtype == torch.float64 or n_rows * weight.shape[1] <= _EXACT_MAX_VALUES
    work_dtype = torch.float64 if exact else torch.float32
    step = chunk_rows or (max(n_rows, 1) if n_rows * weight.shape[1] <= _EXACT_MAX_VALUES
                          else _chunk_rows(n_rows, weight.shape[1], weight.device))

    def gram_pass(basis: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return _map_row_ranges(lambda start, stop: _gram_of_rows(weight, start, stop, step, work_dtype, transform,
                                                                 normalize_rows, basis),
                               n_rows, step, weight.device)

    gram, kept = gram_pass(None)
    if n_rows == 0:  # still a K x K Gram (an empty shard all-reduces with the others); a derived table's width
        # comes from an empty chunk
        width = weight.shape[1] if transform is None else transform(
            weight[:0].to(torch.float64 if weight.dtype == torch.float64 else torch.float32)).shape[1]
        gram = torch.zeros(width, width, dtype=torch.float64, device=weight.device)
    kept = int(kept)
    if not exact and kept > 0:
        gram = _resolve_small_directions(gram, gram_pass)
    return RowNormalizedGram(gram=gram, rows=kept, excluded_rows=n_rows - kept)


def _resolve_small_directions(gram: torch.Tensor, gram_pass) -> torch.Tensor:
    """Replace the block of a float32-accurate Gram that float32 cannot resolve by a narrow second pass.

    With ``delta = _FLOAT32_GRAM_ERROR * trace(G)`` bounding the float32 error, an eigenvalue lambda moves its
    singular value by at most ``delta / (2 sqrt(lambda))``; it is kept when that is at most
    ``_TRUSTED_SV_ERROR * s_1``. The eigenvectors V_s of the others span the block recomputed from rows projected
    onto them: ``G <- G + V_s (C - V_s^T G V_s) V_s^T`` with ``C = sum (y V_s)^T (y V_s)``. Leaving out the
    coupling between V_s and the trusted directions (of the order of delta) moves the small eigenvalues by
    about delta^2 / lambda_trusted, far below the bar.
    """
    eigenvalues, vectors = _eigh(gram)
    top = float(eigenvalues[-1])
    if top <= 0:
        return gram
    delta = _FLOAT32_GRAM_ERROR * float(eigenvalues.clamp_min(0).sum())
    trusted_from = (delta / (2 * _TRUSTED_SV_ERROR)) ** 2 / top
    small = vectors[:, (eigenvalues < trusted_from).to(vectors.device)]
    if small.shape[1] == 0:
        return gram
    block, _ = gram_pass(small.to(torch.float32))
    return gram + small @ (block - small.T @ gram @ small) @ small.T


def singular_values_from_gram(gram: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Descending singular values ``sqrt(eig(G))`` in float64, optionally cut or zero-padded to ``length``.

    Example:
        >>> singular_values_from_gram(torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
        tensor([2., 1.], dtype=torch.float64)
    """
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

    Example:
        >>> singular_values(torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 0.0]])).round(decimals=4)
        tensor([1.4142, 1.0000], dtype=torch.float64)
    """
    result = row_normalized_gram(weight, normalize_rows=normalize_rows)
    return singular_values_from_gram(result.gram, min(weight.shape[0], weight.shape[1]))
