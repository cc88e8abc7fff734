"""The hooks that read a cross layer's input layout on the first training step, written once for every monitor.

A monitor whose cross input's field order is not known at ``setup`` (:class:`~lightning_recanalysis.callbacks.
_cross.CrossFinder` is ``waiting``) hooks the first training step's forward only, and matches what it saw before
that step's backward, while the weights are still the initial ones. Nothing is hooked on any later step. In
``trainer.validate``/``trainer.test`` the same is done on the first evaluation batch (its step's forward).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from .finder import CrossFinder

__all__ = ["CrossLayoutHooks"]


class CrossLayoutHooks:
    """Mixin for a monitor with a ``_finder`` (:class:`CrossFinder`): it calls ``_layout_found(trainer,
    before_backward)`` once, when the layout has been read (``before_backward=False`` if the step had no
    backward, as under manual optimisation without one). A subclass that overrides ``on_train_batch_end``
    calls ``super().on_train_batch_end(...)`` first."""

    _finder: CrossFinder

    def _layout_found(self, trainer: "pl.Trainer", before_backward: bool) -> None:
        raise NotImplementedError

    @override
    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        if self._finder.waiting:
            self._finder.start()

    @override
    def on_before_backward(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           loss: torch.Tensor) -> None:
        if self._finder.finish():
            self._layout_found(trainer, before_backward=True)

    @override
    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._finder.finish():  # no backward seen (manual optimisation without one)
            self._layout_found(trainer, before_backward=False)

    # ---- the same on the first evaluation batch (trainer.validate / trainer.test; see callbacks.evaluation) ----
    def evaluation_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                               batch_idx: int) -> None:
        if batch is not None and self._finder.waiting:  # None: an evaluation without data
            self._finder.start()
        super().evaluation_batch_start(trainer, pl_module, batch, batch_idx)

    def evaluation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                             batch_idx: int) -> None:
        if self._finder.finish():
            self._layout_found(trainer, before_backward=False)
        super().evaluation_batch_end(trainer, pl_module, outputs, batch, batch_idx)
