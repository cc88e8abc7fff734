"""Fields wherever they live, grouped into the units the analyses show side by side.

A *field* is the rows of the embedding that one categorical feature looks up:

- a row range of a concatenated table (``field_dims``; pytorch-fm's ``FeaturesEmbedding``);
- a whole table (one ``nn.Embedding`` per feature, the layout of DeepCTR, FuxiCTR and TorchRec);
- one table shared by several features (a behaviour sequence looking up the target item's table): analysed once,
  named by all of them (``item+hist_item``).

An *analysis unit* is what one spectrum heatmap, one IA-vs-init chart, one Custom Scalars category and one finding
show: either a :class:`~lightning_recanalysis.model.tables.TableView` (the fields of one table, one column group) or a
:class:`FieldSet`: by default the single-field tables of a model that share a width. A per-feature model of N
tables of width 16 is one field set of N fields, named after the tables' common module prefix
(``embedding_dict``, fields ``C1`` .. ``C26``). Tables of different widths (a 64-wide id beside 8-wide small
fields) form one field set per width, named ``<prefix>[K=64]`` and ``<prefix>[K=8]``: singular values of
different widths are not on one scale (IA is at most the width), so each width gets its own chart. A width held
by one table alone, a column-split table and a row-sharded table stay units of their own, named as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

from ..functional.spectrum import RowNormalizedGram
from ..parallel.sharding import sharded_gram
from .tables import EmbeddingTable, TableView

__all__ = ["SetField", "FieldSet", "AnalysisUnit", "analysis_units", "field_gram", "field_key"]


@dataclass(frozen=True)
class SetField:
    """One field of a :class:`FieldSet`: a whole table (all its rows).

    Example:
        >>> from torch import nn
        >>> from lightning_recanalysis.model.tables import discover_tables
        >>> item = SetField("item", discover_tables(nn.ModuleDict({"item": nn.Embedding(20, 4)}))[0])
        >>> item.cardinality, (item.start, item.stop)
        (20, (0, 20))
    """

    name: str
    table: EmbeddingTable

    @property
    def start(self) -> int:
        return 0

    @property
    def stop(self) -> int:
        return self.table.rows

    @property
    def cardinality(self) -> int:
        return self.table.rows


@dataclass
class FieldSet:
    """Single-field tables of one width, shown side by side as the fields of one unit.

    Example:
        >>> from torch import nn
        >>> from lightning_recanalysis.model.tables import discover_tables
        >>> tables = discover_tables(nn.ModuleDict({"user": nn.Embedding(10, 4), "item": nn.Embedding(20, 4)}))
        >>> unit = FieldSet("embeddings", [SetField(table.name, table) for table in tables])
        >>> unit.width, unit.table_names
        (4, ['user', 'item'])
    """

    name: str
    fields: list[SetField]

    @property
    def width(self) -> int:
        return self.fields[0].table.width

    @property
    def table_names(self) -> list[str]:
        return [f.table.name for f in self.fields]

    def field_weight(self, fld: SetField) -> torch.Tensor:
        """The field's whole table, ``[rows, width]`` (the live weight, detached, no copy)."""
        return fld.table.parameter.detach()

    def field_source(self, fld: SetField) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """``(weight, rows, columns)``: the field's whole table (see ``TableView.field_source``)."""
        return fld.table.parameter, (0, fld.table.rows), (0, fld.table.width)


AnalysisUnit = Union[TableView, FieldSet]


def field_gram(unit: AnalysisUnit, fld) -> RowNormalizedGram:
    """The row-normalised Gram of one field of a unit, exact for a sharded weight too
    (:func:`~lightning_recanalysis.parallel.sharding.sharded_gram`: every rank must call it, in the same order).

    Example:
        >>> from torch import nn
        >>> from lightning_recanalysis.model.tables import discover_tables
        >>> view = next(discover_tables(nn.ModuleDict({"emb": nn.Embedding(6, 3)}), field_dims=[2, 4])[0].views())
        >>> gram = field_gram(view, view.fields[1])  # rows 2-5
        >>> gram.rows, round(float(gram.gram.trace()), 4)  # the trace of a row-normalised Gram is its row count
        (4, 4.0)
    """
    weight, rows, columns = unit.field_source(fld)
    return sharded_gram(weight, rows=rows, columns=columns)


