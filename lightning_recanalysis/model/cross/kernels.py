"""DCN-style cross layers of any form: their kernel matrix, and where each field sits in their input.

A cross layer ``x_1 = x_0 * (W x_0 + b) + x_0`` reads ``x_0``, the concatenation of the field embeddings in some
order, possibly with dense features before, between or after them. The analyses need two things from it:

- **the kernel** ``W`` (``[D, D]``, rows = output, columns = input, as ``nn.Linear.weight``), from
  :func:`resolve_cross_kernel`, which accepts

  - an ``nn.Linear`` with a square weight (the demo's ``cross.layers.0``);
  - a parameter or buffer, ``[D, D]`` or ``[L, D, D]`` with a layer index (DeepCTR's ``CrossNet.kernels``), or a
    module holding such a ``kernels`` parameter, or a list of ``[D, D]`` ones (TorchRec's ``CrossNet``);
  - DCNv2's low-rank layer ``W = U V`` (TorchRec's ``LowRankCrossNet``: ``W_kernels[l]`` ``[D, r]``,
    ``V_kernels[l]`` ``[r, D]``);
  - DCNv2's mixture of low-rank experts, per expert ``W_e = U_e C_e V_e^T`` (DeepCTR's ``CrossNetMix``:
    ``U_list``/``V_list`` ``[L, E, D, r]``, ``C_list`` ``[L, E, r, r]``; or TorchRec's
    ``LowRankMixtureCrossNet``: ``U_kernels[l]`` ``[E, D, r]``, ``V_kernels[l]`` ``[E, r, D]``,
    ``C_kernels[l]`` ``[E, r, r]``). The matrix analysed is the **gate-free sum over experts**
    ``sum_e U_e C_e V_e^T``: what the layer would compute with every gate at 1 and the nonlinearities between the
    factors left out. The gates depend on the input, so no single matrix is the layer; this one is its fixed part.
    (A common scale of the matrix changes neither the interaction IA, which normalises rows, nor the rank
    agreement of the field-pair strength: the sum and the mean over experts give the same analyses.)

- **the layout** of ``x_0`` (:class:`CrossLayout`): which columns hold which field. It is given
  (``cross_fields=[13, "C1", "C2", ...]``: field names in input order, integers for runs of dense columns) or
  found on the first training batch by :class:`~lightning_recanalysis.model.cross.discovery.CrossInputDiscovery`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence, Union

import torch
from torch import nn

from ...parallel.sharding import full_tensor
from ..tables import ColumnSpan

__all__ = ["CrossKernel", "CrossSlot", "CrossLayout", "resolve_cross_kernel", "cross_kernel_candidates",
           "explicit_layout", "block_pair_strength", "in_cross_module", "is_square_linear", "named_cross_layer"]

CrossSpec = Union[str, Mapping[str, str]]
CrossFields = Sequence[Union[str, int]]


@dataclass
class CrossKernel:
    """A cross layer's kernel: ``matrix()`` is the ``[D, D]`` matrix analysed (detached), ``form`` says which.

    Example:
        >>> from torch import nn
        >>> kernel = resolve_cross_kernel(nn.ModuleDict({"cross": nn.Linear(4, 4)}), "cross")
        >>> kernel.form, kernel.side, tuple(kernel.matrix().shape)
        ('nn.Linear cross', 4, (4, 4))
    """

    name: str
    form: str
    input_module: str  # the module whose first forward input is x_0
    _matrix: Callable[[], torch.Tensor] = field(repr=False)

    def matrix(self) -> torch.Tensor:
        """The ``[D, D]`` matrix, whole on every rank (a kernel sharded as a ``DTensor`` is gathered: it is
        D x D, never a table)."""
        with torch.no_grad():
            return full_tensor(self._matrix()).detach()

    def renamed(self, layer: int) -> "CrossKernel":
        self.form = self.form.replace("(layer 0,", f"(layer {layer},")
        return self

    @property
    def side(self) -> int:
        return int(self._matrix().shape[0])  # the global shape: no gather of a sharded kernel


@dataclass(frozen=True)
class CrossSlot(ColumnSpan):
    """Columns ``[start, stop)`` of the cross input holding one field's embedding.

    Example:
        >>> CrossSlot("C1", unit="emb", field="C1", start=2, stop=6).width
        4
    """

    name: str    # the feature's name in the input (a shared table appears once per feature)
    unit: str    # the analysis unit holding the field (see field_sets)
    field: str   # the field's name in that unit
    start: int
    stop: int


@dataclass
class CrossLayout:
    """Where each field sits in the cross input of side ``side``; every other column is a dense input.

    Example:
        >>> layout = CrossLayout(8, [CrossSlot("user", "emb", "user", 2, 5), CrossSlot("item", "emb", "item", 5, 8)])
        >>> layout.describe()
        'dense [0:2] | user [2:5] | item [5:8]'
        >>> layout.dense_ranges(), [slot.name for slot in layout.unit_slots()]
        ([(0, 2)], ['user', 'item'])
    """

    side: int
    slots: list[CrossSlot]
    found: str = "given"  # "given", "table order" or "first training batch"

    def dense_ranges(self) -> list[tuple[int, int]]:
        out, at = [], 0
        for s in sorted(self.slots, key=lambda s: s.start):
            if s.start > at:
                out.append((at, s.start))
            at = s.stop
        if at < self.side:
            out.append((at, self.side))
        return out

    def describe(self) -> str:
        parts = [(s.start, f"{s.name} [{s.start}:{s.stop}]") for s in self.slots]
        parts += [(a, f"dense [{a}:{b}]") for a, b in self.dense_ranges()]
        return " | ".join(text for _, text in sorted(parts))

    def unit_slots(self, unit: str | None = None) -> list[CrossSlot]:
        """The slots of one unit (default: the unit with most slots in the input, first in input order on a tie)."""
        if unit is None:
            counts: dict[str, int] = {}
            for s in self.slots:
                counts[s.unit] = counts.get(s.unit, 0) + 1
            unit = max(counts, key=lambda u: (counts[u], -min(s.start for s in self.slots if s.unit == u)))
        return [s for s in self.slots if s.unit == unit]


def is_square_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` with a square weight: the shape of a DCNv2 full-matrix cross layer.

    Example:
        >>> is_square_linear(nn.Linear(4, 4)), is_square_linear(nn.Linear(4, 2))
        (True, False)
    """
    return isinstance(module, nn.Linear) and module.weight.shape[0] == module.weight.shape[1]


