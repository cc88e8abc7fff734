"""Where each task's embedding view places (user, item) pairs, split by which tasks liked them (METHODS.md section 3).

Pan et al. ("Ad Recommendation in a Collapsed and Entangled World", KDD 2024) show interest entanglement with the
L2 distance between the user-id and item-id embeddings of (user, item) pairs: a shared embedding must place a
pair at one distance for every task, while STEM's task-specific chunks (Su et al., AAAI 2024) can place it near
for one task and far for another. STEM also measures each task's AUC on samples split by which tasks got
positive feedback. This monitor does both, live, at the end of every validation epoch.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..checks import check_positive_int
from ..functional.ranking import subset_aurocs
from ..mesh_groups import local_value
from ..tables import EmbeddingTable, Field, discover_tables
from ..writers import tensorboard_experiments
from ._conflict_subset import ConflictSubsetAnalysis
from ._label_subsets import auroc_subsets, binned_by_subset, label_pattern_masks, label_pattern_name
from ._multitask import check_lookups_still_called, protocol_error, resolve_tasks
from ._reference import ReferenceSource
from .base import AnalysisCallback, data_parallel_group

__all__ = ["EntanglementMonitor", "label_pattern_name"]

#: The authors' released analysis draws its distance histograms with 39 equal-width bins.
AUTHORS_BINS = 39


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
    :mod:`~lightning_recanalysis.callbacks._reference`): pairs that one task's reference places far (above
    its ``conflict_percentiles[0]``-th percentile, 60) and another's near (at or below the ``[1]``-th, 40), one
    mode per ordered task pair; per view, where it puts them by its own percentiles, its agreement with each
    reference and its rank correlation (:mod:`~lightning_recanalysis.functional.conflict_subset`).
    ``frequent_only`` keeps the pairs whose user and item are above the ``frequency_percentile``-th percentile of
    training frequency, counted over the first training epoch's lookups (sums over ranks).

    **What it needs.** ``user_field`` and ``item_field`` name fields of the discovered tables (a field of a
    concatenated table split by ``field_dims``, or a one-field table named by its module). The monitor reads each
    pair's row ids from the input of the embedding module during ``validation_step`` (a forward hook, present only
    during analysed validation epochs), so the batch layout does not matter; every sample must look up exactly one
    row of each of the two fields. ``validation_step`` returns ``{"task_scores": {task: [B]},
    "task_labels": {task: [B]}}`` (see :mod:`lightning_recanalysis.callbacks._multitask`). If user and item sit
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
      ``.../<view>/histogram`` (the authors' figure, one panel per mode).

    **Distributed.** Every rank collects its own pairs; at epoch end they are gathered from all ranks (one
    gather), so every rank computes and would log the same numbers on the pairs of all ranks; rank 0 writes.
    An analysis that fails on one rank is skipped on every rank, so that all keep the same history.

    Args:
        user_field, item_field: names of the two fields whose embeddings are compared.
        tasks: the tasks (default: the module's ``task_names``); at least two.
        include, exclude, field_dims, column_groups: as for
            :func:`~lightning_recanalysis.tables.discover_tables`.
        max_pairs: pairs kept per rank and epoch (the first ones of the validation set).
        bins: histogram bins (default: the authors' 39).
        references: ``{task: single-task model}`` (module, checkpoint path or run directory) for the conflict
            subsets; ``conflict_percentiles``: (far above, near at or below), default (60, 40);
            ``frequent_only``, ``frequency_percentile``: keep frequent users and items only (default 60).
        every_n_epochs, strict: see :class:`~lightning_recanalysis.callbacks.base.AnalysisCallback`.
    """

    namespace = "entanglement"

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
        self._views: list[tuple[str, slice, slice]] = []
        self._handles: list[Any] = []
        self._calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"user": [], "item": []}
        self._active = False
        self._broken = False
        self._rows: list[torch.Tensor] = []
        self._kept = 0
        self._root: nn.Module | None = None
        self.conflict = None if references is None else ConflictSubsetAnalysis(
            references, *conflict_percentiles, frequent_only, frequency_percentile, bins, type(self).__name__)

    # ---- setup ------------------------------------------------------------------------------------------
    def _find_field(self, tables: list[EmbeddingTable], name: str, role: str) -> tuple[EmbeddingTable, Field]:
        hits = [(t, f) for t in tables for f in t.fields if f.name == name]
        if not hits:  # a one-field table may be named by its module
            hits = [(t, t.fields[0]) for t in tables if len(t.fields) == 1 and (t.name == name or name in t.aliases)]
        if len(hits) != 1:
            known = [f"{t.name}:{f.name}" for t in tables for f in t.fields]
            what = "no field" if not hits else f"{len(hits)} fields"
            raise ValueError(
                f"{type(self).__name__}: {role}='{name}' matches {what} of the discovered tables (table:field: "
                f"{known[:30]}). Name a field from that list; split a concatenated table into named fields with "
                "field_dims={'user_id': 1000, 'item_id': 500, ...}, or narrow the tables with include=[...].")
        table, fld = hits[0]
        for module_name in [table.name, *table.aliases]:
            if not isinstance(self._root.get_submodule(module_name), nn.Embedding):
                raise ValueError(f"{type(self).__name__}: '{module_name}' holding {role}='{name}' must be an "
                                 "nn.Embedding (one row per sample and field)")
        return table, fld

    def on_fit_start(self, trainer, pl_module) -> None:
        if self._user is not None:
            check_lookups_still_called(pl_module, self._lookup_modules, type(self).__name__)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self._task_names = resolve_tasks(pl_module, self.tasks, type(self).__name__)
        tables = discover_tables(pl_module, include=self.include, exclude=self.exclude,
                                 field_dims=self.field_dims, column_groups=self.column_groups)
        self._root = pl_module
        self._user = self._find_field(tables, self.user_field, "user_field")
        self._item = self._find_field(tables, self.item_field, "item_field")
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
        if self.conflict is not None:
            self.conflict.setup(self._task_names, self._user, self._item, {
                "include": self.include, "exclude": self.exclude, "field_dims": self.field_dims})

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        """Custom-scalars charts: each view's mean distance by label subset, each task's AUROC by subset."""
        import re

        charts = {f"{view}: mean user-item distance by subset": [
            "Multiline", [rf"entanglement/{re.escape(view)}/[^/]+/distance_mean$"]] for view, _, _ in self._views}
        charts.update({f"{task}: AUROC by subset": ["Multiline", [rf"entanglement/{re.escape(task)}/auroc/"]]
                       for task in self._task_names})
        if self.conflict is not None:
            charts.update(self.conflict.dashboard_charts([view for view, _, _ in self._views]))
        return {"entanglement": charts} if charts else {}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._remove_hooks()
        if self.conflict is not None:
            self.conflict.stop_counting(finished_epoch=False)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.conflict is not None and self._user is not None:
            self.conflict.start_counting(pl_module, *[[t.name, *t.aliases] for t, _ in (self._user, self._item)])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.conflict is not None:
            self.conflict.stop_counting(finished_epoch=True)

    # ---- collecting pairs -------------------------------------------------------------------------------
    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, role: str):
        # The ids and the rows the lookup returned: the embeddings the model used, read without touching the
        # weight, which a sharding strategy may hold in pieces (a DTensor) outside the forward pass.
        def capture(module, args, kwargs, output):
            # TorchRec's EmbeddingCollection calls its tables with `input=` as a keyword.
            # Under tensor parallelism the ids (and an output left distributed) are DTensors: plain ones here.
            ids = local_value(args[0] if args else kwargs["input"])
            self._calls[role].append((ids, local_value(output.detach())))
        return capture

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._remove_hooks()
        self._active = self._user is not None and self._is_analysis_epoch(trainer)
        self._broken, self._rows, self._kept = False, [], 0
        if not self._active:
            return
        for role, (table, _) in (("user", self._user), ("item", self._item)):
            for name in [table.name, *table.aliases]:
                module = pl_module.get_submodule(name)
                self._handles.append(module.register_forward_hook(self._hook(role), with_kwargs=True))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._calls = {"user": [], "item": []}

    @staticmethod
    def _field_rows(calls: list[tuple[torch.Tensor, torch.Tensor]], fld: Field, batch_size: int,
                    role: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's one id in ``fld`` and its embedding row (``[batch]``, ``[batch, width]``), as the lookups
        of this batch were called and returned it."""
        calls = [(ids, rows) for ids, rows in calls if ids.dim() >= 1 and ids.shape[0] == batch_size]
        if not calls:
            raise ValueError(f"the {role} embedding was not called on a [batch, ...] input in validation_step "
                             f"(batch size {batch_size})")
        ids = torch.cat([c.reshape(batch_size, -1) for c, _ in calls], dim=1)
        rows = torch.cat([r.reshape(batch_size, -1, r.shape[-1]) for _, r in calls], dim=1)
        inside = (ids >= fld.start) & (ids < fld.stop)
        per_sample = inside.sum(dim=1)
        if not bool((per_sample == 1).all()):
            raise ValueError(f"every sample must look up exactly one row of field '{fld.name}' (rows {fld.start}-"
                             f"{fld.stop - 1}), but samples look up {sorted(set(per_sample.tolist()))} of them")
        return ids[inside], rows[inside]  # row-major: one per sample, in sample order

    def _collect(self, outputs) -> None:
        owner = type(self).__name__
        if not isinstance(outputs, Mapping) or not isinstance(outputs.get("task_scores"), Mapping) \
                or not isinstance(outputs.get("task_labels"), Mapping):
            raise ValueError(protocol_error(owner, "validation_step must return a dict with `task_scores` and "
                                                   f"`task_labels` mappings, got {type(outputs).__name__}"))
        scores, labels = outputs["task_scores"], outputs["task_labels"]
        missing = [t for t in self._task_names if t not in scores or t not in labels]
        if missing:
            raise ValueError(protocol_error(owner, f"validation_step's task_scores/task_labels lack tasks {missing}"))
        y = torch.stack([labels[t].detach().reshape(-1).to(torch.float64) for t in self._task_names], dim=1)
        s = torch.stack([scores[t].detach().reshape(-1).to(torch.float64) for t in self._task_names], dim=1)
        batch_size = y.shape[0]
        (_, u_field), (_, i_field) = self._user, self._item
        user_ids, users = self._field_rows(self._calls["user"], u_field, batch_size, "user")
        item_ids, items = self._field_rows(self._calls["item"], i_field, batch_size, "item")
        take = min(batch_size, self.max_pairs - self._kept)
        if take <= 0:
            return
        with torch.no_grad():
            distances = [
                torch.linalg.vector_norm(users[:take, us].to(torch.float64) - items[:take, its].to(torch.float64),
                                         dim=1)
                for _, us, its in self._views
            ]
        ids = torch.stack([user_ids[:take] - u_field.start, item_ids[:take] - i_field.start], dim=1)  # in the fields
        self._rows.append(torch.cat([torch.stack(distances, dim=1), y[:take].to(distances[0].device),
                                     s[:take].to(distances[0].device), ids.to(distances[0])], dim=1).cpu())
        self._kept += take

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if not self._active or self._broken:
            return
        try:
            self._collect(outputs)
        except Exception as err:
            # One failure ends collection for this epoch (one warning, not one per batch).
            self._broken = True
            if self.strict:
                raise
            self.failures += 1
            warnings.warn(f"{type(self).__name__}: collecting validation pairs failed and this epoch's analysis is "
                          f"skipped ({type(err).__name__}: {err}); training goes on.", RuntimeWarning, stacklevel=2)
        finally:
            self._calls = {"user": [], "item": []}

    # ---- per epoch --------------------------------------------------------------------------------------
    def _gathered(self, trainer, pl_module) -> torch.Tensor:
        width = len(self._views) + 2 * len(self._task_names) + 2
        local = torch.cat(self._rows) if self._rows else torch.zeros(0, width, dtype=torch.float64)
        if trainer.world_size <= 1:
            return local
        from torchmetrics.utilities.distributed import gather_all_tensors

        # Over the ranks whose batches differ: tensor-parallel ranks that validate the same rows send them once.
        parts = gather_all_tensors(local.to(pl_module.device), group=data_parallel_group(trainer))
        return torch.cat([p.cpu() for p in parts])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._remove_hooks()
        if not self._active:
            return
        self._active = False
        data = self._gathered(trainer, pl_module)  # every rank, even one whose collection failed
        self._rows = []
        # A collective (with frequent_only): every rank, before anything that may fail on one rank alone.
        counts = self.conflict.frequencies(trainer, pl_module) if self.conflict is not None else None
        if data.shape[0] == 0:
            return
        # Every rank holds the same pairs; a failure on any rank skips the record on all, so that the ranks keep
        # the same history.
        ok, result = self._together(trainer, "the entanglement analysis", lambda: self._analyse(trainer, data, counts))
        if not ok:
            return
        record, histograms = result
        self._record(record)
        self._guarded("logging the entanglement analysis",
                      lambda: self._log_epoch(trainer, record, histograms))

    def _metrics(self, data: torch.Tensor) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        n_views, n_tasks = len(self._views), len(self._task_names)
        distances = data[:, :n_views]
        labels = data[:, n_views : n_views + n_tasks]
        scores = data[:, n_views + n_tasks : n_views + 2 * n_tasks]
        metrics: dict[str, float] = {"entanglement/pairs": float(data.shape[0])}
        histograms: dict[str, torch.Tensor] = {}
        subsets = label_pattern_masks(labels, self._task_names)
        for name, mask in subsets.items():
            metrics[f"entanglement/{name}/pairs"] = float(mask.sum())
        for v, (view, _, _) in enumerate(self._views):
            histograms[f"entanglement/{view}/distance"] = distances[:, v]
            metrics[f"entanglement/{view}/distance_mean"] = float(distances[:, v].mean())
            for name, mask in subsets.items():
                if mask.any():
                    histograms[f"entanglement/{view}/{name}/distance"] = distances[mask, v]
                    metrics[f"entanglement/{view}/{name}/distance_mean"] = float(distances[mask, v].mean())
        for t, task in enumerate(self._task_names):
            subsets = auroc_subsets(labels, self._task_names, t)
            # One sort of the task's scores for all its subsets: 2 to 4 times faster than torchmetrics' binary_auroc
            # per subset, side by side (2,000 to 100,000 pairs, five subsets).
            for name, auroc in zip(subsets, subset_aurocs(scores[:, t], labels[:, t], subsets.values())):
                if auroc is not None:
                    metrics[f"entanglement/{task}/auroc/{name}"] = auroc
        return metrics, histograms

    def _analyse(self, trainer, data: torch.Tensor, counts=None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The epoch's history record and its histograms' values, from the pairs of every rank."""
        metrics, histograms = self._metrics(data)
        conflict = None
        if self.conflict is not None:
            ids = data[:, -2:].to(torch.int64)
            found, conflict_histograms, conflict = self.conflict.analyse(
                ids[:, 0], ids[:, 1], [v for v, _, _ in self._views], data[:, : len(self._views)], counts)
        record = {
            "stage": "validation",
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "tasks": list(self._task_names),
            "views": [v for v, _, _ in self._views],
            "world_size": int(trainer.world_size),
            "metrics": metrics,
            "histograms": binned_by_subset([v for v, _, _ in self._views], histograms, self.bins),
        }
        if conflict is not None:
            metrics.update(found)
            histograms.update(conflict_histograms)
            record["conflict"] = conflict
        return record, histograms

    def _log_epoch(self, trainer, record: dict[str, Any], histograms: dict[str, torch.Tensor]) -> None:
        step = trainer.global_step
        self.writer.scalars(trainer, record["metrics"], step=step)
        if tensorboard_experiments(trainer):
            for tag, values in histograms.items():
                self.writer.histogram(trainer, tag, values, step=step, bins=self.bins)
            if "conflict" in record:
                for tag, image in self.conflict.images(record["conflict"]):
                    self.writer.image(trainer, tag, image, step=step)
        self.writer.flush(trainer)
