"""FeatureCorrelationMonitor: which past behaviours carry information about the target, in the data and in the model.

Zhou et al., "Temporal Interest Network for User Response Prediction" (WWW 2024), and Pan et al., "Ad
Recommendation in a Collapsed and Entangled World" (KDD 2024), compare two maps over behaviour categories x
target-relative positions, for one target category c_t:

- the ground truth, counted from the training data: CTC(c_t; c, p) = MI(X; Y), X = "the behaviour at position p
  has category c", Y = the label, over the samples whose target has category c_t;
- the correlation the model has learned, read from its category (and position) embeddings:
  softmax of z-scored <e, v> times ||e * v|| (TIN) or ||e|| (DIN), min-max normalised.

A model that has learned what the data hold shows the same semantic pattern (the target's own category first)
and temporal decay (recent behaviours first) in both. See :mod:`lightning_recanalysis.functional.correlation`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from typing_extensions import override

from ..checks import check_positive_int
from ..functional.correlation import learned_correlation, mutual_information, rank_correlation
from ..metrics.behavior_target import BehaviorTargetCounts
from ..parallel import sharding
from ..figures.correlation import correlation_map_image, same_category_image
from ..findings.correlation import correlation_findings
from ..records import BehaviorTargetRecord, TargetCorrelation, correlation_tags
from ..model.batch import BatchFieldReader
from ..model.embeddings import behavior_and_target_embeddings, check_behavior_embeddings, embedding_table
from .counting import CountingMonitor
from .evaluation import EVALUATION_STAGES

__all__ = ["FeatureCorrelationMonitor"]

BatchFields = Callable[[Any], Sequence[Any]]
LearnedEmbeddings = Callable[[nn.Module, int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class FeatureCorrelationMonitor(CountingMonitor):
    r"""Ground-truth and learned correlation between a target and a user's behaviour sequence, while training.

    Counts every training batch as it passes (in ``on_train_batch_end``; never a second pass over the data)
    into a :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts`, and at the end of every
    ``every_n_epochs``-th training epoch logs, for the ``num_targets`` most frequent target categories (or the
    ``target_categories`` you name):

    - the ground-truth map: MI(X; Y) in bits for the ``num_behavior_categories`` most informative behaviour
      categories (rows, by MI summed over the shown positions) x positions 1..``num_positions`` (p = 1 is the
      most recent behaviour), min-max normalised as the authors show it;
    - the learned map of the same cells, from the model's embeddings (when you point to them);
    - their agreement: Spearman's rank correlation over the cells of the two maps;

    and once for all targets, the MI by position of X = "the behaviour at position p has the target's own
    category" (no choice of categories needed).

    By default only the first epoch's batches are counted (``count_epochs=1``): an epoch over a fixed data set
    is the data set, and counting it again would scale every count alike and leave the plug-in MI unchanged.
    Pass ``count_epochs=None`` to count every epoch (data that change from epoch to epoch, e.g. resampled
    negatives). In ``trainer.validate``/``trainer.test`` the evaluation batches are counted, and analysed once.
    Counts are summed across processes under DDP. They are not saved in checkpoints (the history
    is): a resumed run counts its first ``count_epochs`` epochs afresh.

    Logged tags (``<t>`` is a target category id; all at step ``trainer.global_step``):

    Scalars (every logger):
        - ``correlation/target_<t>/agreement``: Spearman's rho between the learned and the ground-truth map of
          target category ``<t>``, over all its cells (1 = same ranking; needs the embeddings).
        - ``correlation/agreement``: the mean of those over the analysed target categories.

    Text (TensorBoard):
        - ``correlation/inventory``: where the fields and embeddings come from, what is counted.
        - ``correlation/findings``: per target, the data's signal and the learned map's agreement with its
          interval, as the report says it; ``correlation/coverage``: what runs.

    Images (TensorBoard, rank 0):
        - ``correlation/target_<t>/ground_truth``: the ground-truth map (behaviour categories x positions, colour
          0..1 = MI / max MI after min-max). Redrawn only when it changes by more than ``redraw_tolerance`` or its
          rows change: it is a property of the data, which repeated epochs do not change.
        - ``correlation/target_<t>/learned``: the learned map of the same cells, every analysis.
        - ``correlation/same_category_mi``: MI (bits) by position of "the behaviour at p has the target's
          category" vs the label, over all samples (redrawn like the ground truth).

    Where the fields are in a batch: give key names (or integer indices for tuple batches) with
    ``target_category``, ``behavior_category``, ``label`` and ``mask`` (``mask=None``: no padding), or a
    function ``batch_fields(batch) -> (target_category, behavior_category, label, mask)``. Shapes: ``[B]``,
    ``[B, L]`` with the most recent behaviour in the last column, ``[B]`` of 0/1, ``[B, L]`` true for real
    behaviours. Bad values (labels outside {0, 1}, negative category ids or ids beyond the category embedding,
    mismatched shapes) raise a ``ValueError`` that names the batch field: shapes at the batch, values when the
    batch is counted (together with the next few, within about 10^5 behaviours, and at every analysis).

    Where the embeddings are: ``category_embedding`` names an ``nn.Embedding`` (or a 2-D parameter) of the
    module, row c = category c. ``position_embedding`` (TIN) names the table whose row p is the embedding of
    target-relative position p, and row ``target_position`` (default 0) the target's own. Then
    e_cp = E_cat[c] + E_pos[p] and v = E_cat[c_t] + E_pos[target_position]. For any other layout pass
    ``learned_embeddings(module, target_category, behavior_categories, positions) -> (e [C, P, d], v [d])``.
    With neither, only the ground truth is logged.

    Args:
        target_category / behavior_category / label / mask: batch keys (or indices) of the four fields.
        batch_fields: a function returning the four fields instead (``mask`` may be ``None``).
        category_embedding / position_embedding / target_position / learned_embeddings: see above.
        representation: ``"product"`` (TIN's e * v) or ``"behavior"`` (DIN's e), see
            :func:`~lightning_recanalysis.functional.learned_correlation`.
        scaled: divide the logits by sqrt(d) (the paper's formula; the script's default is not to).
        num_targets: how many of the most frequent target categories to analyse.
        target_categories: analyse these target categories instead.
        num_behavior_categories: rows of each map (the authors show 10).
        num_positions: columns of each map (the authors show 10).
        category_names: names to print for category ids (a sequence indexed by id, or a mapping).
        images: turn the images off (scalars and history are always kept).
        redraw_tolerance: redraw a ground-truth image only when a cell moved by more than this (0..1 scale).
        count_epochs: count the batches of this many epochs (from the start of this fit or resume); ``None``:
            all of them.
        every_n_epochs: analyse at the end of every n-th training epoch (and the last).
        strict: re-raise analysis errors instead of warning and skipping. Bad batch fields always raise.

    Raises:
        ValueError: at construction, for a ``representation`` other than ``"product"``/``"behavior"``, a
            non-positive count or ``every_n_epochs``, a ``position_embedding`` without ``category_embedding``, or
            both ``category_embedding`` and ``learned_embeddings``; at ``setup``, when a named embedding is missing
            or of the wrong shape; at a training batch, when a batch field is missing, mis-shaped or out of range
            (always, whatever ``strict`` says: the counts would be wrong).

    Example:
        >>> import torch
        >>> from lightning_recanalysis.toy import ToySequence, toy_loader, toy_trainer
        >>> _ = torch.manual_seed(0)
        >>> monitor = FeatureCorrelationMonitor(category_embedding="category", position_embedding="position",
        ...                                     num_positions=5, num_targets=1)
        >>> toy_trainer([monitor]).fit(ToySequence(), toy_loader("sequence"))
        >>> record = monitor.records[-1]
        >>> record.samples, record.targets[0]["positions"]
        (32, [1, 2, 3, 4, 5])
        >>> mi = record.same_category_mi  # the toy label: the most recent behaviour has the target's category
        >>> mi.index(max(mi)) + 1
        1
        >>> -1 <= record.agreement <= 1
        True
    """

    namespace = "correlation"
    analysis_name = "correlation"
    record_type = BehaviorTargetRecord
    findings_of = staticmethod(correlation_findings)
    dashboard_category = "correlation: behaviour sequence"
    # One series a chart (TensorBoard colours a chart's series by run); each target's agreement: the Scalars tab.
    dashboard_charts = {"agreement of the learned map with the data, mean over targets (Spearman)": ["agreement"]}

    def __init__(
        self,
        *,
        target_category: str | int = "target_category",
        behavior_category: str | int = "behavior_category",
        label: str | int = "label",
        mask: str | int | None = "mask",
        batch_fields: BatchFields | None = None,
        category_embedding: str | None = None,
        position_embedding: str | None = None,
        target_position: int = 0,
        learned_embeddings: LearnedEmbeddings | None = None,
        representation: str = "product",
        scaled: bool = False,
        num_targets: int = 2,
        target_categories: Sequence[int] | None = None,
        num_behavior_categories: int = 10,
        num_positions: int = 10,
        category_names: Sequence[str] | Mapping[int, str] | None = None,
        images: bool = True,
        redraw_tolerance: float = 0.01,
        count_epochs: int | None = 1,
        every_n_epochs: int = 1,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, strict=strict)
        if representation not in ("product", "behavior"):
            raise ValueError(f"representation must be 'product' (TIN) or 'behavior' (DIN), got {representation!r}")
        for name, value in (("num_targets", num_targets), ("num_behavior_categories", num_behavior_categories),
                            ("num_positions", num_positions)):
            check_positive_int(name, value)
        check_positive_int("count_epochs", count_epochs, allow_none=True)
        if position_embedding is not None and category_embedding is None:
            raise ValueError("position_embedding needs category_embedding too (e = category + position embedding)")
        if learned_embeddings is not None and category_embedding is not None:
            raise ValueError("pass either category_embedding (and position_embedding) or learned_embeddings, not both")
        self.keys = {"target_category": target_category, "behavior_category": behavior_category,
                     "label": label, "mask": mask}
        self.batch_fields = batch_fields
        self._read_batch = BatchFieldReader(type(self).__name__, self.keys, batch_fields, optional=("mask",),
                                            fixes={"mask": "mask=<key>, or mask=None if there is no padding"})
        self.category_embedding, self.position_embedding = category_embedding, position_embedding
        self.target_position, self.learned_embeddings = target_position, learned_embeddings
        self.representation, self.scaled = representation, scaled
        self.num_targets = num_targets
        self.target_categories = None if target_categories is None else [int(t) for t in target_categories]
        self.num_behavior_categories, self.num_positions = num_behavior_categories, num_positions
        self.category_names = category_names
        self.images, self.redraw_tolerance = images, redraw_tolerance
        self.count_epochs = count_epochs
        self.counts = BehaviorTargetCounts()
        self._counted_epochs: set[int] = set()

    def _state_key_fields(self) -> dict[str, Any]:
        return {"keys": self.keys, "category_embedding": self.category_embedding}

    # ---- setup: everything that can be wrong is found here, before the first step ------------------------
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage not in ("fit", *EVALUATION_STAGES):
            return
        num_categories = None
        if self.category_embedding is not None:
            num_categories = check_behavior_embeddings(pl_module, self.category_embedding, self.position_embedding,
                                                       self.num_positions, self.target_position)
        self.counts = BehaviorTargetCounts(num_categories=num_categories)
        self._counted_epochs = set()

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._place_counts(trainer, pl_module)
        self._check_readable(pl_module)
        if self._is_real_fit(trainer):
            self.writer.text(trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step)

    def start_evaluation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._check_readable(pl_module)
        super().start_evaluation(trainer, pl_module)  # the counts' device, the inventory

    def _check_readable(self, pl_module: "pl.LightningModule") -> None:
        # A strategy may have sharded the tables since setup: their layout must be one the lookups read exactly.
        for option in ("category_embedding", "position_embedding"):
            name = getattr(self, option)
            if name is not None and self.learned_embeddings is None:
                sharding.check_readable(embedding_table(pl_module, name, option), name)

    def coverage(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> list[dict[str, Any]]:
        learned = self.learned_embeddings is not None or self.category_embedding is not None
        return self._stated(trainer, [
            {"analysis": "ground-truth target-behaviour MI", "runs": True, "why": ""},
            {"analysis": "learned correlation map", "runs": learned, "optional": True,
             "why": "" if learned else "no embeddings to read: pass category_embedding= (and position_embedding=) "
             "or learned_embeddings="}])

    def inventory_markdown(self) -> str:
        if self.batch_fields is not None:
            where = "the batch fields returned by `batch_fields`"
        else:
            where = ", ".join(f"{field} `{key}`" for field, key in self.keys.items() if key is not None)
        if self.learned_embeddings is not None:
            learned = "the user's `learned_embeddings` function"
        elif self.category_embedding is not None:
            learned = f"category embedding `{self.category_embedding}`"
            if self.position_embedding is not None:
                learned += (f" plus position embedding `{self.position_embedding}` (row p = position p, row "
                            f"{self.target_position} = the target)")
        else:
            learned = "nothing (ground truth only)"
        targets = (f"target categories {self.target_categories}" if self.target_categories is not None
                   else f"the {self.num_targets} most frequent target categories")
        epochs = "every epoch" if self.count_epochs is None else f"the first {self.count_epochs} epoch(s)"
        return (f"Behaviour-target correlation from {where}, counted over {epochs}; maps of {targets}, "
                f"{self.num_behavior_categories} behaviour categories x positions 1..{self.num_positions}. "
                f"Learned map from {learned}, representation `{self.representation}`"
                f"{', logits / sqrt(d)' if self.scaled else ''}. MI in bits, empty cells contribute 0.")

    # ---- counting ------------------------------------------------------------------------------------------
    @override
    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        epoch = trainer.current_epoch
        if epoch not in self._counted_epochs:
            # Cheap tests first: this runs after every training batch, counted or not.
            if self.count_epochs is not None and len(self._counted_epochs) >= self.count_epochs:
                return
            if trainer.sanity_checking or trainer.fast_dev_run:
                return
            self._counted_epochs.add(epoch)
        self.count_batch(batch, batch_idx)

    def count_batch(self, batch: Any, batch_idx: int) -> None:
        fields = self._read_batch(batch)
        self._count(lambda: self.counts.update(*fields))

    # ---- analysis ------------------------------------------------------------------------------------------
    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._is_analysis_epoch(trainer):
            self.run_analysis(trainer, pl_module)

    # The contract (see AnalysisCallback): CountingMonitor counts what waits and sums the counts over ranks.
    def compute(self, pl_module: nn.Module | None, agreed: Any = None) -> BehaviorTargetRecord:
        return self.analyse(pl_module)

    def analyse(self, pl_module: nn.Module | None = None) -> BehaviorTargetRecord:
        """Compute the maps from the counts so far (and the module's embeddings)."""
        counts = self.counts
        labels = counts.label_counts()
        samples = int(labels.sum())
        n_pos_all = max(counts.num_positions, 1)
        same_mi = mutual_information(counts.same_category_table(n_pos_all))
        targets = []
        for target in self._chosen_targets():
            targets.append(self._analyse_target(target, pl_module))
        agreements = [t.agreement for t in targets if t.agreement is not None]
        return BehaviorTargetRecord(
            samples=samples, positive_rate=float(labels[1]) / samples if samples else 0.0,
            same_category_positions=list(range(1, n_pos_all + 1)), same_category_mi=same_mi.tolist(),
            targets=targets, agreement=float(np.mean(agreements)) if agreements else None)

    def _chosen_targets(self) -> list[int]:
        if self.target_categories is not None:
            return list(self.target_categories)
        categories, _ = self.counts.target_frequencies()
        return categories[: self.num_targets].tolist()

    def _analyse_target(self, target: int, pl_module: nn.Module | None) -> TargetCorrelation:
        counts = self.counts
        positions = list(range(1, self.num_positions + 1))
        candidates = counts.behavior_categories(target)
        samples = int(counts.label_counts(target).sum())
        if candidates.numel():
            mi = mutual_information(counts.table(target, candidates, self.num_positions))  # [C, P]
            # Rows: the most informative categories first; ties (e.g. all zero) by category id.
            order = np.lexsort((candidates.cpu().numpy(), -mi.sum(1).cpu().numpy()))[: self.num_behavior_categories]
            rows = candidates.cpu()[torch.as_tensor(order)]
            mi = mi.cpu()[torch.as_tensor(order)]
        else:  # a target category never seen (e.g. named by the user): an empty map, not an error
            rows, mi = torch.zeros(0, dtype=torch.int64), torch.zeros(0, self.num_positions, dtype=torch.float64)
        learned = self._learned_map(pl_module, target, rows) if rows.numel() else None
        return TargetCorrelation(
            target_category=target, name=self._name(target), samples=samples, positions=positions,
            behavior_categories=rows.tolist(), behavior_names=[self._name(int(c)) for c in rows],
            ground_truth_mi=mi.tolist(), ground_truth=_min_max(mi).tolist(),
            learned=None if learned is None else learned.tolist(),
            agreement=None if learned is None else rank_correlation(learned, mi, undefined=0.0))

    def _learned_map(self, pl_module: nn.Module | None, target: int, rows: torch.Tensor) -> torch.Tensor | None:
        if pl_module is None or (self.learned_embeddings is None and self.category_embedding is None):
            return None
        positions = torch.arange(1, self.num_positions + 1)
        with torch.no_grad():
            if self.learned_embeddings is not None:
                behavior, target_vec = self.learned_embeddings(pl_module, target, rows, positions)
            else:
                behavior, target_vec = behavior_and_target_embeddings(
                    pl_module, self.category_embedding, self.position_embedding, self.target_position,
                    target, rows, positions)
        return learned_correlation(behavior, target_vec, representation=self.representation,
                                   scaled=self.scaled).cpu()

    def _name(self, category: int) -> str:
        names = self.category_names
        if names is None:
            return str(category)
        try:
            return str(names[category])
        except (KeyError, IndexError):
            return str(category)

    # ---- logging -------------------------------------------------------------------------------------------
    def log_record(self, trainer: "pl.Trainer", record: BehaviorTargetRecord) -> None:
        ns, step = self.namespace, record.step
        self.writer.scalars(trainer, correlation_tags(record), step)
        if self.images and trainer.is_global_zero:
            when = f"epoch {record.epoch}"
            if self._changed("same_category", record.same_category_mi):
                self.writer.image(trainer, f"{ns}/same_category_mi", same_category_image(record), step)
            for target in record.targets:
                if not target.behavior_categories:
                    continue
                tag = f"{ns}/target_{target.target_category}"
                if self._changed(tag, target.ground_truth, rows=target.behavior_categories):
                    image = correlation_map_image(target, "ground_truth", when)
                    self.writer.image(trainer, f"{tag}/ground_truth", image, step)
                if target.learned is not None:
                    self.writer.image(trainer, f"{tag}/learned", correlation_map_image(target, "learned", when), step)
        self.writer.flush(trainer)


def _min_max(matrix: torch.Tensor) -> torch.Tensor:
    if matrix.numel() == 0:
        return matrix
    low, high = matrix.min(), matrix.max()
    return (matrix - low) / (high - low) if float(high - low) > 0 else torch.zeros_like(matrix)
