"""FieldPairCorrelationMonitor: which pairs of fields tell about the label in the data, and which the model couples.

The "general feature correlation" of Pan et al. ("Ad Recommendation in a Collapsed and Entangled World", KDD 2024,
the generalisation of their target-behaviour correlation to any pair of features), shown the way the
field-weighted factorization machine line of work showed it (Juan et al., RecSys 2016; Pan et al., WWW 2018): an
N x N heatmap over fields. Beside the data's heatmap, the model's: how strongly its interaction layer couples each
pair (for DCNv2, the size of the first cross layer's block W[j, i]), and one number per epoch for their agreement.
See :mod:`lightning_recanalysis.functional.field_pair` for the formulas.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from typing_extensions import override

from ..checks import check_non_negative_int, check_positive_int, short_list
from ..functional.correlation import rank_correlation
from ..functional.field_pair import field_pair_matrices
from ..metrics.field_pair import FieldPairCounts
from ..figures.field_pair import field_pair_image, top_pairs_markdown
from ..findings.field_pair import field_pair_findings
from ..records import FieldPairRecord, field_pair_tags
from ..model.batch import BatchFieldReader, select_fields
from .counting import CountingMonitor
from .evaluation import EVALUATION_STAGES
from ..model.cross.finder import CrossFinder
from ..model.cross.hooks import CrossLayoutHooks
from ..model.pair_strength import LearnedPairStrength, PairStrength

__all__ = ["FieldPairCorrelationMonitor"]

BatchFields = Callable[[Any], Sequence[torch.Tensor]]


class FieldPairCorrelationMonitor(CrossLayoutHooks, CountingMonitor):
    r"""Field x field correlation with the label, counted from the training data, beside the model's learned coupling.

    **Ground truth.** Every training batch is counted as it passes (``on_train_batch_end``; never a second pass
    over the data) into a :class:`~lightning_recanalysis.metrics.FieldPairCounts`: per pair of fields, counts of
    (value of F_i, value of F_j, label), each field bucketed to its ``num_values`` most frequent values plus
    "other" (chosen from the first ``warmup_batches`` batches; see that class for memory, e.g. 11.6 MiB for 39
    fields, and for why a bucketed MI is a lower bound of the full one). At the end of every ``every_n_epochs``-th
    epoch, in bits:

        MI((F_i, F_j); Y)                                  how much the pair, taken together, tells about the label
        II(F_i, F_j; Y) = MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y)     what the pair adds beyond its two fields

    with Miller-Madow's bias correction by default (``bias_correction``): the plug-in MI is biased up by about
    (value pairs - 1) / (2 N ln 2) bits, 340 times more for a pair of two 32-value fields than for a pair of two binary
    ones, which would rank pairs by their number of values.

    The ground truth is one pass over the data: the first analysed epoch of a fit (or of a resumed fit) is
    counted, summed across processes at its end, and kept for every later analysis (counting repeated epochs
    costs time and inflates the sample size the bias correction assumes). With data that change between epochs
    pass ``recount=True``: every analysed epoch counts its own pass from zero (the bucketing is kept). In
    ``trainer.validate``/``trainer.test`` the pass is the evaluation batches', analysed once.

    **Learned.** For a DCNv2 (Wang et al., WWW 2021): S_ij = (||W[j, i]||_F + ||W[i, j]||_F) / 2 from the first
    cross layer's weight, where block W[j, i] maps field i's embedding into field j's slot
    (:func:`~lightning_recanalysis.functional.cross_layer_pair_strength`); the cross input holds the batch's fields
    in column order, each of width K, from column ``cross_offset``. FM-family models (FM, FFM, FwFM) or any other
    layout pass ``pair_strength(module) -> [N, N]`` (e.g. FwFM's |r_ij|). Fields in tables of their own, a raw
    ``[L, D, D]`` kernel, a low-rank mixture or dense features in the cross input: the kernel is resolved as
    :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` resolves it, each field's columns are found on the
    first training batch (or given as ``cross_fields``) and matched to ``field_names`` by name (a table per feature
    is named after its module, ``embedding_dict.C1`` -> ``C1``), and S_ij is the same mean of block norms.

    **Agreement.** Spearman's rank correlation between the learned strength and the ground truth over the pairs
    i < j (the diagonal is left out): 1 = the model couples most the pairs that tell most.

    Logged tags (all at step ``trainer.global_step``; fields always in the configured order, by name):

    Scalars (every logger):
        - ``correlation/field_pair/agreement``: Spearman's rho, learned strength vs pair MI, over pairs i < j.
        - ``correlation/field_pair/agreement_interaction``: the same vs interaction information.
        - ``correlation/field_pair/samples``: training samples in the counted pass (all processes).
        - ``correlation/field_pair/other_fraction``: mean over fields of the share of samples whose value fell in
          the "other" bucket (0 = nothing merged, every estimate exact).

    Images (TensorBoard, rank 0):
        - ``correlation/field_pair/mutual_information``: N x N, MI((F_i, F_j); Y) in bits, diagonal MI(F_i; Y).
          Redrawn only when a cell moves by more than ``redraw_tolerance`` of the largest: it is a property of
          the data, which repeated epochs do not change.
        - ``correlation/field_pair/interaction_information``: N x N interaction information in bits, diverging
          colours around 0 (red = synergy, blue = redundancy), diagonal blank. Redrawn like the MI.
        - ``correlation/field_pair/learned_strength``: N x N learned pair strength (diagonal: a field's block with
          itself), titled with the agreement; every analysis.

    Text (TensorBoard, rank 0):
        - ``correlation/field_pair/inventory``: the fields, the bucketing, the counts' memory and where the
          learned strength comes from (at fit start).
        - ``correlation/field_pair/top_pairs``: the ``top_k`` pairs by MI (with their interaction information,
          learned strength and its rank among all pairs) and the ``top_k`` pairs by learned strength.
        - ``correlation/field_pair/findings``, ``.../coverage``: as the report says it; what runs.

    Where the data are: ``features`` and ``label`` name the batch keys (or integer indices of a tuple batch);
    ``features`` is ``[B, N]`` integer value ids, column f = field f (0-based within each field), ``label``
    ``[B]`` of 0/1. Or pass ``batch_fields(batch) -> (features, label)``. A bad batch raises (see Raises).

    Args:
        field_names: the names of the batch's N fields in column order (or N, to name them ``0``..``N-1``).
        fields: analyse only these fields (names or column indices), in this order; default all.
        features / label / batch_fields: where the data are, see above.
        field_dims: cardinality of each of the N fields, to check ids against (optional).
        num_values: frequent values kept per field (31: 32 buckets with "other").
        warmup_batches: batches held to choose the frequent values.
        count_every_n_batches: count one training batch in n (1 = all). Counting is O(samples x pairs), in the
            counted pass only; with many fields and a cheap model, a subsample gives the same estimates up to
            sampling noise (the docs' benchmarks give the cost).
        bias_correction: ``"miller_madow"`` (default) or ``"none"`` (the plug-in MI, as Pan et al. compute it).
        cross_layer: qualified name of the DCNv2 cross layer to read (an ``nn.Linear`` with a square weight),
            ``"auto"`` (default) for the first square ``nn.Linear`` inside a cross network (named or typed like
            ``cross``) of side ``cross_offset + N K`` with K the width of one of the model's embeddings, or ``None``.
        cross_offset: column of the cross input where field 0's embedding starts.
        cross_layer_index / cross_fields / cross_input: as in
            :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` (the kernel's layer, the input layout given,
            the module whose input is x_0).
        embed_dim: K, the per-field width in the cross input (default: the model's embedding width).
        pair_strength: ``fn(module) -> [N, N]`` learned strength over all N fields, used instead of the cross layer.
        top_k: pairs listed in the text.
        images: turn the images off (scalars, text and history are always kept).
        redraw_tolerance: see the ground-truth images above.
        recount: count every analysed epoch's pass anew (for data that change between epochs) instead of
            keeping the first analysed epoch's counts.
        every_n_epochs: analyse at the end of every n-th training epoch (and the last).
        strict: re-raise analysis errors instead of warning and skipping. Bad batches and configuration always raise.

    Raises:
        ValueError: at construction, for ``field_names`` that are not distinct names or a positive count,
            ``field_dims`` of another length, a ``bias_correction`` other than ``"miller_madow"``/``"none"``, a
            non-positive count, a negative ``cross_offset`` or a ``pair_strength`` that is not callable; at
            ``setup``, when the cross layer cannot be read over the fields; at a training batch, when a field is
            missing, an id is negative or beyond ``field_dims``, or a label is not 0/1; the message names both
            sides at that batch (the first one, for a layout error).

    Example:
        >>> import torch
        >>> from lightning_recanalysis.toy import ToyDCN, toy_loader, toy_trainer
        >>> _ = torch.manual_seed(0)
        >>> monitor = FieldPairCorrelationMonitor(["a", "b", "c"])  # the columns of the batch's "features"
        >>> toy_trainer([monitor]).fit(ToyDCN(), toy_loader())
        >>> record = monitor.records[-1]
        >>> record.samples, record.learned_source
        (32, '||W[j, i]||_F of cross')
        >>> round(record.field_mutual_information[0], 2)  # the toy label is field a's parity: 1 bit, bias-corrected
        1.01
    """

    namespace = "correlation/field_pair"
    analysis_name = "field-pair"
    record_type = FieldPairRecord
    findings_of = staticmethod(field_pair_findings)
    dashboard_category = "correlation: field pairs"
    dashboard_charts = {"learned strength vs pair MI (Spearman over pairs)": ["agreement"],  # a series a chart
                        "learned strength vs interaction information (Spearman)": ["agreement_interaction"],
                        "share of values in the \"other\" bucket": ["other_fraction"]}

    def __init__(
        self,
        field_names: Sequence[str] | int,
        *,
        fields: Sequence[str | int] | None = None,
        features: str | int = "features",
        label: str | int = "label",
        batch_fields: BatchFields | None = None,
        field_dims: Sequence[int] | None = None,
        num_values: int = 31,
        warmup_batches: int = 8,
        count_every_n_batches: int = 1,
        bias_correction: str = "miller_madow",
        cross_layer: str | None = "auto",
        cross_offset: int = 0,
        cross_layer_index: int = 0,
        cross_fields: Sequence[str | int] | None = None,
        cross_input: str | None = None,
        embed_dim: int | None = None,
        pair_strength: PairStrength | None = None,
        top_k: int = 10,
        images: bool = True,
        redraw_tolerance: float = 1e-3,
        recount: bool = False,
        every_n_epochs: int = 1,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, strict=strict)
        if isinstance(field_names, int):
            if field_names < 1:
                raise ValueError(f"field_names must be names or a positive number of fields, got {field_names}")
            field_names = [str(f) for f in range(field_names)]
        self.field_names = [str(n) for n in field_names]
        if not self.field_names or len(set(self.field_names)) != len(self.field_names):
            raise ValueError(f"field_names must be distinct and non-empty, got {self.field_names}")
        self.num_fields = len(self.field_names)
        self.fields = select_fields(self.field_names, fields)
        if field_dims is not None and len(field_dims) != self.num_fields:
            raise ValueError(f"field_dims has {len(field_dims)} entries but field_names has {self.num_fields} fields")
        for name, value in (("num_values", num_values), ("warmup_batches", warmup_batches),
                            ("count_every_n_batches", count_every_n_batches), ("top_k", top_k)):
            check_positive_int(name, value)
        if bias_correction not in ("none", "miller_madow"):
            raise ValueError(f"bias_correction must be 'miller_madow' or 'none', got {bias_correction!r}")
        check_positive_int("embed_dim", embed_dim, allow_none=True)
        check_non_negative_int("cross_offset", cross_offset)
        if pair_strength is not None and not callable(pair_strength):
            raise ValueError(f"pair_strength must be a function of the module, got {type(pair_strength).__name__}")
        self.keys = {"features": features, "label": label}
        self.batch_fields = batch_fields
        self._read_batch = BatchFieldReader(type(self).__name__, self.keys, batch_fields)
        self.field_dims = None if field_dims is None else [int(d) for d in field_dims]
        self.num_values, self.warmup_batches = num_values, warmup_batches
        self.count_every_n_batches = count_every_n_batches
        self.bias_correction = bias_correction
        self.cross_layer, self.cross_offset, self.embed_dim = cross_layer, cross_offset, embed_dim
        self.pair_strength, self.top_k = pair_strength, top_k
        self.images, self.redraw_tolerance = images, redraw_tolerance
        self.counts = self._new_counts(None)
        self._finder = CrossFinder(cross_layer, layer_index=cross_layer_index, cross_fields=cross_fields,
                                   input_module=cross_input, owner=type(self).__name__)
        self._strength = LearnedPairStrength(type(self).__name__, self.field_names, self.field_dims,
                                             pair_strength=pair_strength, cross_layer=cross_layer,
                                             cross_offset=cross_offset, embed_dim=embed_dim, finder=self._finder)
        self._loaded_vocabulary: list[list[int]] | None = None
        self.recount = bool(recount)
        self._counting = False
        self._counted = False  # the counts hold a whole pass (kept unless recount)

    def _state_key_fields(self) -> dict[str, Any]:
        return {"fields": tuple(self.selected_names), "features": self.keys["features"]}

    @property
    def selected_names(self) -> list[str]:
        return [self.field_names[f] for f in self.fields]

    def _new_counts(self, vocabulary) -> FieldPairCounts:
        dims = None if self.field_dims is None else [self.field_dims[f] for f in self.fields]
        return FieldPairCounts(len(self.fields), num_values=self.num_values, warmup_batches=self.warmup_batches,
                               vocabulary=vocabulary, field_names=self.selected_names, field_dims=dims)

    # ---- setup: everything that can be wrong is found here, before the first step ------------------------
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage not in ("fit", *EVALUATION_STAGES):
            return
        self.counts = self._new_counts(self._loaded_vocabulary)
        self._counted = False
        self._strength.setup(pl_module)

    @property
    def _cross(self) -> tuple[str, nn.Linear, int] | None:  # (name, layer, K) of a cross layer found at setup
        return self._strength.cross

    # The cross input's layout, when it must be read from a batch: see CrossLayoutHooks.
    def _layout_found(self, trainer: "pl.Trainer", before_backward: bool = False) -> None:
        self._strength.layout_found()
        if trainer is not None:  # the inventory again, now with the layout read from the batch
            self.writer.text(trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step)

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._place_counts(trainer, pl_module)
        self._counting = False
        self._strength.refresh_if_sharded(pl_module)
        if self._is_real_fit(trainer):
            self.writer.text(trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step)

    def coverage(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> list[dict[str, Any]]:
        return self._stated(trainer, [{"analysis": "ground-truth field-pair MI", "runs": True, "why": ""},
                                      self._strength.coverage()])

    def start_evaluation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._strength.refresh_if_sharded(pl_module)
        super().start_evaluation(trainer, pl_module)  # the counts' device, the inventory

    def inventory_markdown(self) -> str:
        n, k = len(self.fields), self.num_values + 1
        pairs = n * (n - 1) // 2
        passes = "every analysed epoch's pass" if self.recount else "one pass (the first analysed epoch), kept"
        state = (pairs * k * k * 2 + n * k * 2) * 8
        learned = self._strength.describe()
        return (f"Field pairs: {n} fields ({', '.join(self.selected_names)}), {pairs} pairs; each field's "
                f"{self.num_values} most frequent values (chosen from the first {self.warmup_batches} batches) and "
                f"\"other\"; counts {state / 2**20:.2f} MiB per process, of {passes}. Learned strength: "
                f"{learned}. MI in bits, bias correction: {self.bias_correction}.")

    # ---- counting ------------------------------------------------------------------------------------------
    @override
    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # One pass: the first analysed epoch's (or each analysed epoch's with recount); zero the counts first,
        # not the bucketing. Epochs not analysed are not counted.
        self._counting = self._is_analysis_epoch(trainer) and (self.recount or not self._counted)
        if self._counting:
            self.counts.reset()

    @override
    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # the cross layout, if waiting
        if self._counting:
            self.count_batch(batch, batch_idx)

    def count_batch(self, batch: Any, batch_idx: int) -> None:  # one batch in count_every_n_batches
        if batch_idx % self.count_every_n_batches:
            return
        features, label = self._read_batch(batch)
        if isinstance(features, torch.Tensor) and features.dim() == 2 and features.shape[1] != self.num_fields:
            raise ValueError(
                f"{type(self).__name__}: the batch's features have {features.shape[1]} fields (shape "
                f"{tuple(features.shape)}) but field_names configures {self.num_fields} fields "
                f"({short_list(self.field_names)})"
            )
        if isinstance(features, torch.Tensor) and features.dim() == 2 and self.fields != list(range(self.num_fields)):
            features = features[:, self.fields]
        self._count(lambda: self.counts.update(features, label))

    # ---- analysis ------------------------------------------------------------------------------------------
    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self._is_analysis_epoch(trainer):
            return
        counted = self.run_analysis(trainer, pl_module)
        # Kept only when the whole pass was counted; a pass whose counting failed is counted again next time.
        self._counted = self._counted or (self._counting and counted)
        self._counting = False

    def learned_strength(self, pl_module: nn.Module) -> tuple[torch.Tensor, str] | None:
        """``([n, n] float64, source)`` over the analysed fields, or None when there is nothing to read."""
        read = self._strength.read(pl_module)
        if read is None:
            return None
        full, source = read
        index = torch.tensor(self.fields)
        return full[index][:, index], source

    # The contract (see AnalysisCallback): CountingMonitor counts what waits and sums the counts over ranks.
    def compute(self, pl_module: nn.Module | None, agreed: Any = None) -> FieldPairRecord:
        return self.analyse(pl_module)

    def analyse(self, pl_module: nn.Module | None = None) -> FieldPairRecord:
        """The ground truth from the counts so far (and the learned strength from the module)."""
        counts = self.counts
        first, second = counts.pairs()
        truth = field_pair_matrices(counts.pair_tables(), counts.field_tables(), first, second,
                                    bias_correction=self.bias_correction)
        samples = counts.samples
        mi, ii = truth["mutual_information"], truth["interaction_information"]
        learned = self.learned_strength(pl_module) if pl_module is not None else None
        i, j = first.cpu(), second.cpu()
        agreement = agreement_ii = None
        if learned is not None and samples > 0 and i.numel() > 1:
            agreement = rank_correlation(learned[0][i, j], mi[i, j], undefined=0.0)
            agreement_ii = rank_correlation(learned[0][i, j], ii[i, j], undefined=0.0)
        return FieldPairRecord(
            fields=self.selected_names, samples=samples, bias_correction=self.bias_correction,
            other_fraction=counts.other_fraction().tolist(),
            field_mutual_information=truth["field_mutual_information"].tolist(), mutual_information=mi.tolist(),
            interaction_information=ii.tolist(), learned=None if learned is None else learned[0].tolist(),
            learned_source=None if learned is None else learned[1], agreement=agreement,
            agreement_interaction=agreement_ii)

    # ---- logging -------------------------------------------------------------------------------------------
    def log_record(self, trainer: "pl.Trainer", record: FieldPairRecord) -> None:
        ns, step = self.namespace, record.step
        self.writer.scalars(trainer, field_pair_tags(record), step)
        if trainer.is_global_zero:
            self.writer.text(trainer, f"{ns}/top_pairs", top_pairs_markdown(record, self.top_k), step)
            if self.images and record.samples > 0:
                for which in ("mutual_information", "interaction_information"):
                    if self._changed(which, getattr(record, which)):
                        self.writer.image(trainer, f"{ns}/{which}", field_pair_image(record, which), step)
                if record.learned is not None:
                    self.writer.image(trainer, f"{ns}/learned_strength", field_pair_image(record, "learned"), step)
        self.writer.flush(trainer)

    # ---- resume ----------------------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # The bucketing, so a resumed run counts into the same buckets. Not the counts: they are local to each
        # process, and a resumed fit counts its first analysed epoch again.
        state["vocabulary"] = self.counts.vocabulary
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        vocabulary = state_dict.get("vocabulary")
        if vocabulary is not None and len(vocabulary) == len(self.fields):
            self._loaded_vocabulary = [list(v) for v in vocabulary]
            # Restored after setup (some strategies): the metric exists already and has counted nothing yet.
            if self.counts.samples == 0 and not self.counts.frozen:
                self.counts.set_vocabulary(self._loaded_vocabulary)


