"""Finding a model's embedding tables and the fields and column groups inside them.

Recommendation models keep their embeddings in several shapes, and each analysis wants the same thing from
all of them: a list of *views*, each a ``[rows, columns]`` slice of one weight, split into *fields* by rows.

- one ``nn.Embedding`` per field: each table is one field;
- one concatenated table of ``sum(field_dims)`` rows, split by ``field_dims`` (pytorch-fm's ``FeaturesEmbedding``);
- multi-embedding models (M embedding sets side by side in the columns) and STEM-style multi-task tables whose
  columns split into ``[task 1 | ... | task T | shared]`` chunks of equal width: ``column_groups``.

:func:`discover_tables` finds ``nn.Embedding`` and ``nn.EmbeddingBag`` modules by itself, skips width-1 tables
(per-feature biases, whose "spectrum" is a single number), counts a weight shared by several modules once, and
lets the user include or exclude modules by name pattern (:mod:`fnmatch` globs on the module's qualified name)
or add any 2-D parameter by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Iterator, Mapping, Sequence, Union

import torch
from torch import nn

from .torchrec_tables import collection_feature_names

__all__ = ["Field", "ColumnGroup", "EmbeddingTable", "TableView", "discover_tables", "describe_tables",
           "refresh_parameters"]

FieldDims = Union[Sequence[int], Mapping[str, int]]
ColumnGroups = Union[int, Sequence[str]]


@dataclass(frozen=True)
class Field:
    """Rows ``[start, stop)`` of a table that belong to one categorical field.

    Example:
        >>> Field("item", 10, 25).cardinality
        15
    """

    name: str
    start: int
    stop: int

    @property
    def cardinality(self) -> int:
        return self.stop - self.start


class ColumnSpan:
    """Columns ``[start, stop)`` of a matrix (a table's column group, a field's slot in a cross input): its width.

    Example:
        >>> ColumnGroup("shared", 8, 16).width  # a ColumnGroup is a ColumnSpan
        8
    """

    start: int
    stop: int

    @property
    def width(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ColumnGroup(ColumnSpan):
    """Columns ``[start, stop)`` of a table: one embedding set, or one task's (or the shared) chunk.

    Example:
        >>> ColumnGroup("task_ctr", 0, 8)
        ColumnGroup(name='task_ctr', start=0, stop=8)
    """

    name: str
    start: int
    stop: int


@dataclass
class EmbeddingTable:
    """One embedding weight of the model, with its fields (row ranges) and column groups.

    Attributes:
        name: the qualified name of the first module (or parameter) that owns the weight.
        parameter: the weight itself, ``[rows, width]``.
        fields: row ranges, in table order.
        column_groups: column ranges; a single group named ``"all"`` unless the user split the columns.
        aliases: other module names that share this weight (counted once).

    Example:
        >>> model = nn.ModuleDict({"emb": nn.Embedding(25, 8)})
        >>> table = discover_tables(model, field_dims={"user": 10, "item": 15}, column_groups=2)[0]
        >>> table.rows, table.width, [f.name for f in table.fields], [view.name for view in table.views()]
        (25, 8, ['user', 'item'], ['emb[set0]', 'emb[set1]'])
    """

    name: str
    parameter: torch.Tensor
    fields: list[Field]
    column_groups: list[ColumnGroup]
    aliases: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.parameter.shape[0])

    @property
    def width(self) -> int:
        return int(self.parameter.shape[1])

    def views(self) -> Iterator["TableView"]:
        for group in self.column_groups:
            yield TableView(self, group)


@dataclass
class TableView:
    """One column group of one table: the unit every analysis runs on, named ``table`` or ``table[group]``.

    Example:
        >>> model = nn.ModuleDict({"emb": nn.Embedding(25, 8)})
        >>> table = discover_tables(model, field_dims=[10, 15], column_groups=2)[0]
        >>> view = next(table.views())
        >>> view.name, view.width, tuple(view.field_weight(view.fields[1]).shape)
        ('emb[set0]', 4, (15, 4))
    """

    table: EmbeddingTable
    group: ColumnGroup

    @property
    def name(self) -> str:
        if len(self.table.column_groups) == 1 and self.group.name == "all":
            return self.table.name
        return f"{self.table.name}[{self.group.name}]"

    @property
    def width(self) -> int:
        return self.group.width

    @property
    def fields(self) -> list[Field]:
        return self.table.fields

    def field_weight(self, fld: Field) -> torch.Tensor:
        """The ``[cardinality, width]`` slice of the live weight for one field (a view, no copy)."""
        return self.table.parameter.detach()[fld.start : fld.stop, self.group.start : self.group.stop]

    def weight(self) -> torch.Tensor:
        return self.table.parameter.detach()[:, self.group.start : self.group.stop]

    def field_source(self, fld: Field) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """``(weight, rows, columns)``: where one field of this view lives, for reads of a sharded weight
        (:mod:`~lightning_recanalysis.parallel.sharding`) that cannot slice it."""
        return self.table.parameter, (fld.start, fld.stop), (self.group.start, self.group.stop)


def refresh_parameters(tables: Sequence[EmbeddingTable], model: nn.Module) -> None:
    """Point every table at the weight its module holds now.

    A strategy that shards the model after the callbacks' ``setup`` (Lightning's ``ModelParallelStrategy`` runs
    ``configure_model``, where ``fully_shard`` replaces each ``nn.Parameter`` by a ``DTensor`` one) leaves the
    weights found at ``setup`` stale: they would keep the initial, unsharded values for the whole run. A table
    that TorchRec's ``DistributedModelParallel`` took over is no module of its own any more: its weight is the
    ``ShardedTensor`` the model's ``state_dict`` holds under the same name (live views of the shards).

    Example:
        >>> model = nn.ModuleDict({"emb": nn.Embedding(5, 4)})
        >>> tables = discover_tables(model)
        >>> model.emb.weight = nn.Parameter(torch.zeros(5, 4))  # as configure_model's sharding does
        >>> refresh_parameters(tables, model)
        >>> tables[0].parameter is model.emb.weight
        True
    """
    state: dict | None = None
    for table in tables:
        try:
            module = model.get_submodule(table.name)
        except AttributeError:
            module = None
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            table.parameter = module.weight
            continue
        try:
            table.parameter = model.get_parameter(table.name)
            continue
        except AttributeError:
            pass
        if state is None:
            state = model.state_dict(keep_vars=True)
        for key in (f"{table.name}.weight", table.name):
            if key in state and getattr(state[key], "dim", lambda: 0)() == 2:
                table.parameter = state[key]
                break
        else:
            raise ValueError(
                f"the table `{table.name}` found at setup is no longer an nn.Embedding, nn.EmbeddingBag, parameter "
                f"or state_dict entry of {type(model).__name__} at fit start "
                f"({type(module).__name__ if module is not None else 'gone'} now): configure_model replaced it. "
                "Read such tables with lightning_recanalysis.parallel.sharding, or exclude them from the monitor") from None


def _matches(name: str, patterns: Sequence[str] | None) -> bool:
    return bool(patterns) and any(fnmatch(name, p) for p in patterns)


def _per_table(option, table_name: str, is_leaf_value) -> object:
    """Resolve an option that may be given once for all tables or as ``{table-name pattern: value}``."""
    if option is None or is_leaf_value(option):
        return option
    for pattern, value in option.items():
        if pattern == table_name or fnmatch(table_name, pattern):
            return value
    return None


def _is_field_dims(value) -> bool:
    if isinstance(value, Mapping):
        return all(isinstance(v, int) for v in value.values())
    return isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(v, int) for v in value)


def _is_column_groups(value) -> bool:
    return isinstance(value, int) or (isinstance(value, Sequence) and not isinstance(value, str))


def _make_fields(table_name: str, rows: int, dims: FieldDims | None, default_name: str) -> list[Field]:
    if dims is None:
        return [Field(default_name, 0, rows)]
    if isinstance(dims, Mapping):
        names, sizes = list(dims.keys()), [int(v) for v in dims.values()]
    else:
        sizes = [int(v) for v in dims]
        names = [f"field_{i}" for i in range(len(sizes))]
    if any(s <= 0 for s in sizes):
        raise ValueError(f"field_dims for table '{table_name}' must be positive, got {sizes}")
    if sum(sizes) != rows:
        raise ValueError(
            f"field_dims for table '{table_name}' add up to {sum(sizes)} rows but the table has {rows} rows: "
            f"pass the cardinality of every field in table order (sum(field_dims) == {rows})"
        )
    fields, start = [], 0
    for name, size in zip(names, sizes):
        fields.append(Field(str(name), start, start + size))
        start += size
    return fields


def _make_groups(table_name: str, width: int, groups: ColumnGroups | None) -> list[ColumnGroup]:
    if groups is None:
        return [ColumnGroup("all", 0, width)]
    names = [f"set{i}" for i in range(groups)] if isinstance(groups, int) else [str(g) for g in groups]
    if not names or width % len(names):
        raise ValueError(
            f"table '{table_name}' has width {width}, which does not split into {len(names)} equal column groups "
            f"{names}: give a number of groups that divides {width}"
        )
    step = width // len(names)
    return [ColumnGroup(name, i * step, (i + 1) * step) for i, name in enumerate(names)]


def discover_tables(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    parameters: Sequence[str] | None = None,
    field_dims: FieldDims | Mapping[str, FieldDims] | None = None,
    column_groups: ColumnGroups | Mapping[str, ColumnGroups] | None = None,
    min_width: int = 2,
) -> list[EmbeddingTable]:
    """Find the embedding tables of ``model``.

    Args:
        model: any ``nn.Module`` (a ``LightningModule`` included).
        include: keep only modules whose qualified name matches one of these globs (e.g. ``["*item_emb*"]``).
        exclude: drop modules whose qualified name matches one of these globs.
        parameters: qualified names of extra 2-D parameters to treat as tables (for models that keep an
            embedding as a raw ``nn.Parameter``).
        field_dims: cardinalities that split a concatenated table into fields, in row order; a mapping
            ``{field name: cardinality}`` names the fields. To give different tables different splits, pass
            ``{table-name glob: field_dims}``. Tables without it are one field each, named
            after the table.
        column_groups: split a table's columns into equal-width groups: a number of groups, or their names
            (e.g. ``["task_ctr", "task_cvr", "shared"]``); ``{table-name glob: groups}`` per table.
        min_width: tables narrower than this are skipped (width-1 tables are per-feature biases).

    Returns:
        The tables in module order, each weight once.

    Raises:
        ValueError: no table found (with how to point at one), or a ``field_dims``/``column_groups`` that does
            not fit its table.

    Example:
        >>> model = nn.ModuleDict({"user": nn.Embedding(10, 8), "item": nn.Embedding(20, 8),
        ...                        "bias": nn.Embedding(30, 1)})
        >>> [(t.name, t.rows, t.width) for t in discover_tables(model)]  # the width-1 bias is skipped
        [('user', 10, 8), ('item', 20, 8)]
    """
    found: dict[int, EmbeddingTable] = {}
    skipped: list[str] = []
    features = collection_feature_names(model)  # TorchRec: a table's field is named by its features
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            continue
        if include and not _matches(name, include):
            continue
        if _matches(name, exclude):
            continue
        weight = module.weight
        key = id(weight)
        if key in found:
            found[key].aliases.append(name)
            continue
        if weight.dim() != 2 or weight.shape[1] < min_width:
            skipped.append(name)
            continue
        found[key] = _build_table(name, weight, field_dims, column_groups, "+".join(features.get(name, [])) or name)
    named_params = dict(model.named_parameters(remove_duplicate=False))
    for pname in parameters or []:
        if pname not in named_params:
            raise ValueError(
                f"parameter '{pname}' is not in the model; its 2-D parameters include "
                f"{[n for n, p in named_params.items() if p.dim() == 2][:10]}"
            )
        weight = named_params[pname]
        if weight.dim() != 2:
            raise ValueError(f"parameter '{pname}' has shape {tuple(weight.shape)}; a table must be 2-D [rows, width]")
        if id(weight) in found:
            continue
        found[id(weight)] = _build_table(pname, weight, field_dims, column_groups)
    if not found:
        hint = f" (skipped as narrower than {min_width} columns: {skipped})" if skipped else ""
        raise ValueError(
            f"no embedding table found in {type(model).__name__}{hint}. The monitor looks for nn.Embedding and "
            "nn.EmbeddingBag modules; check `include`/`exclude` patterns, or name a raw weight with "
            "`parameters=['module.path.weight']`."
        )
    return list(found.values())


def _build_table(name, weight, field_dims, column_groups, field_name=None) -> EmbeddingTable:
    rows, width = int(weight.shape[0]), int(weight.shape[1])
    dims = _per_table(field_dims, name, _is_field_dims)
    groups = _per_table(column_groups, name, _is_column_groups)
    return EmbeddingTable(
        name=name,
        parameter=weight,
        fields=_make_fields(name, rows, dims, default_name=field_name or name),
        column_groups=_make_groups(name, width, groups),
    )


def describe_tables(tables: Sequence[EmbeddingTable]) -> str:
    """A markdown inventory: one line per table with its shape, fields and column groups.

    Example:
        >>> print(describe_tables(discover_tables(nn.ModuleDict({"user": nn.Embedding(10, 8)}))))
        | table | rows x width | fields (cardinality) | column groups | shared with |
        |---|---|---|---|---|
        | user | 10 x 8 | user (10) | all [0:8] | - |
    """
    lines = ["| table | rows x width | fields (cardinality) | column groups | shared with |", "|---|---|---|---|---|"]
    for t in tables:
        fields = ", ".join(f"{f.name} ({f.cardinality})" for f in t.fields[:40])
        if len(t.fields) > 40:
            fields += f", ... ({len(t.fields)} fields)"
        groups = ", ".join(f"{g.name} [{g.start}:{g.stop}]" for g in t.column_groups)
        lines.append(f"| {t.name} | {t.rows} x {t.width} | {fields} | {groups} | {', '.join(t.aliases) or '-'} |")
    return "\n".join(lines)