def named_cross_layer(model: nn.Module, name: str) -> nn.Linear:
    """The module ``name`` of ``model``, which must be a square ``nn.Linear`` (DCNv2's cross matrix); the error
    lists the square linear layers the model does have.

    Example:
        >>> named_cross_layer(nn.ModuleDict({"cross": nn.Linear(6, 6)}), "cross")
        Linear(in_features=6, out_features=6, bias=True)
    """
    modules = dict(model.named_modules())
    layer = modules.get(name)
    if not is_square_linear(layer):
        raise ValueError(
            f"cross_layer='{name}' must name an nn.Linear with a square weight (DCNv2's full cross matrix); found "
            f"{type(layer).__name__ if layer is not None else 'nothing'}. Square linear layers of the model: "
            f"{[k for k, m in modules.items() if is_square_linear(m)]}"
        )
    return layer


def _modules_and_tensors(model: nn.Module):
    modules = dict(model.named_modules())
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(dict(model.named_buffers(remove_duplicate=False)))
    return modules, tensors


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _called_owner(modules: dict, name: str) -> str:
    """The module that owns tensor ``name`` and is called with the input (a ParameterList holding it is not)."""
    owner = _owner(name)
    while owner and isinstance(modules.get(owner), (nn.ParameterList, nn.ParameterDict)):
        owner = _owner(owner)
    return owner


def _layer_of(params, layer: int, name: str) -> torch.Tensor:
    if not 0 <= layer < len(params):
        raise ValueError(f"cross_layer_index={layer} is outside the {len(params)} layers of '{name}'")
    return params[layer]


