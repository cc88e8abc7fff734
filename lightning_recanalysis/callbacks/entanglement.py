"""Where each task's embedding view places (user, item) pairs, split by which tasks liked them (METHODS.md section 3).

Pan et al. ("Ad Recommendation in a Collapsed and Entangled World", KDD 2024) show interest entanglement with the
L2 distance between the user-id and item-id embeddings of (user, item) pairs: a shared embedding must place a
pair at one distance for every task, while STEM's task-specific chunks (Su et al., AAAI 2024) can place it near
for one task and far for another. STEM also measures each task's AUC on samples split by which tasks got
positive feedback. This monitor does both, live, at the end of every validation epoch. The pairs are read in
:mod:`._validation_pairs`, their statistics in :mod:`._label_subsets`, the conflict subsets in
:mod:`._conflict_subset`.
"""

from __future__ import annotations

import contextlib
import re
from itertools import product
from typing import Any, ContextManager, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torchmetrics.utilities.distributed import gather_all_tensors
from typing_extensions import override

from ..checks import check_positive_int
from ..figures.conflict_subset import conflict_subset_panel
from ..parallel.distributed import data_parallel_group
from ..findings.entanglement import entanglement_findings
from ..records import EntanglementRecord, EntanglementView
from ..model.tables import EmbeddingTable, Field, discover_tables
from ..writers import tensorboard_experiments
from ..model.conflict_subset import PREFIX as CONFLICT_PREFIX, ConflictSubsetAnalysis
from ..functional.label_subsets import binned_by_subset, label_pattern_name, pair_statistics
from ..model.multitask import check_lookups_still_called, resolve_tasks, validation_loop_problem
from ..model.reference import ReferenceSource, fields_named
from ..model.validation_pairs import PairCollector, View
from .base import AnalysisCallback
from .evaluation import EVALUATION_STAGES, evaluation_has_data, evaluation_step_name

__all__ = ["EntanglementMonitor", "label_pattern_name"]

#: The authors' released analysis draws its distance histograms with 39 equal-width bins.
AUTHORS_BINS = 39

#: The gathered pairs of every rank and, with ``frequent_only``, the training frequencies of users and items.
Agreed = tuple[torch.Tensor, "tuple[torch.Tensor, torch.Tensor] | None"]


