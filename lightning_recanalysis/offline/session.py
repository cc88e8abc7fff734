"""One call in a notebook: :func:`analyze` runs the monitors once on a trained model, writes their TensorBoard tags
and the report, and returns the records and the report's paths.

Underneath it is the path every offline analysis takes (:class:`AnalysisSession`): the monitors attached to a
``Trainer`` built for analysis (``inference_mode=False``, so that the gradient probe can differentiate evaluation
batches; no checkpointing, no progress bar) and one ``trainer.validate`` (or ``trainer.test``) per model, each
analysis filed at the model's epoch and step (see :mod:`lightning_recanalysis.callbacks.evaluation`). A series of
checkpoints is one session: one event file, one history per monitor, one report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader
from typing_extensions import override

from ..callbacks.base import AnalysisCallback
from ..callbacks.evaluation import WeightsOnly
from ..findings.finding import Finding
from ..findings.thresholds import ReportThresholds
from ..records import Record
from ..report.callback import AnalysisReport
from ..report.run_data import EVENT_GLOB
from .modules import Forward, PlainModule, evaluation_step

__all__ = ["AnalysisResult", "AnalysisSession", "Batches", "CheckpointState", "analyze", "records_of"]


@dataclass
class AnalysisResult:
    """What an offline analysis wrote and found.

    Attributes:
        records: each analysis' typed records by TensorBoard namespace (``"collapse"``, ...), oldest first.
        paths: the report's files (``html``, ``markdown``, ``summary``); empty without a report.
        log_dir: the directory of the event files (``tensorboard --logdir`` it; ``compare`` reads it).
        findings: the report's findings, problems first.
        monitors: the monitors, with their ``history``.
    """

    records: dict[str, list[Record]]
    paths: dict[str, Path]
    log_dir: Path
    findings: list[Finding] = field(default_factory=list)
    monitors: list[AnalysisCallback] = field(default_factory=list)


class Batches:
    """A list of batches as one evaluation loader.

    Example:
        >>> len(Batches([{"x": 1}, {"x": 2}])), next(iter(Batches([{"x": 1}])))
        (2, {'x': 1})
    """

    def __init__(self, batches: Sequence[Any]) -> None:
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class CheckpointState(Callback):
    """Gives the monitors a checkpoint's state at ``setup``, as ``trainer.validate(ckpt_path=...)`` would (its epoch
    and global step, the monitors' states), without loading its weights a second time. Placed after the monitors.
    Its ``thresholds``, when set, are the findings' thresholds the monitors take at setup (the report's own, which
    is attached for the last evaluation only)."""

    def __init__(self) -> None:
        self.checkpoint: Mapping[str, Any] | None = None

    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        checkpoint, self.checkpoint = self.checkpoint, None
        if checkpoint is None:
            return
        states = checkpoint.get("callbacks") or {}
        for monitor in trainer.callbacks:
            if isinstance(monitor, AnalysisCallback):
                monitor.on_load_checkpoint(trainer, pl_module, dict(checkpoint))
                if monitor.state_key in states:
                    monitor.load_state_dict(states[monitor.state_key])


class AnalysisSession:
    """The monitors, a Trainer for analysis, one logger and one report, for one model or a series of them.

    Args:
        monitors: the monitors (default: an :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor`).
        out: the directory of the event files and the report; default ``analysis/<name>/version_<n>``. A directory
            that already holds event files is refused unless ``overwrite`` (their records would mix with these).
        name: the run's name under the default ``out``.
        stage: ``"validate"`` or ``"test"``: the Trainer's evaluation and the module's step it runs.
        thresholds: the report's and the live findings' thresholds.
        report: write the report after the last evaluation.
        overwrite: remove the event files already in ``out`` first.
        trainer_options: more ``Trainer`` arguments (``accelerator="gpu"``, ``precision=...``).

    Raises:
        ValueError: for a ``stage`` other than ``"validate"``/``"test"``; FileExistsError: for an ``out`` holding
            event files, without ``overwrite``; TypeError: for a monitor that is not an analysis callback.
    """

    def __init__(self, monitors: Sequence[AnalysisCallback] | None = None, out: str | Path | None = None, *,
                 name: str = "model", stage: str = "validate", thresholds: ReportThresholds | None = None,
                 report: bool = True, overwrite: bool = False, **trainer_options: Any) -> None:
        if stage not in ("validate", "test"):
            raise ValueError(f"stage must be 'validate' or 'test', got {stage!r}")
        if monitors is None:
            from ..callbacks.spectrum import EmbeddingSpectrumMonitor

            monitors = [EmbeddingSpectrumMonitor()]
        self.monitors = list(monitors)
        wrong = [type(m).__name__ for m in self.monitors if not isinstance(m, AnalysisCallback)]
        if wrong:
            raise TypeError(f"monitors must be lightning_recanalysis monitors, got {wrong}")
        self.stage = stage
        self.logger = _logger(out, name, overwrite)
        self.report = AnalysisReport(thresholds=thresholds) if report else None
        self._state = CheckpointState()
        if thresholds is not None:  # the monitors take them at setup, as from an attached AnalysisReport
            self._state.thresholds = thresholds
        options = dict(accelerator="cpu", devices=1, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False, num_sanity_val_steps=0)
        options.update(trainer_options)
        # inference_mode=False: evaluation then runs under no_grad, and the gradient probe can turn gradients on
        # for its batches (under inference mode the batches are inference tensors; see callbacks.conflict_evaluation).
        self.trainer = pl.Trainer(logger=self.logger, callbacks=[*self.monitors, self._state], inference_mode=False,
                                  **options)

    @property
    def log_dir(self) -> Path:
        return Path(self.logger.log_dir)

    def evaluate(self, model: nn.Module, data: Any = None, *, epoch: int | None = None, step: int | None = None,
                 forward: Forward | None = None, checkpoint: Mapping[str, Any] | None = None,
                 last: bool = True) -> None:
        """Analyse ``model`` once over ``data`` (a DataLoader, any iterable of batches, or a ``LightningDataModule``;
        None: the model's own evaluation loader if it defines one, else the weights alone).

        Its records are filed at ``(epoch, step)`` when given, else at those of ``checkpoint`` (a loaded Lightning
        checkpoint, whose monitor states are given to the monitors too), else at ``(0, 0)``. ``forward(model,
        batch)`` runs a model that has no evaluation step of its own (a plain ``nn.Module``). ``last``: the report
        is written after this evaluation."""
        step_name = "test_step" if self.stage == "test" else "validation_step"
        module = model if isinstance(model, pl.LightningModule) else PlainModule(model, forward)
        datamodule = data if isinstance(data, pl.LightningDataModule) else None
        loaders = None if datamodule is not None else data
        if isinstance(loaders, (list, tuple)) and not all(isinstance(x, DataLoader) for x in loaders):
            loaders = Batches(loaders)  # batches, not several loaders (as Lightning would read a list)
        if data is None and not _defines_loader(module, self.stage):
            loaders = WeightsOnly()
        for monitor in self.monitors:
            monitor.evaluated_at = None if epoch is None and step is None else (int(epoch or 0), int(step or 0))
        self._state.checkpoint = checkpoint
        if last and self.report is not None and self.report not in self.trainer.callbacks:
            self.trainer.callbacks.append(self.report)
        run = self.trainer.test if self.stage == "test" else self.trainer.validate
        with warnings.catch_warnings():
            # An analysis Trainer has no training loop: Lightning's advice about workers and batch counts is noise.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            with evaluation_step(module, step_name, forward, data=not isinstance(loaders, WeightsOnly)):
                run(module, dataloaders=loaders, datamodule=datamodule, verbose=False)

    def result(self) -> AnalysisResult:
        report = self.report
        return AnalysisResult(records=records_of(self.monitors), paths=dict(report.paths) if report else {}, log_dir=self.log_dir,
                              findings=list(report.findings) if report else [], monitors=self.monitors)


def analyze(model: nn.Module, dataloader: Any = None, monitors: Sequence[AnalysisCallback] | None = None,
            out: str | Path | None = None, *, stage: str = "validate", epoch: int | None = None,
            step: int | None = None, forward: Forward | None = None, thresholds: ReportThresholds | None = None,
            overwrite: bool = False, **trainer_options: Any) -> AnalysisResult:
    """Analyse a trained model once: the monitors' tags in TensorBoard event files, the report, the records.

    The same analyses a live run makes at the end of an epoch, on ``model``'s weights and over ``dataloader``'s
    batches (``trainer.validate`` with the monitors attached; :mod:`lightning_recanalysis.callbacks.evaluation`):
    spectra and the interaction matrix from the weights, counts over the batches, gradient conflict from the task
    losses that ``validation_step`` stores, entanglement over the batches. A plain ``nn.Module`` gets the analyses
    that need no task protocol (``forward(model, batch)`` runs it, for a cross layer whose input is read on a
    batch); with no ``dataloader`` only the analyses of the weights run, and the others say so.

    Args:
        model: a ``LightningModule`` or a plain ``nn.Module``.
        dataloader: a DataLoader, an iterable of batches or a ``LightningDataModule``; None: the model's own
            evaluation loader, or none.
        monitors: the monitors (default: ``[EmbeddingSpectrumMonitor()]``), configured as for training.
        out: the directory of the event files and the report (default ``analysis/<class>/version_<n>``).
        stage: ``"validate"`` (``validation_step``) or ``"test"`` (``test_step``).
        epoch / step: where the records are filed (default 0): the model's epoch and global step.
        forward: ``forward(model, batch)`` for a model without an evaluation step.
        thresholds: the findings' thresholds; overwrite: replace the event files in ``out``.
        trainer_options: more ``Trainer`` arguments, e.g. ``accelerator="gpu"``.

    Returns:
        An :class:`AnalysisResult`: ``records`` by namespace, the report's ``paths``, ``log_dir``, ``findings``.

    Example:
        The weights alone (no data): the spectra of a table holding three fields, and the interaction matrix
        through the cross layer, whose input holds the fields in table order.

        >>> import tempfile
        >>> from lightning_recanalysis import EmbeddingSpectrumMonitor, analyze
        >>> from lightning_recanalysis.toy import ToyDCN
        >>> result = analyze(ToyDCN(), monitors=[EmbeddingSpectrumMonitor(field_dims=[4, 6, 8])], out=tempfile.mkdtemp())
        >>> sorted(result.paths), [(r.stage, r.epoch, r.step) for r in result.records["collapse"]]
        (['html', 'markdown', 'summary'], [('epoch', 0, 0)])
        >>> result.records["collapse"][0].interaction.fields
        ['field_0', 'field_1', 'field_2']
    """
    session = AnalysisSession(monitors, out, name=type(model).__name__, stage=stage, thresholds=thresholds,
                              overwrite=overwrite, **trainer_options)
    session.evaluate(model, dataloader, epoch=epoch, step=step, forward=forward)
    return session.result()


def _defines_loader(module: pl.LightningModule, stage: str) -> bool:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    return is_overridden("test_dataloader" if stage == "test" else "val_dataloader", module)


def _logger(out: str | Path | None, name: str, overwrite: bool) -> TensorBoardLogger:
    if out is None:
        return TensorBoardLogger("analysis", name=name, default_hp_metric=False)
    out = Path(out)
    existing = sorted(out.glob(EVENT_GLOB)) if out.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds event files ({existing[0].name}, ...): their records would mix with "
                              "this analysis'. Pass another directory, or overwrite=True (--overwrite) to replace them.")
    for path in existing:
        path.unlink()
    return TensorBoardLogger(out, name="", version="", default_hp_metric=False)


def records_of(monitors: Iterable[AnalysisCallback]) -> dict[str, list[Record]]:
    """Each monitor's typed records by namespace."""
    out: dict[str, list[Record]] = {}
    for monitor in monitors:
        out.setdefault(monitor.namespace, []).extend(monitor.records)
    return out
