"""Single-task reference models for the conflict subset: read once, kept as plain CPU tensors, never trained.

A reference is given as

- an ``nn.Module`` (any single-task model): its tables are discovered as the monitor discovers the trained
  model's, and the user and item fields are found by name;
- a Lightning checkpoint file (``*.ckpt``): its ``state_dict`` must hold the table under the trained model's
  table name (``embedding.weight`` for a table ``embedding``), with as many rows, split into fields as the
  trained table is;
- a directory (an earlier run of ``python -m demo_models``): the checkpoint under it (``last.ckpt`` if there is
  one, else the newest ``*.ckpt``).

Only the rows of the user and the item field are kept (cloned to CPU, detached): the reference is not a
submodule of the trained model, so the trainer never moves, saves or optimises it, and it costs no accelerator
memory; the analysis looks up the rows of the validation pairs at epoch end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from .tables import EmbeddingTable, Field, discover_tables

__all__ = ["ReferenceRows", "ReferenceSource", "fields_named", "load_reference"]

ReferenceSource = Union[nn.Module, str, os.PathLike]


@dataclass
class ReferenceRows:
    """One task's single-task reference: the user field's and the item field's embedding rows (CPU, float32)."""

    task: str
    source: str
    user: torch.Tensor
    item: torch.Tensor

    def distances(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``||e_u - e_i||_2`` in this reference for the pairs of within-field ids ``users``, ``items`` (float64)."""
        return torch.linalg.vector_norm(self.user[users].to(torch.float64) - self.item[items].to(torch.float64),
                                        dim=1)


def fields_named(tables: list[EmbeddingTable], name: str) -> list[tuple[EmbeddingTable, Field]]:
    """The (table, field) pairs a field name denotes: fields of that name, else a one-field table named by its
    module (or an alias of it)."""
    hits = [(t, f) for t in tables for f in t.fields if f.name == name]
    if not hits:
        hits = [(t, t.fields[0]) for t in tables if len(t.fields) == 1 and (t.name == name or name in t.aliases)]
    return hits


def _checkpoint_file(path: Path, owner: str, task: str) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise ValueError(f"{owner}: the reference for task '{task}' is '{path}', which does not exist. Give a "
                         "single-task model (module), a Lightning checkpoint file or the directory of its run.")
    found = sorted(path.rglob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime))
    if not found:
        raise ValueError(f"{owner}: no checkpoint (*.ckpt) under '{path}', given as the reference for task '{task}'. "
                         "Train the single-task model with checkpointing on (Lightning's default), or pass the module.")
    return found[-1]


def _state_dict(path: Path, owner: str, task: str) -> dict[str, torch.Tensor]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{owner}: cannot read the reference checkpoint '{path}' for task '{task}' "
                         f"({type(err).__name__}: {err})") from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{owner}: '{path}' (reference for task '{task}') holds no state_dict")
    return state


def _rows_from_checkpoint(state: dict[str, Any], table: EmbeddingTable, fld: Field, source: str, owner: str,
                          task: str, role: str) -> torch.Tensor:
    keys = [f"{name}.weight" for name in [table.name, *table.aliases]]
    weight = next((state[k] for k in keys if k in state), None)
    if weight is None:
        tables = [f"{k} {tuple(v.shape)}" for k, v in state.items() if torch.is_tensor(v) and v.dim() == 2]
        raise ValueError(f"{owner}: the reference for task '{task}' ({source}) has no table {keys[0]} (the trained "
                         f"model's {role} table); its 2-D tensors are {tables[:12]}. A checkpoint must name its "
                         "tables as the trained model does; otherwise pass the reference module itself.")
    if weight.dim() != 2 or weight.shape[0] != table.rows:
        raise ValueError(f"{owner}: the reference for task '{task}' ({source}) has {keys[0]} of shape "
                         f"{tuple(weight.shape)}, the trained model {table.rows} rows: another vocabulary. The "
                         "reference must be trained on the same fields and ids.")
    return weight[fld.start : fld.stop].detach().to("cpu", torch.float32).clone()


def _rows_from_module(module: nn.Module, name: str, cardinality: int, options: dict[str, Any], source: str,
                      owner: str, task: str, role: str) -> torch.Tensor:
    try:
        tables = discover_tables(module, **options)
    except ValueError as err:
        raise ValueError(f"{owner}: the reference for task '{task}' ({source}): {err}") from err
    hits = fields_named(tables, name)
    if len(hits) != 1:
        known = [f"{t.name}:{f.name}" for t in tables for f in t.fields]
        raise ValueError(f"{owner}: the reference for task '{task}' ({source}) has {len(hits)} fields named "
                         f"{role}='{name}' (its table:field are {known[:20]}); it needs exactly one, split as the "
                         "trained model's table is (the same field_dims).")
    table, fld = hits[0]
    if fld.cardinality != cardinality:
        raise ValueError(f"{owner}: the reference for task '{task}' ({source}) has {fld.cardinality} rows in field "
                         f"'{name}', the trained model {cardinality}: another vocabulary. The reference must be "
                         "trained on the same fields and ids.")
    return table.parameter.detach()[fld.start : fld.stop].to("cpu", torch.float32).clone()


def load_reference(source: ReferenceSource, task: str, user: tuple[EmbeddingTable, Field],
                   item: tuple[EmbeddingTable, Field], options: dict[str, Any], owner: str) -> ReferenceRows:
    """Read the user and item rows of one task's reference (see the module docstring for what ``source`` may be).

    ``user`` and ``item`` are the trained model's tables and fields; ``options`` the monitor's ``include``,
    ``exclude`` and ``field_dims`` (column groups are not applied: a single-task model has one view).
    """
    if isinstance(source, nn.Module):
        described = f"{type(source).__name__} module"
        rows = {role: _rows_from_module(source, fld.name, fld.cardinality, options, described, owner, task, role)
                for role, (_, fld) in (("user_field", user), ("item_field", item))}
    elif isinstance(source, (str, os.PathLike)):
        path = _checkpoint_file(Path(source), owner, task)
        described = str(path)
        state = _state_dict(path, owner, task)
        rows = {role: _rows_from_checkpoint(state, table, fld, described, owner, task, role)
                for role, (table, fld) in (("user_field", user), ("item_field", item))}
    else:
        raise ValueError(f"{owner}: the reference for task '{task}' must be a module, a checkpoint path or a run "
                         f"directory, got {type(source).__name__}")
    if rows["user_field"].shape[1] != rows["item_field"].shape[1]:
        raise ValueError(f"{owner}: the reference for task '{task}' ({described}) has user and item embeddings of "
                         f"different widths ({rows['user_field'].shape[1]} and {rows['item_field'].shape[1]})")
    return ReferenceRows(task=task, source=described, user=rows["user_field"], item=rows["item_field"])