def _raw_kernel(name: str, tensor: torch.Tensor, layer: int, input_module: str) -> CrossKernel:
    if tensor.dim() == 2 and tensor.shape[0] == tensor.shape[1]:
        return CrossKernel(name, f"parameter {name} [D, D]", input_module, lambda: tensor)
    if tensor.dim() == 3 and tensor.shape[1] == tensor.shape[2]:
        if not 0 <= layer < tensor.shape[0]:
            raise ValueError(f"cross_layer_index={layer} is outside the {tensor.shape[0]} layers of '{name}' "
                             f"{tuple(tensor.shape)}")
        return CrossKernel(name, f"parameter {name}[{layer}] of [L, D, D]", input_module, lambda: tensor[layer])
    raise ValueError(f"cross kernel '{name}' has shape {tuple(tensor.shape)}; it must be [D, D] or [L, D, D] "
                     "(rows = output, columns = input, as nn.Linear.weight)")


def _mixture(name: str, u: torch.Tensor, v: torch.Tensor, c: torch.Tensor, layer: int,
             input_module: str) -> CrossKernel:
    def pick(t: torch.Tensor) -> torch.Tensor:
        return t[layer] if t.dim() == 4 else t

    u0, v0, c0 = pick(u), pick(v), pick(c)
    if u0.dim() != 3 or c0.dim() != 3 or v0.dim() != 3:
        raise ValueError(f"low-rank mixture '{name}': U, V, C must be [E, D, r], [E, D, r] or [E, r, D], [E, r, r] "
                         f"(with a leading layer axis for all layers), got {tuple(u.shape)}, {tuple(v.shape)}, "
                         f"{tuple(c.shape)}")
    experts, side, rank = u0.shape
    v_first = tuple(v0.shape) == (experts, side, rank)  # DeepCTR: V [E, D, r]; TorchRec: [E, r, D]
    if not v_first and tuple(v0.shape) != (experts, rank, side) or tuple(c0.shape) != (experts, rank, rank):
        raise ValueError(f"low-rank mixture '{name}': shapes U {tuple(u0.shape)}, V {tuple(v0.shape)}, "
                         f"C {tuple(c0.shape)} do not fit E experts of rank r on side D")

    def matrix() -> torch.Tensor:
        uu, vv, cc = pick(u), pick(v), pick(c)
        vt = vv.transpose(1, 2) if v_first else vv  # [E, r, D]
        return torch.matmul(torch.matmul(uu, cc), vt).sum(0)

    form = (f"low-rank mixture '{name}' (layer {layer}, {experts} experts of rank {rank}): the gate-free sum over "
            "experts of U_e C_e V_e^T")
    return CrossKernel(name, form, input_module, matrix)


