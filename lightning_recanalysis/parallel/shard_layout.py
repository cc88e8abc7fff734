"""Where the pieces of a sharded weight lie: its layout across processes and the block this rank holds.

A :class:`~torch.distributed.tensor.DTensor` says in its ``placements``, per mesh dimension, whether the rows
are split (``Shard(0)``), the columns (``Shard(1)``) or the whole tensor is copied (``Replicate()``); TorchRec's
``ShardedTensor`` lists its rectangles in its global metadata. From these alone (the same on every rank, no
communication) :func:`layout_of` says how a 2-D weight is laid out (:class:`ShardLayout`), and
:func:`check_readable` refuses, with a message that names the placement, a layout the analyses cannot read
exactly. ``local_blocks`` gives the :class:`Block` s this rank holds and counts: a replicated block is counted
once, by the rank whose coordinate along every ``Replicate`` mesh dimension is 0.

The reads themselves (Grams, row lookups, sums over rows) are in :mod:`~lightning_recanalysis.parallel.sharding`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .mesh_groups import mesh_problem

__all__ = ["Block", "ShardLayout", "block_device", "check_readable", "is_sharded", "layout_of", "local_blocks", "shape2"]

try:  # part of torch.distributed; absent on builds without distributed support
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
except ImportError:  # pragma: no cover
    DTensor = Partial = Replicate = Shard = ShardedTensor = None  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class Block:
    """Rows ``[row0, row0 + rows)`` and columns ``[col0, col0 + cols)`` of the global tensor held by this rank.

    Example:
        >>> block = Block(torch.zeros(3, 4), row0=6, col0=0)  # rows 6-8, columns 0-3 of the global tensor
        >>> block.row_stop, block.col_stop
        (9, 4)
    """

    data: torch.Tensor
    row0: int
    col0: int

    @property
    def row_stop(self) -> int:
        return self.row0 + int(self.data.shape[0])

    @property
    def col_stop(self) -> int:
        return self.col0 + int(self.data.shape[1])


@dataclass(frozen=True)
class ShardLayout:
    """How a 2-D weight is laid out across processes, the same description on every rank.

    Attributes:
        shape: the global ``(rows, columns)``.
        kind: ``"local"`` (a plain tensor: one process, or a copy on every rank), ``"rows"`` (every block holds
            whole rows: row sharding and/or replication) or ``"columns"`` (some blocks hold part of a row).
        placements: the placements in words, for messages (``"Shard(dim=0)"``, ...); empty for a plain tensor.
        problem: why the layout cannot be read exactly, or ``None``.

    Example:
        >>> layout_of(torch.zeros(5, 3))
        ShardLayout(shape=(5, 3), kind='local', placements=(), problem=None)
    """

    shape: tuple[int, int]
    kind: str
    placements: tuple[str, ...] = ()
    problem: str | None = None


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a distributed tensor (a ``DTensor``, or the ``ShardedTensor`` of TorchRec's sharded
    tables) read through this module, rather than a plain one.

    Example:
        >>> is_sharded(torch.zeros(5, 3))  # a plain tensor: read as it is
        False
    """
    return DTensor is not None and isinstance(tensor, (DTensor, ShardedTensor))


def layout_of(tensor: torch.Tensor) -> ShardLayout:
    """The :class:`ShardLayout` of a plain tensor, a ``DTensor`` or a ``ShardedTensor`` (from global metadata
    only, the same on every rank).

    Example:
        >>> layout_of(torch.zeros(5, 3)).kind  # one process, or a copy on every rank (DDP)
        'local'
    """
    if not is_sharded(tensor):
        return ShardLayout(shape=shape2(tensor), kind="local")
    if isinstance(tensor, ShardedTensor):
        return _sharded_tensor_layout(tensor)
    placements = tuple(tensor.placements)
    words = tuple(repr(p) for p in placements)
    shape = shape2(tensor)
    problem = None
    split_columns = False
    for placement in placements:
        if isinstance(placement, Replicate):
            continue
        if isinstance(placement, Partial):
            problem = f"a Partial placement ({placement!r}) holds summands, not values, until it is reduced"
        elif type(placement) is Shard and placement.dim in (0, 1, -1, -2):
            split_columns |= placement.dim % 2 == 1
        else:
            problem = (f"placement {placement!r} (strided or custom sharding) does not say which rows and columns "
                       "each rank holds")
    if problem is None:
        problem = mesh_problem(tensor)
    return ShardLayout(shape=shape, kind="columns" if split_columns else "rows", placements=words, problem=problem)


