"""Summing over processes: the one path every monitor takes to add numbers across ranks.

Counts, Gram matrices, an epoch's gradient sums and failure flags are all sums: each rank adds its own part and
one all-reduce gives every rank the total. :func:`sum_over_ranks` is that all-reduce (a no-op in a single
process); :func:`data_parallel_group` says over which ranks the batches differ, so rows fed to several ranks
(tensor parallelism) are counted once. A leaf module: it imports nothing from the package.

(The counting metrics sum their states through torchmetrics' own sync, which gathers lists of keys; that is a
gather of different-length tensors, not a sum, and stays in :mod:`lightning_recanalysis.metrics`.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["data_parallel_group", "has_other_ranks", "is_distributed", "sum_over_ranks"]


def is_distributed() -> bool:
    """Whether a default process group is initialised (several processes may take part in a collective).

    Example:
        >>> is_distributed()  # a plain Python process: no process group
        False
    """
    return dist.is_available() and dist.is_initialized()


def has_other_ranks(group: Any = None) -> bool:
    """Whether ``group`` (default: every process) has processes other than this one, so that a sum over ranks
    needs a collective. The same answer on every process of the group.

    Example:
        >>> has_other_ranks()
        False
    """
    return is_distributed() and dist.get_world_size(group) > 1


def sum_over_ranks(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    """The elementwise sum of ``tensor`` over the processes of ``group`` (default: all), as a new tensor.

    Every process of the group must call it at the same point with a tensor of the same shape and dtype, on the
    device its backend reduces on (CUDA for NCCL). Without a process group it returns ``tensor`` itself.

    Example:
        >>> import torch
        >>> sum_over_ranks(torch.tensor([1.0, 2.0]))  # one process: the tensor itself
        tensor([1., 2.])
    """
    if not has_other_ranks(group):
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total


def data_parallel_group(trainer: Any) -> Any:
    """The process group over which the batches differ: ``None`` (every process, as under DDP) unless a
    model-parallel strategy gives several ranks the same batches (``ModelParallelStrategy`` with a tensor-parallel
    size above 1 feeds every rank of a tensor-parallel group the same rows). Counts summed over every process
    would count those rows once per rank; summed over this group they count each row once.

    Example:
        >>> data_parallel_group(None) is None  # no trainer, or a single process: every process
        True
    """
    if trainer is None or trainer.world_size <= 1:
        return None
    replicas = (getattr(trainer, "distributed_sampler_kwargs", None) or {}).get("num_replicas", trainer.world_size)
    if replicas == trainer.world_size:
        return None
    mesh = getattr(trainer.strategy, "device_mesh", None)
    if mesh is None or "data_parallel" not in (mesh.mesh_dim_names or ()):
        raise ValueError(
            f"{type(trainer.strategy).__name__} feeds {trainer.world_size} processes with {replicas} different "
            "streams of batches, and the monitors cannot tell which processes share one: use DDP or Lightning's "
            "ModelParallelStrategy, whose device mesh names its data-parallel dimension")
    return mesh["data_parallel"].get_group()
