"""The model an offline analysis evaluates: a LightningModule as it is, a plain ``nn.Module`` wrapped with its own
names, or a module rebuilt from a plain ``state_dict``.

The monitors find tables, cross layers and lookups by qualified name, and the tags they write carry those names
(``collapse/embedding/...``). So nothing here renames anything: a plain module's children, parameters and buffers
are registered on the wrapping LightningModule under the names they have in the plain module, and a state dict's
tensors are placed at the module paths their keys name (``embedding.embedding.weight`` is the weight of an
``nn.Embedding`` at ``embedding.embedding``).
"""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Any, Callable, Iterator, Mapping, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn

__all__ = ["Forward", "PlainModule", "evaluation_step", "module_from_state_dict", "table_like"]

#: ``forward(model, batch)``: how to run the model on a batch (the cross input's layout is read from that forward).
Forward = Callable[[nn.Module, Any], Any]

#: Name parts that mark a 2-D weight of a state dict as an embedding table (``--tables`` replaces the guess).
TABLE_WORDS = ("emb", "table")


class PlainModule(pl.LightningModule):
    """A LightningModule around a plain ``nn.Module``, holding its children, parameters and buffers under their own
    names; its evaluation step runs ``forward(module, batch)`` (nothing without ``forward``, or on a ``None`` batch).

    Example:
        >>> inner = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 1))
        >>> [name for name, _ in PlainModule(inner).named_parameters()]
        ['0.weight', '1.weight', '1.bias']
    """

    def __init__(self, module: nn.Module, forward: Forward | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "inner", module)  # not a child: its names are this module's own
        self._run = forward
        for name, child in module.named_children():
            self.add_module(name, child)
        for name, parameter in module.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in module.named_buffers(recurse=False):
            self.register_buffer(name, buffer, persistent=name not in module._non_persistent_buffers_set)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)

    def validation_step(self, batch: Any, batch_idx: int = 0) -> Any:
        return None if batch is None or self._run is None else self._run(self.inner, batch)

    def test_step(self, batch: Any, batch_idx: int = 0) -> Any:
        return self.validation_step(batch, batch_idx)


@contextlib.contextmanager
def evaluation_step(model: pl.LightningModule, step: str, forward: Forward | None, data: bool) -> Iterator[None]:
    """While it lasts, ``model`` has an evaluation step (``validation_step`` or ``test_step``) that Lightning can run:
    its own when it defines one and there are data; else one that runs ``forward(model, batch)`` (or nothing), set
    on the instance and taken away afterwards."""
    if data and is_overridden(step, model):
        yield
        return

    def run(batch: Any, batch_idx: int = 0, dataloader_idx: int = 0) -> Any:
        return None if batch is None or forward is None else forward(model, batch)

    object.__setattr__(model, step, run)
    try:
        yield
    finally:
        vars(model).pop(step, None)


def table_like(name: str, tensor: torch.Tensor, tables: Sequence[str] | None) -> bool:
    """Whether the state dict's ``name`` (a ``.weight``) is an embedding table: a 2-D floating tensor whose module
    path matches one of ``tables`` (globs), or, without ``tables``, whose path has a part naming an embedding.

    Example:
        >>> w = torch.zeros(100, 8)
        >>> table_like("embedding.embedding.weight", w, None), table_like("cross.layers.0.weight", w, None)
        (True, False)
        >>> table_like("cross.layers.0.weight", w, ["cross.*"])
        True
    """
    if tensor.dim() != 2 or not tensor.is_floating_point() or not name.endswith(".weight"):
        return False
    path = name[: -len(".weight")]
    if tables is not None:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in tables)
    return any(word in part.lower() for part in path.split(".") for word in TABLE_WORDS)


def module_from_state_dict(state: Mapping[str, Any], tables: Sequence[str] | None = None) -> nn.Module:
    """A module whose qualified names are the state dict's: an ``nn.Embedding`` for each table (:func:`table_like`),
    an ``nn.Linear`` for a ``weight`` with its ``bias`` (a cross layer is found as in the model), and every other
    tensor as a frozen parameter (floating) or a buffer. No tensor is copied.

    Example:
        >>> state = {"embedding.embedding.weight": torch.randn(18, 4), "cross.weight": torch.randn(12, 12),
        ...          "cross.bias": torch.zeros(12), "offsets": torch.tensor([0, 4, 10])}
        >>> module = module_from_state_dict(state)
        >>> type(module.embedding.embedding).__name__, type(module.cross).__name__, module.offsets.tolist()
        ('Embedding', 'Linear', [0, 4, 10])
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if torch.is_tensor(value):
            path, _, leaf = key.rpartition(".")
            groups.setdefault(path, {})[leaf] = value
    parents = {".".join(path.split(".")[:k]) for path in groups for k in range(1, path.count(".") + 1)}
    root = nn.Module()
    for path in sorted(groups, key=lambda p: (p.count(".") if p else -1, p)):
        tensors = groups[path]
        module = _leaf(path, tensors, tables) if path and path not in parents else None
        if module is None:
            module = _container(root, path)
            for leaf, tensor in tensors.items():
                _attach(module, leaf, tensor)
        else:
            _place(root, path, module)
    return root


def _leaf(path: str, tensors: dict[str, torch.Tensor], tables: Sequence[str] | None) -> nn.Module | None:
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if set(tensors) == {"weight"} and table_like(f"{path}.weight", weight, tables):
        return nn.Embedding.from_pretrained(weight, freeze=True)  # the tensor itself, no copy
    if set(tensors) == {"weight", "bias"} and weight.dim() == 2 and bias.dim() == 1 and len(bias) == len(weight):
        layer = nn.Linear(weight.shape[1], weight.shape[0], device="meta")
        layer.weight, layer.bias = nn.Parameter(weight, requires_grad=False), nn.Parameter(bias, requires_grad=False)
        return layer
    return None


def _container(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split(".") if path else []:
        if part not in module._modules:
            module.add_module(part, nn.Module())
        module = module._modules[part]
    return module


def _place(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    _container(root, parent).add_module(name, module)


def _attach(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point():
        module.register_parameter(name, nn.Parameter(tensor, requires_grad=False))
    else:
        module.register_buffer(name, tensor)
