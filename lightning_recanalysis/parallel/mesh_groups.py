"""Which processes a sharded weight's pieces are spread over, and so which process group reads it.

A ``DTensor`` lives on a device mesh. Under plain FSDP2 or tensor parallelism the mesh spans every process, and
the default group (all of them) sums the pieces. Lightning's recipe for both at once (``ModelParallelStrategy``
with ``data_parallel_size=2, tensor_parallel_size=2`` on four processes) hands a module to one dimension of a
two-dimensional mesh: ``fully_shard(table, mesh=mesh["data_parallel"])`` splits a table's rows over the two
processes of each data-parallel group, and each tensor-parallel coordinate holds its own copy of the same
table. Such a table is read exactly over the processes of its own mesh: every data-parallel group sums its two
shards (the same numbers in every group), and no process counts a copy twice. The group of a one-dimensional
sub-mesh is that dimension's process group (:func:`reading_group`).

A mesh of several dimensions that spans only some of the processes (a sub-mesh of a three-dimensional mesh)
has no single process group of its own here: :func:`mesh_problem` says so, and the layout is refused at setup.

Under tensor parallelism the module hooks of a monitor see ``DTensor`` arguments too (``parallelize_module``'s
input hooks turn an embedding's ids into a replicated ``DTensor`` before the monitor's hook runs):
:func:`local_value` gives the plain tensor every rank of the group holds.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["reading_group", "mesh_problem", "local_value"]


def _mesh_of(tensor: torch.Tensor):
    mesh = getattr(tensor, "device_mesh", None)
    return mesh if mesh is not None and hasattr(mesh, "get_group") else None


def _spans_every_process(mesh) -> bool:
    return not dist.is_initialized() or mesh.size() == dist.get_world_size()


def reading_group(tensor: torch.Tensor):
    """The process group over which the pieces of ``tensor`` are summed: ``None`` (every process) for a plain
    tensor, a ``ShardedTensor`` and a ``DTensor`` whose mesh spans every process; the mesh's own group for a
    ``DTensor`` on a one-dimensional sub-mesh (each copy of it is read within its own group).

    Example:
        >>> reading_group(torch.zeros(4, 2)) is None  # a plain tensor: summed over every process (or none)
        True
    """
    mesh = _mesh_of(tensor)
    if mesh is None or _spans_every_process(mesh) or mesh.ndim != 1:
        return None
    return mesh.get_group()


def mesh_problem(tensor: torch.Tensor) -> str | None:
    """Why the mesh of ``tensor`` cannot be read exactly, or ``None``.

    Example:
        >>> mesh_problem(torch.zeros(4, 2)) is None
        True
    """
    mesh = _mesh_of(tensor)
    if mesh is None or _spans_every_process(mesh) or mesh.ndim == 1:
        return None
    return (f"its device mesh {tuple(mesh.shape)} ({mesh.mesh_dim_names}) spans {mesh.size()} of the "
            f"{dist.get_world_size()} processes in several dimensions, and has no one process group that holds "
            "a whole copy of it; shard the table on one dimension of the mesh (fully_shard(table, "
            "mesh=mesh['data_parallel'])) or on a mesh that spans every process")


def local_value(value):
    """A hook's argument or output as a plain tensor: a ``DTensor`` replicated on every mesh dimension is its
    local tensor (the same on every rank, and still in the autograd graph); any other ``DTensor`` is gathered
    whole with ``full_tensor()`` (a collective: every rank of its mesh runs the same forward, so every rank calls
    it at the same point). Anything else is returned as it is.

    Example:
        >>> local_value(torch.tensor([1, 2]))  # not a DTensor: returned as it is
        tensor([1, 2])
    """
    placements = getattr(value, "placements", None)
    if placements is None or not hasattr(value, "to_local"):
        return value
    if all(p.is_replicate() for p in placements):
        return value.to_local()
    return value.full_tensor()
