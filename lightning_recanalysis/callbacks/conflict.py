"""Live gradient conflict between the tasks of a multi-task model, on its shared embeddings (METHODS.md section 3).

Every ``every_n_steps`` training batches, on that batch's own graph and just before its backward pass, the monitor
takes each task's loss gradient with respect to the looked-up embedding rows, sums it per unique row id (which is
the table's parameter gradient on those rows), and measures the cosine between every pair of tasks per field
and per table. Over each epoch it reports the mean cosine, the fraction of measured steps with negative cosine
and the ratio of gradient norms. The maths is in :mod:`lightning_recanalysis.functional.conflict`, the probe in
:mod:`lightning_recanalysis.model.gradient_probe` (which forms the Grams of an epoch's probes together), the epoch
statistics in :mod:`lightning_recanalysis.model.conflict_statistics`.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, ContextManager, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from typing_extensions import override

from ..checks import check_positive_int
from ..model.field_sets import AnalysisUnit, FieldSet, analysis_units
from ..figures.conflict import field_pair_cosine_image
from ..functional.conflict import cosine_sums
from ..findings.conflict import conflict_findings
from ..records import ConflictRecord, pair_name
from ..model.tables import describe_tables, discover_tables
from ..writers import tensorboard_experiments
from ..model.conflict_statistics import conflict_views, pooled_sums
from ..model.gradient_probe import GradientProbe, Lookup, ProblemLog
from ..model.multitask import check_lookups_still_called, protocol_error, resolve_tasks
from .base import AnalysisCallback
from .conflict_evaluation import ConflictEvaluation
from .evaluation import EVALUATION_STAGES

__all__ = ["GradientConflictMonitor"]

#: This rank's sums behind every statistic, by name (see :mod:`lightning_recanalysis.model.conflict_statistics`),
#: and its per-step cosines ``[steps, fields + 1, T, T]`` per view (None for a view without a measured step).
EpochSums = tuple[dict[str, torch.Tensor], list[torch.Tensor | None]]


class GradientConflictMonitor(ConflictEvaluation, AnalysisCallback):
    r"""Per-task gradient conflict on the shared embeddings of a multi-task model, logged per epoch.

    **What it measures.** At a probed training step, for each task t the gradient g_t of the task's loss with
    respect to the embedding rows that the batch looked up (summed per unique id: exactly the table's gradient on
    those rows), and for each pair of tasks (a, b) and each field and table

        cos(g_a, g_b) = <g_a, g_b> / (||g_a|| ||g_b||)

    from the float64 Gram of the gradients (:func:`~lightning_recanalysis.functional.gradient_cosine`).
    Negative cosine = the tasks pull the shared embedding in opposite directions (METHODS.md section 3: the live
    counterpart of Pan et al., KDD 2024 and STEM, Su et al., AAAI 2024). A zero gradient has no direction: that
    step's cosine is *undefined* for the pair and is left out of the mean (it is counted, and its zero norm still
    enters the norm ratio).

    **Protocol.** The module names its tasks in ``task_names`` and, in ``training_step``, stores each task's
    loss in ``self.task_losses = {task: loss}`` before returning the total (declare ``self.task_losses = {}`` in
    ``__init__``); see :mod:`lightning_recanalysis.model.multitask`. Fewer than two tasks is an error at
    ``setup``. In ``trainer.validate``/``trainer.test`` the probe runs on every ``every_n_steps``-th evaluation
    batch, from the losses ``validation_step``/``test_step`` store in ``self.task_losses``, and the Trainer must
    be built with ``inference_mode=False`` (see :mod:`.conflict_evaluation`; the monitor says so otherwise).

    **Cost and safety.** A probe is one ``torch.autograd.grad`` per task from its loss to the looked-up rows
    (``retain_graph=True`` on the graph the training backward frees right after), so it costs at most one extra
    backward pass per task that stops at the embeddings, and it computes no parameter gradient. It never
    touches ``.grad``, the optimizer, the model's modules or any random number generator, so training is
    bit-for-bit what it would be without the monitor. Forward hooks on the embedding modules exist only
    between the start of a probed batch and its backward. (Tensor hooks that a model registers itself fire during
    the probe too. Under float16 mixed precision the probe differentiates the unscaled task losses, so tiny
    gradients can underflow; bfloat16 and float32 are unaffected.) A probe costs about one extra backward pass
    through the embedding lookups; ``every_n_steps`` sets how often (the docs' benchmarks give the share).

    **STEM-style tables** (``column_groups=["task_a", "task_b", "shared"]``): every column chunk is its own view
    ``table[group]``, analysed separately. A task whose loss never flows into another task's chunk (STEM's
    gates read only their own and the shared chunk, and other tasks' specific experts are detached) has an
    exactly zero gradient there: its ``gradient_norm`` on that view is 0, the pair's ``norm_ratio`` is 0 (or
    not logged, where the zero task is the denominator) and its cosine is undefined at every step, so no
    ``cosine_mean`` is logged for that pair on that view. That is how the monitor shows that the tasks no longer
    share gradients there; on the shared chunk the cosine is measured as usual.

    **One table per feature**: same-width single-field tables form one field set (see
    :mod:`~lightning_recanalysis.model.field_sets`), one view whose fields are the tables: the whole-view cosine is
    that of all their rows together, as for a concatenated table; a member table not looked up in a probed step
    is left out of that step.

    **Tags** (``<view>`` is a table, ``table[group]`` or a field set, ``<a>_vs_<b>`` a task pair in
    ``task_names`` order, step = ``trainer.global_step`` at the end of the epoch):

    - ``conflict/<view>/<a>_vs_<b>/cosine_mean``: mean over the epoch's measured steps of the cosine on the
      whole view (all its fields' rows together); ``.../negative_fraction``: fraction of those steps with
      cosine < 0; ``.../norm_ratio``: mean ||g_a|| / mean ||g_b||; ``.../probes``: the measured steps behind the
      cosine and ``.../cosine_std`` its standard deviation over them (the findings' interval).
    - ``conflict/<view>/<field>/<a>_vs_<b>/...``: the same five on one field's rows (only for views with more
      than one field).
    - ``conflict/<view>/<task>/gradient_norm``: mean norm of the task's gradient on the view.
    - ``conflict/measured_steps``, ``conflict/skipped_steps``: probes that measured two tasks or more, and probes
      that could not (missing or non-finite task losses).
    - ``conflict/findings`` (text): the findings (:func:`~lightning_recanalysis.findings.conflict_findings`: a
      conflict only where the pooled probes support it), the same as the report's; ``conflict/coverage`` (text):
      what runs.
    - ``conflict/<view>/cosine_heatmap`` (image): the view's fields (and the whole view) x task pairs, mean
      gradient cosine, -1 (red) to 1 (blue), blank where undefined: the map the report draws, drawn every
      ``heatmap_every_n_epochs`` analysed epochs and after the last epoch (the scalars carry the same numbers
      every epoch); none for a map of one cell (one field, two tasks), whose number is the scalar.
    - ``conflict/<view>/<a>_vs_<b>/cosine_per_step`` (histogram): the per-step cosines, one value per field and
      measured step.
    - ``conflict/setup`` (text, once): the tables, fields, column groups and tasks the monitor watches.

    A statistic without a defined value in an epoch (no defined cosine, or a zero denominator) is not logged.

    **Distributed.** Every rank probes its own batch at the same batch indices and makes the same calls; at
    epoch end the sums behind every scalar are added over ranks (one all-reduce), so scalars *pool all ranks'
    probes* and are identical on every rank. Images and histograms show the pooled means and rank 0's own
    per-step cosines respectively, and are written by rank 0 only. An analysis that fails on one rank (its
    sums, or the statistics) is skipped on every rank: a one-flag all-reduce tells them all, so none waits in
    the pooling all-reduce for a rank that has gone back to training. Under FSDP2 and tensor parallelism each
    ``autograd.grad`` of a probe makes collectives, so every probe first agrees over all ranks (one MIN
    all-reduce of a usable flag per task and a looked-up flag): only tasks usable on every rank are probed, and
    a step without a lookup on some rank is skipped on all (counted in ``skipped_steps`` on each).

    **Bad input** (counted in the epoch's history record under ``problems``, this rank's counts, and warned
    once each; training goes on): a task missing from ``task_losses``, a non-finite task loss, a task loss that
    does not reach an embedding table. A probe left with fewer than two usable tasks counts as skipped.

    Args:
        every_n_steps: probe every n-th training batch of an analysed epoch (batch index 0, n, 2n, ...).
        tasks: the tasks to compare (default: the module's ``task_names``); at least two.
        include, exclude: module-name globs choosing the embedding tables (see
            :func:`~lightning_recanalysis.model.tables.discover_tables`).
        field_dims: cardinalities that split a concatenated table into fields; a mapping names them.
        column_groups: split a table's columns into equal chunks, e.g. ``["task_a", "task_b", "shared"]``.
        heatmap_every_n_epochs: draw the heatmap image every n-th analysed epoch (and after the last).
        every_n_epochs: probe and log in every n-th epoch (and the last).
        strict: re-raise exceptions from the analysis instead of warning.

    Raises:
        ValueError: at construction, for a non-positive ``every_n_steps``/``heatmap_every_n_epochs``/
            ``every_n_epochs``; at ``setup``, when the module breaks the task protocol (fewer than two
            ``task_names``, a ``tasks`` subset not among them) or no embedding table is found. Bad losses during
            training (missing, non-finite, reaching no table) are counted and warned about, never raised.

    Example:
        Two tasks on one shared table of a user and an item field, every training batch probed:

        >>> from lightning_recanalysis.toy import ToyTwoTask, toy_loader, toy_trainer
        >>> monitor = GradientConflictMonitor(every_n_steps=1, field_dims={"user": 8, "item": 6})
        >>> toy_trainer([monitor]).fit(ToyTwoTask(), toy_loader("two_task"))
        >>> record = monitor.records[-1]  # a ConflictRecord; monitor.history holds it as a plain dict
        >>> record.stage, record.epoch, record.tasks, record.measured_steps
        ('train', 0, ['click', 'buy'], 2)
        >>> sorted(tag.rsplit("/", 1)[1] for tag in record.metrics if "/user/" in tag)
        ['cosine_mean', 'cosine_std', 'negative_fraction', 'norm_ratio', 'probes']
        >>> stats = record.views["embedding"].fields["user"][("click", "buy")]  # the same numbers, typed
        >>> stats.probes, stats.cosine_mean == record.metrics["conflict/embedding/user/click_vs_buy/cosine_mean"]
        (2, True)
        >>> -1 <= record.metrics["conflict/embedding/click_vs_buy/cosine_mean"] <= 1
        True
    """

    namespace = "conflict"
    analysis_name = "gradient conflict"
    record_type = ConflictRecord
    findings_of = staticmethod(conflict_findings)

    def __init__(
        self,
        *,
        every_n_steps: int = 50,
        tasks: Sequence[str] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        field_dims: Sequence[int] | Mapping[str, Any] | None = None,
        column_groups: int | Sequence[str] | Mapping[str, Any] | None = None,
        heatmap_every_n_epochs: int = 10,
        every_n_epochs: int = 1,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, strict=strict)
        for name, value in (("every_n_steps", every_n_steps), ("heatmap_every_n_epochs", heatmap_every_n_epochs)):
            check_positive_int(name, value)
        self.every_n_steps = every_n_steps
        self.heatmap_every_n_epochs = heatmap_every_n_epochs
        self.tasks = list(tasks) if tasks is not None else None
        self.include, self.exclude = include, exclude
        self.field_dims, self.column_groups = field_dims, column_groups
        self._task_names: list[str] = []
        self._tables = []
        self._views: list[AnalysisUnit] = []
        self._modules: list[list[nn.Module]] = []
        self._problems = ProblemLog(type(self).__name__)
        self._probe = GradientProbe(type(self).__name__, self._problems)
        self._grams: list[list[torch.Tensor]] = []
        self._counts = {"measured": 0, "skipped": 0}

    # ---- setup ------------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage not in ("fit", *EVALUATION_STAGES):
            return
        owner = type(self).__name__
        self._task_names = resolve_tasks(pl_module, self.tasks, owner)
        if not hasattr(pl_module, "task_losses"):
            raise ValueError(protocol_error(
                owner, f"{type(pl_module).__name__} declares no `task_losses`; set `self.task_losses = {{}}` in "
                "__init__ and fill it with each task's loss in every training_step"))
        self._tables = discover_tables(pl_module, include=self.include, exclude=self.exclude,
                                       field_dims=self.field_dims, column_groups=self.column_groups)
        self._modules = []
        for table in self._tables:
            modules = [pl_module.get_submodule(name) for name in [table.name, *table.aliases]]
            for name, module in zip([table.name, *table.aliases], modules):
                if isinstance(module, nn.EmbeddingBag) and module.mode == "max":
                    raise ValueError(
                        f"{owner}: '{name}' is an nn.EmbeddingBag in 'max' mode, whose row gradients the monitor "
                        f"cannot recover from the bag output; leave it out with exclude=['{name}']")
            self._modules.append(modules)
        # Same-width single-field tables (one table per feature) form one field set, shown like the fields of a
        # concatenated table; each unit's Gram is assembled from (table, column group) parts.
        self._views = analysis_units(self._tables)
        index = {id(table): ti for ti, table in enumerate(self._tables)}
        parts = [[(index[id(f.table)], 0) for f in unit.fields] if isinstance(unit, FieldSet)
                 else [(index[id(unit.table)], unit.table.column_groups.index(unit.group))]
                 for unit in self._views]
        self._probe.configure(self._tables, self._modules, parts, self._task_names)
        self._reset_epoch()

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        """Custom Scalars: one chart per field (and the whole view) and task pair of the mean cosine, one per view
        and pair of the negative fraction. TensorBoard colours a chart's series by run, so one series a chart: the
        runs compared stand in their own colours. A field of one view only is matched in any view (MMoE's
        ``embedding`` meets STEM's ``embedding[shared]``); a STEM task chunk (its column group named after a task)
        gets one task's gradient, no cosine, and no chart."""
        tasks = self._task_names
        pairs = [f"{a}_vs_{b}" for i, a in enumerate(tasks) for b in tasks[i + 1:]]
        views = [v for v in self._views if getattr(getattr(v, "group", None), "name", None) not in tasks]
        counts: dict[str, int] = {}
        for view in views:
            for fld in view.fields if len(view.fields) > 1 else []:
                counts[fld.name] = counts.get(fld.name, 0) + 1
        cosines, negative = {}, {}
        for view in views:
            name = re.escape(view.name)
            rows = [("whole view", "[^/]+", "") if len(views) == 1 else (f"{view.name}, whole view", name, "")]
            rows += [(fld.name if counts[fld.name] == 1 else f"{view.name}, {fld.name}",
                      "[^/]+" if counts[fld.name] == 1 else name, re.escape(fld.name) + "/")
                     for fld in (view.fields if len(view.fields) > 1 else [])]
            for pair in pairs:
                label = pair.replace("_vs_", " vs ")
                for title, where, part in rows:
                    cosines[f"{title}: {label}"] = [
                        "Multiline", [rf"^conflict/{where}/{part}{re.escape(pair)}/cosine_mean$"]]
                negative[f"{view.name}: {label}"] = [
                    "Multiline", [rf"^conflict/{name}/{re.escape(pair)}/negative_fraction$"]]
        layout = {"conflict: mean gradient cosine": cosines,
                  "conflict: share of negative cosines, whole view": negative}
        return {category: charts for category, charts in layout.items() if charts}

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        check_lookups_still_called(
            pl_module, {name: module for table, modules in zip(self._tables, self._modules)
                        for name, module in zip([table.name, *table.aliases], modules)}, type(self).__name__)
        if self._tables and tensorboard_experiments(trainer):
            text = (f"Tasks: {', '.join(self._task_names)}. Probe every {self.every_n_steps} training batches; "
                    f"scalars pool the probes of all {trainer.world_size} rank(s).\n\n" + describe_tables(self._tables))
            self.writer.text(trainer, "conflict/setup", text, step=trainer.global_step)

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._leave()

    # ---- probing (see model.gradient_probe) ---------------------------------------------------------------
    @override
    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        self._probe.release()
        if not self._tables or batch_idx % self.every_n_steps or not self._is_analysis_epoch(trainer):
            return
        self._probe.arm()

    @override
    def on_before_backward(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", loss: torch.Tensor) -> None:
        if not self._probe.pending:
            return
        captures = self._probe.take()  # the hooks go before anything else runs: the backward must see an unhooked model
        try:
            self._guarded("the gradient probe", lambda: self._measure(pl_module, captures))
        finally:
            captures.clear()

    @override
    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._probe.release()

    def _measure(self, pl_module: "pl.LightningModule", captures: dict[int, list[Lookup]]) -> None:
        if not self._probe.measure(pl_module, captures):  # fewer than two tasks measured
            self._counts["skipped"] += 1
            return
        self._counts["measured"] += 1
        if self._probe.stash_full:
            self._flush()

    def _flush(self) -> None:
        """The stashed probes' Grams into the epoch's lists (see GradientProbe.flush)."""
        for vi, gram in enumerate(self._probe.flush()):
            if gram is not None:
                self._grams[vi].append(gram)

    # ---- per epoch: the contract (see AnalysisCallback) ----------------------------------------------------
    def _reset_epoch(self) -> None:
        self._grams = [[] for _ in self._views]
        self._counts = {"measured": 0, "skipped": 0}
        self._problems.counts = {}
        self._probe.clear_stash()

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self._tables or not self._is_analysis_epoch(trainer):
            return
        try:
            self.run_analysis(trainer, pl_module, stage="train")
        finally:
            self._reset_epoch()

    def prepare(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> EpochSums:
        """This rank's sums behind every statistic, and its per-step cosines, from each probed step's Gram
        ``[F+1, T, T]`` (fields, then the whole view; NaN for an absent task)."""
        self._flush()
        n = len(self._task_names)
        acc = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in self._counts.items()}
        cosines: list[torch.Tensor | None] = []
        for vi, view in enumerate(self._views):
            rows = len(view.fields) + 1
            grams = (torch.cat(self._grams[vi]) if self._grams[vi]
                     else torch.zeros(0, rows, n, n, dtype=torch.float64))
            sums, cosine = cosine_sums(grams)
            acc.update({f"{name}:{vi}": value for name, value in sums.items()})
            cosines.append(cosine if len(cosine) else None)
        return acc, cosines

    def agree(self, trainer: "pl.Trainer", prepared: EpochSums) -> ContextManager[EpochSums]:
        """The sums of every rank's probes (one all-reduce); the per-step cosines stay this rank's own."""
        local, cosines = prepared
        return contextlib.nullcontext((pooled_sums(trainer, trainer.strategy.root_device, local), cosines))

    def compute(self, pl_module: "pl.LightningModule | None", agreed: EpochSums) -> ConflictRecord:
        acc, cosines = agreed
        trainer = self._trainer
        if float(acc["measured"]) == 0:
            self._problems.add("no-measured-steps", f"no probe measured two tasks in epoch {trainer.current_epoch}")
        tasks = self._task_names
        # This rank's per-probe cosines, for the live histograms only (transient: never published).
        per_step = {(view.name, (tasks[a], tasks[b])): cosines[vi][:, : len(view.fields), a, b].reshape(-1)
                    for vi, view in enumerate(self._views) if cosines[vi] is not None
                    for a in range(len(tasks)) for b in range(a + 1, len(tasks))}
        return ConflictRecord(tasks=list(tasks), world_size=int(trainer.world_size),
                              measured_steps=int(acc["measured"]), skipped_steps=int(acc["skipped"]),
                              problems=dict(self._problems.counts), views=conflict_views(acc, self._views, tasks),
                              per_step_cosines=per_step)

    def log_record(self, trainer: "pl.Trainer", record: ConflictRecord) -> None:
        step = record.step
        self.writer.scalars(trainer, record.metrics, step=step)
        if tensorboard_experiments(trainer):
            # Figures are drawn on rank 0 only, and only when they are written (an evaluation's, always).
            epoch = trainer.current_epoch + 1
            last = self._is_evaluation(trainer) or trainer.max_epochs is not None and epoch >= trainer.max_epochs
            if last or epoch % (self.heatmap_every_n_epochs * self.every_n_epochs) == 0:
                for name, view in record.views.items():
                    rows, pairs, matrix = view.cosine_matrix()
                    # One cell (a one-field view, two tasks) is the scalar .../cosine_mean already: no image.
                    if len(rows) * len(pairs) > 1 and np.isfinite(matrix).any():
                        image = field_pair_cosine_image(name, np.array(matrix), rows, [pair_name(p) for p in pairs],
                                                        record.epoch)
                        self.writer.image(trainer, f"conflict/{name}/cosine_heatmap", image, step=step)
            self.writer.histograms(trainer, {f"conflict/{view}/{pair_name(pair)}/cosine_per_step": values
                                             for (view, pair), values in (record.per_step_cosines or {}).items()},
                                   step=step)
        self.writer.flush(trainer)
