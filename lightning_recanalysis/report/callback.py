"""AnalysisReport: the TensorBoard dashboard layout at fit start, the summary report at fit end (and the same at the
start and end of ``trainer.validate``/``trainer.test``, which analyse a trained model once).

A callback that lives with the report rather than in :mod:`lightning_recanalysis.callbacks`: it builds the report,
and imports only go downward (the monitors never import the report).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ..callbacks.base import AnalysisCallback
from ..callbacks.evaluation import is_evaluation
from ..writers import AnalysisWriter
from ..findings.finding import Finding, ranked
from .build import write_run_report
from .render import as_finding, build_sections
from .model import ReportThresholds
from .run_data import run_from_callbacks, run_name

__all__ = ["AnalysisReport"]


class AnalysisReport(Callback):
    """Organises what the monitors log and writes one report at the end of fit (rank 0 only), or at the end of
    ``trainer.validate``/``trainer.test``, whose monitors analyse the loaded weights once.

    At fit start it writes TensorBoard's Custom Scalars layout, merged from every attached monitor's
    ``dashboard_layout()`` (e.g. one chart per field's IA, one series a chart). At the end of fit it writes, into
    ``out_dir`` (default: the logger's ``log_dir``):

    - ``report.html``: one self-contained file, figures embedded;
    - ``report.md`` and ``figures/*.png`` beside it;
    - ``summary.json``: every number the report shows (schema ``lightning_recanalysis/summary``, version 2).

    The same report can be rebuilt later from the event files alone: ``python -m lightning_recanalysis report
    RUN_DIR``. Writing never stops training: a failure is one warning.

    Args:
        out_dir: where to write; default the first logger's ``log_dir``, else ``trainer.default_root_dir``.
        thresholds: when numbers become findings at the top of the report.
        dashboard: write the custom-scalars layout.

    Raises:
        TypeError: at construction, when ``thresholds`` is not a :class:`ReportThresholds`.

    Example:
        >>> import json, tempfile, torch
        >>> from pathlib import Path
        >>> from lightning_recanalysis import AnalysisReport, EmbeddingSpectrumMonitor
        >>> from lightning_recanalysis.toy import ToyDCN, toy_loader, toy_trainer
        >>> _ = torch.manual_seed(0)
        >>> out = Path(tempfile.mkdtemp())
        >>> report = AnalysisReport(out_dir=out)
        >>> toy_trainer([EmbeddingSpectrumMonitor(field_dims=[4, 6, 8]), report]).fit(ToyDCN(), toy_loader())
        >>> sorted(report.paths)  # what it wrote into out_dir
        ['html', 'markdown', 'summary']
        >>> summary = json.loads((out / "summary.json").read_text())
        >>> list(summary["analyses"]), sorted(summary["analyses"]["collapse"]["numbers"]["views"]["embedding"]["fields"])
        (['collapse'], ['field_0', 'field_1', 'field_2'])
    """

    def __init__(self, out_dir: str | Path | None = None, thresholds: ReportThresholds | None = None,
                 dashboard: bool = True) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if thresholds is not None and not isinstance(thresholds, ReportThresholds):
            raise TypeError(f"AnalysisReport: thresholds must be a ReportThresholds, got {type(thresholds).__name__}; "
                            "build one with ReportThresholds(...) from lightning_recanalysis.report")
        self.thresholds = thresholds or ReportThresholds()
        self.dashboard = dashboard
        self.writer = AnalysisWriter(type(self).__name__)
        self.paths: dict[str, Path] = {}
        #: Every finding of the last report, problems first (:class:`~lightning_recanalysis.findings.Finding`).
        self.findings: list[Finding] = []

    @staticmethod
    def _monitors(trainer: "pl.Trainer") -> list[AnalysisCallback]:
        return [cb for cb in trainer.callbacks if isinstance(cb, AnalysisCallback)]

    def _target(self, trainer: "pl.Trainer") -> Path:
        if self.out_dir is not None:
            return self.out_dir
        if trainer.loggers and trainer.loggers[0].log_dir:
            return Path(trainer.loggers[0].log_dir)
        return Path(trainer.default_root_dir)

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._write_dashboard(trainer)

    @override
    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if is_evaluation(trainer):
            self._write_dashboard(trainer)

    @override
    def on_test_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if is_evaluation(trainer):
            self._write_dashboard(trainer)

    @override
    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if is_evaluation(trainer):
            self.write(trainer)

    @override
    def on_test_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if is_evaluation(trainer):
            self.write(trainer)

    def _write_dashboard(self, trainer: "pl.Trainer") -> None:
        if not self.dashboard or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        layout: dict[str, dict[str, list]] = {}
        for monitor in self._monitors(trainer):
            try:
                for category, charts in monitor.dashboard_layout().items():
                    layout.setdefault(category, {}).update(charts)
            except Exception as err:
                warnings.warn(f"AnalysisReport: no dashboard layout from {type(monitor).__name__}: {err!r}", RuntimeWarning)
        if layout:
            self.writer.custom_scalars(trainer, layout)
            self.writer.flush(trainer)

    @override
    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.write(trainer)

    def write(self, trainer: "pl.Trainer") -> None:
        """Write the report of the monitors' histories now (rank 0; what ``on_fit_end`` and the end of an evaluation
        do). ``paths`` and ``findings`` then hold what was written and found."""
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        target = self._target(trainer)
        try:
            run = run_from_callbacks(self._monitors(trainer), name=run_name(target), path=target)
            sections = build_sections(run, self.thresholds)
            self.findings = ranked(as_finding(s, f) for s in sections for f in s.findings)
            self.paths = write_run_report(run, sections, target, self.thresholds)
        except Exception as err:  # disk full, unwritable directory, a figure that cannot be drawn
            warnings.warn(f"AnalysisReport: the report could not be written to {target} ({type(err).__name__}: "
                          f"{err}); training results are unaffected.", RuntimeWarning)
