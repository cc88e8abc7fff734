"""Reading a monitor's fields out of a training batch: by key or index, or through the user's function.

Shared by the two counting monitors (:class:`~lightning_recanalysis.FeatureCorrelationMonitor`,
:class:`~lightning_recanalysis.FieldPairCorrelationMonitor`), so that a batch without a field fails with one
message, naming the field, the key looked for and what the batch holds.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

__all__ = ["BatchFieldReader", "select_fields"]


class BatchFieldReader:
    """``reader(batch) -> tuple`` of the fields named by ``keys``, in their order.

    Args:
        owner: the monitor's name, first in every message.
        keys: field -> batch key (a dict key, or an integer index of a tuple batch); ``None``: the field is
            absent and read as ``None``.
        batch_fields: a function ``batch -> sequence of the fields`` used instead of the keys.
        optional: trailing fields that ``batch_fields`` may leave out (read as ``None``).
        fixes: per field, what to tell the user to pass when its key is missing (default ``<field>=<key>``).

    Example:
        >>> read = BatchFieldReader("Monitor", {"features": "x", "label": "y"})
        >>> read({"x": [[1, 2]], "y": [0]})
        ([[1, 2]], [0])
        >>> read({"x": [[1, 2]]})
        Traceback (most recent call last):
        ...
        ValueError: Monitor: the batch has no field 'y' (label); batch: ['x']. Pass label=<key or index>, or batch_fields=fn(batch) -> (features, label).
    """

    def __init__(self, owner: str, keys: Mapping[str, Hashable | None],
                 batch_fields: Callable[[Any], Sequence[Any]] | None = None, *,
                 optional: Sequence[str] = (), fixes: Mapping[str, str] | None = None) -> None:
        self.owner, self.keys, self.batch_fields = owner, dict(keys), batch_fields
        self.optional, self.fixes = tuple(optional), dict(fixes or {})

    @property
    def signature(self) -> str:
        required = [f for f in self.keys if f not in self.optional]
        return "(" + ", ".join(required) + "".join(f"[, {f}]" for f in self.optional) + ")"

    def __call__(self, batch: Any) -> tuple:
        if self.batch_fields is not None:
            values = tuple(self.batch_fields(batch))
            least = len(self.keys) - len(self.optional)
            if not least <= len(values) <= len(self.keys):
                raise ValueError(f"{self.owner}: batch_fields must return {self.signature}, got {len(values)} values")
            return values + (None,) * (len(self.keys) - len(values))
        out = []
        for field, key in self.keys.items():
            if key is None:
                out.append(None)
                continue
            try:
                out.append(batch[key])
            except (KeyError, IndexError, TypeError):
                available = list(batch.keys()) if isinstance(batch, Mapping) else f"a {type(batch).__name__}"
                fix = self.fixes.get(field, f"{field}=<key or index>")
                raise ValueError(
                    f"{self.owner}: the batch has no field {key!r} ({field}); batch: {available}. Pass {fix}, or "
                    f"batch_fields=fn(batch) -> {self.signature}."
                ) from None
        return tuple(out)

    def name_field(self, message: str) -> str:
        """Prefix a message about one field (it starts with the field's name) with the batch key it came from."""
        for field in self.keys:
            if message.startswith(field):
                key = self.keys[field] if self.batch_fields is None else f"{field} of batch_fields"
                return f"batch field {key!r} ({field}): {message}"
        return message


def select_fields(field_names: Sequence[str], fields: Sequence[str | int] | None) -> list[int]:
    """The column indices of the ``fields`` chosen (names or indices, in the order given); all by default.

    Example:
        >>> select_fields(["user", "item", "city"], ["city", 0])
        [2, 0]
        >>> select_fields(["user", "item"], [5])
        Traceback (most recent call last):
        ...
        ValueError: fields[0] = 5 is out of range: the batch has 2 fields (field_names), so indices go from 0 to 1
    """
    n = len(field_names)
    if fields is None:
        return list(range(n))
    chosen = []
    for k, f in enumerate(fields):
        if isinstance(f, str):
            if f not in field_names:
                raise ValueError(f"fields[{k}] = {f!r} is not one of the {n} field_names ({', '.join(field_names)})")
            chosen.append(list(field_names).index(f))
        elif isinstance(f, (int, np.integer)) and not isinstance(f, bool):
            if not 0 <= int(f) < n:
                raise ValueError(f"fields[{k}] = {int(f)} is out of range: the batch has {n} fields (field_names), "
                                 f"so indices go from 0 to {n - 1}")
            chosen.append(int(f))
        else:
            raise ValueError(f"fields[{k}] must be a field name or a column index, got {f!r}")
    if len(set(chosen)) != len(chosen) or not chosen:
        raise ValueError(f"fields must name distinct fields, at least one; got {list(fields)}")
    return chosen
