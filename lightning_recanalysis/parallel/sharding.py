"""Reading a weight that lives in pieces across processes, exactly, without gathering it whole.

When a table outgrows one device it is sharded: Lightning's ``ModelParallelStrategy`` (FSDP2 ``fully_shard``,
tensor parallelism) turns every parameter into a :class:`~torch.distributed.tensor.DTensor` whose
``placements`` say, per mesh dimension, whether the rows are split (``Shard(0)``), the columns (``Shard(1)``) or
the whole tensor is copied (``Replicate()``). Every rank then holds one rectangular *block* of the global tensor.

The analyses need three things of such a weight, and each is exact here:

- the Gram ``G = E_hat^T E_hat`` of a row range and column range of the row-normalised table (spectra,
  information abundance, interaction sub-embeddings): :func:`sharded_gram`. When every block holds whole rows of
  the requested columns (row sharding, replication: FSDP2's ``Shard(0)``), ``G`` is a sum over rows, so each
  rank streams its own rows and one all-reduce of ``K^2 + 3`` numbers sums them; extra memory O(K^2) plus a
  chunk. When the columns are split (``Shard(1)``), a row's norm and its products need every column, so the
  rows are assembled chunk by chunk (one all-reduce of a ``[chunk, K]`` buffer per chunk, each rank filling
  the cells it holds) and never more than a chunk of the table is on any rank.
- some rows of the table, identical on every rank (the rows of a few categories or sampled users and items):
  :func:`lookup_rows`, one all-reduce of ``[len(ids), K]``.
- a small tensor whole (a cross layer's kernel, a position table): :func:`full_tensor`.

A replicated block is counted once: a rank contributes its block only if its coordinate along every
``Replicate`` mesh dimension is 0. Plain tensors (a single process, or DDP, where every rank holds the same whole
weight) need no communication at all and go straight to the single-process functions.

Layouts (which block each rank holds, and whether it can be read) are described in
:mod:`~lightning_recanalysis.parallel.shard_layout`; its names are importable from here too. Layouts that cannot be read
exactly are refused by :func:`check_readable` with a message that names the placement: ``Partial`` (a pending sum),
strided shards (FSDP2 combined with tensor parallelism on the same dimension), and meshes of several dimensions
that span only some processes. A table on a one-dimensional sub-mesh (``fully_shard(table,
mesh=mesh["data_parallel"])`` beside tensor parallelism) is read over that mesh's process group
(:mod:`~lightning_recanalysis.parallel.mesh_groups`); every function takes ``group=`` to override.

Every function here makes the same collectives in the same order on every rank, and a failure on one rank is
raised on every rank at the same point (its flag rides along in the collective's buffer), so no rank is left
waiting in a collective that another has abandoned. Every sum goes through
:func:`~lightning_recanalysis.parallel.distributed.sum_over_ranks`, the package's one rank-summing path.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .distributed import is_distributed, sum_over_ranks
from ..functional.spectrum import RowNormalizedGram, row_normalized_gram, singular_values_from_gram
from .mesh_groups import reading_group
from .shard_layout import (Block, ShardedTensor, ShardLayout, block_device, local_blocks, shape2, check_readable,
                           is_sharded, layout_of)

# The layout names stay importable from here, where the reads that use them are.
__all__ = ["Block", "ShardLayout", "ShardedReadError", "layout_of", "check_readable", "row_sum", "sharded_gram",
           "lookup_rows", "full_tensor", "is_sharded", "all_reduce_gram",
           "sharded_singular_values"]

# Values per chunk: a rank's own rows are streamed (row shards), or whole rows assembled (column shards, one
# all-reduce per chunk), 2^18 values at a time: 1 MiB in float32, so that the few buffers of a pass stay a small
# share of any shard worth sharding (tested: under 5% of a 1,000,000 x 32 shard, benchmarks/bench_sharded_memory).
_CHUNK_VALUES = 1 << 18

def _summed_with_flag(buffer: torch.Tensor, failed: bool, group=None) -> tuple[torch.Tensor, bool]:
    """``buffer`` (1-D, its last element this rank's failure flag) summed over the group, and whether any rank
    failed: the flag rides in the same all-reduce (:func:`~lightning_recanalysis.parallel.distributed.sum_over_ranks`) as
    the numbers, so every rank learns of a failure at the same collective."""
    buffer[-1] = float(failed)
    total = sum_over_ranks(buffer, group)
    return total, bool(total[-1] > 0)


class ShardedReadError(RuntimeError):
    """Reading a sharded weight failed on another rank; every rank raises it at the same collective.

    Example:
        >>> isinstance(ShardedReadError("reading a sharded weight failed on another rank"), RuntimeError)
        True
    """


def row_sum(
    tensor: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    rows: tuple[int, int] | None = None,
    columns: tuple[int, int] | None = None,
    *,
    group=None,
) -> torch.Tensor:
    """``fn`` over rows ``[rows)`` x columns ``[columns)`` of ``tensor``, for an ``fn`` that is a sum over rows.

    ``fn`` maps a block of whole rows ``[n, width]`` to a tensor of a fixed shape such that
    ``fn(A stacked on B) = fn(A) + fn(B)`` (a Gram, a count, a batch of partner Grams). For a plain tensor this is
    ``fn(tensor[rows, columns])``. For a ``DTensor`` each rank applies ``fn`` to whole rows it holds (row
    sharding) or to chunks of whole rows assembled from every rank (column sharding), and the parts are summed;
    every rank gets the same float64 result and must call this in the same order as the others. ``group``: the
    processes that hold the pieces (default: the tensor's own, :func:`~lightning_recanalysis.parallel.mesh_groups.
    reading_group`).

    Example:
        >>> import torch
        >>> from lightning_recanalysis.parallel.sharding import row_sum
        >>> row_sum(torch.arange(6.0).view(3, 2), lambda block: block.sum(0), rows=(1, 3)).tolist()
        [6.0, 8.0]
    """
    n_rows, n_cols = shape2(tensor)
    r0, r1 = rows if rows is not None else (0, n_rows)
    c0, c1 = columns if columns is not None else (0, n_cols)
    if not is_sharded(tensor):
        return fn(tensor.detach()[r0:r1, c0:c1])
    layout = check_readable(tensor, "the weight")
    group = reading_group(tensor) if group is None else group
    device = block_device(tensor)
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    # The result's shape, from an empty block: every rank knows it without a collective.
    shape = fn(torch.zeros(0, c1 - c0, dtype=dtype, device=device)).shape
    size = int(torch.Size(shape).numel())
    total = torch.zeros(size + 1, dtype=torch.float64, device=device)
    error: Exception | None = None
    blocks: list[Block] = []
    try:
        blocks = local_blocks(tensor)
    except Exception as err:  # raised below, once this rank has joined the collectives the others wait in
        error = err
    if layout.kind == "rows":
        if error is None:
            try:
                for block in blocks:
                    local = _rows_of(block, r0, r1, c0, c1)
                    if local is not None:
                        total[:-1] += fn(local).reshape(-1).to(torch.float64)  # fn converts chunk by chunk: no copy
            except Exception as err:
                error = err
        total, failed = _summed_with_flag(total, error is not None, group)
        if failed:
            raise error if error is not None else ShardedReadError("reading a sharded weight failed on another rank")
        return total[:-1].view(shape)
    # Split columns: every rank assembles each chunk of whole rows (one all-reduce each) and adds fn of it; a
    # failure is flagged in the next chunk's all-reduce (or the last flag), where every rank sees it and stops
    # at the same point, so all of them make the same collectives.
    width = c1 - c0
    # Assembled in the working dtype: each cell is one rank's value plus zeros, exact in float32 for any table
    # narrower than float64 (and the 0/1 failure flag too).
    step = _chunk_rows(width)
    for start in range(r0, r1, step):
        stop = min(r1, start + step)
        buffer = torch.zeros((stop - start) * width + 1, dtype=dtype, device=device)
        if error is None:
            try:
                for block in blocks:
                    _fill(buffer[:-1].view(stop - start, width), block, start, stop, c0, c1)
            except Exception as err:
                error = err
        buffer, failed = _summed_with_flag(buffer, error is not None, group)
        if failed:
            break
        try:
            total[:-1] += fn(buffer[:-1].view(stop - start, width)).reshape(-1).to(torch.float64)
        except Exception as err:
            error = err
    _, failed = _summed_with_flag(torch.zeros(1, dtype=torch.float64, device=device), error is not None, group)
    if failed:
        raise error if error is not None else ShardedReadError("reading a sharded weight failed on another rank")
    return total[:-1].view(shape)


def sharded_gram(
    tensor: torch.Tensor,
    rows: tuple[int, int] | None = None,
    columns: tuple[int, int] | None = None,
    *,
    normalize_rows: bool = True,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    group=None,
) -> RowNormalizedGram:
    """The :class:`RowNormalizedGram` of ``tensor[rows[0]:rows[1], columns[0]:columns[1]]``, on every rank.

    ``G = sum over the rows r of e_hat_r^T e_hat_r``, ``e_hat_r = t(e_r) / (||t(e_r)|| + 1e-8)`` with ``t`` the
    optional ``transform`` of a chunk of rows (as in :func:`row_normalized_gram`). For a plain tensor this is
    :func:`row_normalized_gram` of the slice; for a ``DTensor`` it is :func:`row_sum` of it (a Gram and its row
    counts are sums over rows), and every rank must call it in the same order.

    Example:
        >>> import torch
        >>> from lightning_recanalysis.parallel.sharding import sharded_gram
        >>> [round(v, 6) for v in sharded_gram(torch.eye(3), rows=(0, 2)).gram.diagonal().tolist()]
        [1.0, 1.0, 0.0]
    """
    if not is_sharded(tensor):
        n_rows, n_cols = shape2(tensor)
        r0, r1 = rows if rows is not None else (0, n_rows)
        c0, c1 = columns if columns is not None else (0, n_cols)
        return row_normalized_gram(tensor.detach()[r0:r1, c0:c1], normalize_rows=normalize_rows,
                                   transform=transform)

    def packed(block: torch.Tensor) -> torch.Tensor:
        part = row_normalized_gram(block, normalize_rows=normalize_rows, transform=transform,
                                   chunk_rows=_chunk_rows(block.shape[1]))
        counts = torch.tensor([float(part.rows), float(part.excluded_rows)], dtype=torch.float64,
                              device=part.gram.device)
        return torch.cat([part.gram.flatten(), counts])

    total = row_sum(tensor, packed, rows, columns, group=group)
    width = int(round((total.numel() - 2) ** 0.5))
    return RowNormalizedGram(gram=total[:-2].view(width, width), rows=int(round(float(total[-2]))),
                             excluded_rows=int(round(float(total[-1]))))


def _chunk_rows(width: int) -> int:
    return max(1024, _CHUNK_VALUES // max(1, width))


def _rows_of(block: Block, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor | None:
    """The part of ``block`` inside rows ``[r0, r1)``, columns ``[c0, c1)`` (whole requested columns)."""
    lo, hi = max(r0, block.row0), min(r1, block.row_stop)
    if lo >= hi:
        return None
    return block.data[lo - block.row0 : hi - block.row0, c0 - block.col0 : c1 - block.col0]


def _fill(buffer: torch.Tensor, block: Block, r0: int, r1: int, c0: int, c1: int) -> None:
    """Write the cells of ``block`` inside rows ``[r0, r1)`` x columns ``[c0, c1)`` into ``buffer`` (that window)."""
    lo, hi = max(r0, block.row0), min(r1, block.row_stop)
    left, right = max(c0, block.col0), min(c1, block.col_stop)
    if lo < hi and left < right:
        buffer[lo - r0 : hi - r0, left - c0 : right - c0] = block.data[
            lo - block.row0 : hi - block.row0, left - block.col0 : right - block.col0].to(buffer.dtype)


def lookup_rows(tensor: torch.Tensor, ids: torch.Tensor | Sequence[int], *, group=None) -> torch.Tensor:
    """``tensor[ids]`` as a plain tensor on every rank (``ids`` must be the same on every rank).

    Each rank writes the cells it holds into a zero buffer and one all-reduce (over ``group``, default the
    tensor's own) sums them: memory and traffic ``len(ids) x K``, never the table. An id outside
    ``[0, rows)`` would read as a row of zeros (no rank holds it): it is an ``IndexError`` on every rank, raised
    after the all-reduce so that every rank raises at the same point.

    Example:
        >>> import torch
        >>> from lightning_recanalysis.parallel.sharding import lookup_rows
        >>> lookup_rows(torch.arange(6.0).view(3, 2), [2, 0]).tolist()
        [[4.0, 5.0], [0.0, 1.0]]
    """
    index = torch.as_tensor(ids, dtype=torch.long)
    if not is_sharded(tensor):
        return tensor.detach()[index.to(tensor.device)]
    check_readable(tensor, "the weight")
    group = reading_group(tensor) if group is None else group
    n_rows, n_cols = shape2(tensor)
    device = block_device(tensor)
    index = index.to(device)
    buffer = torch.zeros(index.numel() * n_cols + 1, dtype=torch.float64, device=device)
    error: Exception | None = None
    outside = index[(index < 0) | (index >= n_rows)]
    if outside.numel():
        error = IndexError(f"ids {outside[:5].tolist()} are outside the {n_rows} rows of the sharded weight "
                           f"[0, {n_rows})")
    else:
        try:
            view = buffer[:-1].view(index.numel(), n_cols)
            for block in local_blocks(tensor):
                mine = (index >= block.row0) & (index < block.row_stop)
                view[mine, block.col0 : block.col_stop] = block.data[index[mine] - block.row0].to(torch.float64)
        except Exception as err:
            error = err
    buffer, failed = _summed_with_flag(buffer, error is not None, group)
    if failed:
        raise error if error is not None else ShardedReadError("looking up rows of a sharded weight failed on "
                                                               "another rank")
    return buffer[:-1].view(index.numel(), n_cols).to(tensor.dtype)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a small weight (a cross layer's kernel, a position table) as a plain tensor on every rank.

    DTensor's own ``full_tensor`` (an all-gather that any placement, strided and partial included, knows how to
    undo). For tables use :func:`sharded_gram`, :func:`row_sum` or :func:`lookup_rows`, which never hold the
    whole table.

    Example:
        >>> full_tensor(torch.eye(2)).tolist()  # a plain tensor: itself, detached
        [[1.0, 0.0], [0.0, 1.0]]
    """
    if not is_sharded(tensor):
        return tensor.detach()
    if isinstance(tensor, ShardedTensor):
        return lookup_rows(tensor, torch.arange(tensor.shape[0]))
    return tensor.detach().full_tensor()


def all_reduce_gram(result: RowNormalizedGram, group=None) -> RowNormalizedGram:
    """Sum a rank-local :class:`RowNormalizedGram` over a process group: one all-reduce of K*K + 2 float64s.

    For row-sharded tables (TorchRec-style model parallel, FSDP shards): each rank streams its own rows, and
    because G and the row counts are sums, the reduced result is exactly the whole table's. Every rank of the
    group must call this, in the same order for the same tables. Without an initialised process group it
    returns ``result`` unchanged.

    Example:
        >>> part = row_normalized_gram(torch.eye(2))
        >>> all_reduce_gram(part) is part  # without torch.distributed, the local Gram is the whole
        True
    """
    if not is_distributed():
        return result
    gram = result.gram
    packed = torch.cat([gram.flatten(), torch.tensor([float(result.rows), float(result.excluded_rows)],
                                                     dtype=torch.float64, device=gram.device)])
    packed = sum_over_ranks(packed, group)
    k = gram.shape[0]
    return RowNormalizedGram(gram=packed[: k * k].view(k, k), rows=int(round(float(packed[-2]))),
                             excluded_rows=int(round(float(packed[-1]))))


def sharded_singular_values(local_weight: torch.Tensor, *, normalize_rows: bool = True, group=None) -> torch.Tensor:
    """:func:`singular_values` of a table whose rows are split across ranks; each rank passes its own rows.

    Length ``min(total rows, K)``; equal on every rank.

    Example:
        >>> sharded_singular_values(torch.eye(3)).round(decimals=4)  # one process: all the rows
        tensor([1., 1., 1.], dtype=torch.float64)
    """
    total = all_reduce_gram(row_normalized_gram(local_weight, normalize_rows=normalize_rows), group=group)
    all_rows = total.rows + total.excluded_rows
    return singular_values_from_gram(total.gram, min(all_rows, local_weight.shape[1]))
