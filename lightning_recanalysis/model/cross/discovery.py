"""Finding the order of the fields in a cross layer's input by itself, on the first training batch.

For one forward pass (the first training batch), forward hooks on every embedding module record each lookup's
ids and output, and a forward pre-hook on each candidate cross layer records its input ``x_0`` (flattened to
``[B, D]``). Then, without gradients, each looked-up slot (``[B, K]``: one id column of a lookup) is compared
with every K-column window of ``x_0``: the input is a concatenation, so a field's columns are bit-equal to its
lookup. The slot's field comes from its ids (the row range they fall in), so a concatenated table, a table per
feature and a table shared by several features are told apart alike. Columns that match no lookup are dense
inputs. The hooks are removed at once; nothing runs on later steps. Cost: storing references during the one
forward, then one fingerprint per column and an exact comparison where fingerprints agree, O(B D + slots B K)
(see ``benchmarks/bench_cross_discovery.py``).

Errors (raised at that first batch): two different fields whose looked-up rows are identical in the batch match
the same columns (the order cannot be read from the values: give it with ``cross_fields``), and an input in
which fewer than two fields can be found (names the fields found and the columns left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .kernels import CrossKernel, CrossLayout, CrossSlot
from ...parallel.mesh_groups import local_value

__all__ = ["Lookup", "CrossInputDiscovery", "match_cross_input"]

# (weight, ids column) -> (unit, field) or None; given per embedding module by the caller.
FieldOf = Callable[[nn.Module, torch.Tensor], "tuple[str, str, str] | None"]


@dataclass
class Lookup:
    """One looked-up slot: ``values`` ``[B, K]``, named ``name``, of field ``field`` in unit ``unit``.

    Example:
        >>> Lookup("C1", unit="emb", field="C1", values=torch.zeros(2, 4)).values.shape
        torch.Size([2, 4])
    """

    name: str
    unit: str
    field: str
    values: torch.Tensor


class CrossInputDiscovery:
    """Hooks for one forward pass, then the layout of each candidate kernel's input.

    Args:
        model: the module whose forward is watched.
        kernels: candidate cross kernels (their ``input_module`` is hooked).
        embedding_modules: ``{module name: module}`` to watch.
        field_of: ``field_of(module_name, ids) -> (slot name, unit, field)`` for a ``[B]`` column of ids, or
            None when the ids are not one field's (the slot is then ignored).
        slots_of: optional ``slots_of(module_name, args, kwargs, output) -> [(table module name, slot name, ids,
            values [B, K])]``, or None for a plain module, for modules whose lookups are not ``ids -> [..., K]``
            (TorchRec collections, :mod:`lightning_recanalysis.model.torchrec_tables`).

    Example:
        >>> from lightning_recanalysis.model.cross.kernels import cross_kernel_candidates
        >>> from lightning_recanalysis.toy import ToyDCN
        >>> _ = torch.manual_seed(0)
        >>> model = ToyDCN(field_dims=(3, 4), embed_dim=2)  # ids of field f0 are rows 0-2, of f1 rows 3-6
        >>> def field_of(module_name, ids):
        ...     name = "f0" if int(ids.max()) < 3 else "f1"
        ...     return name, "embedding", name
        >>> kernels = cross_kernel_candidates(model)  # its square nn.Linear "cross"
        >>> discovery = CrossInputDiscovery(model, kernels, {"embedding": model.embedding}, field_of)
        >>> discovery.start()
        >>> _ = model({"features": torch.tensor([[0, 1], [2, 3], [1, 0]])})  # the first training batch
        >>> discovery.stop()
        >>> {name: layout.describe() for name, layout in discovery.layouts().items()}
        {'cross': 'f0 [0:2] | f1 [2:4]'}
    """

    def __init__(self, model: nn.Module, kernels: Sequence[CrossKernel], embedding_modules: dict[str, nn.Module],
                 field_of: Callable, slots_of: Callable | None = None) -> None:
        self.model, self.kernels = model, list(kernels)
        self.embedding_modules, self.field_of, self.slots_of = embedding_modules, field_of, slots_of
        self._handles: list = []
        self._raw: list[tuple[str, tuple, object]] = []
        self._inputs: dict[str, torch.Tensor] = {}

    @property
    def hooked(self) -> bool:
        return bool(self._handles)

    def start(self) -> None:
        modules = dict(self.model.named_modules())
        for name, module in self.embedding_modules.items():
            self._handles.append(module.register_forward_hook(self._lookup_hook(name), with_kwargs=True))
        for kernel in self.kernels:
            target = modules.get(kernel.input_module) if kernel.input_module else self.model
            if target is not None and kernel.input_module not in self._inputs:
                self._handles.append(target.register_forward_pre_hook(self._input_hook(kernel.input_module)))

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _lookup_hook(self, name: str):
        def hook(module, args, kwargs, output):
            # Under tensor parallelism the ids arrive as a replicated DTensor: plain tensors are compared.
            self._raw.append((name, tuple(local_value(a) for a in args),
                              {k: local_value(v) for k, v in kwargs.items()}, local_value(output)))
        return hook

    def _input_hook(self, name: str):
        def hook(module, args):
            if name not in self._inputs and args and isinstance(args[0], torch.Tensor):
                self._inputs[name] = local_value(args[0])
        return hook

    def lookups(self) -> list[Lookup]:
        out: list[Lookup] = []
        with torch.no_grad():
            for name, args, kwargs, output in self._raw:
                pairs = self.slots_of(name, args, kwargs, output) if self.slots_of else None
                if pairs is None:
                    pairs = [(name, None, ids, values) for ids, values in _default_slots(args, kwargs, output)]
                for table_module, slot_name, ids, values in pairs:
                    named = self.field_of(table_module, ids)
                    if named is not None:
                        out.append(Lookup(slot_name or named[0], named[1], named[2], values.detach()))
        return out

    def layouts(self) -> dict[str, CrossLayout | Exception]:
        """Per kernel: its layout, or the error that says why its input could not be read."""
        lookups = self.lookups()
        self._raw = []
        result: dict[str, CrossLayout | Exception] = {}
        for kernel in self.kernels:
            x0 = self._inputs.get(kernel.input_module)
            if x0 is None:
                result[kernel.name] = ValueError(
                    f"the cross input module '{kernel.input_module or type(self.model).__name__}' of '{kernel.name}' "
                    "was not called with a tensor in the first training step")
                continue
            try:
                result[kernel.name] = match_cross_input(x0.detach().reshape(x0.shape[0], -1), lookups, kernel.name)
            except ValueError as error:
                result[kernel.name] = error
        self._inputs = {}
        return result


def _default_slots(args, kwargs, output) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``nn.Embedding``: ids ``[B, *S]`` -> one slot per id column; ``nn.EmbeddingBag``: one slot per bag."""
    ids = args[0] if args else kwargs.get("input")
    if not isinstance(ids, torch.Tensor) or not isinstance(output, torch.Tensor):
        return []
    width = output.shape[-1]
    if output.dim() < 2:
        return []
    batch = output.shape[0]
    values = output.reshape(batch, -1, width)
    if ids.dim() >= 1 and ids.shape[0] == batch and ids.numel() == batch * values.shape[1]:
        columns = ids.reshape(batch, -1)
        return [(columns[:, s], values[:, s]) for s in range(values.shape[1])]
    if values.shape[1] == 1:  # a bag (flat ids with offsets): every id of the batch is this bag's field's
        return [(ids.reshape(-1), values[:, 0])]
    return []


