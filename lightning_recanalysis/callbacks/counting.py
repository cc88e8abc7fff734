"""The shared half of the monitors whose ground truth is counted from the training batches.

:class:`~lightning_recanalysis.FeatureCorrelationMonitor` and
:class:`~lightning_recanalysis.FieldPairCorrelationMonitor` count each training batch as it passes into a
torchmetrics metric (``self.counts``) and, at an analysis, fill the monitor contract's first two steps the same
way: :meth:`prepare` counts the batches still waiting (a bad value there is an error in the data, which stops
training on every rank), :meth:`agree` sums the counts of all ranks (the metric's sync).
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager

import lightning.pytorch as pl
from torchmetrics import Metric

from ..parallel.distributed import data_parallel_group
from ..model.batch import BatchFieldReader
from .base import AnalysisCallback

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
