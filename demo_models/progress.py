"""What the demo says while it runs: one line per epoch on stdout, Lightning's own chatter kept off stderr.

A progress bar redrawn with carriage returns turns into thousands of characters when the output goes to a file or
a CI log; one line per epoch (epoch, seconds so far, the epoch's logged losses and validation metrics) reads the
same on a terminal and in a log.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

__all__ = ["EpochLines", "log_every", "quiet_lightning", "say"]


def say(text: str) -> None:
    """One line of the demo's own output, on stdout, flushed at once (the output may be a pipe)."""
    print(f"[demo] {text}", flush=True)


def quiet_lightning() -> None:
    """Keep Lightning's info lines (its product tips, "GPU available: False", "`Trainer.fit` stopped") and the
    monitors' inventory lines (in TensorBoard's Text tab as well) off stderr, which then holds warnings only; and
    silence one deprecation warning Lightning 2.6 raises against torch 2.13's pytree (not the demo's to fix)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_utilities", "pytorch_lightning",
                 "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def log_every(loader: Any, steps: int = 10) -> int:
    """Lightning's ``log_every_n_steps``: every ``steps`` steps, or once an epoch when an epoch has fewer batches
    (Lightning warns otherwise: a small ``--samples`` run has a few batches an epoch).

    Example:
        >>> log_every(range(3)), log_every(range(300))
        (3, 10)
    """
    try:
        return max(1, min(steps, len(loader)))
    except TypeError:  # an iterable without a length
        return steps


def _value(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class EpochLines(pl.Callback):
    """Prints ``[demo] <what>: epoch 3/8, 21.4 s; train/loss 0.512, val/auroc 0.841`` at the end of every
    training epoch (validation has run by then), on rank 0.

    Example:
        >>> EpochLines("dcnv2").what
        'dcnv2'
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._start = time.perf_counter()

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._start = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in ((k, _value(v)) for k, v in sorted(trainer.callback_metrics.items()))
                   if v is not None and k.split("/")[0] in ("train", "val")}
        numbers = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        say(f"{self.what}: epoch {trainer.current_epoch + 1}{total}, {time.perf_counter() - self._start:.1f} s"
            + (f"; {numbers}" if numbers else ""))
