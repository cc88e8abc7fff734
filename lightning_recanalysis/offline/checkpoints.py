"""Analysing checkpoints from disk: a Lightning checkpoint through its module's class, a directory of them (the
trajectory, each checkpoint at its saved epoch and global step), or a plain ``state_dict`` (the spectrum
analyses, on tables found by name and shape).

Each checkpoint is read once: ``load_from_checkpoint`` builds the module (reading the weights), and the
checkpoint's own entries (epoch, global step, the monitors' states) are read from a memory map of the same file,
whose tensors are never touched. A plain state dict's tables are the memory-mapped tensors themselves: the
spectrum reads each row once, straight from the file.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..callbacks.base import AnalysisCallback
from ..findings.thresholds import ReportThresholds
from ..model.tables import discover_tables
from .modules import module_from_state_dict
from .session import AnalysisResult, AnalysisSession

__all__ = ["analyze_checkpoints", "checkpoint_files", "default_monitors", "field_dims_by_table", "import_object",
           "read_checkpoint"]

#: The files a directory of checkpoints is read for: Lightning's, and ``torch.save``'d state dicts.
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")

Monitors = Sequence[AnalysisCallback] | Callable[..., Sequence[AnalysisCallback]]


def import_object(path: str) -> Any:
    """The object a dotted path names, as LightningCLI names classes: ``package.module.Name`` (or
    ``package.module:Name``).

    Example:
        >>> import_object("lightning_recanalysis.toy.ToyDCN").__name__
        'ToyDCN'
    """
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} names no object: give package.module.Name")
    try:
        value = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} for {path!r}: {err}") from err
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ValueError(f"{module_name!r} has no {attribute!r} (from {path!r})")
        value = getattr(value, part)
    return value


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file as saved (a Lightning checkpoint's dict, or a state dict), its tensors memory-mapped:
    reading it costs the pickle, not the weights (``weights_only=True``: plain tensors and containers only)."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError as err:  # a file of torch's legacy format cannot be mapped
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _position(checkpoint: Mapping[str, Any]) -> tuple[int, int] | None:
    if "global_step" in checkpoint and "epoch" in checkpoint:
        return int(checkpoint["epoch"]), int(checkpoint["global_step"])
    return None


def checkpoint_files(path: str | Path) -> list[Path]:
    """The checkpoints at ``path``: the file itself, or every ``.ckpt``/``.pt``/``.pth`` under a directory, in
    training order (by saved global step and epoch; by name for files without them). A checkpoint of the same
    epoch and step as an earlier one (Lightning's ``last.ckpt``) is left out.

    Raises:
        FileNotFoundError: when ``path`` does not exist or a directory holds no checkpoint.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) under {path}")
    positions = {p: _position(read_checkpoint(p)) for p in files}
    seen, ordered = set(), []
    for p in sorted(files, key=lambda p: (positions[p] is None, (positions[p] or (0, 0))[::-1], str(p))):
        if positions[p] is not None and positions[p] in seen:
            continue
        seen.add(positions[p])
        ordered.append(p)
    return ordered


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a state dict: a Lightning checkpoint's ``state_dict``, or the file's own dict."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError("the checkpoint holds no state dict (a mapping of names to tensors)")
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def field_dims_by_table(model: nn.Module, field_dims: Sequence[int] | Mapping[str, int],
                        include: Sequence[str] | None = None) -> dict[str, Sequence[int] | Mapping[str, int]]:
    """``field_dims`` given to every table whose rows they add up to, as the monitors' ``{table: field_dims}``.

    Raises:
        ValueError: when no table has that many rows (the message lists the tables).

    Example:
        >>> from lightning_recanalysis.toy import ToyDCN
        >>> field_dims_by_table(ToyDCN(), {"user": 4, "item": 6, "category": 8})
        {'embedding': {'user': 4, 'item': 6, 'category': 8}}
    """
    rows = sum(field_dims.values()) if isinstance(field_dims, Mapping) else sum(field_dims)
    tables = discover_tables(model, include=include)
    found = {t.name: field_dims for t in tables if t.rows == rows}
    if not found:
        raise ValueError(f"the field dims add up to {rows} rows, and no table has that many: "
                         + ", ".join(f"{t.name} [{t.rows} x {t.width}]" for t in tables))
    return found


