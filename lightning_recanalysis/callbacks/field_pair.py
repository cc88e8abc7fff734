"""FieldPairCorrelationMonitor: which pairs of fields tell about the label in the data, and which the model couples.

The "general feature correlation" of Pan et al. ("Ad Recommendation in a Collapsed and Entangled World", KDD 2024,
the generalisation of their target-behaviour correlation to any pair of features), shown the way the
field-weighted factorization machine line of work showed it (Juan et al., RecSys 2016; Pan et al., WWW 2018): an
N x N heatmap over fields. Beside the data's heatmap, the model's: how strongly its interaction layer couples each
pair (for DCNv2, the size of the first cross layer's block W[j, i]), and one number per epoch for their agreement.
See :mod:`lightning_recanalysis.functional.field_pair` for the formulas.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..functional.correlation import rank_correlation
from ..functional.field_pair import cross_layer_pair_strength, field_pair_matrices
from ..metrics.field_pair import FieldPairCounts
from .. import sharding
from ..raster import heatmap_image
from ..cross import block_pair_strength
from ..tables import is_square_linear, named_cross_layer
from ._cross import CrossFinder, field_units, one_table_holds_all, resharded, slots_by_name
from .base import AnalysisCallback, data_parallel_group

__all__ = ["FieldPairCorrelationMonitor"]

BatchFields = Callable[[Any], Sequence[torch.Tensor]]
PairStrength = Callable[[nn.Module], torch.Tensor]


class FieldPairCorrelationMonitor(AnalysisCallback):
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
    counted, its counts are summed across processes at its end, and they stay the ground truth of every later
    analysis, beside the learned strength read afresh each time. Repeated epochs over the same data would give
    the same tables again, at the cost of counting them (on the DCNv2 demo, most of the monitor's time), and
    accumulating them would multiply the sample size the bias correction assumes without adding information.
    With data that change between epochs (a stream, resampled or reloaded loaders) pass ``recount=True``: every
    analysed epoch then counts its own pass, the counts zeroed at its start (the bucketing is kept). Epochs that
    are not analysed (``every_n_epochs``) count nothing.

    **Learned.** For a DCNv2 (Wang et al., WWW 2021): S_ij = (||W[j, i]||_F + ||W[i, j]||_F) / 2 from the first
    cross layer's weight, where block W[j, i] maps field i's embedding into field j's slot
    (:func:`~lightning_recanalysis.functional.cross_layer_pair_strength`); the cross input must hold the batch's
    fields in column order, each of width K, from column ``cross_offset``. For FM-family models (FM, FFM, FwFM) or
    any other layout pass ``pair_strength(module) -> [N, N]`` (e.g. FwFM's |r_ij|). A model whose fields live in
    tables of their own (one per feature, or shared), whose cross kernel is a raw ``[L, D, D]`` tensor or a
    low-rank mixture, or whose cross input mixes in dense features: the kernel is resolved as the
    :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` resolves it, and each field's columns are found on the
    first training batch (or given as ``cross_fields``); the batch's ``field_names`` are matched to the fields
    found by name (a table per feature is named after its module, e.g. ``embedding_dict.C1`` -> ``C1``), and
    S_ij is the same mean of block norms over those columns.

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

    Where the data are: ``features`` and ``label`` name the batch keys (or integer indices of a tuple batch);
    ``features`` is ``[B, N]`` integer value ids, column f = field f (0-based within each field), ``label``
    ``[B]`` of 0/1. Or pass ``batch_fields(batch) -> (features, label)``. A batch whose field count differs from
    ``field_names``, negative ids, ids beyond ``field_dims`` or labels outside {0, 1} raise a ``ValueError`` that
    names both sides at that batch (the first one, for a layout error).

    Args:
        field_names: the names of the batch's N fields in column order (or N, to name them ``0``..``N-1``).
        fields: analyse only these fields (names or column indices), in this order; default all.
        features / label / batch_fields: where the data are, see above.
        field_dims: cardinality of each of the N fields, to check ids against (optional).
        num_values: frequent values kept per field (31: 32 buckets with "other").
        warmup_batches: batches held to choose the frequent values.
        count_every_n_batches: count one training batch in n (1 = all). Counting costs about 0.5 ms per 1024
            samples of 8 fields and 3 ms of 39 fields on a CPU thread (3.5 to 12 ns per sample and pair), in the
            counted pass only; with many fields and a cheap model, a subsample gives the same estimates up to
            sampling noise.
        bias_correction: ``"miller_madow"`` (default) or ``"none"`` (the plug-in MI, as Pan et al. compute it).
        cross_layer: qualified name of the DCNv2 cross layer to read (an ``nn.Linear`` with a square weight),
            ``"auto"`` (default) for the first square ``nn.Linear`` of side ``cross_offset + N K`` with K the width
            of one of the model's embeddings, or ``None``.
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
    """

    namespace = "correlation/field_pair"

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
        self.fields = self._resolve_fields(fields)
        if field_dims is not None and len(field_dims) != self.num_fields:
            raise ValueError(f"field_dims has {len(field_dims)} entries but field_names has {self.num_fields} fields")
        for name, value in (("num_values", num_values), ("warmup_batches", warmup_batches),
                            ("count_every_n_batches", count_every_n_batches), ("top_k", top_k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if bias_correction not in ("none", "miller_madow"):
            raise ValueError(f"bias_correction must be 'miller_madow' or 'none', got {bias_correction!r}")
        if embed_dim is not None and (not isinstance(embed_dim, int) or embed_dim < 1):
            raise ValueError(f"embed_dim must be a positive integer, got {embed_dim!r}")
        if not isinstance(cross_offset, int) or cross_offset < 0:
            raise ValueError(f"cross_offset must be a non-negative integer, got {cross_offset!r}")
        if pair_strength is not None and not callable(pair_strength):
            raise ValueError(f"pair_strength must be a function of the module, got {type(pair_strength).__name__}")
        self.keys = {"features": features, "label": label}
        self.batch_fields = batch_fields
        self.field_dims = None if field_dims is None else [int(d) for d in field_dims]
        self.num_values, self.warmup_batches = num_values, warmup_batches
        self.count_every_n_batches = count_every_n_batches
        self.bias_correction = bias_correction
        self.cross_layer, self.cross_offset, self.embed_dim = cross_layer, cross_offset, embed_dim
        self.pair_strength, self.top_k = pair_strength, top_k
        self.images, self.redraw_tolerance = images, redraw_tolerance
        self.counts = self._new_counts(None)
        self._cross: tuple[str, nn.Linear, int] | None = None
        self._finder = CrossFinder(cross_layer, layer_index=cross_layer_index, cross_fields=cross_fields,
                                   input_module=cross_input, owner=type(self).__name__)
        self._slots = None
        self._loaded_vocabulary: list[list[int]] | None = None
        self._drawn: dict[str, np.ndarray] = {}
        self.recount = bool(recount)
        self._counting = False
        self._counted = False  # the counts hold a whole pass (kept unless recount)

    def _state_key_fields(self) -> dict[str, Any]:
        return {"fields": tuple(self.selected_names), "features": self.keys["features"]}

    @property
    def selected_names(self) -> list[str]:
        return [self.field_names[f] for f in self.fields]

    def _resolve_fields(self, fields: Sequence[str | int] | None) -> list[int]:
        if fields is None:
            return list(range(self.num_fields))
        chosen = []
        for k, f in enumerate(fields):
            if isinstance(f, str):
                if f not in self.field_names:
                    raise ValueError(f"fields[{k}] = {f!r} is not one of the {self.num_fields} field_names "
                                     f"({', '.join(self.field_names)})")
                chosen.append(self.field_names.index(f))
            elif isinstance(f, (int, np.integer)) and not isinstance(f, bool):
                if not 0 <= int(f) < self.num_fields:
                    raise ValueError(f"fields[{k}] = {int(f)} is out of range: the batch has {self.num_fields} "
                                     f"fields (field_names), so indices go from 0 to {self.num_fields - 1}")
                chosen.append(int(f))
            else:
                raise ValueError(f"fields[{k}] must be a field name or a column index, got {f!r}")
        if len(set(chosen)) != len(chosen) or not chosen:
            raise ValueError(f"fields must name distinct fields, at least one; got {list(fields)}")
        return chosen

    def _new_counts(self, vocabulary) -> FieldPairCounts:
        dims = None if self.field_dims is None else [self.field_dims[f] for f in self.fields]
        return FieldPairCounts(len(self.fields), num_values=self.num_values, warmup_batches=self.warmup_batches,
                               vocabulary=vocabulary, field_names=self.selected_names, field_dims=dims)

    # ---- setup: everything that can be wrong is found here, before the first step ------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self.counts = self._new_counts(self._loaded_vocabulary)
        self._counted = False
        self._drawn = {}
        self._cross = None
        if self.pair_strength is not None:
            self._check_strength(self._call_pair_strength(pl_module), "at setup")
        elif self.cross_layer is not None:
            self._slots = None
            # The demo's layout (one table holds every field, an nn.Linear reads them in batch order) as before;
            # any other through the kernel forms and the input order of _cross.
            named = dict(pl_module.named_modules()).get(self.cross_layer)
            legacy = (self._finder.cross_fields is None and one_table_holds_all(pl_module, self.field_dims)
                      and (self.cross_layer == "auto" or is_square_linear(named)))
            self._cross = self._find_cross_layer(pl_module) if legacy else None
            if self._cross is None:
                units = field_units(pl_module, self.field_names, self.field_dims)
                if units:
                    self._finder.setup(pl_module, units)
            if self._cross is None and self._finder.layout is not None:
                self._slots = slots_by_name(self._finder, self.field_names)
            if self._cross is None and self._finder.layout is None and not self._finder.waiting:
                warnings.warn(
                    f"{type(self).__name__}: no DCNv2 cross layer found (a square nn.Linear of side "
                    f"{self.cross_offset} + {self.num_fields} x K, K an embedding width of the model); only the "
                    "ground truth is logged. Pass cross_layer='<module name>' (and embed_dim, cross_offset), "
                    "pair_strength=fn(module) for another model, or cross_layer=None to silence this.",
                    RuntimeWarning,
                    stacklevel=2,
                )

    # The cross input's layout, when it must be read from a batch: hooks for the first step's forward only.
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._finder.waiting:
            self._finder.start()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._finder.finish():
            self._layout_found(trainer)

    def _layout_found(self, trainer) -> None:
        self._slots = slots_by_name(self._finder, self.field_names)
        if trainer is not None:  # the inventory again, now with the layout read from the batch
            self.writer.text(trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step)

    def _embedding_widths(self, model: nn.Module) -> list[int]:
        if self.embed_dim is not None:
            return [self.embed_dim]
        widths = {m.embedding_dim for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
        return sorted(w for w in widths if w > 1)

    def _find_cross_layer(self, model: nn.Module) -> tuple[str, nn.Linear, int] | None:
        n, offset = self.num_fields, self.cross_offset
        widths = self._embedding_widths(model)
        modules = dict(model.named_modules())
        if self.cross_layer != "auto":
            layer = named_cross_layer(model, self.cross_layer)
            side = layer.weight.shape[0]
            fits = [k for k in widths if offset + n * k <= side]
            exact = [k for k in fits if offset + n * k == side]
            if exact or fits:
                return self.cross_layer, layer, (exact or fits)[-1]
            if not widths and (side - offset) % n == 0 and side > offset:
                return self.cross_layer, layer, (side - offset) // n
            raise ValueError(
                f"cross_layer '{self.cross_layer}' has side {side}, which cannot hold {n} fields (field_names) of "
                f"width {widths or 'K'} from cross_offset={offset}; pass embed_dim= and cross_offset= to match "
                "the model's cross input"
            )
        for name, layer in modules.items():
            if is_square_linear(layer):
                for k in widths:
                    if layer.weight.shape[0] == offset + n * k:
                        return name, layer, k
        return None

    def _call_pair_strength(self, pl_module) -> torch.Tensor:
        with torch.no_grad():
            return self.pair_strength(pl_module)

    def _check_strength(self, strength, when: str) -> torch.Tensor:
        n = self.num_fields
        if not isinstance(strength, torch.Tensor) or tuple(strength.shape) != (n, n):
            shape = tuple(strength.shape) if isinstance(strength, torch.Tensor) else type(strength).__name__
            raise ValueError(
                f"{type(self).__name__}: pair_strength returned {shape} {when}, but field_names configures {n} "
                f"fields: it must return an [{n}, {n}] tensor over all of them, in column order"
            )
        return strength.detach().to(torch.float64).cpu()

    def on_fit_start(self, trainer, pl_module) -> None:
        # Count where the batches are (the model's device), and sum there across processes.
        self.counts = self.counts.to(pl_module.device)
        # Under tensor parallelism several ranks see the same batches: counts are summed over the ranks whose
        # batches differ (every rank under DDP).
        self.counts.process_group = data_parallel_group(trainer)
        self._counting = False
        if (self._cross is None and self.pair_strength is None and self.cross_layer is not None
                and resharded(pl_module)):
            # The strategy replaced the parameters after setup: the kernel is resolved again on the current ones
            # (before any batch, so nothing the first batch finds is lost).
            units = field_units(pl_module, self.field_names, self.field_dims)
            if units:
                self._finder.setup(pl_module, units)
                if self._finder.layout is not None:
                    self._slots = slots_by_name(self._finder, self.field_names)
        if self._is_real_fit(trainer):
            self.writer.text(trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step)

    def inventory_markdown(self) -> str:
        n, k = len(self.fields), self.num_values + 1
        pairs = n * (n - 1) // 2
        passes = "every analysed epoch's pass" if self.recount else "one pass (the first analysed epoch), kept"
        state = (pairs * k * k * 2 + n * k * 2) * 8
        if self.pair_strength is not None:
            learned = "the user's `pair_strength` function"
        elif self._cross is not None:
            name, layer, width = self._cross
            learned = (f"cross layer `{name}` ({layer.weight.shape[0]} x {layer.weight.shape[1]}), "
                       f"{self.num_fields} fields of width {width} from column {self.cross_offset}")
        elif self._finder.layout is not None:
            learned = self._finder.describe()
        elif self._finder.waiting:
            learned = "a cross layer whose field order is read on the first training batch"
        else:
            learned = "nothing (ground truth only)"
        return (f"Field pairs: {n} fields ({', '.join(self.selected_names)}), {pairs} pairs; each field's "
                f"{self.num_values} most frequent values (chosen from the first {self.warmup_batches} batches) and "
                f"\"other\"; counts {state / 2**20:.2f} MiB per process, of {passes}. Learned strength: "
                f"{learned}. MI in bits, bias correction: {self.bias_correction}.")

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        ns = self.namespace
        return {"correlation: field pairs": {
            "agreement of learned strength with the data (Spearman over pairs)": [
                "Multiline", [rf"^{ns}/agreement$", rf"^{ns}/agreement_interaction$"]],
            "share of values in the \"other\" bucket": ["Multiline", [rf"^{ns}/other_fraction$"]],
        }}

    # ---- counting ------------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # One pass: the first analysed epoch's (or each analysed epoch's with recount); zero the counts first,
        # not the bucketing. Epochs not analysed are not counted.
        self._counting = self._is_analysis_epoch(trainer) and (self.recount or not self._counted)
        if self._counting:
            self.counts.reset()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._finder.finish():  # no backward seen (manual optimisation without one)
            self._layout_found(trainer)
        if not self._counting or batch_idx % self.count_every_n_batches:
            return
        features, label = self._fields(batch)
        if isinstance(features, torch.Tensor) and features.dim() == 2 and features.shape[1] != self.num_fields:
            raise ValueError(
                f"{type(self).__name__}: the batch's features have {features.shape[1]} fields (shape "
                f"{tuple(features.shape)}) but field_names configures {self.num_fields} fields "
                f"({_short(self.field_names)})"
            )
        if isinstance(features, torch.Tensor) and features.dim() == 2 and self.fields != list(range(self.num_fields)):
            features = features[:, self.fields]
        try:
            self.counts.update(features, label)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {err}") from None

    def _flush_counts(self) -> None:
        try:
            self.counts.flush()
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {err}") from None

    def _fields(self, batch) -> tuple[Any, Any]:
        if self.batch_fields is not None:
            out = tuple(self.batch_fields(batch))
            if len(out) != 2:
                raise ValueError(f"{type(self).__name__}: batch_fields must return (features, label), got "
                                 f"{len(out)} values")
            return out
        values = []
        for what, key in self.keys.items():
            try:
                values.append(batch[key])
            except (KeyError, IndexError, TypeError):
                available = list(batch.keys()) if isinstance(batch, Mapping) else f"a {type(batch).__name__}"
                raise ValueError(
                    f"{type(self).__name__}: the batch has no {what} at {key!r}; batch: {available}. Pass "
                    f"{what}=<key or index>, or batch_fields=fn(batch) -> (features, label)."
                ) from None
        return values[0], values[1]

    # ---- analysis ------------------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._is_analysis_epoch(trainer):
            return
        counted = self._analyse_counts(trainer, pl_module, "field-pair", self.counts, self._flush_counts)
        # Kept only when the whole pass was counted; a pass whose counting failed is counted again next time.
        self._counted = self._counted or (self._counting and counted)
        self._counting = False

    def learned_strength(self, pl_module: nn.Module) -> tuple[torch.Tensor, str] | None:
        """``([n, n] float64, source)`` over the analysed fields, or None when there is nothing to read."""
        if self.pair_strength is not None:
            full = self._check_strength(self._call_pair_strength(pl_module), "during the analysis")
            source = "pair_strength"
        elif self._cross is not None:
            name, layer, width = self._cross
            full = cross_layer_pair_strength(sharding.full_tensor(layer.weight), self.num_fields, width,
                                             offset=self.cross_offset)
            source = f"||W[j, i]||_F of {name}"
        elif self._slots is not None:
            full = block_pair_strength(self._finder.kernel.matrix(), self._slots)
            source = f"||W[j, i]||_F of {self._finder.kernel.name}"
        else:
            return None
        index = torch.tensor(self.fields)
        return full[index][:, index], source

    def analyse(self, pl_module: nn.Module | None = None) -> dict[str, Any]:
        """The ground truth from the counts so far (and the learned strength from the module); plain values."""
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
            agreement = rank_correlation(learned[0][i, j], mi[i, j])
            agreement_ii = rank_correlation(learned[0][i, j], ii[i, j])
        return {
            "fields": self.selected_names,
            "samples": samples,
            "bias_correction": self.bias_correction,
            "other_fraction": counts.other_fraction().tolist(),
            "field_mutual_information": truth["field_mutual_information"].tolist(),
            "mutual_information": mi.tolist(),
            "interaction_information": ii.tolist(),
            "learned": None if learned is None else learned[0].tolist(),
            "learned_source": None if learned is None else learned[1],
            "agreement": agreement,
            "agreement_interaction": agreement_ii,
        }

    # ---- logging -------------------------------------------------------------------------------------------
    def _log(self, trainer, record: dict[str, Any]) -> None:
        ns, step = self.namespace, record["step"]
        scalars = {f"{ns}/samples": float(record["samples"]),
                   f"{ns}/other_fraction": float(np.mean(record["other_fraction"]))}
        if record["agreement"] is not None:
            scalars[f"{ns}/agreement"] = record["agreement"]
            scalars[f"{ns}/agreement_interaction"] = record["agreement_interaction"]
        self.writer.scalars(trainer, scalars, step)
        if trainer.is_global_zero:
            self.writer.text(trainer, f"{ns}/top_pairs", top_pairs_markdown(record, self.top_k), step)
            if self.images and record["samples"] > 0:
                for which in ("mutual_information", "interaction_information"):
                    if self._changed(which, record[which]):
                        self.writer.image(trainer, f"{ns}/{which}", field_pair_image(record, which),
                                          step)
                if record["learned"] is not None:
                    self.writer.image(trainer, f"{ns}/learned_strength",
                                      field_pair_image(record, "learned"), step)
        self.writer.flush(trainer)

    def _changed(self, key: str, values) -> bool:
        """Whether a data-derived image moved by more than ``redraw_tolerance`` of its largest cell since drawn."""
        current = np.asarray(values, dtype=np.float64)
        previous = self._drawn.get(key)
        if previous is not None and previous.shape == current.shape:
            scale = max(float(np.abs(previous).max(initial=0.0)), 1e-300)
            if float(np.abs(current - previous).max(initial=0.0)) / scale <= self.redraw_tolerance:
                return False
        self._drawn[key] = current
        return True

    # ---- resume ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # The bucketing, so a resumed run counts into the same buckets. Not the counts: they are local to each
        # process, and a resumed fit counts its first analysed epoch again.
        state["vocabulary"] = self.counts.vocabulary
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        vocabulary = state_dict.get("vocabulary")
        if vocabulary is not None and len(vocabulary) == len(self.fields):
            self._loaded_vocabulary = [list(v) for v in vocabulary]
            # Restored after setup (some strategies): the metric exists already and has counted nothing yet.
            if self.counts.samples == 0 and not self.counts.frozen:
                self.counts.set_vocabulary(self._loaded_vocabulary)


def _short(names: Sequence[str], limit: int = 6) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= limit else ", ".join(names[: limit - 1]) + f", ..., {names[-1]}"


def _pairs_ranked(matrix: np.ndarray) -> list[tuple[int, int]]:
    """Pairs i < j, largest value first (ties by position, so the order is reproducible)."""
    n = matrix.shape[0]
    i, j = np.triu_indices(n, 1)
    order = np.lexsort((j, i, -matrix[i, j]))
    return [(int(i[k]), int(j[k])) for k in order]


def top_pairs_markdown(record: dict[str, Any], top_k: int) -> str:
    """Markdown tables of the strongest pairs in the data and in the model."""
    names = record["fields"]
    mi = np.asarray(record["mutual_information"], dtype=np.float64)
    ii = np.asarray(record["interaction_information"], dtype=np.float64)
    learned = None if record["learned"] is None else np.asarray(record["learned"], dtype=np.float64)
    by_mi = _pairs_ranked(mi)
    learned_rank = {} if learned is None else {p: r + 1 for r, p in enumerate(_pairs_ranked(learned))}
    unit = "bits" + (", Miller-Madow corrected" if record.get("bias_correction") == "miller_madow" else "")
    lines = [f"**Top pairs in the data** ({record['samples']:,} samples; {unit}; {len(by_mi)} pairs)", "",
             "| rank | pair | MI((F_i, F_j); Y) | interaction information | learned strength | learned rank |",
             "|---|---|---|---|---|---|"]
    for r, (i, j) in enumerate(by_mi[:top_k], 1):
        s = "" if learned is None else f"{learned[i, j]:.4g}"
        lr = "" if learned is None else str(learned_rank[(i, j)])
        lines.append(f"| {r} | {names[i]} x {names[j]} | {mi[i, j]:.4g} | {ii[i, j]:.4g} | {s} | {lr} |")
    if learned is not None:
        mi_rank = {p: r + 1 for r, p in enumerate(by_mi)}
        lines += ["", f"**Top pairs in the model** ({record['learned_source']}; agreement with MI: "
                      f"{_fmt(record['agreement'])}, with interaction information: "
                      f"{_fmt(record['agreement_interaction'])})", "",
                  "| rank | pair | learned strength | MI rank |", "|---|---|---|---|"]
        for r, (i, j) in enumerate(_pairs_ranked(learned)[:top_k], 1):
            lines.append(f"| {r} | {names[i]} x {names[j]} | {learned[i, j]:.4g} | {mi_rank[(i, j)]} |")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def field_pair_image(record: dict[str, Any], which: str) -> np.ndarray:
    """N x N heatmap (RGB array) of one of the record's matrices, fields in the configured order on both axes.

    Drawn with Pillow (:mod:`lightning_recanalysis.raster`): a few milliseconds where matplotlib took about
    400 ms a figure, which made the live images most of the monitor's cost on a GPU.
    """
    names = record["fields"]
    data = np.asarray(record[which], dtype=np.float64)
    when = f"epoch {record['epoch']}"
    kwargs: dict[str, Any] = {"vmin": 0.0, "vmax": None, "cmap": "viridis"}
    if which == "mutual_information":
        title = f"MI((F_i, F_j); Y), diagonal MI(F_i; Y), {record['samples']:,} samples, {when}"
        label = "bits"
    elif which == "interaction_information":
        data = data.copy()
        np.fill_diagonal(data, np.nan)
        bound = float(np.nanmax(np.abs(data))) if data.size > 1 and np.isfinite(data).any() else 0.0
        bound = bound if bound > 0 else 1e-12
        title = f"interaction information MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y), {when}"
        label = "bits (+ synergy, - redundancy)"
        kwargs = {"vmin": -bound, "vmax": bound, "cmap": "RdBu_r"}
    else:
        title = f"learned pair strength ({record['learned_source']}), {when}"
        if record.get("agreement") is not None:
            title += f"; rank corr. with MI {record['agreement']:.2f}"
        label = "strength"
        kwargs = {"vmin": None, "vmax": None, "cmap": "magma"}
    if which == "mutual_information" and record.get("bias_correction") == "miller_madow":
        label += ", Miller-Madow corrected"
    return heatmap_image(data, title=title, row_labels=names, col_labels=names, xlabel="field j", ylabel="field i",
                         colorbar_label=label, annotate=len(names) <= 12 and which != "interaction_information",
                         fmt="{:.3f}", **kwargs)


__all__ += ["field_pair_image", "top_pairs_markdown"]