def resolve_cross_kernel(model: nn.Module, spec: CrossSpec, *, layer: int = 0,
                         input_module: str | None = None) -> CrossKernel:
    """The kernel that ``spec`` names (see the module docstring); the error lists what the model has.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> resolve_cross_kernel(nn.ModuleDict({"cross": nn.Linear(4, 4)}), "cross").form
        'nn.Linear cross'
        >>> mixture = nn.ParameterDict({"U": nn.Parameter(torch.ones(2, 4, 1)), "V": nn.Parameter(torch.ones(2, 4, 1)),
        ...                             "C": nn.Parameter(torch.ones(2, 1, 1))})  # 2 experts of rank 1 on side 4
        >>> kernel = resolve_cross_kernel(mixture, {"U": "U", "V": "V", "C": "C"})
        >>> kernel.matrix()[0].tolist()  # the sum over the experts of U_e C_e V_e^T
        [2.0, 2.0, 2.0, 2.0]
    """
    modules, tensors = _modules_and_tensors(model)
    if isinstance(spec, Mapping):
        missing = [k for k in ("U", "V", "C") if k not in spec]
        if missing:
            raise ValueError(f"a low-rank mixture cross kernel is {{'U': name, 'V': name, 'C': name}}; {missing} missing")
        got = {k: tensors.get(spec[k]) for k in ("U", "V", "C")}
        absent = [spec[k] for k, t in got.items() if t is None]
        if absent:
            raise ValueError(f"cross kernel tensors {absent} are not in the model")
        owner = input_module if input_module is not None else _owner(spec["U"])
        return _mixture(spec["U"], got["U"], got["V"], got["C"], layer, owner)
    name = str(spec)
    owner = input_module if input_module is not None else name
    module = modules.get(name)
    if module is not None:
        if is_square_linear(module):
            return CrossKernel(name, f"nn.Linear {name}", owner, lambda: module.weight)
        params = dict(module.named_parameters(recurse=False))
        if isinstance(params.get("kernels"), torch.Tensor) and params["kernels"].dim() == 3:
            return _raw_kernel(f"{name}.kernels", params["kernels"], layer, owner)
        if isinstance(getattr(module, "kernels", None), nn.ParameterList):  # TorchRec's CrossNet
            return _raw_kernel(f"{name}.kernels.{layer}", _layer_of(module.kernels, layer, name), 0, owner)
        if all(isinstance(getattr(module, a, None), nn.ParameterList) for a in ("W_kernels", "V_kernels")):
            w, v = _layer_of(module.W_kernels, layer, name), _layer_of(module.V_kernels, layer, name)
            return CrossKernel(name, f"low-rank layer {name} (layer {layer}, rank {v.shape[0]}): W = U V", owner,
                               lambda: w @ v)
        if all(hasattr(module, a) for a in ("U_list", "V_list", "C_list")):
            return _mixture(name, module.U_list, module.V_list, module.C_list, layer, owner)
        if all(hasattr(module, a) for a in ("U_kernels", "V_kernels", "C_kernels")):
            u, v, c = (_layer_of(getattr(module, a), layer, name) for a in ("U_kernels", "V_kernels", "C_kernels"))
            return _mixture(name, u, v, c, 0, owner).renamed(layer)
    elif name in tensors:
        return _raw_kernel(name, tensors[name], layer,
                           input_module if input_module is not None else _called_owner(modules, name))
    squares = [k for k, m in modules.items() if is_square_linear(m)]
    raw = [k for k, t in tensors.items() if t.dim() in (2, 3) and t.shape[-1] == t.shape[-2] and t.shape[-1] > 1]
    found = f"found {type(module).__name__}" if module is not None else "no such module, parameter or buffer"
    raise ValueError(
        f"cross_layer='{name}' must name an nn.Linear with a square weight (DCNv2's full cross matrix), a [D, D] or "
        f"[L, D, D] kernel tensor (with cross_layer_index), a module holding one (`kernels`) or a low-rank mixture "
        f"(U_list/V_list/C_list), or be {{'U': .., 'V': .., 'C': ..}}; {found}. Square linear layers of the model: "
        f"{squares}; square kernel tensors: {raw[:10]}"
    )


def in_cross_module(model: nn.Module, name: str) -> bool:
    """Whether the module ``name`` is, or sits in, a cross network: a path component or an enclosing module's class
    named like one (``cross``, ``CrossNet``, ``DCNv2Cross``...). A square ``nn.Linear`` elsewhere (a tower's first
    layer over the concatenated fields) is no cross layer, and ``cross_layer='auto'`` leaves it alone.

    Example:
        >>> from torch import nn
        >>> model = nn.ModuleDict({"cross": nn.ModuleList([nn.Linear(4, 4)]), "tower": nn.Linear(4, 4)})
        >>> in_cross_module(model, "cross.0"), in_cross_module(model, "tower")
        (True, False)
    """
    module = model  # the model's own class name says nothing: a "CrossDomainRec" is no cross layer
    for part in name.split(".") if name else []:
        module = getattr(module, part)
        if "cross" in part.lower() or "cross" in type(module).__name__.lower():
            return True
    return False