def default_monitors(model: nn.Module, field_dims: Sequence[int] | Mapping[str, int] | None = None,
                     cross_layer: str | None = "auto", tables: Sequence[str] | None = None) -> list[AnalysisCallback]:
    """The analyses of the weights: an :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` over the tables
    (``tables``: globs of their names), split by ``field_dims`` where they add up, through ``cross_layer``."""
    from ..callbacks.spectrum import EmbeddingSpectrumMonitor

    dims = field_dims_by_table(model, field_dims, tables) if field_dims else None
    return [EmbeddingSpectrumMonitor(include=tables, field_dims=dims, cross_layer=cross_layer)]


def _build_monitors(monitors: Monitors | None, model: nn.Module, **defaults: Any) -> list[AnalysisCallback]:
    if monitors is None:
        return default_monitors(model, **defaults)
    if callable(monitors):  # a factory: given the first model when it takes an argument
        takes_model = bool(inspect.signature(monitors).parameters)
        monitors = monitors(model) if takes_model else monitors()
    return list(monitors)


def analyze_checkpoints(path: str | Path, model_class: type | str | None = None, data: Any = None,
                        monitors: Monitors | None = None, out: str | Path | None = None, *,
                        stage: str = "validate", field_dims: Sequence[int] | Mapping[str, int] | None = None,
                        cross_layer: str | None = "auto", tables: Sequence[str] | None = None,
                        thresholds: ReportThresholds | None = None, overwrite: bool = False,
                        progress: Callable[[str], None] | None = None, **trainer_options: Any) -> AnalysisResult:
    """Analyse a checkpoint, or every checkpoint of a directory in training order, into one run.

    With ``model_class`` (a LightningModule class, or its dotted name as LightningCLI gives it) each checkpoint
    is loaded with ``load_from_checkpoint`` and analysed over ``data`` (see :func:`~lightning_recanalysis.analyze`)
    with ``monitors`` (a list, or a function of the first model returning one; default: the spectra of the
    tables); each record is filed at the checkpoint's saved epoch and global step, and the monitors' states saved
    in it are read (the fit-start baseline of a run trained with the monitors). Without ``model_class`` the file
    is read as a plain state dict (a Lightning checkpoint's ``state_dict`` too): its tables, found by name and
    shape (``tables``: globs of module paths), are analysed from the weights, split by ``field_dims``.

    Returns:
        An :class:`~lightning_recanalysis.offline.AnalysisResult` (one record per checkpoint and analysis).

    Raises:
        FileNotFoundError: no checkpoint at ``path``; ValueError: a class that cannot be imported, field dims
            that fit no table.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from lightning_recanalysis.toy import ToyDCN
        >>> folder = Path(tempfile.mkdtemp())
        >>> for epoch in range(2):  # two "checkpoints": plain state dicts
        ...     torch.save(ToyDCN().state_dict(), folder / f"epoch{epoch}.pt")
        >>> result = analyze_checkpoints(folder, field_dims=[4, 6, 8], out=folder / "analysis")
        >>> [(r.epoch, sorted(r.views["embedding"].fields)) for r in result.records["collapse"]]
        [(0, ['field_0', 'field_1', 'field_2']), (1, ['field_0', 'field_1', 'field_2'])]
    """
    if isinstance(model_class, str):
        model_class = import_object(model_class)
    files = checkpoint_files(path)
    session = None
    for index, file in enumerate(files):
        checkpoint = read_checkpoint(file)
        position = _position(checkpoint)
        if model_class is not None:
            model = model_class.load_from_checkpoint(file, map_location="cpu")
        else:
            model = module_from_state_dict(state_dict_of(checkpoint), tables)
        if session is None:
            chosen = _build_monitors(monitors, model, field_dims=field_dims, cross_layer=cross_layer, tables=tables)
            name = model_class.__name__ if model_class is not None else Path(path).stem
            session = AnalysisSession(chosen, out, name=name, stage=stage, thresholds=thresholds,
                                      overwrite=overwrite, **trainer_options)
        if progress is not None:
            at = f"epoch {position[0]}, step {position[1]}" if position else f"number {index}"
            progress(f"{file.name}: {at} ({index + 1} of {len(files)})")
        session.evaluate(model, data if model_class is not None else None,
                         epoch=None if position else index, step=None if position else index,
                         checkpoint=checkpoint if position else None, last=index == len(files) - 1)
    return session.result()
