"""The evaluation half of the monitor contract: ``trainer.validate`` / ``trainer.test`` analyse once.

In a fit a monitor analyses at the end of its epochs. Attached to ``trainer.validate(model, ...)`` or
``trainer.test(model, ...)`` it analyses once, on the loaded weights and over the evaluation batches, and files
the record under the stage a live run uses (``"epoch"``, or ``"train"``/``"validation"`` for the multi-task
monitors), so that the tags, the history and the report are those a live run writes:

1. at ``on_validation_start`` / ``on_test_start``: :meth:`EvaluationHooks.start_evaluation` (what the monitor
   reads of the module), then its coverage is stated, as at fit start (a warning for what does not run, the
   ``<namespace>/coverage`` Text tab and the report's Coverage);
2. every evaluation batch: :meth:`~EvaluationHooks.evaluation_batch_start` and
   :meth:`~EvaluationHooks.evaluation_batch_end` (count it, read the cross layer's input, probe the task losses);
3. at ``on_validation_epoch_end`` / ``on_test_epoch_end``: :meth:`~EvaluationHooks.evaluate` (by default
   ``run_analysis(trainer, pl_module, stage=evaluation_stage)``).

**Where the record is filed.** At :attr:`EvaluationHooks.evaluated_at` when given (``(epoch, step)``, as
:func:`lightning_recanalysis.analyze` sets it), else at the ``epoch`` and ``global_step`` of the checkpoint the
Trainer restored (``trainer.validate(ckpt_path=...)``: read in ``on_load_checkpoint``), else at the last finished
epoch of the Trainer (``trainer.current_epoch - 1``, 0 on a fresh Trainer) and its ``global_step``: the epoch and
step a live run logged the same weights at (after a fit on the same Trainer, the evaluation's record replaces that
epoch's in the history). The record carries ``"evaluated": "validate"`` (or ``"test"``).

**No data.** :class:`WeightsOnly` is the evaluation "data" of an analysis that has none: one empty batch
(``None``). Batches that are ``None`` are skipped by every monitor; the analyses that need batches state that
they do not run, those of the weights (spectra) run.

A checkpoint's monitor state is not merged into the history of an evaluation (it would mix the live run's
records with this analysis'): it is kept in ``restored_history`` (the spectrum monitor takes its fit-start
baseline from there, for the ``*_vs_init`` tags).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

__all__ = ["EVALUATION_STAGES", "EvaluationHooks", "WeightsOnly", "evaluation_has_data", "evaluation_step_name",
           "is_evaluation"]

#: The ``setup`` stages of ``trainer.validate`` and ``trainer.test``.
EVALUATION_STAGES = ("validate", "test")


class WeightsOnly:
    """The evaluation data of an analysis without data: one batch, ``None``, which every monitor skips (an
    iterable, not a list: Lightning reads a list as several loaders).

    Example:
        >>> list(WeightsOnly()), len(WeightsOnly())
        ([None], 1)
    """

    def __iter__(self):
        return iter([None])

    def __len__(self) -> int:
        return 1


def is_evaluation(trainer: "pl.Trainer | None") -> bool:
    """Whether ``trainer`` runs ``validate`` or ``test`` (not a fit's validation, not ``fast_dev_run``).

    Example:
        >>> from types import SimpleNamespace
        >>> is_evaluation(SimpleNamespace(sanity_checking=False, fast_dev_run=False,
        ...                               state=SimpleNamespace(fn=TrainerFn.VALIDATING)))
        True
    """
    fn = getattr(getattr(trainer, "state", None), "fn", None)  # a stand-in trainer without a state: not one
    return (fn in (TrainerFn.VALIDATING, TrainerFn.TESTING) and not trainer.sanity_checking
            and not trainer.fast_dev_run)


def evaluation_step_name(trainer: "pl.Trainer") -> str:
    """The module's step that the evaluation runs: ``"test_step"`` or ``"validation_step"``."""
    return "test_step" if trainer.state.fn == TrainerFn.TESTING else "validation_step"


def evaluation_has_data(trainer: "pl.Trainer") -> bool:
    """False when the evaluation runs over :class:`WeightsOnly` (no data: the analyses of the weights only)."""
    loaders = trainer.test_dataloaders if trainer.state.fn == TrainerFn.TESTING else trainer.val_dataloaders
    return not isinstance(loaders, WeightsOnly)


class EvaluationHooks:
    """Mixin of :class:`~lightning_recanalysis.callbacks.base.AnalysisCallback`: routes the Lightning hooks of
    ``validate`` and ``test`` to the evaluation methods (see the module docstring). A fit's validation loop is not
    an evaluation: there these hooks do nothing (a monitor that uses them in a fit overrides them)."""

    #: The stage an evaluation files its record under (the live run's stage of the same analysis).
    evaluation_stage: str = "epoch"
    #: A monitor whose own validation hooks analyse (the entanglement monitor): ``trainer.test`` calls them too.
    test_runs_validation_hooks: bool = False

    def __init__(self) -> None:
        super().__init__()
        #: ``(epoch, step)`` the next evaluation's record is filed at; None: from the checkpoint or the Trainer.
        self.evaluated_at: tuple[int, int] | None = None
        #: The history held by the checkpoint that an evaluation restored (published dicts); not merged.
        self.restored_history: list[dict[str, Any]] = []
        self._restored_at: tuple[int, int] | None = None

    @staticmethod
    def _is_evaluation(trainer: "pl.Trainer | None") -> bool:
        """True in ``trainer.validate``/``trainer.test`` (not in a fit's validation): analyse once."""
        return is_evaluation(trainer)

    # ---- what a monitor supplies --------------------------------------------------------------------------
    def start_evaluation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """Before the first evaluation batch, before the coverage is stated (default: the ``<namespace>/inventory``
        Text tab of a monitor with an ``inventory_markdown()``, as at fit start)."""
        inventory = getattr(self, "inventory_markdown", None)
        if inventory is not None:
            self.writer.text(trainer, f"{self.namespace}/inventory", inventory(), self.evaluation_position(trainer)[1])

    def evaluation_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                               batch_idx: int) -> None:
        """Before an evaluation batch's step (default: nothing)."""

    def evaluation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                             batch: Any, batch_idx: int) -> None:
        """After an evaluation batch's step (default: nothing)."""

    def evaluate(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """The analysis of the evaluation, after its last batch (default: one :meth:`run_analysis`)."""
        self.run_analysis(trainer, pl_module, stage=self.evaluation_stage)

    def evaluation_position(self, trainer: "pl.Trainer") -> tuple[int, int]:
        """``(epoch, step)`` of this evaluation's records (see the module docstring)."""
        if self.evaluated_at is not None:
            return int(self.evaluated_at[0]), int(self.evaluated_at[1])
        if self._restored_at is not None:
            return self._restored_at
        return max(int(trainer.current_epoch) - 1, 0), int(trainer.global_step)

    def _reset_evaluation(self) -> None:
        """At an evaluation's setup: forget the checkpoint of the previous one."""
        self._restored_at = None
        self.restored_history = []

    # ---- the Lightning hooks --------------------------------------------------------------------------------
    def _begin(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if is_evaluation(trainer):
            self.start_evaluation(trainer, pl_module)
            self._state_coverage(trainer, pl_module)

    @override
    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._begin(trainer, pl_module)

    @override
    def on_test_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._begin(trainer, pl_module)

    @override
    def on_validation_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_evaluation(trainer):
            self.evaluation_batch_start(trainer, pl_module, batch, batch_idx)

    @override
    def on_test_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.test_runs_validation_hooks:
            self.on_validation_epoch_start(trainer, pl_module)

    @override
    def on_test_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.test_runs_validation_hooks:
            self.on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        elif is_evaluation(trainer):
            self.evaluation_batch_start(trainer, pl_module, batch, batch_idx)

    @override
    def on_validation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_evaluation(trainer):
            self.evaluation_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_test_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.test_runs_validation_hooks:
            self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        elif is_evaluation(trainer):
            self.evaluation_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if is_evaluation(trainer):
            self.evaluate(trainer, pl_module)

    @override
    def on_test_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.test_runs_validation_hooks:
            self.on_validation_epoch_end(trainer, pl_module)
        elif is_evaluation(trainer):
            self.evaluate(trainer, pl_module)

    @override
    def on_load_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: dict[str, Any]) -> None:
        if is_evaluation(trainer):  # the weights' own epoch and step, not the fresh Trainer's 0 and 0
            self._restored_at = (int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))
