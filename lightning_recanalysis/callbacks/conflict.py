"""Live gradient conflict between the tasks of a multi-task model, on its shared embeddings (METHODS.md section 3).

Every ``every_n_steps`` training batches, on that batch's own graph and just before its backward pass, the monitor
takes each task's loss gradient with respect to the looked-up embedding rows, sums it per unique row id (which is
the table's parameter gradient on those rows), and measures the cosine between every pair of tasks per field
and per table. Over each epoch it reports the mean cosine, the fraction of measured steps with negative cosine
and the ratio of gradient norms. The maths is in :mod:`lightning_recanalysis.functional.conflict`.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..agreement import all_true
from ..checks import check_positive_int
from ..figures.conflict import cosine_heatmap
from ..functional.conflict import (
    cosine_sums,
    embedding_row_gradients,
    field_gradient_gram,
    looked_up_row_gradients,
    view_gram,
)
from ..field_sets import AnalysisUnit, FieldSet, analysis_units
from ..mesh_groups import local_value
from ..tables import describe_tables, discover_tables
from ..writers import tensorboard_experiments
from ._multitask import check_lookups_still_called, protocol_error, resolve_tasks
from ..distributed import data_parallel_group, sum_over_ranks
from .base import AnalysisCallback

__all__ = ["GradientConflictMonitor"]


@dataclass
class _Lookup:
    """One call of an embedding module during a probed step: its ids and its output (the looked-up rows)."""

    module: nn.Module
    ids: torch.Tensor
    output: torch.Tensor
    offsets: torch.Tensor | None = None
    per_sample_weights: torch.Tensor | None = None




class GradientConflictMonitor(AnalysisCallback):
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
    ``__init__``); see :mod:`lightning_recanalysis.callbacks._multitask`. Fewer than two tasks is an error at
    ``setup``.

    **Cost and safety.** A probe is one ``torch.autograd.grad`` per task from its loss to the looked-up rows
    (``retain_graph=True`` on the graph the training backward frees right after), so it costs at most one extra
    backward pass per task that stops at the embeddings, and it computes no parameter gradient. It never
    touches ``.grad``, the optimizer, the model's modules or any random number generator, so training is
    bit-for-bit what it would be without the monitor. Forward hooks on the embedding modules exist only
    between the start of a probed batch and its backward. (Tensor hooks that a model registers itself fire during
    the probe too. Under float16 mixed precision the probe differentiates the unscaled task losses, so tiny
    gradients can underflow; bfloat16 and float32 are unaffected.) The default ``every_n_steps=50`` keeps the cost under 5% of training time on the MMoE demo
    (``benchmarks/bench_conflict.py``).

    **STEM-style tables** (``column_groups=["task_a", "task_b", "shared"]``): every column chunk is its own view
    ``table[group]``, analysed separately. A task whose loss never flows into another task's chunk (STEM's
    gates read only their own and the shared chunk, and other tasks' specific experts are detached) has an
    exactly zero gradient there: its ``gradient_norm`` on that view is 0, the pair's ``norm_ratio`` is 0 (or
    not logged, where the zero task is the denominator) and its cosine is undefined at every step, so no
    ``cosine_mean`` is logged for that pair on that view. That is how the monitor shows that the tasks no longer
    share gradients there; on the shared chunk the cosine is measured as usual.

    **One table per feature**: same-width single-field tables form one field set (see
    :mod:`~lightning_recanalysis.field_sets`), one view whose fields are the tables: the whole-view cosine is
    that of all their rows together, as for a concatenated table; a member table not looked up in a probed step
    is left out of that step.

    **Tags** (``<view>`` is a table, ``table[group]`` or a field set, ``<a>_vs_<b>`` a task pair in
    ``task_names`` order, step = ``trainer.global_step`` at the end of the epoch):

    - ``conflict/<view>/<a>_vs_<b>/cosine_mean``: mean over the epoch's measured steps of the cosine on the
      whole view (all its fields' rows together); ``.../negative_fraction``: fraction of those steps with
      cosine < 0; ``.../norm_ratio``: mean ||g_a|| / mean ||g_b||.
    - ``conflict/<view>/<field>/<a>_vs_<b>/cosine_mean``, ``.../negative_fraction``, ``.../norm_ratio``: the
      same on one field's rows (only for views with more than one field).
    - ``conflict/<view>/<task>/gradient_norm``: mean norm of the task's gradient on the view.
    - ``conflict/measured_steps``, ``conflict/skipped_steps``: probes that measured two tasks or more, and probes
      that could not (missing or non-finite task losses).
    - ``conflict/<view>/cosine_heatmap`` (image): task x task mean cosine on the view, -1 (red) to 1 (blue),
      blank where undefined, drawn every ``heatmap_every_n_epochs`` analysed epochs and after the last epoch (a
      labelled figure costs about 0.1 s to draw, more than all of an epoch's probes on a small model; the
      scalars carry the same numbers every epoch).
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
            :func:`~lightning_recanalysis.tables.discover_tables`).
        field_dims: cardinalities that split a concatenated table into fields; a mapping names them.
        column_groups: split a table's columns into equal chunks, e.g. ``["task_a", "task_b", "shared"]``.
        heatmap_every_n_epochs: draw the heatmap image every n-th analysed epoch (and after the last).
        every_n_epochs: probe and log in every n-th epoch (and the last).
        strict: re-raise exceptions from the analysis instead of warning.
    """

    namespace = "conflict"

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
        self._parts: list[list[tuple[int, int]]] = []
        self._modules: list[list[nn.Module]] = []
        self._handles: list[Any] = []
        self._captures: dict[int, list[_Lookup]] = {}
        self._pending = False
        self._last_losses: list[weakref.ref] = []
        self._warned: set[str] = set()
        self._grams: list[list[torch.Tensor]] = []
        self._counts = {"measured": 0, "skipped": 0}
        self._problems: dict[str, int] = {}

    # ---- setup ------------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
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
        self._parts = [[(index[id(f.table)], 0) for f in unit.fields] if isinstance(unit, FieldSet)
                       else [(index[id(unit.table)], unit.table.column_groups.index(unit.group))]
                       for unit in self._views]
        self._reset_epoch()

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        """Custom-scalars charts: per view and task pair, the mean cosine and negative fraction of every field."""
        import re

        charts = {}
        tasks = self._task_names
        for view in self._views:
            name = re.escape(view.name)
            for a in range(len(tasks)):
                for b in range(a + 1, len(tasks)):
                    pair = f"{tasks[a]}_vs_{tasks[b]}"
                    for stat in ("cosine_mean", "negative_fraction"):
                        charts[f"{view.name} {pair}: {stat} per field"] = [
                            "Multiline", [rf"conflict/{name}/([^/]+/)?{re.escape(pair)}/{stat}$"]]
        return {"conflict": charts} if charts else {}

    def on_fit_start(self, trainer, pl_module) -> None:
        check_lookups_still_called(
            pl_module, {name: module for table, modules in zip(self._tables, self._modules)
                        for name, module in zip([table.name, *table.aliases], modules)}, type(self).__name__)
        if self._tables and tensorboard_experiments(trainer):
            text = (f"Tasks: {', '.join(self._task_names)}. Probe every {self.every_n_steps} training batches; "
                    f"scalars pool the probes of all {trainer.world_size} rank(s).\n\n" + describe_tables(self._tables))
            self.writer.text(trainer, "conflict/setup", text, step=trainer.global_step)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._release()

    # ---- probing ----------------------------------------------------------------------------------------
    def _hook(self, table_index: int):
        def capture(module, args, kwargs, output):
            # Under tensor parallelism the ids reach this hook as a replicated DTensor (the module's input hook
            # made them one): plain tensors from here on. The output stays as the graph holds it (the losses
            # were computed from it); its gradients are made plain in the probe.
            ids = local_value(args[0] if args else kwargs["input"])
            offsets = local_value(args[1] if len(args) > 1 else kwargs.get("offsets"))
            weights = local_value(args[2] if len(args) > 2 else kwargs.get("per_sample_weights"))
            self._captures.setdefault(table_index, []).append(_Lookup(module, ids, output, offsets, weights))
        return capture

    def _release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._captures = {}
        self._pending = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._release()
        if not self._tables or batch_idx % self.every_n_steps or not self._is_analysis_epoch(trainer):
            return
        for index, modules in enumerate(self._modules):
            for module in modules:
                self._handles.append(module.register_forward_hook(self._hook(index), with_kwargs=True))
        self._pending = True

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if not self._pending:
            return
        captures = self._captures
        self._release()  # the hooks go before anything else runs: the backward must see an unhooked model
        try:
            self._guarded("the gradient probe", lambda: self._probe(pl_module, captures))
        finally:
            captures.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._release()

    def _problem(self, kind: str, message: str) -> None:
        self._problems[kind] = self._problems.get(kind, 0) + 1
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"{type(self).__name__}: {message} (counted in the epoch's history record; warned once, "
                          "training goes on)", RuntimeWarning, stacklevel=3)

    def _task_loss_tensors(self, pl_module) -> dict[str, torch.Tensor]:
        """This step's usable task losses; missing, non-finite and detached ones are counted and skipped."""
        owner = type(self).__name__
        losses = getattr(pl_module, "task_losses", None)
        if not isinstance(losses, Mapping):
            raise TypeError(protocol_error(owner, f"`task_losses` must be a mapping task -> loss, got {type(losses).__name__}"))
        if losses and self._last_losses and all(ref() is losses.get(t) for t, ref in zip(self._task_names, self._last_losses)):
            raise RuntimeError(protocol_error(owner, "`task_losses` holds the previous probed step's losses: the "
                                                     "training_step must store this step's losses in it"))
        usable = {}
        for task in self._task_names:
            loss = losses.get(task)
            if loss is None:
                self._problem(f"missing:{task}", f"task '{task}' is missing from task_losses in this batch")
                continue
            if not torch.is_tensor(loss) or loss.numel() != 1:
                raise TypeError(protocol_error(owner, f"task_losses['{task}'] must be a one-element tensor, got {loss!r}"))
            if not loss.requires_grad:
                self._problem(f"unreached:{task}", f"the loss of task '{task}' does not require grad, so it cannot "
                                                   "reach the embeddings")
                continue
            if not bool(torch.isfinite(loss.detach()).all()):
                self._problem(f"nonfinite:{task}", f"the loss of task '{task}' is NaN or infinite in this batch")
                continue
            usable[task] = loss.reshape(())
        self._last_losses = [weakref.ref(losses[t]) if torch.is_tensor(losses.get(t)) else (lambda: None)
                             for t in self._task_names]
        return usable

    def _probe(self, pl_module, captures: dict[int, list[_Lookup]]) -> None:
        error: Exception | None = None
        try:
            losses = self._task_loss_tensors(pl_module)
        except Exception as err:  # raised after the agreement below, which every rank must reach
            losses, error = {}, err
        lookups = [(ti, lk) for ti in sorted(captures) for lk in captures[ti] if lk.output.requires_grad]
        # Under FSDP2 and tensor parallelism each autograd.grad below makes collectives: every rank probes the
        # tasks usable on every rank, or none (a loss NaN or missing on one rank alone would leave the others
        # waiting in a gradient all-gather).
        agreed = all_true([t in losses for t in self._task_names] + [bool(lookups), error is None],
                          device=pl_module.device)
        if error is not None:
            raise error
        if not agreed[-1]:  # this step's task losses were unreadable on another rank (warned there)
            self._counts["skipped"] += 1
            return
        losses = {t: losses[t] for t, usable in zip(self._task_names, agreed) if usable}
        if not agreed[-2]:
            if not lookups:
                self._problem("no-lookup", "no embedding lookup that requires grad happened in a probed training step")
            self._counts["skipped"] += 1
            return
        outputs = [lk.output for _, lk in lookups]
        grads: dict[str, tuple] = {}
        for task, loss in losses.items():
            # retain_graph: the training's own backward runs on this graph right after. Only the looked-up rows
            # are inputs, so autograd computes no parameter gradient and accumulates nothing into .grad.
            result = torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)
            if all(g is None for g in result):
                self._problem(f"unreached:{task}", f"the loss of task '{task}' does not reach any embedding table")
                continue
            for ti in {ti for ti, _ in lookups}:
                if all(g is None for (tj, _), g in zip(lookups, result) if tj == ti):
                    self._problem(f"unreached:{task}:{self._tables[ti].name}",
                                  f"the loss of task '{task}' does not reach table '{self._tables[ti].name}'; its "
                                  "gradient there is zero")
            grads[task] = result
        if len(grads) < 2:
            self._counts["skipped"] += 1
            return
        present = torch.tensor([self._task_names.index(t) for t in grads])
        n = len(self._task_names)
        with torch.no_grad():
            parts: dict[tuple[int, int], torch.Tensor] = {}  # (table, column group) -> [fields, T', T']
            for ti, table in enumerate(self._tables):
                picked = [j for j, (tj, _) in enumerate(lookups) if tj == ti]
                if not picked:
                    continue
                ids, row_grads = [], []
                for j in picked:
                    lk = lookups[j][1]
                    per_task = torch.stack([
                        local_value(g[j]) if g[j] is not None
                        else torch.zeros(lk.output.shape, dtype=lk.output.dtype, device=lk.ids.device)
                        for g in grads.values()])
                    flat_ids, flat_grads = looked_up_row_gradients(
                        lk.module, lk.ids, per_task, offsets=lk.offsets, per_sample_weights=lk.per_sample_weights)
                    ids.append(flat_ids)
                    row_grads.append(flat_grads)
                rows, summed = embedding_row_gradients(torch.cat(ids), torch.cat(row_grads, dim=1))
                starts = [f.start for f in table.fields]
                for gi, group in enumerate(table.column_groups):
                    parts[(ti, gi)] = field_gradient_gram(rows, summed, starts,
                                                          columns=slice(group.start, group.stop)).cpu()
            for vi, keys in enumerate(self._parts):
                found = [parts.get(key) for key in keys]
                if all(part is None for part in found):
                    continue  # no lookup of this unit in the step: not measured there
                # Only the small Gram is kept; cosines and sums are formed once per epoch, vectorised.
                self._grams[vi].append(view_gram(found, present, n))
        self._counts["measured"] += 1

    # ---- per epoch --------------------------------------------------------------------------------------
    def _reset_epoch(self) -> None:
        self._grams = [[] for _ in self._views]
        self._counts = {"measured": 0, "skipped": 0}
        self._problems = {}

    def _epoch_sums(self) -> tuple[dict[str, torch.Tensor], list[torch.Tensor | None]]:
        """This rank's sums behind every statistic, and its per-step cosines ``[steps, F+1, T, T]`` per view.

        From each probed step's Gram ``[F+1, T, T]`` (fields, then the whole view; NaN for an absent task):
        ``cos_sum``/``cos_n``/``neg_n`` sum the defined cosines, count them and count the negative ones;
        ``norm_sum``/``norm_n`` sum the gradient norms of the present tasks and count them.
        """
        n = len(self._task_names)
        acc = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in self._counts.items()}
        cosines: list[torch.Tensor | None] = []
        for vi, view in enumerate(self._views):
            rows = len(view.fields) + 1
            grams = (torch.stack(self._grams[vi]) if self._grams[vi]
                     else torch.zeros(0, rows, n, n, dtype=torch.float64))
            sums, cosine = cosine_sums(grams)
            acc.update({f"{name}:{vi}": value for name, value in sums.items()})
            cosines.append(cosine if len(cosine) else None)
        return acc, cosines

    def _pooled(self, trainer, pl_module, acc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The epoch's sums, added over ranks with one all-reduce (every rank calls it, in the same order)."""
        keys = list(acc)
        if trainer.world_size <= 1:
            return acc
        flat = torch.cat([acc[k].reshape(-1) for k in keys]).to(pl_module.device)
        # Over the ranks whose batches differ: tensor-parallel ranks that train on the same rows count them once.
        flat = sum_over_ranks(flat, data_parallel_group(trainer)).cpu()
        pooled, offset = {}, 0
        for k in keys:
            size = acc[k].numel()
            pooled[k] = flat[offset : offset + size].reshape(acc[k].shape)
            offset += size
        return pooled

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._tables or not self._is_analysis_epoch(trainer):
            return
        what = f"the gradient conflict analysis of epoch {trainer.current_epoch}"
        try:
            # This rank's sums may fail on this rank alone; every rank learns whether any did before the
            # all-reduce that pools them, and then all skip the epoch (none waits in the all-reduce).
            ok, sums = self._together(trainer, what, self._epoch_sums)
            if not ok:
                return
            local, cosines = sums
            acc = self._pooled(trainer, pl_module, local)
            ok, metrics = self._together(trainer, what, lambda: self._metrics(acc))
            if not ok:  # no rank keeps a record: the histories stay the same
                return
            self._record_epoch(trainer, acc, metrics)
            self._guarded("logging the epoch's gradient conflict",
                          lambda: self._log_epoch(trainer, acc, metrics, cosines))
        finally:
            self._reset_epoch()

    def _metrics(self, acc: dict[str, torch.Tensor]) -> dict[str, float]:
        tasks = self._task_names
        pairs = [(a, b) for a in range(len(tasks)) for b in range(a + 1, len(tasks))]
        metrics = {"conflict/measured_steps": float(acc["measured"]), "conflict/skipped_steps": float(acc["skipped"])}
        for vi, view in enumerate(self._views):
            cos_sum, cos_n, neg_n = acc[f"cos_sum:{vi}"], acc[f"cos_n:{vi}"], acc[f"neg_n:{vi}"]
            norm_mean = acc[f"norm_sum:{vi}"] / acc[f"norm_n:{vi}"].clamp_min(1)
            whole = len(view.fields)
            for t, task in enumerate(tasks):
                if acc[f"norm_n:{vi}"][whole, t] > 0:
                    metrics[f"conflict/{view.name}/{task}/gradient_norm"] = float(norm_mean[whole, t])
            rows = [(whole, f"conflict/{view.name}")]
            if len(view.fields) > 1:
                rows += [(f, f"conflict/{view.name}/{fld.name}") for f, fld in enumerate(view.fields)]
            for row, prefix in rows:
                for a, b in pairs:
                    tag = f"{prefix}/{tasks[a]}_vs_{tasks[b]}"
                    if cos_n[row, a, b] > 0:
                        metrics[f"{tag}/cosine_mean"] = float(cos_sum[row, a, b] / cos_n[row, a, b])
                        metrics[f"{tag}/negative_fraction"] = float(neg_n[row, a, b] / cos_n[row, a, b])
                    counted = acc[f"norm_n:{vi}"][row, a] > 0 and acc[f"norm_n:{vi}"][row, b] > 0
                    if counted and norm_mean[row, b] > 0:
                        metrics[f"{tag}/norm_ratio"] = float(norm_mean[row, a] / norm_mean[row, b])
        return metrics

    def _record_epoch(self, trainer, acc: dict[str, torch.Tensor], metrics: dict[str, float]) -> None:
        if float(acc["measured"]) == 0:
            self._problem("no-measured-steps", f"no probe measured two tasks in epoch {trainer.current_epoch}")
        self._record({
            "stage": "train",
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "tasks": list(self._task_names),
            "world_size": int(trainer.world_size),
            "measured_steps": int(acc["measured"]),
            "skipped_steps": int(acc["skipped"]),
            "problems": dict(self._problems),
            "metrics": metrics,
        })

    def _log_epoch(self, trainer, acc: dict[str, torch.Tensor], metrics: dict[str, float],
                   cosines: list[torch.Tensor | None]) -> None:
        step = trainer.global_step
        self.writer.scalars(trainer, metrics, step=step)
        if tensorboard_experiments(trainer):  # figures are drawn on rank 0 only, and only when they are written
            epoch = trainer.current_epoch + 1
            last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
            heatmap = last or epoch % (self.heatmap_every_n_epochs * self.every_n_epochs) == 0
            self._log_figures(trainer, acc, cosines, step, heatmap)
        self.writer.flush(trainer)

    def _log_figures(self, trainer, acc: dict[str, torch.Tensor], cosines: list[torch.Tensor | None], step: int,
                     heatmap: bool) -> None:
        tasks = self._task_names
        for vi, view in enumerate(self._views):
            whole = len(view.fields)
            if heatmap:
                counts = acc[f"cos_n:{vi}"][whole]
                mean = torch.where(counts > 0, acc[f"cos_sum:{vi}"][whole] / counts.clamp_min(1),
                                   torch.full_like(counts, float("nan")))
                image = cosine_heatmap(mean.numpy(), tasks, f"{view.name}, epoch {trainer.current_epoch}")
                self.writer.image(trainer, f"conflict/{view.name}/cosine_heatmap", image, step=step)
            if cosines[vi] is None:
                continue
            per_step = cosines[vi][:, :whole]  # [steps, fields, T, T], this rank's
            for a in range(len(tasks)):
                for b in range(a + 1, len(tasks)):
                    self.writer.histogram(trainer, f"conflict/{view.name}/{tasks[a]}_vs_{tasks[b]}/cosine_per_step",
                                          per_step[:, :, a, b].reshape(-1), step=step)
