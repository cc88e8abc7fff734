"""Checks of one batch of :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts`: shapes and dtypes at once,
values (labels, id ranges) when the batch is counted."""

from __future__ import annotations

import torch

from .sparse_keys import MAX_CATEGORIES, MAX_POSITIONS

__all__ = ["check_batch_shapes", "check_batch_values", "check_batches_values"]


def _check_integer(name: str, value: torch.Tensor) -> None:
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer category ids, got dtype {value.dtype}")


def check_batch_shapes(target: torch.Tensor, behavior: torch.Tensor, label: torch.Tensor,
                       mask: torch.Tensor | None) -> tuple:
    """Types and shapes of one batch (no value is read, so nothing waits for the device).

    Returns ``(target, behavior, label, mask)`` as given, but a ``[B, 1]`` label flattened to ``[B]``.

    Example:
        >>> _, _, label, _ = check_batch_shapes(torch.tensor([1, 2]), torch.zeros(2, 3, dtype=torch.int64),
        ...                                     torch.tensor([[0], [1]]), None)
        >>> label
        tensor([0, 1])
        >>> check_batch_shapes(torch.tensor([1, 2]), torch.zeros(3, 3, dtype=torch.int64), torch.tensor([0, 1]), None)
        Traceback (most recent call last):
        ...
        ValueError: behavior_category must be [B, L] with B = 2 (the batch of target_category), got shape (3, 3)
    """
    for name, value in (("target_category", target), ("behavior_category", behavior), ("label", label)):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(value).__name__}")
    _check_integer("target_category", target)
    _check_integer("behavior_category", behavior)
    if target.dim() != 1:
        raise ValueError(f"target_category must be [B], got shape {tuple(target.shape)}")
    if behavior.dim() != 2 or behavior.shape[0] != target.shape[0]:
        raise ValueError(
            f"behavior_category must be [B, L] with B = {target.shape[0]} (the batch of target_category), "
            f"got shape {tuple(behavior.shape)}"
        )
    label = label.reshape(-1) if label.dim() == 2 and label.shape[1] == 1 else label
    if label.dim() != 1 or label.shape[0] != target.shape[0]:
        raise ValueError(f"label must be [B] with B = {target.shape[0]}, got shape {tuple(label.shape)}")
    if behavior.shape[1] > MAX_POSITIONS:
        raise ValueError(
            f"behavior_category has {behavior.shape[1]} columns; at most {MAX_POSITIONS} are supported")
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(behavior.shape)):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must have the shape of behavior_category {tuple(behavior.shape)}, got {shape}")
    return target, behavior, label, mask


def check_batch_values(target: torch.Tensor, behavior: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None,
                       num_categories: int | None) -> tuple:
    """Labels in {0, 1} and category ids in range (below ``num_categories`` if given).

    Returns ``(target, behavior, label, valid, t_max, b_max)``: int64 ids, padding zeroed if it held ids out of
    range, the mask as bool (or ``None``), and the largest target and behaviour ids.

    Example:
        >>> out = check_batch_values(torch.tensor([1, 2]), torch.tensor([[-1, 3], [4, 0]]), torch.tensor([0, 1]),
        ...                          torch.tensor([[0, 1], [1, 1]]), num_categories=5)
        >>> out[1], out[4], out[5]
        (tensor([[0, 3],
                [4, 0]]), 2, 4)
    """
    _check_labels(label)
    valid = None if mask is None else (mask if mask.dtype == torch.bool else mask != 0)
    limit, what = _limit(num_categories)
    t_max = _check_targets(target, limit, what)
    behavior, b_max = _check_behaviors(behavior, valid, limit, what)
    return target.to(torch.int64), behavior.to(torch.int64), label, valid, t_max, b_max


def check_batches_values(parts: list[tuple], num_categories: int | None) -> list[tuple]:
    """:func:`check_batch_values` of several ``(target, behavior, label, mask)`` batches waiting together: the
    labels and targets of all of them at once (``[B]`` each, so their concatenation is small), the behaviours
    batch by batch (not copied). Each part's tuple carries the largest target id of all the parts.

    Example:
        >>> parts = [(torch.tensor([1]), torch.tensor([[2, 3]]), torch.tensor([0]), None),
        ...          (torch.tensor([4]), torch.tensor([[5, 0]]), torch.tensor([1]), None)]
        >>> [(out[4], out[5]) for out in check_batches_values(parts, None)]
        [(4, 3), (4, 5)]
    """
    if len(parts) == 1:
        return [check_batch_values(*parts[0], num_categories)]
    _check_labels(torch.cat([label for _, _, label, _ in parts]))
    limit, what = _limit(num_categories)
    t_max = _check_targets(torch.cat([target for target, _, _, _ in parts]), limit, what)
    checked = []
    for target, behavior, label, mask in parts:
        valid = None if mask is None else (mask if mask.dtype == torch.bool else mask != 0)
        behavior, b_max = _check_behaviors(behavior, valid, limit, what)
        checked.append((target.to(torch.int64), behavior.to(torch.int64), label, valid, t_max, b_max))
    return checked


def _limit(num_categories: int | None) -> tuple[int, str]:
    if num_categories is not None:
        return num_categories, "the category embedding's"
    return MAX_CATEGORIES, "the supported"


def _check_labels(label: torch.Tensor) -> None:
    # y (1 - y) is 0 exactly for y in {0, 1}: one check for integer and float labels alike.
    if label.dtype != torch.bool and label.numel() and bool((label * (1 - label)).any()):
        bad = label[(label != 0) & (label != 1)][0].item()
        raise ValueError(f"label must hold 0/1 responses, found {bad!r}")


def _check_targets(target: torch.Tensor, limit: int, what: str) -> int:
    """The largest target id (0 for none)."""
    if not target.numel():
        return 0
    low, t_max = (int(v) for v in torch.aminmax(target))
    if low < 0 or t_max >= limit:
        raise ValueError(f"target_category ids must lie in [0, {limit}) ({what} size), "
                         f"found {low if low < 0 else t_max}")
    return t_max


def _check_behaviors(behavior: torch.Tensor, valid: torch.Tensor | None, limit: int,
                     what: str) -> tuple[torch.Tensor, int]:
    """The behaviours (padding zeroed where it held ids out of range) and the largest id (0 for none)."""
    if not behavior.numel():
        return behavior, 0
    low, high = (int(v) for v in torch.aminmax(behavior))
    if (low < 0 or high >= limit) and valid is not None:
        # Padding may hold anything (-1, a pad id): only real behaviours must be valid ids. Zero the
        # padding so that counting can treat every cell alike.
        behavior = torch.where(valid, behavior, torch.zeros((), dtype=behavior.dtype, device=behavior.device))
        low, high = (int(v) for v in torch.aminmax(behavior))
    if low < 0 or high >= limit:
        raise ValueError(
            f"behavior_category ids of real (unmasked) behaviours must lie in [0, {limit}) ({what} size), "
            f"found {low if low < 0 else high}"
        )
    return behavior, high
