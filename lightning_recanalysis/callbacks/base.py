"""What every analysis callback shares: when to run, how to fail, and a history that survives a resume.

A monitor's analysis is a side computation: it reads the model, never changes it, and must never end a long
training run over a bad table or a logging detail. :class:`AnalysisCallback` gives each monitor

- ``every_n_epochs`` cadence and the rule that sanity checks, ``fast_dev_run`` and non-fit stages log nothing;
- :meth:`_guarded`: an exception inside an analysis becomes one warning and the analysis is skipped for that
  epoch (``strict=True`` re-raises, for tests and debugging);
- :meth:`_together`: the same under DDP for the part of an analysis that precedes a collective or makes the
  history record: a failure on any rank skips it on every rank, so no rank waits in a collective that another
  has skipped and every rank keeps the same history;
- :meth:`_analyse_counts`: the epoch-end analysis of a monitor whose ground truth is a counting metric (count
  what waits, sync, analyse, record, log), in that order on every rank;
- ``history``: a list of plain records (numbers, strings, lists) kept in ``state_dict`` so a run resumed from a
  checkpoint continues it, with one record per (stage, epoch): a repeated epoch replaces, never duplicates;
- an :class:`~lightning_recanalysis.writers.AnalysisWriter` for scalars, images, histograms and text;
- publishing: each record also goes into the event file (a summary TensorBoard's dashboards ignore), so the
  report can be rebuilt from the event files without the model. Subclasses that override ``setup`` call
  ``super().setup(trainer, pl_module, stage)`` first.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from lightning.pytorch.callbacks import Callback

from ..writers import AnalysisWriter

__all__ = ["AnalysisCallback"]

#: Bumped when the layout of the history records changes, so a report can read old checkpoints knowingly.
HISTORY_VERSION = 1


class AnalysisCallback(Callback):
    """Base class of the monitors; not used on its own.

    Args:
        every_n_epochs: analyse at the end of every n-th training epoch (and always after the last one).
        strict: re-raise exceptions from the analysis instead of turning them into warnings.
    """

    #: The TensorBoard tag namespace of this analysis (``collapse``, ``correlation``, ...).
    namespace: str = "analysis"

    def __init__(self, *, every_n_epochs: int = 1, strict: bool = False) -> None:
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        self.every_n_epochs = every_n_epochs
        self.strict = strict
        self.history: list[dict[str, Any]] = []
        self.failures: int = 0
        self.writer = AnalysisWriter(type(self).__name__)
        self._trainer = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

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

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        """Custom-scalars charts for this analysis: ``{category: {chart: ["Multiline", [tag regex, ...]]}}``."""
        return {}

    # ---- when to run -------------------------------------------------------------------------------------
    @staticmethod
    def _is_real_fit(trainer) -> bool:
        """False during sanity checks, ``fast_dev_run`` and validate/test/predict: their numbers mean nothing."""
        from lightning.pytorch.trainer.states import TrainerFn

        return (
            not trainer.sanity_checking
            and not trainer.fast_dev_run
            and trainer.state.fn == TrainerFn.FITTING
        )

    def _is_analysis_epoch(self, trainer) -> bool:
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

    def _together(self, trainer, what: str, fn: Callable[[], Any], *,
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

    def _analyse_counts(self, trainer, pl_module, name: str, counts, flush: Callable[[], None]) -> bool:
        """The epoch-end analysis of a monitor whose ground truth is a counting metric, the same on every rank.

        1. Batches still waiting are checked and counted (``flush``), before the sync: a bad label or id is an
           error of the data, not an analysis failure to warn about, and stops training on every rank (not
           only on the rank whose batch it was, while the others wait for it in the sync); any other failure
           of this rank's counting skips the analysis on every rank.
        2. Every rank sums the counts of all ranks (``counts.sync_context``, a collective all of them reach)
           and computes the record with ``self.analyse(pl_module)``, so every rank keeps the same history (a
           failure on any rank skips the record on all).
        3. The record is kept, and ``self._log`` draws and writes it (only rank 0 writes).

        Returns whether the counting (step 1) succeeded on every rank.
        """
        epoch = trainer.current_epoch
        what = f"the {name} analysis of epoch {epoch}"
        counted, _ = self._together(trainer, f"counting the batches for {what}", flush, fatal=(ValueError,))
        if not counted:
            return False
        with counts.sync_context(should_sync=True):
            ok, record = self._together(trainer, what, lambda: self.analyse(pl_module))
        if ok:
            record = {"stage": "epoch", "epoch": epoch, "step": trainer.global_step, **record}
            self._record(record)
            self._guarded(f"logging {what}", lambda: self._log(trainer, record))
        return True

    def _skipped(self, what: str, cause: str) -> None:
        self.failures += 1
        warnings.warn(
            f"{type(self).__name__}: {what} failed and is skipped ({cause}); training goes on. "
            "Pass strict=True to raise instead.",
            RuntimeWarning,
            stacklevel=3,
        )

    # ---- history -----------------------------------------------------------------------------------------
    def _record(self, record: dict[str, Any]) -> None:
        """Add a record, replacing any earlier one of the same stage and epoch (a resumed epoch runs again),
        and store it in the event file for the report."""
        if self._trainer is not None:
            self.writer.record(self._trainer, self.namespace, record, int(record.get("step", 0)))
        key = (record.get("stage"), record.get("epoch"))
        self.history = [r for r in self.history if (r.get("stage"), r.get("epoch")) != key]
        self.history.append(record)
        self.history.sort(key=lambda r: (r.get("step", 0), r.get("stage") != "init", r.get("epoch", -1)))

    def has_record(self, stage: str, epoch: int | None = None) -> bool:
        return any(r.get("stage") == stage and (epoch is None or r.get("epoch") == epoch) for r in self.history)

    def state_dict(self) -> dict[str, Any]:
        return {"version": HISTORY_VERSION, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


def data_parallel_group(trainer) -> Any:
    """The process group over which the batches differ: ``None`` (every process, as under DDP) unless a
    model-parallel strategy gives several ranks the same batches (``ModelParallelStrategy`` with a tensor-parallel
    size above 1 feeds every rank of a tensor-parallel group the same rows). Counts summed over every process
    would count those rows once per rank; summed over this group they count each row once.
    """
    if trainer is None or trainer.world_size <= 1:
        return None
    replicas = (getattr(trainer, "distributed_sampler_kwargs", None) or {}).get("num_replicas", trainer.world_size)
    if replicas == trainer.world_size:
        return None
    mesh = getattr(trainer.strategy, "device_mesh", None)
    if mesh is None or "data_parallel" not in (mesh.mesh_dim_names or ()):
        raise ValueError(
            f"{type(trainer.strategy).__name__} feeds {trainer.world_size} processes with {replicas} different "
            "streams of batches, and the monitors cannot tell which processes share one: use DDP or Lightning's "
            "ModelParallelStrategy, whose device mesh names its data-parallel dimension")
    return mesh["data_parallel"].get_group()


def _count_over_ranks(trainer, failed: bool, fatal: bool) -> tuple[int, int]:
    """``(ranks that failed, ranks that failed fatally)``, summed over the trainer's processes with one
    all-reduce of two numbers (none with a single process)."""
    if trainer is None or trainer.world_size <= 1:
        return int(failed), int(fatal)
    flags = torch.tensor([float(failed), float(fatal)], device=trainer.strategy.root_device)
    flags = trainer.strategy.reduce(flags, reduce_op="sum")
    return int(round(float(flags[0]))), int(round(float(flags[1])))
