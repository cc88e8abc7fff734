"""The typed record every analysis returns, and the parts it is made of.

A monitor's ``compute`` returns one :class:`Record` subclass; the same object goes to its ``log_record`` (the
live TensorBoard tags, from one function per analysis), to the findings and, read back, to the report and
``compare``. It is published once, as a plain dict (:meth:`Part.to_dict`: numbers, strings, lists and dicts
only), which is what a checkpoint stores (torch loads it with ``weights_only=True``) and what the event file
holds; :meth:`Part.from_dict` reads such a dict (from ``history``, a checkpoint or an event file, of this version
or an earlier one) back into the typed record. Keys a class does not know (a newer writer) are kept in ``extra``
and written back, so nothing is lost.

Nested parts (a view's fields, a target's map, a task pair's statistics) are :class:`Part` dataclasses too. A
part also reads like the dict it is published as (``view["fields"]``), so code written against the published
form keeps working. A field marked :func:`transient` (values the live figures draw, such as raw histogram
samples) travels with the record to ``log_record`` and is never published.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, TypeVar

__all__ = ["Part", "Record", "TaggedRecord", "TypedHistory", "transient"]

P = TypeVar("P", bound="Part")


def transient(default: Any = None) -> Any:
    """A dataclass field that the live figures read and that is never published (nor compared, nor shown).

    Example:
        >>> @dataclass
        ... class Example(Part):
        ...     total: int = 0
        ...     samples: Any = transient()
        >>> Example(total=3, samples=[1, 2]).to_dict()
        {'total': 3}
    """
    return field(default=default, compare=False, repr=False, metadata={"transient": True})


def _load(hint: Any, value: Any) -> Any:
    """``value`` (published form) as the type ``hint`` says: parts from dicts, recursively through dicts/lists."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(hint):
            if arg is not type(None):
                return _load(arg, value)
    if isinstance(hint, type) and issubclass(hint, Part) and isinstance(value, Mapping):
        return hint.from_dict(value)
    if origin is dict and isinstance(value, Mapping):
        _, item = typing.get_args(hint)
        return {k: _load(item, v) for k, v in value.items()}
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint)
        return [_load(item, v) for v in value]
    return value


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def _dump(value: Any) -> Any:
    """The published form of ``value``: parts as dicts, recursively through dicts/lists."""
    if isinstance(value, Part):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a record class, resolved once (it evaluates every annotation's string anew:
    most of the cost of reading a record back)."""
    return typing.get_type_hints(cls)


@dataclass
class Part:
    """A typed piece of a record: its dataclass fields are its published keys, in declaration order.

    Example:
        >>> @dataclass
        ... class Pair(Part):
        ...     cosine: float | None = None
        ...     optional_keys: ClassVar[tuple[str, ...]] = ("cosine",)
        >>> Pair().to_dict(), Pair(0.5).to_dict(), Pair.from_dict({"cosine": 0.5, "later": 1}).extra
        ({}, {'cosine': 0.5}, {'later': 1})
        >>> Pair(0.5)["cosine"], Pair(0.5).get("missing", 0)  # it reads like its published dict
        (0.5, 0)
    """

    #: Keys of a published dict this class does not know (a newer writer), kept as they were.
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    #: Keys left out of :meth:`to_dict` when their value is None (absent in records written before they existed).
    optional_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def published_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.name != "extra" and not f.metadata.get("transient")]

    def to_dict(self) -> dict[str, Any]:
        """The published form: the fields in declaration order (None optional keys left out), then ``extra``."""
        out: dict[str, Any] = {}
        absent = getattr(self, "_absent", ())
        for f in self.published_fields():
            value = getattr(self, f.name)
            if value is None and f.name in self.optional_keys:
                continue
            if f.name in absent and value == _default(f):  # read from a dict without it: publish it without it
                continue
            out[f.name] = _dump(value)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls: type[P], data: Mapping[str, Any]) -> P:
        """The typed part of a published dict; a key the dict lacks takes its field's default."""
        hints = _type_hints(cls)
        names = {f.name for f in cls.published_fields()}
        known = {k: _load(hints[k], v) for k, v in data.items() if k in names}
        part = cls(**known, extra={k: v for k, v in data.items() if k not in names})
        part._absent = frozenset(names - set(data))  # so that a record read back publishes what it read
        return part

    # ---- read like the published dict ----------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in {f.name for f in self.published_fields()}:
            value = getattr(self, key)
            if value is None and key in self.optional_keys:
                raise KeyError(key)
            return value
        return self.extra[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING

    def keys(self) -> list[str]:
        return list(self.to_dict())

    def items(self) -> Iterator[tuple[str, Any]]:
        return ((k, self[k]) for k in self.keys())


_MISSING = object()


@dataclass
class Record(Part):
    """What every record holds: when it was made.

    Attributes:
        stage: ``"init"`` (the initial weights, before the first step), ``"epoch"`` (the end of an epoch),
            ``"train"``/``"validation"`` (the epoch's probes / validation pairs of the multi-task monitors).
        epoch: the epoch (0 for ``"init"``).
        step: ``trainer.global_step`` when it was made: the step of its TensorBoard values.
        extra: keys of a published record this class does not know, kept as they were.

    Example:
        >>> Record(stage="init").to_dict()
        {'stage': 'init', 'epoch': 0, 'step': 0}
        >>> Record.from_dict({"stage": "epoch", "epoch": 1, "step": 40, "written_later": 3}).extra
        {'written_later': 3}
    """

    stage: str = "epoch"
    epoch: int = 0
    step: int = 0


class TypedHistory:
    """A monitor's published history (plain dicts, oldest first) read back as typed records, each dict once.

    Every analysis judges its findings on the whole history so far, so reading it anew each time cost a record's
    ``from_dict`` per record per analysis (on a short multi-task fit, a sixth of the monitors' time). A dict
    seen before (the same object: a history's dicts are never changed once added) gives the same record object;
    treat it as read-only.

    Example:
        >>> history = [{"stage": "init", "epoch": 0, "step": 0}]
        >>> read = TypedHistory(Record)
        >>> read(history)[0] is read(history + [{"stage": "epoch", "epoch": 1, "step": 9}])[0]
        True
    """

    def __init__(self, record_type: type[Record]) -> None:
        self.record_type = record_type
        self._seen: dict[int, tuple[Mapping[str, Any], Record]] = {}

    def __call__(self, history: list[Mapping[str, Any]]) -> list[Record]:
        seen, typed = {}, []
        for published in history:
            held = self._seen.get(id(published))
            record = held[1] if held is not None and held[0] is published else self.record_type.from_dict(published)
            seen[id(published)] = (published, record)  # only this history's dicts are kept
            typed.append(record)
        self._seen = seen
        return typed


@dataclass
class TaggedRecord(Record):
    """A record whose typed numbers are published under ``metrics``, by TensorBoard tag, as every earlier version
    wrote them: :meth:`tags` makes the tags, :meth:`read_tags` reads them back into the typed fields.

    Subclasses name the fields that live in ``metrics`` (``in_metrics``) and the published key ``metrics``
    follows (``metrics_after``; without it, or when a record read back lacks that key, ``metrics`` comes before
    the keys of ``extra``).
    """

    in_metrics: ClassVar[tuple[str, ...]] = ()
    metrics_after: ClassVar[str | None] = None

    @classmethod
    def published_fields(cls) -> list[dataclasses.Field]:
        return [f for f in super().published_fields() if f.name not in cls.in_metrics]

    @property
    def metrics(self) -> dict[str, float]:
        """The record's scalars by TensorBoard tag (:meth:`tags`)."""
        return self.tags()

    def tags(self) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} must define tags()")

    def read_tags(self, metrics: Mapping[str, float]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define read_tags(metrics)")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        own = super().to_dict()
        for key, value in own.items():
            if key in self.extra and "metrics" not in out:
                out["metrics"] = self.metrics
            out[key] = value
            if key == self.metrics_after:
                out["metrics"] = self.metrics
        if "metrics" not in out:
            out["metrics"] = self.metrics
        return out

    @classmethod
    def from_dict(cls: type[P], data: Mapping[str, Any]) -> P:
        data = dict(data)
        metrics = data.pop("metrics", None) or {}
        record = super().from_dict(data)
        record.read_tags(metrics)
        return record
