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

from .distributed import has_other_ranks, sum_over_ranks

__all__ = ["all_true", "first_found"]


def all_true(flags: Sequence[bool], device: torch.device | str = "cpu", group=None) -> list[bool]:
    """Each flag, true only where it is true on every process.

    One all-reduce of ``len(flags)`` numbers through the package's one rank-summing path
    (:func:`~lightning_recanalysis.parallel.distributed.sum_over_ranks`): each process adds 1 where its flag is false, and
    a flag holds everywhere where the sum is 0 (the same answer as a MIN of the flags).

    Example:
        >>> all_true([True, False, True])  # one process: its own flags
        [True, False, True]
    """
    if not has_other_ranks(group):
        return [bool(f) for f in flags]
    false_on = torch.tensor([0.0 if f else 1.0 for f in flags], dtype=torch.float32, device=device)
    return [v == 0 for v in sum_over_ranks(false_on, group).tolist()]


def first_found(found: Any | None, problem: Exception | None, group=None) -> tuple[Any | None, Exception | None]:
    """``(found, problem)`` the same on every process: the ``found`` value of the lowest rank that has one (a
    small picklable object, such as a layout); else the ``problem`` of the lowest rank that has one; else
    ``(None, None)``. One all-gather of each rank's answer (pickled, as ``all_gather_object`` does).

    Example:
        >>> first_found(None, ValueError("no cross layer matched"))  # one process: its own answer
        (None, ValueError('no cross layer matched'))
        >>> first_found("layout", None)
        ('layout', None)
    """
    if not has_other_ranks(group):
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
