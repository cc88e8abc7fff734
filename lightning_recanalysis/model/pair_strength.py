"""Where :class:`~lightning_recanalysis.FieldPairCorrelationMonitor` reads the model's learned pair strength.

S [N, N] over all N fields of the batch, from one of three sources, chosen at ``setup``:

- the user's ``pair_strength(module) -> [N, N]`` (FM, FFM, FwFM, any other layout);
- a DCNv2 cross layer over one concatenated table (the demo's layout: an ``nn.Linear`` of side
  ``cross_offset + N K`` that reads the fields in batch order): S_ij = (||W[j, i]||_F + ||W[i, j]||_F) / 2
  (:func:`~lightning_recanalysis.functional.cross_layer_pair_strength`);
- any other cross kernel, its input layout given or read on the first training batch
  (:class:`~lightning_recanalysis.model.cross.finder.CrossFinder`): the same mean of block norms over each
  field's columns (:func:`~lightning_recanalysis.model.cross.kernels.block_pair_strength`).
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from ..parallel import sharding
from .cross.kernels import block_pair_strength, in_cross_module, is_square_linear, named_cross_layer
from ..functional.field_pair import cross_layer_pair_strength
from .cross.finder import CrossFinder, field_units, one_table_holds_all, resharded, slots_by_name

__all__ = ["LearnedPairStrength"]

PairStrength = Callable[[nn.Module], torch.Tensor]


class LearnedPairStrength:
    """The learned strength's source for one monitor; :meth:`read` gives S over all N fields (float64, CPU).

    Args:
        owner: the monitor's name, first in every message.
        field_names: the batch's N fields in column order.
        field_dims: their cardinalities, or None (used to tell whether one table holds every field).
        pair_strength / cross_layer / cross_offset / embed_dim: the monitor's arguments of those names.
        finder: the monitor's :class:`CrossFinder` (its hooks read the layout on the first batch).
    """

    def __init__(self, owner: str, field_names: Sequence[str], field_dims: Sequence[int] | None, *,
                 pair_strength: PairStrength | None, cross_layer: str | None, cross_offset: int,
                 embed_dim: int | None, finder: CrossFinder) -> None:
        self.owner, self.field_names, self.field_dims = owner, list(field_names), field_dims
        self.pair_strength, self.cross_layer = pair_strength, cross_layer
        self.cross_offset, self.embed_dim, self.finder = cross_offset, embed_dim, finder
        self.cross: tuple[str, nn.Linear, int] | None = None  # (name, layer, K) of the demo's layout
        self.slots = None  # the fields' columns in any other kernel's input, by name

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    def setup(self, pl_module: nn.Module) -> None:
        """Resolve the source on the module as configured; a bad configuration raises here, before training."""
        self.cross = None
        if self.pair_strength is not None:
            self.check(self._call(pl_module), "at setup")
            return
        if self.cross_layer is None:
            return
        self.slots = None
        # The demo's layout (one table holds every field, an nn.Linear reads them in batch order) as before;
        # any other through the kernel forms and the input order of _cross.
        named = dict(pl_module.named_modules()).get(self.cross_layer)
        legacy = (self.finder.cross_fields is None and one_table_holds_all(pl_module, self.field_dims)
                  and (self.cross_layer == "auto" or is_square_linear(named)))
        self.cross = self._find_cross_layer(pl_module) if legacy else None
        if self.cross is None:
            self.refresh(pl_module)
        if self.cross is None and self.finder.layout is None and not self.finder.waiting:
            warnings.warn(
                f"{self.owner}: no DCNv2 cross layer found (a square nn.Linear of side "
                f"{self.cross_offset} + {self.num_fields} x K, K an embedding width of the model); only the "
                "ground truth is logged. Pass cross_layer='<module name>' (and embed_dim, cross_offset), "
                "pair_strength=fn(module) for another model, or cross_layer=None to silence this.",
                RuntimeWarning,
                stacklevel=4,
            )

    def refresh(self, pl_module: nn.Module) -> None:
        """Resolve the kernel and its input layout again on the module's current parameters."""
        units = field_units(pl_module, self.field_names, self.field_dims)
        if units:
            self.finder.setup(pl_module, units)
            if self.finder.layout is not None:
                self.layout_found()

    def refresh_if_sharded(self, pl_module: nn.Module) -> None:
        """At fit start: a strategy that replaced the parameters after setup (sharded them) is read anew (before
        any batch, so nothing the first batch finds is lost)."""
        if (self.cross is None and self.pair_strength is None and self.cross_layer is not None
                and resharded(pl_module)):
            self.refresh(pl_module)

    def layout_found(self) -> None:
        self.slots = slots_by_name(self.finder, self.field_names)

    def read(self, pl_module: nn.Module) -> tuple[torch.Tensor, str] | None:
        """``([N, N] float64, source)`` over all N fields, or None when there is nothing to read."""
        if self.pair_strength is not None:
            return self.check(self._call(pl_module), "during the analysis"), "pair_strength"
        if self.cross is not None:
            name, layer, width = self.cross
            full = cross_layer_pair_strength(sharding.full_tensor(layer.weight), self.num_fields, width,
                                             offset=self.cross_offset)
            return full, f"||W[j, i]||_F of {name}"
        if self.slots is not None:
            return (block_pair_strength(self.finder.kernel.matrix(), self.slots),
                    f"||W[j, i]||_F of {self.finder.kernel.name}")
        return None

    def coverage(self) -> dict:
        """Whether the learned strength will be read, and if not what to pass: a coverage item."""
        source = self.describe()
        found = not source.startswith("nothing")
        return {"analysis": "learned pair strength", "runs": found, "optional": self.cross_layer is None,
                "why": source if found else "no cross layer or pair_strength function: pass "
                "cross_layer='<module>' or pair_strength=fn(module)"}

    def describe(self) -> str:
        """Where the strength comes from, for the inventory."""
        if self.pair_strength is not None:
            return "the user's `pair_strength` function"
        if self.cross is not None:
            name, layer, width = self.cross
            return (f"cross layer `{name}` ({layer.weight.shape[0]} x {layer.weight.shape[1]}), "
                    f"{self.num_fields} fields of width {width} from column {self.cross_offset}")
        if self.finder.layout is not None:
            return self.finder.describe()
        if self.finder.waiting:
            return "a cross layer whose field order is read on the first training batch"
        return "nothing (ground truth only)"

    def check(self, strength, when: str) -> torch.Tensor:
        """The user's strength as float64 on the CPU, if it is ``[N, N]``; else a ``ValueError`` saying so."""
        n = self.num_fields
        if not isinstance(strength, torch.Tensor) or tuple(strength.shape) != (n, n):
            shape = tuple(strength.shape) if isinstance(strength, torch.Tensor) else type(strength).__name__
            raise ValueError(
                f"{self.owner}: pair_strength returned {shape} {when}, but field_names configures {n} "
                f"fields: it must return an [{n}, {n}] tensor over all of them, in column order"
            )
        return strength.detach().to(torch.float64).cpu()

    def _call(self, pl_module: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return self.pair_strength(pl_module)

    def _embedding_widths(self, model: nn.Module) -> list[int]:
        if self.embed_dim is not None:
            return [self.embed_dim]
        widths = {m.embedding_dim for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
        return sorted(w for w in widths if w > 1)

    def _find_cross_layer(self, model: nn.Module) -> tuple[str, nn.Linear, int] | None:
        n, offset = self.num_fields, self.cross_offset
        widths = self._embedding_widths(model)
        if self.cross_layer != "auto":
            layer = named_cross_layer(model, self.cross_layer)
            side = layer.weight.shape[0]
            fits = [k for k in widths if offset + n * k <= side]
            exact = [k for k in fits if offset + n * k == side]
            if exact or fits:
                return self.cross_layer, layer, (exact or fits)[-1]
            if not widths and (side - offset) % n == 0 and side > offset:
                return self.cross_layer, layer, (side - offset) // n
            raise ValueError(
                f"cross_layer '{self.cross_layer}' has side {side}, which cannot hold {n} fields (field_names) of "
                f"width {widths or 'K'} from cross_offset={offset}; pass embed_dim= and cross_offset= to match "
                "the model's cross input"
            )
        for name, layer in model.named_modules():
            if is_square_linear(layer) and in_cross_module(model, name):  # a tower's square layer is no cross layer
                for k in widths:
                    if layer.weight.shape[0] == offset + n * k:
                        return name, layer, k
        return None
