"""The shared half of the monitors whose ground truth is counted from the training batches.

:class:`~lightning_recanalysis.FeatureCorrelationMonitor` and
:class:`~lightning_recanalysis.FieldPairCorrelationMonitor` count each training batch as it passes into a
torchmetrics metric (``self.counts``) and, at an analysis, fill the monitor contract's first two steps the same
way: :meth:`prepare` counts the batches still waiting (a bad value there is an error in the data, which stops
training on every rank), :meth:`agree` sums the counts of all ranks (the metric's sync).

In ``trainer.validate``/``trainer.test`` (:mod:`.evaluation`) they count the evaluation batches instead, from fresh
counts (the bucketing of a restored checkpoint is kept), and analyse once at the end; an evaluation without data
(:class:`~lightning_recanalysis.callbacks.evaluation.WeightsOnly`) states that they do not run.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Sequence

import lightning.pytorch as pl
from torchmetrics import Metric

from ..parallel.distributed import data_parallel_group
from ..model.batch import BatchFieldReader
from .base import AnalysisCallback
from .evaluation import evaluation_has_data

__all__ = ["CountingMonitor"]


class CountingMonitor(AnalysisCallback):
    """Base of a monitor that counts batches into ``self.counts`` and reads them with ``self._read_batch``."""

    # Batches still waiting are counted (and their values checked) before the counts are summed over ranks: a
    # bad label or id is an error in the data and stops training on every rank, not a skipped analysis.
    preparing = "counting the batches for {what}"
    fatal_errors = (ValueError,)

    counts: Metric
    _read_batch: BatchFieldReader

    def _count(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` (an update or flush of the counts); a bad value becomes an error naming its batch field."""
        try:
            fn()
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {self._read_batch.name_field(str(err))}") from None

    def _place_counts(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """At fit start: count where the batches are (the model's device), and sum there across processes."""
        self.counts = self.counts.to(pl_module.device)
        # Under tensor parallelism several ranks see the same batches: counts are summed over the ranks whose
        # batches differ (every rank under DDP).
        self.counts.process_group = data_parallel_group(trainer)

    def prepare(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._count(self.counts.flush)

    def agree(self, trainer: "pl.Trainer", prepared: None) -> ContextManager[Any]:
        return self.counts.sync_context(should_sync=True)

    # ---- evaluation: count the evaluation batches (see callbacks.evaluation) ----------------------------------
    def count_batch(self, batch: Any, batch_idx: int) -> None:
        """Count one batch into ``self.counts`` (a monitor's own reading of its fields)."""
        raise NotImplementedError

    def start_evaluation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._place_counts(trainer, pl_module)
        super().start_evaluation(trainer, pl_module)

    def evaluation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                             batch_idx: int) -> None:
        super().evaluation_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # the cross layout, if waiting
        if batch is not None:  # None: an evaluation without data
            self.count_batch(batch, batch_idx)

    def evaluate(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if evaluation_has_data(trainer):
            super().evaluate(trainer, pl_module)

    def _stated(self, trainer: "pl.Trainer", items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``items`` of a coverage, each marked as not running in an evaluation without data."""
        if not self._is_evaluation(trainer) or evaluation_has_data(trainer):
            return list(items)
        why = "this evaluation has no data, and the counts are of its batches: pass a dataloader"
        return [{**item, "runs": False, "why": why, "optional": False} for item in items]
