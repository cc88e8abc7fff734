"""The conflict-subset part of :class:`~lightning_recanalysis.callbacks.entanglement.EntanglementMonitor`.

It holds the single-task references (:mod:`._reference`), counts user and item frequencies over the first
training epoch when asked to keep frequent pairs only, and turns the validation pairs the monitor gathered
(every rank's) into the conflict subsets, the per-view shares, agreements, rank correlations and 39-bin
histograms of :mod:`lightning_recanalysis.functional.conflict_subset`.
"""

from __future__ import annotations

import re
from itertools import permutations
from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import torch
from torch import nn

from ..parallel.distributed import data_parallel_group, sum_over_ranks
from ..functional.conflict_subset import (
    conflict_histograms,
    conflict_mode_name,
    conflict_rank_correlations,
    conflict_subsets,
    frequent_ids,
    geometry_agreement,
    placement_shares,
)
from ..parallel.mesh_groups import local_value
from .tables import EmbeddingTable, Field
from .reference import ReferenceRows, ReferenceSource, load_reference

__all__ = ["PREFIX", "ConflictSubsetAnalysis"]

PREFIX = "entanglement/conflict"


class ConflictSubsetAnalysis:
    """References, frequency counts and the per-epoch conflict-subset analysis of one monitor."""

    def __init__(self, references: Mapping[str, ReferenceSource], high: float, low: float,
                 frequent_only: bool, frequency_percentile: float, bins: int, owner: str) -> None:
        if not isinstance(references, Mapping) or len(references) < 2:
            raise ValueError(f"{owner}: references must map each task to its single-task model (a module, a "
                             f"checkpoint path or a run directory), two tasks or more; got {references!r}")
        if not 0.0 <= low <= high <= 100.0:
            raise ValueError(f"{owner}: conflict_percentiles=(high, low) need 0 <= low <= high <= 100, "
                             f"got ({high}, {low})")
        if not 0.0 <= frequency_percentile <= 100.0:
            raise ValueError(f"{owner}: frequency_percentile must lie in [0, 100], got {frequency_percentile}")
        self.sources = dict(references)
        self.high, self.low, self.bins, self.owner = float(high), float(low), bins, owner
        self.frequent_only, self.frequency_percentile = frequent_only, float(frequency_percentile)
        self.references: dict[str, ReferenceRows] = {}
        self._fields: tuple[Field, Field] | None = None
        self._counts: dict[str, torch.Tensor | None] = {"user": None, "item": None}
        self._handles: list[Any] = []
        self._counting_done = False
        self._reduced: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reference_histograms_logged = False
        # The reference distances and subsets of the last analysed pairs: the validation pairs are usually the same
        # every epoch, and the references never change, so they are computed again only when the ids change.
        self._subsets_cache: tuple[torch.Tensor, torch.Tensor, dict, dict] | None = None

    # ---- setup --------------------------------------------------------------------------------------------
    def setup(self, tasks: Sequence[str], user: tuple[EmbeddingTable, Field], item: tuple[EmbeddingTable, Field],
              options: dict[str, Any]) -> None:
        """Check that there is one reference per task and read their user and item rows (once per fit)."""
        missing = [t for t in tasks if t not in self.sources]
        unknown = [t for t in self.sources if t not in tasks]
        if missing or unknown:
            raise ValueError(f"{self.owner}: references must name exactly the analysed tasks {list(tasks)}: "
                             f"missing {missing}, unknown {unknown}")
        self.references = {t: load_reference(self.sources[t], t, user, item, options, self.owner) for t in tasks}
        self._fields = (user[1], item[1])
        self._counts = {"user": None, "item": None}
        self._counting_done, self._reduced = False, None
        self._reference_histograms_logged = False
        self._subsets_cache = None

    # ---- frequency counting over the first training epoch --------------------------------------------------
    def _count_hook(self, role: str, fld: Field):
        def count(module, args, output):
            if not module.training:  # validation and sanity checks look up rows too: not training frequency
                return
            ids = local_value(args[0]).detach().reshape(-1)  # a replicated DTensor under tensor parallelism
            if self._counts[role] is None:
                self._counts[role] = torch.zeros(fld.cardinality, dtype=torch.long, device=ids.device)
            # A scatter-add of a 0/1 mask: no boolean indexing, so no host-device sync on an accelerator.
            inside = (ids >= fld.start) & (ids < fld.stop)
            self._counts[role].scatter_add_(0, (ids - fld.start).clamp(0, fld.cardinality - 1), inside.long())
        return count

    def start_counting(self, pl_module: nn.Module, user_modules: Sequence[str], item_modules: Sequence[str]) -> None:
        if not self.frequent_only or self._counting_done or self._handles:
            return
        for role, names, fld in (("user", user_modules, self._fields[0]), ("item", item_modules, self._fields[1])):
            for name in names:
                self._handles.append(pl_module.get_submodule(name).register_forward_hook(self._count_hook(role, fld)))

    def stop_counting(self, finished_epoch: bool) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._counting_done = self._counting_done or finished_epoch

    def frequencies(self, trainer: "pl.Trainer") -> tuple[torch.Tensor, torch.Tensor] | None:
        """The training frequency of every user and item id, summed over ranks (a collective on every rank:
        call it on all of them at the same point). None without ``frequent_only``."""
        if not self.frequent_only:
            return None
        if self._reduced is not None:
            return self._reduced
        user_field, item_field = self._fields
        local = torch.cat([
            counts.cpu() if counts is not None else torch.zeros(fld.cardinality, dtype=torch.long)
            for counts, fld in ((self._counts["user"], user_field), (self._counts["item"], item_field))
        ]).to(torch.float64)
        if trainer.world_size > 1:
            # Over the ranks whose batches differ (tensor-parallel ranks see the same ones).
            local = sum_over_ranks(local.to(trainer.strategy.root_device), data_parallel_group(trainer))
        counts = (local[: user_field.cardinality].cpu(), local[user_field.cardinality :].cpu())
        if self._counting_done:
            self._reduced = counts
        return counts

    # ---- the analysis ---------------------------------------------------------------------------------------
    def analyse(self, users: torch.Tensor, items: torch.Tensor, views: Sequence[str], distances: torch.Tensor,
                counts: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The histogram values (by tag) and the record's ``conflict`` part, from the gathered validation pairs
        (the part's scalars are :func:`~lightning_recanalysis.records.entanglement_tags`'s).

        ``users``/``items``: within-field ids ``[n]``; ``distances``: ``[n, views]`` in the trained model."""
        keep = torch.ones_like(users, dtype=torch.bool)
        if counts is not None:
            keep = frequent_ids(counts[0], self.frequency_percentile)[users] \
                & frequent_ids(counts[1], self.frequency_percentile)[items]
        users, items, distances = users[keep], items[keep], distances[keep]
        tasks = list(self.references)
        part: dict[str, Any] = {"tasks": tasks, "high": self.high, "low": self.low, "bins": self.bins,
                                "frequent_only": self.frequent_only, "validation_pairs": int(keep.numel()),
                                "pairs": int(users.numel()),
                                "references": {t: r.source for t, r in self.references.items()},
                                "modes": {}, "views": {}}
        histograms: dict[str, torch.Tensor] = {}
        if users.numel() < 2:
            return histograms, part
        cached = self._subsets_cache
        if cached is not None and torch.equal(cached[0], users) and torch.equal(cached[1], items):
            reference, masks = cached[2], cached[3]
        else:
            reference = {t: r.distances(users, items) for t, r in self.references.items()}
            masks = conflict_subsets(reference, high=self.high, low=self.low)
            self._subsets_cache = (users.clone(), items.clone(), reference, masks)
        modes = {conflict_mode_name(f, n): (f, n) for f, n in permutations(tasks, 2)}  # conflict_subsets' order
        for mode, mask in masks.items():
            far, near = modes[mode]
            part["modes"][mode] = {"far": far, "near": near, "pairs": int(mask.sum())}
        if not self._reference_histograms_logged:  # the references never change: their histograms once per fit
            self._reference_histograms_logged = True
            for task, d in reference.items():
                histograms[f"{PREFIX}/reference[{task}]/distance"] = d
        for v, view in enumerate(views):
            d = distances[:, v]
            hist = conflict_histograms(d, masks, bins=self.bins, high=self.high, low=self.low)
            view_part: dict[str, Any] = {"modes": {}}
            for mode, mask in masks.items():
                shares = placement_shares(d, mask, thresholds=(hist["low"], hist["high"]))
                agreement = {t: geometry_agreement(shares, far=(t == modes[mode][0])) for t in modes[mode]}
                view_part["modes"][mode] = {**hist["modes"][mode], "shares": shares, "agreement": agreement}
                if mask.any():
                    histograms[f"{PREFIX}/{view}/{mode}/distance"] = d[mask]
            view_part.update(edges=hist["edges"], low=hist["low"], high=hist["high"],
                             rank_correlation=conflict_rank_correlations(d, reference, list(masks.values())))
            part["views"][view] = view_part
        return histograms, part

    @staticmethod
    def dashboard_charts(views: Sequence[str], tasks: Sequence[str] = ()) -> dict[str, list]:
        """Custom-scalars charts, one series each (TensorBoard colours a chart's series by run): per view and task
        the view's rank correlation with that task's reference on the selected pairs."""
        return {f"{view}: Spearman rho with the {task} reference": [
            "Multiline", [rf"^{PREFIX}/{re.escape(view)}/rank_correlation_{re.escape(task)}$"]]
            for view in views for task in tasks}
