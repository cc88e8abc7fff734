"""Where :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` finds its tables and fields, checked at setup
and at fit start, and how it describes them (the inventory and the dashboard's charts).
"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from typing import Sequence

from torch import nn

from ..parallel import sharding
from .cross.kernels import CrossKernel, CrossLayout
from .field_sets import AnalysisUnit, FieldSet, analysis_units
from .tables import (ColumnGroups, EmbeddingTable, FieldDims, TableView, describe_tables, discover_tables,
                      refresh_parameters)
from .cross.finder import CrossFinder, table_order_layout

__all__ = ["SpectrumLayout"]


class SpectrumLayout:
    """The tables and analysis units of one model, with the row-sharded ones marked.

    Args:
        row_sharded: globs of table names whose rows are split across ranks by hand.
        field_sets: group same-width single-field tables into field sets.
        cross_layer / cross_offset: the monitor's arguments (for the table-order layout of a concatenated table).
        discovery: the arguments of :func:`~lightning_recanalysis.model.tables.discover_tables`.

    Example:
        >>> model = nn.Module()
        >>> model.user, model.item = nn.Embedding(10, 4), nn.Embedding(30, 4)
        >>> layout = SpectrumLayout(row_sharded=[], field_sets=True, cross_layer=None, cross_offset=0)
        >>> layout.find(model)
        >>> [(u.name, [f.name for f in u.fields]) for u in layout.units]
        [('embeddings', ['user', 'item'])]
    """

    def __init__(self, *, row_sharded: Sequence[str], field_sets: bool, cross_layer: str | None, cross_offset: int,
                 include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 parameters: Sequence[str] | None = None, field_dims: FieldDims | None = None,
                 column_groups: ColumnGroups | None = None) -> None:
        self.row_sharded, self.field_sets = list(row_sharded), field_sets
        self.cross_layer, self.cross_offset = cross_layer, cross_offset
        self.discovery = dict(include=include, exclude=exclude, parameters=parameters, field_dims=field_dims,
                              column_groups=column_groups)
        self.tables: list[EmbeddingTable] = []
        self.units: list[AnalysisUnit] = []
        self.padding_rows: dict[str, int] = {}

    def is_sharded(self, table_name: str) -> bool:
        return any(fnmatch(table_name, p) for p in self.row_sharded)

    def find(self, model: nn.Module) -> None:
        """Discover the tables and group them into analysis units; a layout that cannot be read raises."""
        self.tables = discover_tables(model, **self.discovery)
        for table in self.tables:
            if self.is_sharded(table.name) and len(table.fields) > 1:
                raise ValueError(
                    f"table '{table.name}' is row_sharded, so each rank holds different rows and fields cannot be "
                    "located by row: drop its field_dims (it is analysed as one field), or give each field its own table"
                )
        self.units = analysis_units(self.tables, field_sets=self.field_sets,
                                    keep_alone=lambda t: self.is_sharded(t.name))
        # Rows that are zero by design (nn.Embedding's padding_idx), per view: left out of the spectrum like any
        # all-zero row, without the warning a broken (non-finite or zeroed) row gets.
        padded = {t.name for t in self.tables if any(getattr(model.get_submodule(n), "padding_idx", None) is not None
                                                     for n in [t.name, *t.aliases] if _is_module(model, n))}
        self.padding_rows = {u.name: sum(f.table.name in padded for f in u.fields) if isinstance(u, FieldSet)
                             else int(u.table.name in padded) for u in self.units}

    def table_order_layout(self, kernels: Sequence[CrossKernel]) -> tuple[CrossKernel, CrossLayout] | None:
        """A concatenated table whose fields fill an ``nn.Linear`` cross layer from ``cross_offset`` in table order
        (auto: the side fits exactly; named: at least): the demo's layout, read without a batch, as before."""
        multi = [u for u in self.units if isinstance(u, TableView) and len(u.fields) > 1]
        linear = [k for k in kernels if k.form.startswith("nn.Linear")]
        for kernel in linear:
            for view in multi:
                need = self.cross_offset + len(view.fields) * view.width
                if kernel.side == need or (self.cross_layer != "auto" and kernel.side > need):
                    return kernel, table_order_layout(kernel, view, self.cross_offset)
        return None

    def check_readable(self, model: nn.Module) -> None:
        """Take the weights as the strategy left them after ``configure_model`` and check that every one can be
        read exactly (a ``DTensor`` of row, column or replicated placements; see :mod:`~lightning_recanalysis.
        sharding`): an error here, before the first step, names the table and its placement."""
        refresh_parameters(self.tables, model)
        for table in self.tables:
            layout = sharding.check_readable(table.parameter, table.name)
            if layout.kind != "local" and self.is_sharded(table.name):
                raise ValueError(
                    f"table '{table.name}' is a DTensor ({list(layout.placements)}), which the monitor reads "
                    "across ranks by itself: drop it from row_sharded (that option is for a table split by hand, "
                    "whose every rank holds a plain tensor of its own rows)")

    def summary(self, finder: CrossFinder) -> str:
        """One line for the console at setup: what will be analysed."""
        n_fields = sum(len(u.fields) for u in self.units)
        cross = (f"; interaction analysis through '{finder.kernel.name}'" if finder.layout else
                 "; the cross layer's field order is read on the first training batch" if finder.waiting else "")
        return (f"{len(self.tables)} table(s), {len(self.units)} view(s), {n_fields} field spectra per analysis"
                f"{cross} (inventory in TensorBoard's Text tab, collapse/inventory)")

    def inventory_markdown(self, finder: CrossFinder) -> str:
        text = describe_tables(self.tables)
        for unit in (u for u in self.units if isinstance(u, FieldSet)):
            text += (f"\n\nField set `{unit.name}` ({len(unit.fields)} tables of width {unit.width}, shown together): "
                     + ", ".join(f"{f.name} = `{f.table.name}`" for f in unit.fields))
        if finder.layout is not None:
            slots = finder.layout.unit_slots()
            text += (f"\n\nInteraction analysis: {finder.describe()}. Interaction matrix over the "
                     f"{len(slots)} fields of `{slots[0].unit}`.")
        elif finder.waiting:
            text += "\n\nInteraction analysis: the cross layer's field order is read on the first training batch."
        return text

    def dashboard_layout(self, namespace: str, finder: CrossFinder) -> dict[str, dict[str, list]]:
        """Custom Scalars: one chart per field and quantity. TensorBoard colours a chart's series by run (a
        series is ``tag (run)``, its colour the run's), so the fields of one run in one chart would all share a
        colour; one series per chart, and the same chart title in every run, puts runs side by side in distinct
        colours instead (the concatenated and the per-feature DCNv2's field F0 in one chart). A field named in
        one view only is matched in any view, so a renamed table still meets its counterpart."""
        counts: dict[str, int] = {}
        for view in self.units:
            for fld in view.fields:
                counts[fld.name] = counts.get(fld.name, 0) + 1

        def field_chart(view, fld, what: str, leaf: str) -> tuple[str, list]:
            unique = counts[fld.name] == 1
            where = "[^/]+" if unique else re.escape(view.name)
            title = f"{fld.name if unique else f'{view.name} / {fld.name}'} ({fld.cardinality} ids): {what}"
            return title, ["Multiline", [rf"^{namespace}/{where}/{re.escape(fld.name)}/{leaf}$"]]

        per_field: dict[str, list] = {}
        versus_init: dict[str, list] = {}
        for view in self.units:
            per_field[f"{view.name}: mean IA over its {len(view.fields)} fields"] = [
                "Multiline", [rf"^{namespace}/{re.escape(view.name)}/mean_information_abundance$"]]
            for fld in sorted(view.fields, key=lambda f: (f.cardinality, f.name)):
                title, chart = field_chart(view, fld, f"IA, at most {min(fld.cardinality, view.width)}",
                                           "information_abundance")
                per_field[title] = chart
                title, chart = field_chart(view, fld, "IA / IA at initialisation", "information_abundance_vs_init")
                versus_init[title] = chart
        layout = {"collapse: information abundance per field": per_field,
                  "collapse: IA / IA at initialisation": versus_init}
        if finder.layout is not None:
            view = finder.layout.unit_slots()[0].unit
            base = f"{namespace}/{re.escape(view)}/interaction"
            layout["collapse: interaction, mean IA of each field's sub-embeddings"] = {
                f"{slot.name}: mean IA of its sub-embeddings": [
                    "Multiline", [rf"^{base}/{re.escape(slot.name)}/mean_information_abundance$"]]
                for slot in finder.layout.unit_slots()}
        return layout


def _is_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:  # a raw parameter (parameters=[...]), not a module
        return False