class EntanglementMonitor(AnalysisCallback):
    r"""Distances between user and item embeddings in each task's view, and each task's AUROC by label subset.

    **What it measures.** At the end of every validation epoch, for up to ``max_pairs`` (user, item) pairs of the
    validation batches (per rank), the L2 distance ``||e_user - e_item||_2`` between the user's and the item's
    embedding in every *view*: the shared table (one view for every task) or, for a STEM-style table with
    ``column_groups=["task_a", "task_b", "shared"]``, each task's chunk and the shared chunk (Pan et al., KDD 2024;
    METHODS.md section 3). The pairs are split by which tasks' labels are positive (``a_only``, ``b_only``,
    ``both``, ``neither`` for two tasks; see :func:`label_pattern_name`), and each subset's distances are drawn
    as a histogram with the authors' 39 equal-width bins. A shared embedding has to place an ``a_only`` pair and a
    ``b_only`` pair the same way for both tasks; a task's own chunk does not.

    Each task's AUROC (:func:`~lightning_recanalysis.functional.subset_aurocs`, the exact area under the ROC
    curve, ties counted half, on the scores the module returns) is reported on subsets where it is defined.
    Inside one label-pattern subset a task's labels are all equal, so its AUROC there has no meaning; the
    subsets are therefore unions of patterns, as in STEM's analysis:

    - ``all``: every pair;
    - ``labels_agree`` (all tasks' labels equal: ``both`` + ``neither``) and ``labels_disagree`` (the rest:
      ``a_only`` + ``b_only`` for two tasks; there the task must rank exactly the pairs the other task rejects);
    - ``given_<b>_pos`` / ``given_<b>_neg``: the other tasks' labels fixed (for task a: ``both`` vs ``b_only``,
      and ``a_only`` vs ``neither``); with more tasks, one subset per pattern of the other tasks.

    A subset without both a positive and a negative label for the task gives no AUROC (not logged).

    **Conflict subsets** (the authors' own analysis; with ``references``, one single-task model per task, see
    :mod:`~lightning_recanalysis.model.reference`): pairs that one task's reference places far (above
    its ``conflict_percentiles[0]``-th percentile, 60) and another's near (at or below the ``[1]``-th, 40), one
    mode per ordered task pair; per view, where it puts them by its own percentiles, its agreement with each
    reference and its rank correlation (:mod:`~lightning_recanalysis.functional.conflict_subset`).
    ``frequent_only`` keeps the pairs whose user and item are above the ``frequency_percentile``-th percentile of
    training frequency, counted over the first training epoch's lookups (sums over ranks).

    In ``trainer.validate``/``trainer.test`` it analyses the evaluation batches once (``test_step`` returns what
    ``validation_step`` does); ``frequent_only`` then keeps no pair (it counts a fit's training lookups).

    **What it needs.** ``user_field`` and ``item_field`` name fields of the discovered tables (a field of a
    concatenated table split by ``field_dims``, or a one-field table named by its module). The monitor reads each
    pair's row ids from the input of the embedding module during ``validation_step`` (a forward hook, present only
    during analysed validation epochs), so the batch layout does not matter; every sample must look up exactly one
    row of each of the two fields. ``validation_step`` returns ``{"task_scores": {task: [B]},
    "task_labels": {task: [B]}}`` (see :mod:`lightning_recanalysis.model.multitask`). If user and item sit
    in two tables, the tables must have the same column groups; the views pair them group by group.

    **Tags** (``<view>`` is a table, ``table[group]`` or ``user_table~item_table[group]``; step =
    ``trainer.global_step``):

    - ``entanglement/<view>/distance`` (histogram, all pairs) and ``entanglement/<view>/distance_mean``;
    - ``entanglement/<view>/<subset>/distance`` (histogram) and ``entanglement/<view>/<subset>/distance_mean``
      for each label-pattern subset that has pairs;
    - ``entanglement/<subset>/pairs``: pairs in each label-pattern subset; ``entanglement/pairs``: all pairs;
    - ``entanglement/<task>/auroc/<subset>``: the task's AUROC on ``all``, ``labels_agree``,
      ``labels_disagree`` and ``given_...`` subsets;
    - with ``references`` (``<mode>`` is ``<far task>_far_<near task>_near``): ``entanglement/conflict/
      selected_pairs``, ``.../<mode>/pairs`` and ``/fraction``; per view ``.../<view>/<mode>/share_top``,
      ``share_middle``, ``share_bottom``, ``agreement_<task>``, ``.../<view>/rank_correlation_<task>``;
      histograms ``.../<view>/<mode>/distance`` and (first analysis) ``.../reference[<task>]/distance``; image
      ``.../<view>/<mode>/histogram`` (the authors' figure, one mode per image, sized for TensorBoard's card).

    **Distributed.** Every rank collects its own pairs; at epoch end they are gathered from all ranks (one
    gather), so every rank computes and would log the same numbers on the pairs of all ranks; rank 0 writes.
    An analysis that fails on one rank (collecting its pairs, or the statistics) is skipped on every rank with
    one warning, so that all keep the same history; a failure while collecting ends that rank's collection for
    the epoch (it is not warned once per batch).

    Args:
        user_field, item_field: names of the two fields whose embeddings are compared.
        tasks: the tasks (default: the module's ``task_names``); at least two.
        include, exclude, field_dims, column_groups: as for
            :func:`~lightning_recanalysis.model.tables.discover_tables`.
        max_pairs: pairs kept per rank and epoch (the first ones of the validation set).
        bins: histogram bins (default: the authors' 39).
        references: ``{task: single-task model}`` (module, checkpoint path or run directory) for the conflict
            subsets; ``conflict_percentiles``: (far above, near at or below), default (60, 40);
            ``frequent_only``, ``frequency_percentile``: keep frequent users and items only (default 60).
        every_n_epochs, strict: see :class:`~lightning_recanalysis.callbacks.base.AnalysisCallback`.

    Raises:
        ValueError: at construction, when ``user_field`` and ``item_field`` are the same or ``max_pairs`` is not
            positive; at ``setup``, when the module breaks the task protocol, a field is found in no table or its
            module is not an embedding lookup, or a single-task reference cannot be read (missing file, table or
            rows of another shape).

    Example:
        Two tasks on one shared table of a user and an item field, analysed after each validation epoch:

        >>> from lightning_recanalysis.toy import ToyTwoTask, toy_loader, toy_trainer
        >>> monitor = EntanglementMonitor(user_field="user", item_field="item", field_dims={"user": 8, "item": 6})
        >>> toy_trainer([monitor], num_sanity_val_steps=0).fit(
        ...     ToyTwoTask(), toy_loader("two_task"), toy_loader("two_task", seed=1))
        >>> record = monitor.records[-1]  # an EntanglementRecord; monitor.history holds it as a plain dict
        >>> record.stage, record.views, record.metrics["entanglement/pairs"]
        ('validation', ['embedding'], 32.0)
        >>> # click follows the user's parity, buy the item's: the labels split the pairs into four subsets
        >>> [int(record.metrics[f"entanglement/{s}/pairs"]) for s in ("both", "click_only", "buy_only", "neither")]
        [7, 7, 13, 5]
    """

    namespace = "entanglement"
    analysis_name = "entanglement"
    record_type = EntanglementRecord
    findings_of = staticmethod(entanglement_findings)
    preparing = "collecting the validation pairs for {what}"
    test_runs_validation_hooks = True  # trainer.test collects and analyses as a validation epoch does

    def __init__(
        self,
        *,
        user_field: str,
        item_field: str,
        tasks: Sequence[str] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        field_dims: Sequence[int] | Mapping[str, Any] | None = None,
        column_groups: int | Sequence[str] | Mapping[str, Any] | None = None,
        max_pairs: int = 100_000,
        bins: int = AUTHORS_BINS,
        references: Mapping[str, ReferenceSource] | None = None,
        conflict_percentiles: tuple[float, float] = (60.0, 40.0),
        frequent_only: bool = False,
        frequency_percentile: float = 60.0,
        every_n_epochs: int = 1,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, strict=strict)
        if user_field == item_field:
            raise ValueError(f"user_field and item_field must differ, both are '{user_field}'")
        check_positive_int("max_pairs", max_pairs)
        self.user_field, self.item_field = user_field, item_field
        self.tasks = list(tasks) if tasks is not None else None
        self.include, self.exclude = include, exclude
        self.field_dims, self.column_groups = field_dims, column_groups
        self.max_pairs, self.bins = max_pairs, bins
        self._task_names: list[str] = []
        self._user: tuple[EmbeddingTable, Field] | None = None
        self._item: tuple[EmbeddingTable, Field] | None = None
        self._views: list[View] = []
        self._pairs = PairCollector(type(self).__name__, max_pairs)
        self._active = False
        self._error: Exception | None = None  # the first failure collecting this epoch's pairs on this rank
        self.conflict = None if references is None else ConflictSubsetAnalysis(
            references, *conflict_percentiles, frequent_only, frequency_percentile, bins, type(self).__name__)

    # ---- setup ------------------------------------------------------------------------------------------
    def _find_field(self, pl_module: nn.Module, tables: list[EmbeddingTable], name: str,
                    role: str) -> tuple[EmbeddingTable, Field]:
        hits = fields_named(tables, name)
        if len(hits) != 1:
            known = [f"{t.name}:{f.name}" for t in tables for f in t.fields]
            what = "no field" if not hits else f"{len(hits)} fields"
            raise ValueError(
                f"{type(self).__name__}: {role}='{name}' matches {what} of the discovered tables (table:field: "
                f"{known[:30]}). Name a field from that list; split a concatenated table into named fields with "
                "field_dims={'user_id': 1000, 'item_id': 500, ...}, or narrow the tables with include=[...].")
        table, fld = hits[0]
        for module_name in [table.name, *table.aliases]:
            if not isinstance(pl_module.get_submodule(module_name), nn.Embedding):
                raise ValueError(f"{type(self).__name__}: '{module_name}' holding {role}='{name}' must be an "
                                 "nn.Embedding (one row per sample and field)")
        return table, fld

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._user is not None:
            check_lookups_still_called(pl_module, self._lookup_modules, type(self).__name__)

    def start_evaluation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.on_fit_start(trainer, pl_module)

    def coverage(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> list[dict[str, Any]]:
        step = evaluation_step_name(trainer)
        problem = (validation_loop_problem(trainer, pl_module) if not self._is_evaluation(trainer) else
                   "this evaluation has no data: pass a dataloader" if not evaluation_has_data(trainer) else
                   None if is_overridden(step, pl_module) else f"{type(pl_module).__name__} defines no {step}")
        items = [{"analysis": "distances and AUROC by label subset", "runs": problem is None, "why": problem or ""}]
        subsets = "no single-task references (references={task: model or checkpoint})" if self.conflict is None else ""
        if self.conflict is not None and self.conflict.frequent_only and self._is_evaluation(trainer):
            subsets = "frequent_only counts a fit's training lookups, which an evaluation has none of"
        return items + [{"analysis": "conflict subsets", "runs": problem is None and not subsets,
                         "why": problem or subsets, "optional": problem is None and self.conflict is None}]

    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage not in ("fit", *EVALUATION_STAGES):
            return
        self._task_names = resolve_tasks(pl_module, self.tasks, type(self).__name__)
        tables = discover_tables(pl_module, include=self.include, exclude=self.exclude,
                                 field_dims=self.field_dims, column_groups=self.column_groups)
        self._user = self._find_field(pl_module, tables, self.user_field, "user_field")
        self._item = self._find_field(pl_module, tables, self.item_field, "item_field")
        (u_table, _), (i_table, _) = self._user, self._item
        self._lookup_modules = {name: pl_module.get_submodule(name) for table in (u_table, i_table)
                                for name in [table.name, *table.aliases]}
        if u_table is i_table:
            self._views = [(f"{v.name}", slice(v.group.start, v.group.stop), slice(v.group.start, v.group.stop))
                           for v in u_table.views()]
        else:
            u_groups = [g.name for g in u_table.column_groups]
            i_groups = [g.name for g in i_table.column_groups]
            if u_groups != i_groups or u_table.width != i_table.width:
                raise ValueError(
                    f"{type(self).__name__}: the user table '{u_table.name}' (groups {u_groups}, width "
                    f"{u_table.width}) and the item table '{i_table.name}' (groups {i_groups}, width {i_table.width}) "
                    "must have the same width and column groups to compare their views")
            base = f"{u_table.name}~{i_table.name}"
            self._views = [
                (base if g.name == "all" and len(u_groups) == 1 else f"{base}[{g.name}]",
                 slice(g.start, g.stop), slice(g.start, g.stop))
                for g in u_table.column_groups
            ]
        self._pairs.configure(self._task_names, self._user, self._item, self._views)
        if self.conflict is not None:
            self.conflict.setup(self._task_names, self._user, self._item, {
                "include": self.include, "exclude": self.exclude, "field_dims": self.field_dims})

    @property
    def view_names(self) -> list[str]:
        return [view for view, _, _ in self._views]

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        """Custom Scalars, one series a chart (TensorBoard colours a chart's series by run, so the runs compared
        stand in their own colours): each task's AUROC per subset, each view's mean user-item distance and, with
        references, its rank correlation with each reference."""
        tasks = self._task_names
        auroc = {}
        for task in tasks:
            others = [t for t in tasks if t != task]
            subsets = ["all", "labels_agree", "labels_disagree"] + [
                "given_" + "_".join(f"{o}_{'pos' if p else 'neg'}" for o, p in zip(others, pattern))
                for pattern in product([True, False], repeat=len(others))]
            auroc.update({f"{task}: AUROC on {subset.replace('_', ' ')}": [
                "Multiline", [rf"^entanglement/{re.escape(task)}/auroc/{re.escape(subset)}$"]] for subset in subsets})
        layout = {"entanglement: each task's AUROC by subset": auroc,
                  "entanglement: mean user-item distance": {f"{view}: all pairs": [
                      "Multiline", [rf"^entanglement/{re.escape(view)}/distance_mean$"]] for view in self.view_names}}
        if self.conflict is not None:
            layout["entanglement: conflict subsets"] = self.conflict.dashboard_charts(self.view_names, tasks)
        return {category: charts for category, charts in layout.items() if charts}

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._pairs.stop()
        if self.conflict is not None:
            self.conflict.stop_counting(finished_epoch=False)

    @override
    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.conflict is not None and self._user is not None:
            self.conflict.start_counting(pl_module, *[[t.name, *t.aliases] for t, _ in (self._user, self._item)])

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.conflict is not None:
            self.conflict.stop_counting(finished_epoch=True)

    # ---- collecting pairs (see ._validation_pairs) --------------------------------------------------------
    @override
    def on_validation_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._pairs.stop()
        self._active = self._user is not None and (self._is_analysis_epoch(trainer) or (
            self._is_evaluation(trainer) and evaluation_has_data(trainer)))
        self._error = None
        if self._active:
            self._pairs.start(pl_module)

    @override
    def on_validation_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._pairs.new_batch()

    @override
    def on_validation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._active or self._error is not None:
            return
        try:
            self._pairs.collect(outputs)
        except Exception as err:
            # One failure ends collection for this epoch; the analysis is skipped at its end, on every rank, with
            # one warning (see prepare).
            self._error = err
        finally:
            self._pairs.new_batch()

    @override
    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._pairs.stop()
        if self._active:
            self._active = False
            self.run_analysis(trainer, pl_module, stage="validation")

    # ---- the contract (see AnalysisCallback) --------------------------------------------------------------
    def prepare(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> torch.Tensor:
        """This rank's pairs; a failure while collecting them is raised here, before any collective."""
        rows, error, self._error = self._pairs.take_rows(), self._error, None
        if error is not None:
            raise error
        return rows

    def agree(self, trainer: "pl.Trainer", rows: torch.Tensor) -> ContextManager[Agreed]:
        """The pairs of every rank (one gather) and, with ``frequent_only``, the summed frequencies."""
        data = rows
        if trainer.world_size > 1:
            # Over the ranks whose batches differ: tensor-parallel ranks that validate the same rows send them once.
            parts = gather_all_tensors(rows.to(trainer.strategy.root_device), group=data_parallel_group(trainer))
            data = torch.cat([p.cpu() for p in parts])
        counts = self.conflict.frequencies(trainer) if self.conflict is not None else None
        return contextlib.nullcontext((data, counts))

    def compute(self, pl_module: "pl.LightningModule | None", agreed: Agreed) -> EntanglementRecord:
        data, counts = agreed
        if data.shape[0] == 0:
            raise ValueError("no (user, item) pair was collected in this validation epoch")
        views = self.view_names
        stats, samples = pair_statistics(data, views, self._task_names)
        # The values the live histograms bin (transient: the record keeps them binned on the report's grid).
        histograms = {f"entanglement/{view}/{subset + '/' if subset else ''}distance": values
                      for (view, subset), values in samples.items()}
        record = EntanglementRecord(
            tasks=list(self._task_names), views=views, world_size=int(self._trainer.world_size),
            pairs=stats["pairs"], subset_pairs=stats["subset_pairs"],
            distances={view: EntanglementView(mean, by_subset) for view, (mean, by_subset) in stats["distances"].items()},
            auroc={task: by_subset for task, by_subset in stats["auroc"].items() if by_subset},
            histograms=binned_by_subset(views, samples, self.bins), histogram_samples=histograms)
        if self.conflict is not None:
            ids = data[:, -2:].to(torch.int64)
            conflict_histograms, record.conflict = self.conflict.analyse(
                ids[:, 0], ids[:, 1], views, data[:, : len(views)], counts)
            histograms.update(conflict_histograms)
        return record

    def log_record(self, trainer: "pl.Trainer", record: EntanglementRecord) -> None:
        step = record.step
        self.writer.scalars(trainer, record.metrics, step=step)
        if tensorboard_experiments(trainer):
            self.writer.histograms(trainer, record.histogram_samples or {}, step=step, bins=self.bins)
            if record.conflict is not None:
                for tag, image in conflict_images(record.conflict):
                    self.writer.image(trainer, tag, image, step=step)
        self.writer.flush(trainer)


def conflict_images(part: Mapping[str, Any]) -> list[tuple[str, np.ndarray]]:
    """The authors' conflict-subset figure per view and mode, one panel an image, as ``(tag, image)``."""
    return [(f"{CONFLICT_PREFIX}/{view}/{mode}/histogram",
             conflict_subset_panel(view, view_part, mode, low_q=part["low"], high_q=part["high"]))
            for view, view_part in part["views"].items() if part["pairs"] >= 2 for mode in view_part["modes"]]
