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

import numpy as np
import torch
from torch import nn

from ..functional.correlation import learned_correlation, mutual_information, rank_correlation
from ..metrics.behavior_target import BehaviorTargetCounts
from .. import sharding
from ..figures.correlation import correlation_map_image, same_category_image
from .base import AnalysisCallback, data_parallel_group

__all__ = ["FeatureCorrelationMonitor"]

BatchFields = Callable[[Any], Sequence[Any]]
LearnedEmbeddings = Callable[[nn.Module, int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_FIELDS = ("target_category", "behavior_category", "label", "mask")


class FeatureCorrelationMonitor(AnalysisCallback):
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
    negatives). Counts are summed across processes under DDP. They are not saved in checkpoints (the history
    is): a resumed run counts its first ``count_epochs`` epochs afresh.

    Logged tags (``<t>`` is a target category id; all at step ``trainer.global_step``):

    Scalars (every logger):
        - ``correlation/target_<t>/agreement``: Spearman's rho between the learned and the ground-truth map of
          target category ``<t>``, over all its cells (1 = same ranking; needs the embeddings).
        - ``correlation/agreement``: the mean of those over the analysed target categories.

    Text (TensorBoard):
        - ``correlation/inventory``: where the fields and embeddings come from, what is counted.

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
    """

    namespace = "correlation"

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
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if count_epochs is not None and (not isinstance(count_epochs, int) or count_epochs < 1):
            raise ValueError(f"count_epochs must be a positive integer or None, got {count_epochs!r}")
        if position_embedding is not None and category_embedding is None:
            raise ValueError("position_embedding needs category_embedding too (e = category + position embedding)")
        if learned_embeddings is not None and category_embedding is not None:
            raise ValueError("pass either category_embedding (and position_embedding) or learned_embeddings, not both")
        self.keys = {"target_category": target_category, "behavior_category": behavior_category,
                     "label": label, "mask": mask}
        self.batch_fields = batch_fields
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
        self._drawn: dict[str, Any] = {}
        self._counted_epochs: set[int] = set()

    def _state_key_fields(self) -> dict[str, Any]:
        return {"keys": self.keys, "category_embedding": self.category_embedding}

    # ---- setup: everything that can be wrong is found here, before the first step ------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        num_categories = None
        if self.category_embedding is not None:
            category = self._table(pl_module, self.category_embedding, "category_embedding")
            num_categories = category.shape[0]
            if self.position_embedding is not None:
                position = self._table(pl_module, self.position_embedding, "position_embedding")
                if position.shape[1] != category.shape[1]:
                    raise ValueError(
                        f"position_embedding '{self.position_embedding}' has width {position.shape[1]} but "
                        f"category_embedding '{self.category_embedding}' has {category.shape[1]}: e = category + "
                        "position needs one width"
                    )
                needed = max(self.num_positions, self.target_position) + 1
                if position.shape[0] < needed:
                    raise ValueError(
                        f"position_embedding '{self.position_embedding}' has {position.shape[0]} rows; positions "
                        f"1..{self.num_positions} and the target's row {self.target_position} need {needed}. "
                        "Lower num_positions or pass learned_embeddings for another layout."
                    )
        self.counts = BehaviorTargetCounts(num_categories=num_categories)
        self._drawn = {}
        self._counted_epochs = set()

    @staticmethod
    def _table(module: nn.Module, name: str, option: str) -> torch.Tensor:
        """The 2-D weight that ``name`` points to: an ``nn.Embedding``'s weight or a parameter of the module."""
        try:
            found = module.get_submodule(name)
        except AttributeError:
            found = None
        if isinstance(found, nn.Embedding):
            return found.weight
        if found is None:
            try:
                found = module.get_parameter(name)
            except AttributeError:
                found = None
        if isinstance(found, torch.Tensor) and found.dim() == 2:
            return found
        raise ValueError(
            f"{option}='{name}' must name an nn.Embedding or a 2-D parameter of {type(module).__name__}; found "
            f"{type(found).__name__ if found is not None else 'nothing'}. Embeddings of the module: "
            f"{[n for n, m in module.named_modules() if isinstance(m, nn.Embedding)]}"
        )

    def on_fit_start(self, trainer, pl_module) -> None:
        # Count where the batches are (the model's device), and sum there across processes.
        self.counts = self.counts.to(pl_module.device)
        # Under tensor parallelism several ranks see the same batches: counts are summed over the ranks whose
        # batches differ (every rank under DDP).
        self.counts.process_group = data_parallel_group(trainer)
        # A strategy may have sharded the tables since setup: their layout must be one the lookups read exactly.
        for option in ("category_embedding", "position_embedding"):
            name = getattr(self, option)
            if name is not None and self.learned_embeddings is None:
                sharding.check_readable(self._table(pl_module, name, option), name)
        if self._is_real_fit(trainer):
            self.writer.text(trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step)

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

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        ns = self.namespace
        return {"correlation: behaviour sequence": {
            "agreement of the learned map with the data (Spearman over cells)": [
                "Multiline", [rf"^{ns}/agreement$", rf"^{ns}/target_\d+/agreement$"]],
        }}

    # ---- counting ------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        if epoch not in self._counted_epochs:
            # Cheap tests first: this runs after every training batch, counted or not.
            if self.count_epochs is not None and len(self._counted_epochs) >= self.count_epochs:
                return
            if trainer.sanity_checking or trainer.fast_dev_run:
                return
            self._counted_epochs.add(epoch)
        fields = self._fields(batch)
        self._counting(lambda: self.counts.update(*fields))

    def _counting(self, fn) -> None:
        """Run ``fn`` (an update or flush of the counts); a bad value becomes an error naming its batch field."""
        try:
            fn()
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {self._name_field(str(err))}") from None

    def _fields(self, batch) -> tuple:
        if self.batch_fields is not None:
            fields = tuple(self.batch_fields(batch))
            if len(fields) not in (3, 4):
                raise ValueError(
                    f"{type(self).__name__}: batch_fields must return (target_category, behavior_category, label"
                    f"[, mask]), got {len(fields)} values"
                )
            return fields if len(fields) == 4 else (*fields, None)
        values = []
        for field in _FIELDS:
            key = self.keys[field]
            if key is None:
                values.append(None)
                continue
            try:
                values.append(batch[key])
            except (KeyError, IndexError, TypeError):
                available = list(batch.keys()) if isinstance(batch, Mapping) else f"a {type(batch).__name__}"
                fix = "mask=<key>, or mask=None if there is no padding" if field == "mask" else f"{field}=<key>"
                raise ValueError(
                    f"{type(self).__name__}: the batch has no field {key!r} ({field}); batch: {available}. Pass "
                    f"{fix}, or batch_fields=fn(batch) returning the fields."
                ) from None
        return tuple(values)

    def _name_field(self, message: str) -> str:
        """Prefix the metric's message with the batch key of the field it is about."""
        for field in _FIELDS:
            if message.startswith(field):
                key = self.keys[field] if self.batch_fields is None else f"{field} of batch_fields"
                return f"batch field {key!r} ({field}): {message}"
        return message

    # ---- analysis ------------------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._is_analysis_epoch(trainer):
            return
        self._analyse_counts(trainer, pl_module, "correlation", self.counts,
                             lambda: self._counting(self.counts.flush))

    def analyse(self, pl_module: nn.Module | None = None) -> dict[str, Any]:
        """Compute the maps from the counts so far (and the module's embeddings); returns plain values."""
        counts = self.counts
        labels = counts.label_counts()
        samples = int(labels.sum())
        n_pos_all = max(counts.num_positions, 1)
        same_mi = mutual_information(counts.same_category_table(n_pos_all))
        targets = []
        for target in self._chosen_targets():
            targets.append(self._analyse_target(target, pl_module))
        agreements = [t["agreement"] for t in targets if t["agreement"] is not None]
        return {
            "samples": samples,
            "positive_rate": float(labels[1]) / samples if samples else 0.0,
            "same_category_positions": list(range(1, n_pos_all + 1)),
            "same_category_mi": same_mi.tolist(),
            "targets": targets,
            "agreement": float(np.mean(agreements)) if agreements else None,
        }

    def _chosen_targets(self) -> list[int]:
        if self.target_categories is not None:
            return list(self.target_categories)
        categories, _ = self.counts.target_frequencies()
        return categories[: self.num_targets].tolist()

    def _analyse_target(self, target: int, pl_module: nn.Module | None) -> dict[str, Any]:
        counts = self.counts
        positions = list(range(1, self.num_positions + 1))
        candidates = counts.behavior_categories(target)
        samples = int(counts.label_counts(target).sum())
        result: dict[str, Any] = {"target_category": target, "name": self._name(target), "samples": samples,
                                  "positions": positions}
        if candidates.numel():
            mi = mutual_information(counts.table(target, candidates, self.num_positions))  # [C, P]
            # Rows: the most informative categories first; ties (e.g. all zero) by category id.
            order = np.lexsort((candidates.cpu().numpy(), -mi.sum(1).cpu().numpy()))[: self.num_behavior_categories]
            rows = candidates.cpu()[torch.as_tensor(order)]
            mi = mi.cpu()[torch.as_tensor(order)]
        else:  # a target category never seen (e.g. named by the user): an empty map, not an error
            rows, mi = torch.zeros(0, dtype=torch.int64), torch.zeros(0, self.num_positions, dtype=torch.float64)
        result["behavior_categories"] = rows.tolist()
        result["behavior_names"] = [self._name(int(c)) for c in rows]
        result["ground_truth_mi"] = mi.tolist()
        result["ground_truth"] = _min_max(mi).tolist()
        learned = self._learned_map(pl_module, target, rows) if rows.numel() else None
        result["learned"] = None if learned is None else learned.tolist()
        result["agreement"] = None if learned is None else rank_correlation(learned, mi, undefined=0.0)
        return result

    def _learned_map(self, pl_module: nn.Module | None, target: int, rows: torch.Tensor) -> torch.Tensor | None:
        if pl_module is None or (self.learned_embeddings is None and self.category_embedding is None):
            return None
        positions = torch.arange(1, self.num_positions + 1)
        with torch.no_grad():
            if self.learned_embeddings is not None:
                behavior, target_vec = self.learned_embeddings(pl_module, target, rows, positions)
            else:
                # The rows of the analysed categories and positions only: exact for a sharded table too,
                # where every rank takes part in the lookups (sharding.lookup_rows).
                category = self._table(pl_module, self.category_embedding, "category_embedding")
                looked_up = sharding.lookup_rows(category, torch.cat([rows.cpu(), torch.tensor([target])]))
                behavior = looked_up[:-1][:, None, :].expand(-1, len(positions), -1)
                target_vec = looked_up[-1]
                if self.position_embedding is not None:
                    position = self._table(pl_module, self.position_embedding, "position_embedding")
                    at = sharding.lookup_rows(position, torch.cat([positions, torch.tensor([self.target_position])]))
                    behavior = behavior + at[:-1][None, :, :]
                    target_vec = target_vec + at[-1]
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
    def _log(self, trainer, record: dict[str, Any]) -> None:
        ns, step = self.namespace, record["step"]
        scalars = {f"{ns}/target_{t['target_category']}/agreement": t["agreement"]
                   for t in record["targets"] if t["agreement"] is not None}
        if record["agreement"] is not None:
            scalars[f"{ns}/agreement"] = record["agreement"]
        self.writer.scalars(trainer, scalars, step)
        if self.images and trainer.is_global_zero:
            when = f"epoch {record['epoch']}"
            curve = record["same_category_mi"]
            if self._changed("same_category", None, curve):
                self.writer.image(trainer, f"{ns}/same_category_mi", same_category_image(record), step)
            for target in record["targets"]:
                if not target["behavior_categories"]:
                    continue
                tag = f"{ns}/target_{target['target_category']}"
                if self._changed(tag, target["behavior_categories"], target["ground_truth"]):
                    image = correlation_map_image(target, "ground_truth", when)
                    self.writer.image(trainer, f"{tag}/ground_truth", image, step)
                if target["learned"] is not None:
                    self.writer.image(trainer, f"{tag}/learned", correlation_map_image(target, "learned", when), step)
        self.writer.flush(trainer)

    def _changed(self, key: str, rows, values) -> bool:
        """Whether a data-derived image differs from the one last drawn (and remember it if so)."""
        current = np.asarray(values, dtype=np.float64)
        previous = self._drawn.get(key)
        if previous is not None and previous[0] == rows and previous[1].shape == current.shape:
            scale = max(float(np.abs(previous[1]).max(initial=0.0)), 1e-300) if rows is None else 1.0
            if float(np.abs(current - previous[1]).max(initial=0.0)) / scale <= self.redraw_tolerance:
                return False
        self._drawn[key] = (rows, current)
        return True


def _min_max(matrix: torch.Tensor) -> torch.Tensor:
    if matrix.numel() == 0:
        return matrix
    low, high = matrix.min(), matrix.max()
    return (matrix - low) / (high - low) if float(high - low) > 0 else torch.zeros_like(matrix)