def match_cross_input(x0: torch.Tensor, lookups: Sequence[Lookup], kernel_name: str = "cross layer") -> CrossLayout:
    """The layout of ``x0`` ``[B, D]``: each lookup placed where its ``[B, K]`` values equal K columns of ``x0``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(8, 2, generator=g), torch.randn(8, 3, generator=g)
        >>> x0 = torch.cat([torch.ones(8, 1), b, a], 1)  # a dense column, then field b, then field a
        >>> match_cross_input(x0, [Lookup("a", "emb", "a", a), Lookup("b", "emb", "b", b)]).describe()
        'dense [0:1] | b [1:4] | a [4:6]'
    """
    batch, side = x0.shape
    by_start: dict[int, list[Lookup]] = {}
    # A column's fingerprint: its float64 product with one random vector over the batch. Equal columns have equal
    # fingerprints up to summation order, so only the windows whose first column's fingerprint is within rounding
    # of the slot's are compared exactly: O(B D + slots B K) instead of O(slots B D).
    r = torch.randn(batch, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(x0.device)
    x0_64 = x0.to(torch.float64)
    fingerprint, bound = r @ x0_64, r.abs() @ x0_64.abs()
    for lk in lookups:
        values = lk.values
        if values.shape[0] != batch or values.shape[1] > side:
            continue
        values = values.to(device=x0.device, dtype=x0.dtype)
        k = values.shape[1]
        first_column = r @ values[:, 0].to(torch.float64)
        close = (fingerprint - first_column).abs() <= 1e-9 * (bound + 1e-30)
        for start in close.nonzero().flatten().tolist():
            if start + k <= side and torch.equal(x0[:, start : start + k], values):
                by_start.setdefault(start, []).append(lk)
    slots: list[CrossSlot] = []
    taken_until = 0
    for start in sorted(by_start):
        found = by_start[start]
        fields = {(lk.unit, lk.field, lk.values.shape[1]) for lk in found}
        names = sorted({lk.name for lk in found})
        if len(fields) > 1:
            raise ValueError(
                f"the input of {kernel_name}: columns from {start} equal the looked-up rows of several fields in the "
                f"first training batch ({', '.join(f'{u}/{f}' for u, f, _ in sorted(fields))}), so the order cannot "
                "be read from the values. Give it: cross_fields=[field names in input order, with integers for runs "
                "of dense columns], e.g. " + repr(_example(slots, names, start)))
        if start < taken_until:
            raise ValueError(
                f"the input of {kernel_name}: '{names[0]}' matches columns {start}:{start + found[0].values.shape[1]}, "
                f"which overlap the field before it ({slots[-1].name} [{slots[-1].start}:{slots[-1].stop}]); give the "
                "order with cross_fields=[...]")
        lk = found[0]
        name = lk.name if len(names) == 1 else "+".join(names)
        if any(s.name == name for s in slots):
            name = f"{name}#{sum(s.name.split('#')[0] == name for s in slots) + 1}"
        slots.append(CrossSlot(name, lk.unit, lk.field, start, start + lk.values.shape[1]))
        taken_until = start + lk.values.shape[1]
    layout = CrossLayout(side, slots, "first training batch")
    if len(slots) < 2:
        left = ", ".join(f"{a}:{b}" for a, b in layout.dense_ranges())
        raise ValueError(
            f"the input of {kernel_name} ({side} columns) holds {len(slots)} looked-up field(s) "
            f"({[s.name for s in slots]}); columns left unmatched: [{left}]. An interaction analysis needs the raw "
            "field embeddings concatenated in its input (not transformed first); point cross_layer at the layer "
            "that reads them, or give the order with cross_fields=[...]")
    return layout


def _example(slots: Sequence[CrossSlot], names: Sequence[str], start: int) -> list:
    out: list = []
    at = 0
    for s in slots:
        if s.start > at:
            out.append(s.start - at)
        out.append(s.name)
        at = s.stop
    if start > at:
        out.append(start - at)
    return out + [names[0], "..."]
