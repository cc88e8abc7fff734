"""Making every process take the same path where each one decides from its own batch.

Under FSDP2 and tensor parallelism a backward pass makes collectives (all-gathers of parameters, reductions of
gradients), so a side computation that runs a backward on some processes and not on others leaves the others
waiting. Whatever a process decides from its own batch (which tasks' losses are usable, whether a cross layer's
layout was found) is first agreed with the other processes here, with one small collective, so that every
process then makes the same calls. Every process must call these at the same point; with one process (or
without ``torch.distributed``) they return the local answer.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = ["distributed", "all_true", "first_found"]


def distributed(group=None) -> bool:
    """Whether there are other processes to agree with."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def all_true(flags: Sequence[bool], device: torch.device | str = "cpu", group=None) -> list[bool]:
    """Each flag, true only where it is true on every process (one MIN all-reduce of ``len(flags)`` numbers)."""
    if not distributed(group):
        return [bool(f) for f in flags]
    buffer = torch.tensor([float(bool(f)) for f in flags], dtype=torch.float32, device=device)
    dist.all_reduce(buffer, op=dist.ReduceOp.MIN, group=group)
    return [bool(v > 0) for v in buffer.tolist()]


def first_found(found: Any | None, problem: Exception | None, group=None) -> tuple[Any | None, Exception | None]:
    """``(found, problem)`` the same on every process: the ``found`` value of the lowest rank that has one (a
    small picklable object, such as a layout); else the ``problem`` of the lowest rank that has one; else
    ``(None, None)``. One all-gather of each rank's answer (pickled, as ``all_gather_object`` does)."""
    if not distributed(group):
        return (found, None) if found is not None else (None, problem)
    answers: list[Any] = [None] * dist.get_world_size(group)
    mine = ("found", found) if found is not None else ("problem", problem) if problem is not None else ("none", None)
    dist.all_gather_object(answers, mine, group=group)
    for kind, value in answers:
        if kind == "found":
            return value, None
    for kind, value in answers:
        if kind == "problem":
            return None, value
    return None, None
