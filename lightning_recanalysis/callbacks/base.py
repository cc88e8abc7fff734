"""What every analysis callback shares: when to run, how to fail, one path from analysis to log, a history.

A monitor's analysis is a side computation: it reads the model, never changes it, and must never end a long
training run over a bad table or a logging detail. :class:`AnalysisCallback` owns everything but the analysis:

- ``every_n_epochs`` cadence and the rule that sanity checks and ``fast_dev_run`` log nothing; ``trainer.validate``
  and ``trainer.test`` analyse once, on the loaded weights over the evaluation batches (:mod:`.evaluation`);
- one path from analysis to log, :meth:`~AnalysisCallback.run_analysis`: prepare this rank's part, agree across
  ranks, compute the record, keep it, log it (the monitor contract below);
- :meth:`_guarded`: an exception inside an analysis is one warning, the analysis skipped (``strict`` re-raises);
- :meth:`_together`: the same under DDP for the part of an analysis that precedes a collective or makes the
  history record: a failure on any rank skips it on every rank, so no rank waits in a collective that another
  has skipped and every rank keeps the same history;
- ``history``: the published records (plain dicts of numbers, strings, lists; :mod:`lightning_recanalysis.records`
  gives each analysis its typed class) kept in ``state_dict`` so a run resumed from a checkpoint continues it,
  with one record per (stage, epoch): a repeated epoch replaces, never duplicates;
- an :class:`~lightning_recanalysis.writers.AnalysisWriter`, and :meth:`_changed` (redraw a data-derived image?);
- publishing: each record also goes into the event file (a summary TensorBoard's dashboards ignore), so the
  report can be rebuilt from the event files alone. Subclasses that override ``setup`` call ``super().setup`` first.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, ContextManager, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

from ..checks import check_positive_int
from ..parallel.distributed import data_parallel_group, sum_over_ranks
from ..findings.finding import Finding, findings_markdown
from ..findings.thresholds import ReportThresholds
from ..records import Record, TypedHistory
from ..writers import AnalysisWriter
from .evaluation import EvaluationHooks

__all__ = ["AnalysisCallback", "data_parallel_group"]

#: Bumped when the layout of the history records changes, so a report can read old checkpoints knowingly.
HISTORY_VERSION = 1


class AnalysisCallback(EvaluationHooks, Callback):
    """Base class of the monitors; not used on its own.

    **The monitor contract** (as torchmetrics' ``update``/``compute``). A monitor decides *when* to analyse (its
    hooks call :meth:`run_analysis`) and supplies *what* to compute and *how* to show it; the base class owns
    the rest, in this order and the same on every rank:

    1. :meth:`prepare` (optional): this rank's own part, before any collective (count the batches still
       waiting; a row-sharded table's local Gram). A failure on any rank skips the analysis on every rank
       before any of them enters a collective; an exception of a type in ``fatal_errors`` (an error in the
       data) stops training on every rank.
    2. :meth:`agree` (optional): a context in which every rank holds the numbers of all ranks (sum the
       prepared parts, sync a counting metric): the collectives, made by every rank in the same order.
    3. :meth:`compute` (required): the analysis, from the agreed numbers and the module, as a typed
       :class:`~lightning_recanalysis.records.Record` of ``record_type``; a failure on any rank skips it on all.
    4. the record is kept in ``history`` and published to the event file (:meth:`_record`);
    5. :meth:`log_record` (required): scalars, images, histograms and text from the record, through
       ``self.writer`` (which writes on rank 0 only; scalars go to every logger). A failure here is a warning.

    Attached to ``trainer.validate`` or ``trainer.test``, a monitor analyses once (see :mod:`.evaluation`).

    Args:
        every_n_epochs: analyse at the end of every n-th training epoch (and always after the last one).
        strict: re-raise exceptions from the analysis instead of turning them into warnings.

    Raises:
        ValueError: at construction, when ``every_n_epochs`` is not a positive integer.
        RuntimeError: under ``strict=True``, when an analysis failed on another rank (every rank stops together).

    Example:
        A monitor of the mean row norm of an embedding: it says when, what and how; the base does the rest.

        >>> from dataclasses import dataclass
        >>> from lightning_recanalysis.records import Record
        >>> from lightning_recanalysis.toy import ToyDCN, toy_loader, toy_trainer
        >>> @dataclass
        ... class NormRecord(Record):
        ...     mean_norm: float = 0.0
        >>> class NormMonitor(AnalysisCallback):
        ...     namespace, analysis_name, record_type = "norms", "norm", NormRecord
        ...     def on_train_epoch_end(self, trainer, pl_module):
        ...         if self._is_analysis_epoch(trainer):
        ...             self.run_analysis(trainer, pl_module)
        ...     def compute(self, pl_module, agreed):
        ...         return NormRecord(mean_norm=float(pl_module.embedding.weight.detach().norm(dim=1).mean()))
        ...     def log_record(self, trainer, record):
        ...         self.writer.scalars(trainer, {"norms/mean_norm": record.mean_norm}, record.step)
        >>> monitor = NormMonitor()
        >>> toy_trainer([monitor], max_epochs=2).fit(ToyDCN(), toy_loader())
        >>> [(r.stage, r.epoch, r.step) for r in monitor.records]  # two batches an epoch
        [('epoch', 0, 2), ('epoch', 1, 4)]
        >>> monitor.history[0]["mean_norm"] > 0  # the published form: a plain dict
        True
    """

    #: The TensorBoard tag namespace of this analysis (``collapse``, ``correlation``, ...).
    namespace: str = "analysis"
    #: The analysis' name in warnings ("the <name> analysis of epoch 3 failed ...").
    analysis_name: str = "analysis"
    #: The typed record :meth:`compute` returns and :attr:`records` reads ``history`` as.
    record_type: type[Record] = Record
    #: How a failure of :meth:`prepare` is named in the warning; ``{what}`` is the analysis.
    preparing: str = "{what}"
    #: Exceptions of :meth:`prepare` that are errors in the data: they stop training, on every rank.
    fatal_errors: tuple[type[Exception], ...] = ()
    #: The analysis' findings, ``fn(records, thresholds) -> [Finding]`` (:mod:`lightning_recanalysis.findings`):
    #: written to the ``<namespace>/findings`` Text tab after every analysis, as the report shows them.
    findings_of: Callable[[Sequence[Record], ReportThresholds], list[Finding]] | None = None

    def __init__(self, *, every_n_epochs: int = 1, strict: bool = False) -> None:
        super().__init__()
        self.every_n_epochs = check_positive_int("every_n_epochs", every_n_epochs)
        self.strict = strict
        self.history: list[dict[str, Any]] = []
        self.failures: int = 0
        self.writer = AnalysisWriter(type(self).__name__)
        self.redraw_tolerance: float = 0.0
        self._drawn: dict[str, tuple[Any, np.ndarray]] = {}
        self._trainer: pl.Trainer | None = None
        #: The findings' thresholds: those of the Trainer's :class:`~lightning_recanalysis.AnalysisReport` (given
        #: once, for the report and every monitor alike), else the defaults.
        self.thresholds = ReportThresholds()
        #: What the monitor stated at fit start it would analyse (see :meth:`coverage`), as published.
        self.coverage_record: dict[str, Any] | None = None

    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._trainer = trainer
        self.thresholds = next((cb.thresholds for cb in getattr(trainer, "callbacks", None) or ()
                                if not isinstance(cb, AnalysisCallback)
                                and isinstance(getattr(cb, "thresholds", None), ReportThresholds)), ReportThresholds())
        if stage == "fit":
            self._drawn = {}
        else:
            self._reset_evaluation()

    # ---- coverage: what will run, and what cannot --------------------------------------------------------
    def coverage(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> list[dict[str, Any]]:
        """What this monitor will analyse in this fit or evaluation: ``[{"analysis", "runs", "why"}]`` (``why``
        says what stops an analysis that does not run, and what to change; ``"optional": True`` marks a part the
        user left out, which is stated but not warned about). Default: the one analysis, running."""
        return [{"analysis": self.analysis_name, "runs": True, "why": ""}]

    @override
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # After every on_fit_start (the monitors' setup of what they read): state what runs, once per fit.
        if self._is_real_fit(trainer):
            self._state_coverage(trainer, pl_module)

    def _state_coverage(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """Warn about what does not run, publish the coverage and write the ``<namespace>/coverage`` Text tab."""
        step = self.evaluation_position(trainer)[1] if self._is_evaluation(trainer) else trainer.global_step
        items = self._guarded("stating the coverage", lambda: self.coverage(trainer, pl_module)) or []
        skipped = [c for c in items if not c["runs"] and not c.get("optional")]
        if skipped and trainer.is_global_zero:
            warnings.warn(f"{type(self).__name__}: " + "; ".join(f"no {c['analysis']}: {c['why']}" for c in skipped),
                          RuntimeWarning, stacklevel=2)
        # Published beside the history, not in it: the report shows it, the analyses' records stay the history.
        self.coverage_record = Record(stage="coverage", step=step, extra={"coverage": items}).to_dict()
        self._guarded("publishing the coverage", lambda: self.writer.record(
            trainer, self.namespace, self.coverage_record, step))
        if trainer.is_global_zero:
            rows = [f"- {c['analysis']}: " + ("runs" if c["runs"] else f"**does not run**: {c['why']}")
                    + (f" ({c['why']})" if c["runs"] and c["why"] else "") for c in items]
            self._guarded("logging the coverage", lambda: self.writer.text(
                trainer, f"{self.namespace}/coverage", "\n".join(rows), step))

    @property
    def state_key(self) -> str:
        # Lightning formats every callback's state_key on each hook call (its profiler's action name): some
        # twenty thousand times in a short run, so the key is built once. What it is built from is set in
        # __init__ and not changed afterwards.
        key = self.__dict__.get("_state_key")
        if key is None:
            identity = self._state_key_fields()
            key = self._generate_state_key(**identity) if identity else type(self).__qualname__
            self._state_key = key
        return key

    def _state_key_fields(self) -> dict[str, Any]:
        """What tells two instances of one monitor apart in a checkpoint (none: the class name is the key)."""
        return {}

    #: Custom-scalars charts of this analysis, in the category ``dashboard_category``: ``{chart title: [tag
    #: pattern under the namespace, ...]}`` (regular expressions; see :meth:`dashboard_layout`).
    dashboard_category: str = ""
    dashboard_charts: dict[str, list[str]] = {}

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        """Custom-scalars charts for this analysis: ``{category: {chart: ["Multiline", [tag regex, ...]]}}``.

        By default the ``dashboard_charts`` (each pattern ``p`` becomes ``^<namespace>/p$``); a monitor whose
        charts depend on what it found (tables, fields) overrides this."""
        if not self.dashboard_charts:
            return {}
        ns = self.namespace
        return {self.dashboard_category: {chart: ["Multiline", [rf"^{ns}/{p}$" for p in patterns]]
                                          for chart, patterns in self.dashboard_charts.items()}}

    # ---- the contract: what a monitor supplies ---------------------------------------------------------------
    def prepare(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> Any:
        """This rank's part of the analysis, before any collective; handed to :meth:`agree` (default: None)."""
        return None

    def agree(self, trainer: "pl.Trainer", prepared: Any) -> ContextManager[Any]:
        """A context in which every rank holds the numbers of all ranks; it yields what :meth:`compute` reads.

        Every rank enters it at the same point (its collectives run here). Default: ``prepared`` as it is."""
        return contextlib.nullcontext(prepared)

    def compute(self, pl_module: "pl.LightningModule | None", agreed: Any) -> Record:
        """The analysis now, as a ``record_type`` whose ``stage``, ``epoch`` and ``step`` the base class sets."""
        raise NotImplementedError(f"{type(self).__name__} must define compute(pl_module, agreed) -> Record")

    def log_record(self, trainer: "pl.Trainer", record: Record) -> None:
        """Show a record: scalars, images, histograms and text through ``self.writer``."""
        raise NotImplementedError(f"{type(self).__name__} must define log_record(trainer, record)")

    # ---- the one path from analysis to log ---------------------------------------------------------------
    def run_analysis(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str = "epoch") -> bool:
        """Prepare, agree, compute, keep and log one record (see the class docstring), the same on every rank.

        ``stage`` is ``"epoch"`` (the record of ``trainer.current_epoch``) or ``"init"`` (epoch 0, the initial
        weights); in ``validate``/``test``, the record is filed at :meth:`evaluation_position`. Returns whether
        :meth:`prepare` succeeded on every rank.
        """
        evaluated = trainer.state.fn.value if self._is_evaluation(trainer) else None
        epoch, step = (self.evaluation_position(trainer) if evaluated else
                       (0 if stage == "init" else trainer.current_epoch, trainer.global_step))
        what = (f"the initial {self.analysis_name} analysis" if stage == "init"
                else f"the {self.analysis_name} analysis of epoch {epoch}")
        ok, prepared = self._together(trainer, self.preparing.format(what=what),
                                      lambda: self.prepare(trainer, pl_module), fatal=self.fatal_errors)
        if not ok:
            return False
        with self.agree(trainer, prepared) as agreed:
            ok, record = self._together(trainer, what, lambda: self.compute(pl_module, agreed))
        if ok:  # failed on some rank: no rank keeps a record, so the histories stay the same
            record.stage, record.epoch, record.step = stage, epoch, step
            if evaluated:  # where it came from: an evaluation of these weights, not a live run's epoch
                record.extra["evaluated"] = evaluated
            self._record(record)
            self._guarded(f"logging {what}", lambda: self.log_record(trainer, record))
            self._guarded(f"writing the findings of {what}", lambda: self.log_findings(trainer, record.step))
        return True

    def current_findings(self) -> list[Finding]:
        """The findings of the history so far, against :attr:`thresholds` (none without ``findings_of``)."""
        return [] if self.findings_of is None else type(self).findings_of(self.records, self.thresholds)

    def log_findings(self, trainer: "pl.Trainer", step: int) -> None:
        """The ``<namespace>/findings`` Text tab: the same findings as the report, problems first."""
        if self.findings_of is None or not trainer.is_global_zero:
            return
        text = findings_markdown(self.current_findings(), nothing="nothing to report")
        self.writer.text(trainer, f"{self.namespace}/findings", text, step)
        self.writer.flush(trainer)

    @property
    def records(self) -> list[Record]:
        """``history`` as typed records (``record_type``), oldest first; each dict read once (:class:`TypedHistory`)."""
        return self.__dict__.setdefault("_typed_history", TypedHistory(self.record_type))(self.history)

    # ---- when to run -------------------------------------------------------------------------------------
    @staticmethod
    def _is_real_fit(trainer: "pl.Trainer") -> bool:
        """False during sanity checks, ``fast_dev_run`` and validate/test/predict (see :meth:`_is_evaluation`)."""
        return (
            not trainer.sanity_checking
            and not trainer.fast_dev_run
            and trainer.state.fn == TrainerFn.FITTING
        )

    def _is_analysis_epoch(self, trainer: "pl.Trainer") -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        return self._is_real_fit(trainer) and (epoch % self.every_n_epochs == 0 or last)

    # ---- failure policy ----------------------------------------------------------------------------------
    def _guarded(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; on an exception warn once per occurrence and return None (``strict`` re-raises).

        Only for work that no collective follows and whose failure on one rank leaves the history alone (a
        probe that is counted, logging after the record): see :meth:`_together` for the rest."""
        try:
            return fn()
        except Exception as err:
            if self.strict:
                raise
            self._skipped(what, f"{type(err).__name__}: {err}")
            return None

    def _together(self, trainer: "pl.Trainer | None", what: str, fn: Callable[[], Any], *,
                  fatal: tuple[type[Exception], ...] = ()) -> tuple[bool, Any]:
        """Run ``fn`` on this rank, then skip its result on every rank if it failed on any: ``(ok, result)``.

        Under DDP a failure caught on one rank alone desynchronises the ranks: the others go on into the
        collective that follows (a row-sharded all-reduce, the pooling of an epoch's sums, a metric's sync)
        and wait there for a rank that has gone back to training, which hangs or pairs the wrong collectives;
        and past the collectives, the ranks would keep different histories. So ``fn`` holds work local to
        this rank, and after it every rank takes part in one small all-reduce of a failure flag, whether
        ``fn`` failed or not (every rank must call this at the same point, as it does the collectives). If any
        rank failed, every rank skips with one warning and returns ``(False, None)``; with ``strict`` every
        rank raises (the failing ones their own error). An exception of a ``fatal`` type (an error in the
        data, which must stop training) is raised on every rank, so that none waits for the one that raised.
        """
        error: Exception | None = None
        result = None
        try:
            result = fn()
        except Exception as err:
            error = err
        failed, fatal_ranks = _count_over_ranks(trainer, error is not None, isinstance(error, fatal))
        if not failed:
            return True, result
        if fatal_ranks:
            if isinstance(error, fatal):
                raise error
            raise RuntimeError(f"{type(self).__name__}: {what} stopped on {fatal_ranks} other rank(s) with an error "
                               "in the data (see that rank's error); stopping this rank too") from error
        if self.strict:
            if error is not None:
                raise error
            raise RuntimeError(f"{type(self).__name__}: {what} failed on {failed} other rank(s) (strict=True)")
        cause = f"{type(error).__name__}: {error}" if error is not None else f"on {failed} other rank(s)"
        if trainer is not None and trainer.world_size > 1:
            cause += "; every rank skips it"
        self._skipped(what, cause)
        return False, None

    def _skipped(self, what: str, cause: str) -> None:
        self.failures += 1
        warnings.warn(
            f"{type(self).__name__}: {what} failed and is skipped ({cause}); training goes on. "
            "Pass strict=True to raise instead.",
            RuntimeWarning,
            stacklevel=3,
        )

    # ---- drawing ---------------------------------------------------------------------------------------------
    def _changed(self, key: str, values: Any, rows: Any = None) -> bool:
        """Whether a data-derived image differs from the one last drawn under ``key`` (and remember it if so).

        The data's images (ground-truth maps) do not change between epochs over the same data, so they are drawn
        again only when a value moved by more than ``redraw_tolerance``: of the largest value (``rows=None``), or
        absolutely for a map normalised to 0..1 whose ``rows`` (the categories shown) are given, and drawn
        whenever those rows change."""
        current = np.asarray(values, dtype=np.float64)
        previous = self._drawn.get(key)
        if previous is not None and previous[0] == rows and previous[1].shape == current.shape:
            scale = max(float(np.abs(previous[1]).max(initial=0.0)), 1e-300) if rows is None else 1.0
            if float(np.abs(current - previous[1]).max(initial=0.0)) / scale <= self.redraw_tolerance:
                return False
        self._drawn[key] = (rows, current)
        return True

    # ---- history -----------------------------------------------------------------------------------------
    def _record(self, record: Record | Mapping[str, Any]) -> None:
        """Add a record (typed or published), replacing any earlier one of the same stage and epoch (a resumed
        epoch runs again), and store it in the event file for the report."""
        record = record.to_dict() if isinstance(record, Record) else dict(record)
        if self._trainer is not None:
            self.writer.record(self._trainer, self.namespace, record, int(record.get("step", 0)))
        key = (record.get("stage"), record.get("epoch"))
        self.history = [r for r in self.history if (r.get("stage"), r.get("epoch")) != key]
        self.history.append(record)
        self.history.sort(key=lambda r: (r.get("step", 0), r.get("stage") != "init", r.get("epoch", -1)))

    def has_record(self, stage: str, epoch: int | None = None) -> bool:
        return any(r.get("stage") == stage and (epoch is None or r.get("epoch") == epoch) for r in self.history)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"version": HISTORY_VERSION, "history": list(self.history)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._is_evaluation(self._trainer):  # a checkpoint under evaluation: kept aside, not this history
            self.restored_history = list(state_dict.get("history", []))
            return
        self.history = list(state_dict.get("history", []))


def _count_over_ranks(trainer: "pl.Trainer | None", failed: bool, fatal: bool) -> tuple[int, int]:
    """``(ranks that failed, ranks that failed fatally)``, summed over the trainer's processes with one
    all-reduce of two numbers (none with a single process)."""
    if trainer is None or trainer.world_size <= 1:
        return int(failed), int(fatal)
    flags = torch.tensor([float(failed), float(fatal)], device=trainer.strategy.root_device)
    flags = sum_over_ranks(flags)
    return int(round(float(flags[0]))), int(round(float(flags[1])))