def _sharded_tensor_layout(tensor) -> ShardLayout:
    """TorchRec's table-wise, column-wise and table-column-wise shards (and row-wise ones, on GPUs): rectangles,
    each on one rank, listed in the global metadata."""
    shape = shape2(tensor)
    shards = tensor.metadata().shards_metadata
    words = tuple(f"rows {m.shard_offsets[0]}+{m.shard_sizes[0]}, columns {m.shard_offsets[1]}+{m.shard_sizes[1]} "
                  f"on {m.placement}" for m in shards)
    covered = sum(m.shard_sizes[0] * m.shard_sizes[1] for m in shards)
    problem = None if covered == shape[0] * shape[1] else (
        f"its shards cover {covered} of its {shape[0] * shape[1]} cells (overlapping or missing shards)")
    split_columns = any(m.shard_sizes[1] != shape[1] for m in shards)
    return ShardLayout(shape=shape, kind="columns" if split_columns else "rows", placements=words, problem=problem)


def check_readable(tensor: torch.Tensor, name: str) -> ShardLayout:
    """The layout of ``tensor``, or a ``ValueError`` that names the weight and its placement if it cannot be
    read exactly (call it at setup, before the first step).

    Example:
        >>> check_readable(torch.zeros(5, 3), "model.table.weight").shape
        (5, 3)
        >>> check_readable(torch.zeros(5), "model.bias")
        Traceback (most recent call last):
        ...
        ValueError: expected a 2-D weight [rows, columns], got shape (5,)
    """
    layout = layout_of(tensor)
    if layout.problem is not None:
        raise ValueError(f"`{name}` is a {type(tensor).__name__} laid out as {list(layout.placements)}, which the "
                         f"analyses cannot read exactly: {layout.problem}. Shard embedding tables by rows (FSDP2's "
                         "default Shard(0)) or by columns (Shard(1)) on a mesh that spans every process or on one "
                         "dimension of it, or exclude the table from the monitor.")
    return layout


def shape2(tensor: torch.Tensor) -> tuple[int, int]:
    if tensor.dim() != 2:
        raise ValueError(f"expected a 2-D weight [rows, columns], got shape {tuple(tensor.shape)}")
    return int(tensor.shape[0]), int(tensor.shape[1])


def local_blocks(tensor: torch.Tensor) -> list[Block]:
    """The blocks this rank holds and counts: a ``ShardedTensor``'s local shards; a ``DTensor``'s one local
    block, or none where another rank holds the same block (a replica) and counts it."""
    if isinstance(tensor, ShardedTensor):
        return [Block(shard.tensor.detach(), int(shard.metadata.shard_offsets[0]),
                      int(shard.metadata.shard_offsets[1])) for shard in tensor.local_shards()]
    block = _dtensor_block(tensor)
    return [] if block is None else [block]


def _dtensor_block(tensor: torch.Tensor) -> Block | None:
    """Where this rank's block of a DTensor starts: ``Shard(d)`` cuts dimension d as ``torch.chunk`` does (pieces
    of ``ceil(size / n)``, the last ones shorter or empty), mesh dimension by mesh dimension, each cutting the
    piece the previous ones left. (DTensor's own helper for this builds an index over every row: megabytes for
    a large table, and private.) The block's shape is checked against the local tensor's."""
    mesh, placements = tensor.device_mesh, tensor.placements
    coordinate = mesh.get_coordinate()
    if coordinate is None:
        return None
    if any(isinstance(p, Replicate) and c != 0 for p, c in zip(placements, coordinate)):
        return None
    sizes, offsets = [int(tensor.shape[0]), int(tensor.shape[1])], [0, 0]
    for mesh_dim, placement in enumerate(placements):
        if isinstance(placement, Shard):
            dim = placement.dim % 2
            pieces, index = mesh.size(mesh_dim), coordinate[mesh_dim]
            chunk = -(-sizes[dim] // pieces)
            start = min(index * chunk, sizes[dim])
            offsets[dim] += start
            sizes[dim] = min(start + chunk, sizes[dim]) - start
    local = tensor.to_local().detach()
    if tuple(local.shape) != tuple(sizes):
        raise ValueError(f"a DTensor with placements {list(placements)} holds a local block of shape "
                         f"{tuple(local.shape)} on this rank where {tuple(sizes)} was expected: its rows and columns "
                         "cannot be placed in the table")
    return Block(local, offsets[0], offsets[1])


def block_device(tensor: torch.Tensor) -> torch.device:
    """Where this rank's part lives, and so where the collectives' buffers go (CUDA under NCCL)."""
    if DTensor is not None and isinstance(tensor, DTensor):
        return tensor.to_local().device
    if ShardedTensor is not None and isinstance(tensor, ShardedTensor):
        shards = tensor.local_shards()
        if shards:
            return shards[0].tensor.device
        # A rank that holds none of the table (table-wise sharding) still takes part in the collectives.
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return tensor.device