def field_key(unit: AnalysisUnit, fld) -> tuple[str, str]:
    """How a field is addressed everywhere: (unit name, field name).

    Example:
        >>> from torch import nn
        >>> from lightning_recanalysis.model.tables import discover_tables
        >>> table = discover_tables(nn.ModuleDict({"emb": nn.Embedding(6, 3)}), field_dims={"user": 2, "item": 4})[0]
        >>> view = next(table.views())
        >>> field_key(view, view.fields[1])
        ('emb', 'item')
    """
    return unit.name, fld.name


def _common_prefix(names: Sequence[str]) -> list[str]:
    parts = [n.split(".")[:-1] for n in names]
    prefix = parts[0]
    for p in parts[1:]:
        keep = 0
        while keep < min(len(prefix), len(p)) and prefix[keep] == p[keep]:
            keep += 1
        prefix = prefix[:keep]
    return prefix


def _short(name: str, prefix: list[str]) -> str:
    parts = name.split(".")
    return ".".join(parts[len(prefix):]) if parts[: len(prefix)] == prefix and len(parts) > len(prefix) else name


def analysis_units(
    tables: Sequence[EmbeddingTable],
    *,
    field_sets: bool = True,
    keep_alone: Callable[[EmbeddingTable], bool] = lambda table: False,
    field_names: Callable[[EmbeddingTable], str | None] = lambda table: (
        table.fields[0].name if table.fields[0].name != table.name else None),
) -> list[AnalysisUnit]:
    """The units of ``tables``: field sets of same-width single-field tables (``field_sets``), then every other
    table's views, in module order (a field set takes the place of its first table).

    ``keep_alone(table)`` keeps a table out of every field set (row-sharded tables). ``field_names(table)`` may
    name a table's field; by default its own field's name where it has one (TorchRec: its feature names), else
    the module name below the set's common prefix, joined with ``+`` to the modules that share its weight.

    Example:
        >>> from torch import nn
        >>> from lightning_recanalysis.model.tables import discover_tables
        >>> model = nn.ModuleDict({"user": nn.Embedding(10, 4), "item": nn.Embedding(20, 4), "ad": nn.Embedding(5, 8)})
        >>> units = analysis_units(discover_tables(model))  # user and item: one field set of width 4
        >>> [(unit.name, [f.name for f in unit.fields]) for unit in units]
        [('embeddings', ['user', 'item']), ('ad', ['ad'])]
    """
    groupable = [t for t in tables if field_sets and len(t.fields) == 1 and len(t.column_groups) == 1
                 and not keep_alone(t)]
    by_width: dict[int, list[EmbeddingTable]] = {}
    for t in groupable:
        by_width.setdefault(t.width, []).append(t)
    sets = {w: ts for w, ts in by_width.items() if len(ts) > 1}
    if not sets:
        return [v for t in tables for v in t.views()]
    all_grouped = [t for ts in sets.values() for t in ts]
    prefix = _common_prefix([t.name for t in all_grouped])
    base = ".".join(prefix) or "embeddings"
    made: dict[int, FieldSet] = {}
    for width, members in sets.items():
        name = base if len(sets) == 1 else f"{base}[K={width}]"
        fields = []
        for t in members:
            given = field_names(t)
            short = given or "+".join(_short(n, prefix) for n in [t.name, *t.aliases])
            fields.append(SetField(short, t))
        made[width] = FieldSet(name, fields)
    units: list[AnalysisUnit] = []
    grouped_ids = {id(t) for t in all_grouped}
    for t in tables:
        if id(t) in grouped_ids:
            if made[t.width].fields[0].table is t:
                units.append(made[t.width])
            continue
        units.extend(t.views())
    names = [u.name for u in units]
    clash = {n for n in names if names.count(n) > 1}
    if clash:
        raise ValueError(f"field set name(s) {sorted(clash)} are also table names; pass field_sets=False to show "
                         "every table on its own")
    return units
