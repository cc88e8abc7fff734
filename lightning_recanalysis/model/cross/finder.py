"""The cross layer a monitor reads, and its input layout: given, in table order, or found on the first batch.

Shared by :class:`~lightning_recanalysis.callbacks.spectrum.EmbeddingSpectrumMonitor` (the interaction matrix)
and :class:`~lightning_recanalysis.callbacks.field_pair.FieldPairCorrelationMonitor` (the learned strength).
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from ...parallel.agreement import first_found
from .kernels import (CrossKernel, CrossLayout, CrossSlot, cross_kernel_candidates, explicit_layout,
                     resolve_cross_kernel)
from .discovery import CrossInputDiscovery
from ..field_sets import AnalysisUnit, FieldSet, analysis_units
from ...parallel.sharding import is_sharded
from ..tables import discover_tables
from ..torchrec_tables import collection_lookups, sharded_collections

__all__ = ["CrossFinder", "resharded", "field_locator", "field_widths", "field_units", "one_table_holds_all", "slots_by_name"]


def field_widths(units: Sequence[AnalysisUnit]) -> dict[str, tuple[str, str, int]]:
    """Every name a field may be given by in ``cross_fields`` -> (unit, field, width): its field name, and
    ``unit/field`` when a name is not unique."""
    out: dict[str, tuple[str, str, int]] = {}
    clashes: set[str] = set()
    for unit in units:
        for fld in unit.fields:
            value = (unit.name, fld.name, unit.width)
            out[f"{unit.name}/{fld.name}"] = value
            if fld.name in out and out[fld.name] != value:
                clashes.add(fld.name)
            out.setdefault(fld.name, value)
            for part in fld.name.split("+"):  # a shared table is named by each of its features
                out.setdefault(part, value)
    for name in clashes:
        del out[name]
    return out


def field_locator(units: Sequence[AnalysisUnit]) -> tuple[dict[str, nn.Module], Callable]:
    """``(modules to hook, field_of)``: ``field_of(module name, ids [B]) -> (slot name, unit, field)`` or None.

    A lookup's field is the one whose row range holds all of its ids; a table split into column groups is not
    a field of a cross input (None).
    """
    entries: dict[str, list[tuple[str, str, str, int, int]]] = {}
    weights: dict[str, torch.Tensor] = {}
    for unit in units:
        if isinstance(unit, FieldSet):
            for fld in unit.fields:
                names = [fld.table.name, *fld.table.aliases]
                parts = fld.name.split("+")
                for k, module_name in enumerate(names):
                    slot = parts[k] if len(parts) == len(names) else fld.name
                    entries.setdefault(module_name, []).append((slot, unit.name, fld.name, 0, fld.table.rows))
                    weights[module_name] = fld.table.parameter
        elif len(unit.table.column_groups) == 1:
            for module_name in [unit.table.name, *unit.table.aliases]:
                for fld in unit.fields:
                    entries.setdefault(module_name, []).append((fld.name, unit.name, fld.name, fld.start, fld.stop))
                weights[module_name] = unit.table.parameter

    def field_of(module_name: str, ids: torch.Tensor | None):
        if ids is None or ids.numel() == 0 or ids.is_floating_point():
            return None
        low, high = int(ids.min()), int(ids.max())
        for slot, unit, fname, start, stop in entries.get(module_name, []):
            if start <= low and high < stop:
                return slot, unit, fname
        return None

    return entries, field_of


def resharded(model: nn.Module) -> bool:
    """Whether the strategy replaced the model's parameters or lookups after the callbacks' ``setup`` (FSDP2 and
    tensor parallelism: ``DTensor`` parameters; TorchRec's ``DistributedModelParallel``: sharded collections),
    so that the cross layer is resolved again at fit start."""
    return any(is_sharded(p) for p in model.parameters()) or bool(sharded_collections(model))


class CrossFinder:
    """Resolves ``cross_layer`` at setup; finds the input layout on the first training batch when needed."""

    def __init__(self, spec, *, layer_index: int = 0, cross_fields: Sequence[str | int] | None = None,
                 input_module: str | None = None, owner: str = "monitor", quiet_auto: bool = False) -> None:
        self.spec, self.layer_index, self.cross_fields = spec, layer_index, cross_fields
        self.input_module, self.owner, self.quiet_auto = input_module, owner, quiet_auto
        self.kernel: CrossKernel | None = None
        self.layout: CrossLayout | None = None
        self.discovery: CrossInputDiscovery | None = None
        self._candidates: list[CrossKernel] = []

    @property
    def waiting(self) -> bool:
        """The layout is to be found on the next training batch."""
        return self.layout is None and self.discovery is not None

    def kernels(self, model: nn.Module) -> list[CrossKernel]:
        if self.spec is None:
            return []
        if self.spec == "auto":
            return cross_kernel_candidates(model, layer=self.layer_index)
        return [resolve_cross_kernel(model, self.spec, layer=self.layer_index, input_module=self.input_module)]

    def setup(self, model: nn.Module, units: Sequence[AnalysisUnit], legacy: Callable | None = None) -> None:
        """``legacy(kernels) -> (kernel, layout) | None``: the table-order layout of a concatenated table."""
        self.kernel = self.layout = self.discovery = None
        kernels = self.kernels(model)
        if not kernels:
            return
        if self.cross_fields is not None:
            names = field_widths(units)
            errors = []
            for kernel in kernels:
                try:
                    self.kernel, self.layout = kernel, explicit_layout(self.cross_fields, kernel.side, names)
                    return
                except ValueError as error:
                    errors.append(error)
            raise errors[0]
        if legacy is not None:
            found = legacy(kernels)
            if found is not None:
                self.kernel, self.layout = found
                return
        sharded = sharded_collections(model)
        if sharded:
            # Said at fit start (where the strategy has sharded the model), not silently at the first batch.
            rank_zero_warn(
                f"{self.owner}: the cross layer's field order is read from the embedding lookups on the first "
                f"batch, and TorchRec's DistributedModelParallel runs the lookups of {sharded} in sharded kernels "
                "that do not return each feature's embedding: the analysis of the cross layer (the interaction "
                "matrix, the learned field-pair strength) is skipped. Give the order of the cross layer's input "
                "with cross_fields=[feature, ...] to analyse it from the sharded tables, or pass "
                "cross_layer=None to silence this.", category=RuntimeWarning)
            return
        modules, field_of = field_locator(units)
        named = dict(model.named_modules())
        collections, inner, slots_of = collection_lookups(model)  # TorchRec: hook the collection, by feature
        hooked = {name: named[name] for name in modules if name in named and name not in inner}
        hooked.update(collections)
        self._candidates = kernels
        self.discovery = CrossInputDiscovery(model, kernels, hooked, field_of, slots_of)

    def start(self) -> None:
        if self.waiting and not self.discovery.hooked:
            self.discovery.start()

    def finish(self) -> bool:
        """Remove the hooks and read the layout; True when a layout was found now. A named cross layer whose
        input cannot be read raises; ``'auto'`` takes the first candidate whose input holds the fields.

        Each rank reads its own first batch, so the ranks agree before any acts (one all-gather of the
        answers): the layout found by the lowest rank that found one is every rank's; else the error of the
        lowest rank that has one is raised on every rank; else every rank skips the interaction analysis. A
        rank whose batch could not be read thus never raises while another goes on into the collectives that
        read the sharded weights."""
        if not self.waiting or not self.discovery.hooked:
            return False
        self.discovery.stop()
        found, problem = None, None
        try:
            found, problem = self._choose(self.discovery.layouts())
        except Exception as err:  # agreed below, like an unreadable input
            problem = err
        self.discovery = None
        found, problem = first_found(found, problem)
        if found is not None:
            index, self.layout = found
            self.kernel = self._candidates[index]
            return True
        if problem is not None:
            raise problem
        message = (f"{self.owner}: no cross layer's input holds the looked-up field embeddings (candidates: "
                   f"{[k.name for k in self._candidates]}); the interaction analysis is skipped. Name it with "
                   "cross_layer= (and cross_fields=[...] for the order), or pass cross_layer=None.")
        if self.quiet_auto:  # a model without a cross layer is no mistake for a monitor whose cross part is extra
            rank_zero_info(message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return False

    def _choose(self, layouts) -> tuple[tuple[int, CrossLayout] | None, Exception | None]:
        """This rank's answer: ``((candidate index, layout), None)``, ``(None, error)`` or ``(None, None)``."""
        for index, kernel in enumerate(self._candidates):
            layout = layouts.get(kernel.name)
            if isinstance(layout, CrossLayout):
                return (index, layout), None
        if self.spec != "auto":
            error = layouts.get(self._candidates[0].name)
            return None, ValueError(f"{self.owner}: cannot read the field order of cross_layer {self.spec!r}: {error}")
        ambiguous = [e for e in layouts.values() if isinstance(e, ValueError) and "several fields" in str(e)]
        if ambiguous:
            return None, ValueError(f"{self.owner}: {ambiguous[0]}")
        return None, None

    def coverage(self, analysis: str) -> dict:
        """Whether ``analysis`` (the part that reads the cross layer) runs, and if not why: a coverage item."""
        if self.layout is not None:
            return {"analysis": analysis, "runs": True, "why": f"cross layer `{self.kernel.name}`"}
        if self.waiting:
            return {"analysis": analysis, "runs": True, "why": "the cross layer's field order is read on the first batch"}
        why = ("cross_layer=None" if self.spec is None else
               "no cross layer found: 'auto' takes recognised cross kernels and square nn.Linear layers inside a "
               "cross network; name yours with cross_layer='<module>'" if self.spec == "auto" else
               f"cross_layer {self.spec!r} could not be read")
        return {"analysis": analysis, "runs": False, "why": why, "optional": self.spec is None}

    def describe(self) -> str:
        if self.layout is None:
            return ""
        return (f"cross layer `{self.kernel.name}` ({self.kernel.form}; input of {self.layout.side} columns, order "
                f"{self.layout.found}): {self.layout.describe()}")


def table_order_layout(kernel: CrossKernel, unit, offset: int) -> CrossLayout:
    """The fields of one concatenated table in table order from column ``offset`` (the demo's layout)."""
    k = unit.width
    slots = [CrossSlot(f.name, unit.name, f.name, offset + i * k, offset + (i + 1) * k) for i, f in enumerate(unit.fields)]
    return CrossLayout(kernel.side, slots, "table order")


# ---- for FieldPairCorrelationMonitor, whose fields are the batch's columns, named by field_names --------------
def one_table_holds_all(model: nn.Module, field_dims: Sequence[int] | None) -> bool:
    """The demo's layout: one table holds every field (``sum(field_dims)`` rows, or the model's only table)."""
    tables = [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.embedding_dim > 1]
    if field_dims is not None:
        return any(m.num_embeddings == sum(field_dims) for m in tables)
    return len({id(m.weight) for m in tables}) == 1


def field_units(model: nn.Module, field_names: Sequence[str], field_dims: Sequence[int] | None) -> list[AnalysisUnit]:
    """The model's analysis units, a table of ``sum(field_dims)`` rows split into the named fields; none found: []."""
    try:
        tables = discover_tables(model)
        if field_dims is not None:
            split = {t.name: dict(zip(field_names, field_dims)) for t in tables if t.rows == sum(field_dims)}
            tables = discover_tables(model, field_dims=split) if split else tables
    except ValueError:
        return []
    return analysis_units(tables)


def slots_by_name(finder: CrossFinder, names: Sequence[str]) -> list[CrossSlot]:
    """The cross-input slot of each name: a feature's own slot first, else the slot of the field it names."""
    layout = finder.layout
    by_name = {slot.name: slot for slot in reversed(layout.slots)}
    for slot in layout.slots:
        for key in (slot.field, *slot.field.split("+")):
            by_name.setdefault(key, slot)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(
            f"{finder.owner}: fields {missing} of field_names are not in the input of cross layer "
            f"'{finder.kernel.name}', which holds {layout.describe()}. Name the batch's fields as the model's "
            "tables are named (or give cross_fields=[...]), or give pair_strength=fn(module)")
    return [by_name[n] for n in names]
