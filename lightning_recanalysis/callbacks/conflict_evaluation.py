"""The gradient probe of :class:`~lightning_recanalysis.GradientConflictMonitor` on evaluation batches.

In ``trainer.validate``/``trainer.test`` (:mod:`.evaluation`) the monitor probes every ``every_n_steps``-th
evaluation batch as it probes training batches in a fit: forward hooks on the embedding modules from the start of
the batch to the end of its step, then one ``torch.autograd.grad`` per task from the loss the module stored in
``self.task_losses`` during ``validation_step`` (``test_step``) to the looked-up rows. The record is filed as a
training epoch's (stage ``"train"``), at the checkpoint's epoch and step.

**Gradients in an evaluation.** Lightning evaluates under ``torch.inference_mode`` by default, and the batches,
collated inside it, are then inference tensors: autograd cannot record a graph through them, and leaving
inference mode inside the step does not change that. So the probe needs ``Trainer(inference_mode=False)``, under
which Lightning evaluates with ``torch.no_grad``; the monitor then turns gradients on (``torch.enable_grad``) for
the probed batches only, from the start of the batch to the end of its step. Under inference mode it says, at the
start of the evaluation, that it does not run and what to pass. :func:`lightning_recanalysis.analyze` and
``python -m lightning_recanalysis analyze`` build their Trainer so.

**No trace.** The probe differentiates with respect to the looked-up rows only: no parameter gradient is
computed, ``.grad`` and the optimiser are never touched, and the model is in eval mode (no batch-norm statistics
move). The graph of a probed batch lives until its losses are dropped.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from typing_extensions import override

from .evaluation import evaluation_has_data, evaluation_step_name

__all__ = ["ConflictEvaluation", "INFERENCE_MODE"]

#: Why the probe does not run in an evaluation under inference mode.
INFERENCE_MODE = ("the evaluation runs under torch.inference_mode (Lightning's default), whose batches autograd "
                  "cannot differentiate through: pass Trainer(inference_mode=False)")


class ConflictEvaluation:
    """Mixin of :class:`~lightning_recanalysis.GradientConflictMonitor`: its evaluation methods (see the module
    docstring). It reads the monitor's probe, task names, problem log and epoch sums."""

    evaluation_stage = "train"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._blocked = False  # the evaluation runs under inference mode: no probe
        self._grad = contextlib.ExitStack()
        self._before: dict[str, Any] = {}

    def start_evaluation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.on_fit_start(trainer, pl_module)  # the lookups still called, the conflict/setup text
        self._reset_epoch()
        # This hook runs inside the evaluation loop's own grad context: what the steps will run under.
        self._blocked = torch.is_inference_mode_enabled()

    def coverage(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> list[dict[str, Any]]:
        if not self._is_evaluation(trainer):
            return super().coverage(trainer, pl_module)
        step = evaluation_step_name(trainer)
        why = ("this evaluation has no data: pass a dataloader" if not evaluation_has_data(trainer) else
               f"{type(pl_module).__name__} defines no {step}" if not is_overridden(step, pl_module) else
               INFERENCE_MODE if self._blocked else None)
        return [{"analysis": self.analysis_name, "runs": why is None,
                 "why": why or f"on the evaluation batches, from the task_losses that {step} stores"}]

    def evaluation_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                               batch_idx: int) -> None:
        self._leave()
        if self._blocked or batch is None or not self._tables or batch_idx % self.every_n_steps:
            return
        self._probe.arm()
        self._before = dict(getattr(pl_module, "task_losses", None) or {})
        self._grad.enter_context(torch.enable_grad())  # the step's forward records the graph the probe reads

    def evaluation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                             batch: Any, batch_idx: int) -> None:
        if not self._probe.pending:
            self._grad.close()
            return
        captures = self._probe.take()
        losses = getattr(pl_module, "task_losses", None)
        try:  # still with gradients on: the probe's own reshapes of the losses must stay in their graph
            if isinstance(losses, Mapping) and all(losses.get(t) is self._before.get(t) for t in self._task_names):
                self._counts["skipped"] += 1
                self._problems.add("not-stored", f"{evaluation_step_name(trainer)} stored no task losses in "
                                   "`self.task_losses` for this batch, so the probe has nothing to differentiate")
            else:
                self._guarded("the gradient probe", lambda: self._measure(pl_module, captures))
        finally:
            self._grad.close()
            captures.clear()
            self._before = {}

    def evaluate(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        try:
            if self._tables and not self._blocked and evaluation_has_data(trainer):
                super().evaluate(trainer, pl_module)
        finally:
            self._reset_epoch()

    def _leave(self) -> None:
        """Back to the evaluation's own grad mode, the hooks removed (a batch that raised left them)."""
        self._grad.close()
        self._probe.release()

    @override
    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self._leave()