def cross_kernel_candidates(model: nn.Module, *, layer: int = 0) -> list[CrossKernel]:
    """Every cross kernel of a recognised form in ``model``, in module order (for ``cross_layer='auto'``): the
    first whose input holds the fields is taken. A square ``nn.Linear`` is a candidate only inside a cross network
    (:func:`in_cross_module`); anywhere else it is analysed only when named (``cross_layer="tower.0"``).

    Example:
        >>> from torch import nn
        >>> model = nn.ModuleDict({"cross": nn.Linear(6, 6), "tower": nn.Linear(6, 6), "head": nn.Linear(6, 1)})
        >>> [kernel.name for kernel in cross_kernel_candidates(model)]
        ['cross']
    """
    out: list[CrossKernel] = []
    for name, module in model.named_modules():
        try:
            if is_square_linear(module) and in_cross_module(model, name):
                out.append(resolve_cross_kernel(model, name))
            elif (isinstance(getattr(module, "kernels", None), (torch.Tensor, nn.ParameterList))
                  or all(hasattr(module, a) for a in ("W_kernels", "V_kernels"))
                  or all(hasattr(module, a) for a in ("U_list", "V_list", "C_list"))
                  or all(hasattr(module, a) for a in ("U_kernels", "V_kernels", "C_kernels"))):
                out.append(resolve_cross_kernel(model, name, layer=layer))
        except (ValueError, IndexError, TypeError):
            continue
    return out


def explicit_layout(cross_fields: CrossFields, side: int, fields: Mapping[str, tuple[str, str, int]]) -> CrossLayout:
    """The layout given as ``cross_fields``: field names in input order, integers for runs of dense columns.

    ``fields``: every name that may appear, -> (unit, field name, width).

    Example:
        >>> fields = {"user": ("emb", "user", 3), "item": ("emb", "item", 3)}
        >>> explicit_layout([2, "user", "item"], side=8, fields=fields).describe()
        'dense [0:2] | user [2:5] | item [5:8]'
    """
    slots, at, seen = [], 0, set()
    for item in cross_fields:
        if isinstance(item, int) and not isinstance(item, bool):
            if item < 0:
                raise ValueError(f"cross_fields: a dense run must be a non-negative number of columns, got {item}")
            at += item
            continue
        name = str(item)
        if name not in fields:
            raise ValueError(f"cross_fields names '{name}', which is not a field of the model's tables; fields: "
                             f"{sorted(fields)}")
        unit, fname, width = fields[name]
        slot_name = name if name not in seen else f"{name}#{sum(s.field == fname for s in slots) + 1}"
        seen.add(name)
        slots.append(CrossSlot(slot_name, unit, fname, at, at + width))
        at += width
    if at != side:
        raise ValueError(f"cross_fields {list(cross_fields)} cover {at} columns but the cross layer's input has {side}: "
                         "give every field in input order and the dense columns as integers, e.g. [13, 'C1', 'C2']")
    return CrossLayout(side, slots, "given")


def block_pair_strength(weight: torch.Tensor, slots: Sequence[CrossSlot]) -> torch.Tensor:
    """``[n, n]`` float64, entry (i, j) = (||W[j, i]||_F + ||W[i, j]||_F) / 2 over the slots' column blocks, where
    block W[j, i] = W[cols_j, cols_i] maps field i into field j's slot (fields of any widths).

    Example:
        >>> weight = torch.zeros(4, 4)
        >>> weight[2:4, 0:2] = 1.0  # field a (columns 0-1) feeds field b's slot (rows 2-3): ||block||_F = 2
        >>> slots = [CrossSlot("a", "emb", "a", 0, 2), CrossSlot("b", "emb", "b", 2, 4)]
        >>> block_pair_strength(weight, slots).tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    w = weight.detach().to(torch.float64)
    n = len(slots)
    norms = torch.zeros(n, n, dtype=torch.float64)
    for i, a in enumerate(slots):
        for j, b in enumerate(slots):
            norms[i, j] = torch.linalg.matrix_norm(w[b.start : b.stop, a.start : a.stop]).cpu()
    return (norms + norms.T) / 2
