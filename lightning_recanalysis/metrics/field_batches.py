"""Checks of one batch of :class:`~lightning_recanalysis.metrics.FieldPairCounts`: shapes and dtypes at once,
values (labels, id ranges) when the batch is counted."""

from __future__ import annotations

from typing import Sequence

import torch

from ..checks import short_list

__all__ = ["check_feature_shapes", "check_feature_values"]


def check_feature_shapes(features: torch.Tensor, label: torch.Tensor,
                         field_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Types and shapes only (no value is read, so nothing waits for the device): ``[B, N]`` integer features,
    N = ``len(field_names)``; returns them and the label flattened to ``[B]``.

    Example:
        >>> check_feature_shapes(torch.tensor([[1, 2]]), torch.tensor([[1]]), ["user", "item"])[1]
        tensor([1])
        >>> check_feature_shapes(torch.tensor([[1, 2]]), torch.tensor([1]), ["user", "item", "city"])
        Traceback (most recent call last):
        ...
        ValueError: the batch's features have 2 fields (shape (1, 2)) but ... configured for 3 fields (user, item, city)
    """
    num_fields = len(field_names)
    if not isinstance(features, torch.Tensor) or not isinstance(label, torch.Tensor):
        raise ValueError(f"features and label must be tensors, got {type(features).__name__} and "
                         f"{type(label).__name__}")
    if features.is_floating_point() or features.is_complex() or features.dtype == torch.bool:
        raise ValueError(f"features must hold integer value ids, got dtype {features.dtype}")
    if features.dim() != 2 or features.shape[1] != num_fields:
        got = f"{features.shape[1]} fields (shape {tuple(features.shape)})" if features.dim() == 2 else (
            f"shape {tuple(features.shape)}, not [batch, fields]")
        raise ValueError(
            f"the batch's features have {got} but the field-pair counts are configured for {num_fields} "
            f"fields ({short_list(field_names)})"
        )
    label = label.reshape(-1) if label.dim() == 2 and label.shape[1] == 1 else label
    if label.dim() != 1 or label.shape[0] != features.shape[0]:
        raise ValueError(f"label must be [B] with B = {features.shape[0]} (the features' batch), got shape "
                         f"{tuple(label.shape)}")
    return features, label


def check_feature_values(features: torch.Tensor, label: torch.Tensor, field_names: Sequence[str],
                         field_dims: Sequence[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels in {0, 1}, ids non-negative and below ``field_dims`` if given; returns int64 features and labels.
    Shapes must have been checked (:func:`check_feature_shapes`).

    Example:
        >>> check_feature_values(torch.tensor([[1, 4]]), torch.tensor([1]), ["user", "item"], [5, 4])
        Traceback (most recent call last):
        ...
        ValueError: item (column 1) has id 4, outside [0, 4) (its field_dims entry)
    """
    if label.numel() and not bool(((label == 0) | (label == 1)).all()):
        bad = label[(label != 0) & (label != 1)][0].item()
        raise ValueError(f"label must hold 0/1 responses, found {bad!r}")
    features = features.to(torch.int64)
    if features.numel():
        # A column-wise minimum (a strided reduction, slow on CPU) only when the batch's minimum is negative.
        if int(features.min()) < 0:
            low = features.amin(0)
            f = int(torch.nonzero(low < 0)[0])
            raise ValueError(f"{field_names[f]} (column {f}) has a negative id {int(low[f])}; ids are "
                             "0-based per field")
        if field_dims is not None:
            high = features.amax(0)
            dims = torch.tensor(field_dims, device=features.device)
            if bool((high >= dims).any()):
                f = int(torch.nonzero(high >= dims)[0])
                raise ValueError(f"{field_names[f]} (column {f}) has id {int(high[f])}, outside "
                                 f"[0, {field_dims[f]}) (its field_dims entry)")
    return features, label.to(torch.int64)

