"""EmbeddingSpectrumMonitor: dimensional collapse of embedding tables, live in TensorBoard.

Guo et al., "On the Embedding Collapse when Scaling up Recommendation Models" (ICML 2024): for each field's table
E_i, normalise its rows, take the singular values s_1 >= ... >= s_r and read

    information abundance  IA = sum(s) / s_1           in [1, min(rows, K)]

beside the same number for the randomly initialised table. See :mod:`lightning_recanalysis.functional.spectrum`.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
import warnings
from typing import Any, ContextManager, Mapping, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from ..functional.spectrum import RowNormalizedGram, row_normalized_gram
from ..figures.collapse import ia_vs_init_image, interaction_image, spectrum_heatmap_image
# The live Text tab shows the same findings sentences as the report: both read them from the findings layer.
from ..findings.collapse import collapse_findings
from ..model.field_sets import AnalysisUnit, field_gram
from ..parallel.sharding import all_reduce_gram
from ..records import Interaction, SpectrumRecord, interaction_tags, spectrum_tags
from ..model.tables import ColumnGroups, EmbeddingTable, FieldDims, TableView
from ..model.cross.finder import CrossFinder, resharded
from ..model.cross.hooks import CrossLayoutHooks
from ..model.spectrum_analysis import InteractionReads, interaction_matrix, interaction_reads, view_spectra
from ..model.spectrum_layout import SpectrumLayout
from .base import AnalysisCallback
from .evaluation import EVALUATION_STAGES, evaluation_has_data

__all__ = ["EmbeddingSpectrumMonitor"]


class EmbeddingSpectrumMonitor(CrossLayoutHooks, AnalysisCallback):
    r"""Singular-value spectra and information abundance of every embedding table, per field, while training.

    Runs once at fit start on the initial weights (the paper's "randomly initialised" baseline, logged at step 0)
    and then at the end of every ``every_n_epochs``-th training epoch. Tables are found by
    :func:`~lightning_recanalysis.model.tables.discover_tables`; a model with none is an error at ``setup``. In
    ``trainer.validate``/``trainer.test`` it analyses the loaded weights once (the cross input's layout, where it
    must be read, on the first evaluation batch), with the baseline of the checkpoint's own history if it has one.

    **Where the fields are.** A field is a row range of a table (``field_dims``), a whole table, or a table shared
    by several features (analysed once, named by all: ``item+hist_item``). The single-field tables of one width
    form one *field set* (``field_sets=True``), shown like the fields of a concatenated table: a per-feature model
    of N tables gets one spectrum heatmap, one IA chart and one finding for its N fields, named after the
    tables' common module prefix; tables of several widths get one field set per width, ``<prefix>[K=<width>]``
    (IA is bounded by the width, so widths are not mixed on one scale). See :mod:`lightning_recanalysis.model.field_sets`.

    **Cross layer.** The interaction matrix reads a DCN-style cross layer's kernel: an ``nn.Linear``, a ``[D, D]``
    or ``[L, D, D]`` tensor (``cross_layer_index``), or DCNv2's mixture of low-rank experts (the gate-free sum
    over experts of U_e C_e V_e^T; see :mod:`lightning_recanalysis.model.cross.kernels`). The fields' order in its input is
    the table's own for a concatenated table whose side fits exactly (as before), given as ``cross_fields``, or
    found on the first training batch by matching the input's columns against each embedding lookup
    (:mod:`lightning_recanalysis.model.cross.discovery`; dense features anywhere are allowed). The initial interaction
    matrix is then computed at that batch, before the first optimiser step, and logged at step 0. The matrix
    covers the fields of the unit with most fields in the input (fields of one width); the inventory shows the
    layout.

    Logged tags (``<view>`` is the table's module name, ``table[group]`` for a column-split table, or a field
    set's name; ``<field>`` a field name; all at step ``trainer.global_step``):

    Scalars (every logger):
        - ``collapse/<view>/<field>/information_abundance``: IA = sum(s) / s_1 of the row-normalised field table.
        - ``collapse/<view>/<field>/effective_rank``: exp(entropy of s / sum(s)).
        - ``collapse/<view>/<field>/stable_rank``: sum(s^2) / s_1^2.
        - ``collapse/<view>/<field>/information_abundance_vs_init``: IA / IA at fit start (1 = unchanged).
        - ``collapse/<view>/mean_information_abundance``: mean IA over the view's fields.
        - ``collapse/<view>/excluded_rows``: rows left out as non-finite or all-zero (0 when healthy).
        - ``collapse/<view>/interaction/<field>/mean_information_abundance``: for a DCNv2-style cross layer,
          the mean IA of the field's sub-embeddings over its partners (a row of the interaction matrix).

    Histograms (TensorBoard):
        - ``collapse/<view>/<field>/normalized_spectrum``: the values s_k / s_1, k = 1..min(rows, K).

    Images (TensorBoard):
        - ``collapse/<view>/spectrum_heatmap``: fields (sorted by cardinality) x singular-value index, s_k / s_1,
          colour 0 to 1; cells beyond a field's rows (no such singular value) hatched, with a legend line.
        - ``collapse/<view>/information_abundance_vs_init``: IA per field now beside IA at fit start.
        - ``collapse/<view>/interaction_information_abundance``: the N x N matrix of IA of field i's
          sub-embedding as seen by field j through the first cross layer, rows and columns in the cross layer's
          field order, as the field-pair maps (the report adds the same matrix sorted by the fields' own IA).

    Text (TensorBoard):
        - ``collapse/inventory``: the tables, fields, column groups and field sets found, and the cross layer's
          kernel form and input layout (logged again at the first training batch when the order is read there).
        - ``collapse/findings``: the fields that waste dimensions, interaction collapse and what to do, as the
          report says it (:mod:`lightning_recanalysis.findings.collapse`); ``collapse/coverage``: what runs.

    Custom Scalars (with :class:`~lightning_recanalysis.AnalysisReport`): per view, one chart each for IA,
    IA vs init and effective rank of all its fields, and the interaction row means.

    Args:
        include / exclude / parameters / field_dims / column_groups: table discovery, see
            :func:`~lightning_recanalysis.model.tables.discover_tables`.
        row_sharded: globs of table names whose rows are split across ranks (each rank's weight holds its own
            shard, as in TorchRec row-wise sharding): their Gram matrices are summed over the process group with
            one all-reduce per field, so every rank gets the whole table's spectrum. Such a table is one field.
            Each rank's part is computed before any all-reduce: if it fails on one rank, every rank skips the
            analysis (with a warning) instead of waiting for that rank in the all-reduce.
        cross_layer: the DCN cross layer: a module name (square ``nn.Linear``, a module holding ``kernels`` or a
            low-rank mixture), a kernel tensor's name, ``{"U": .., "V": .., "C": ..}``, ``"auto"`` (a square
            ``nn.Linear`` inside a cross network, one named or typed like ``cross``, of side ``cross_offset`` + N K
            for a concatenated table, else the first recognised kernel whose input holds the fields on the first
            batch; any other square layer only when named), or ``None`` to skip the interaction analysis.
        cross_offset: column of the cross input where the first field's embedding starts (concatenated table).
        cross_layer_index: which layer of an ``[L, D, D]`` kernel or a low-rank mixture (default the first).
        cross_fields: the cross input's layout, given: field names in input order (a field set's field names,
            or ``unit/field``), integers for runs of dense columns, e.g. ``[13, "C1", "C2", ...]``. Needed only
            where the first batch cannot tell (two fields looking up identical rows).
        cross_input: the module whose first input is x_0 (default: the cross layer's own module, or the
            parameter's owner).
        field_sets: group same-width single-field tables into field sets (default); ``False`` shows each
            table alone.
        log_initial: analyse the initial weights at fit start (the baseline of ``*_vs_init``).
        every_n_epochs: analyse at the end of every n-th training epoch (and the last).
        histograms / images: turn those outputs off (scalars and history are always kept).
        strict: re-raise analysis errors instead of warning and skipping.

    Raises:
        ValueError: at construction, for a non-positive ``every_n_epochs``; at ``setup``, when no embedding table
            is found (``include``/``exclude``/``parameters`` match none), when ``field_dims`` do not add up to a
            table's rows or ``column_groups`` to its width, or when ``cross_layer`` names no cross kernel or one
            whose input cannot hold the fields; on the first training batch, when ``cross_layer`` was named and its
            input layout cannot be matched to the lookups.

    Example:
        >>> import torch
        >>> from lightning_recanalysis.toy import ToyDCN, toy_loader, toy_trainer
        >>> _ = torch.manual_seed(0)
        >>> monitor = EmbeddingSpectrumMonitor(field_dims=[4, 6, 8])  # one table holding three fields
        >>> toy_trainer([monitor]).fit(ToyDCN(), toy_loader())
        >>> [(r.stage, r.epoch) for r in monitor.records]  # the initial weights, then each epoch
        [('init', 0), ('epoch', 0)]
        >>> fields = monitor.records[-1].views["embedding"]["fields"]
        >>> all(1 <= f["information_abundance"] <= 4 for f in fields.values())  # IA is at most the width, 4
        True
        >>> monitor.records[-1].interaction["fields"]  # the cross layer's input, in table order
        ['field_0', 'field_1', 'field_2']
    """

    namespace = "collapse"
    analysis_name = "spectrum"
    record_type = SpectrumRecord
    findings_of = staticmethod(collapse_findings)

    def __init__(
        self,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        parameters: Sequence[str] | None = None,
        field_dims: FieldDims | Mapping[str, FieldDims] | None = None,
        column_groups: ColumnGroups | Mapping[str, ColumnGroups] | None = None,
        row_sharded: Sequence[str] | None = None,
        cross_layer: str | None = "auto",
        cross_offset: int = 0,
        cross_layer_index: int = 0,
        cross_fields: Sequence[str | int] | None = None,
        cross_input: str | None = None,
        field_sets: bool = True,
        log_initial: bool = True,
        every_n_epochs: int = 1,
        histograms: bool = True,
        images: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, strict=strict)
        self.include, self.exclude, self.parameters = include, exclude, parameters
        self.field_dims, self.column_groups = field_dims, column_groups
        self.row_sharded = list(row_sharded or [])
        self.cross_layer, self.cross_offset = cross_layer, cross_offset
        self.log_initial, self.histograms, self.images = log_initial, histograms, images
        self.field_sets = field_sets
        self._layout = SpectrumLayout(row_sharded=self.row_sharded, field_sets=field_sets, cross_layer=cross_layer,
                                      cross_offset=cross_offset, include=include, exclude=exclude,
                                      parameters=parameters, field_dims=field_dims, column_groups=column_groups)
        self._finder = CrossFinder(cross_layer, layer_index=cross_layer_index, cross_fields=cross_fields,
                                   input_module=cross_input, owner=type(self).__name__, quiet_auto=True)
        self._warned_excluded = False

    def _state_key_fields(self) -> dict[str, Any]:
        return {"include": self.include, "exclude": self.exclude, "parameters": self.parameters}

    # ---- setup: everything that can be wrong is found here, before the first step ------------------------
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage not in ("fit", *EVALUATION_STAGES):
            return
        self._layout.find(pl_module)
        self._finder.setup(pl_module, self.units, legacy=self._layout.table_order_layout)
        rank_zero_info(f"{type(self).__name__}: {self._layout.summary(self._finder)}")

    def _is_sharded(self, table_name: str) -> bool:
        return self._layout.is_sharded(table_name)

    @property
    def tables(self) -> list[EmbeddingTable]:
        return self._layout.tables

    @property
    def units(self) -> list[AnalysisUnit]:
        return self._layout.units

    # ---- when ------------------------------------------------------------------------------------------------
    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self._is_real_fit(trainer):
            return
        self._read_weights_as_sharded(pl_module)
        self.writer.text(trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step)
        # A resumed run already holds its baseline; the weights now are trained ones. (Every rank has the same
        # history, so all of them take this branch or none.)
        if self.log_initial and not self.has_record("init"):
            self.run_analysis(trainer, pl_module, stage="init")

    # The cross input's layout, when it has to be read from a batch (CrossLayoutHooks): matched before the first
    # step's backward, while the weights are still the initial ones, so the baseline's interaction matrix can be
    # computed then.
    def _layout_found(self, trainer: "pl.Trainer", before_backward: bool = False) -> None:
        # The inventory again, now with the layout read from the batch (same tag, the step of that batch).
        if trainer is not None:
            self._guarded("logging the inventory", lambda: self.writer.text(
                trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step))
        if before_backward:
            self._interaction_at_init(trainer)

    def _interaction_at_init(self, trainer) -> None:
        initial = self.initial_record()
        if initial is None or initial.interaction is not None or trainer.global_step != 0:
            return
        ok, interaction = self._together(trainer, "the initial interaction analysis", self._interaction)
        if ok and interaction is not None:
            initial.interaction = interaction
            self._record(initial)
            self._guarded("logging the initial interaction analysis",
                          lambda: (self._log_interaction(trainer, initial), self.writer.flush(trainer)))

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._is_analysis_epoch(trainer):
            self.run_analysis(trainer, pl_module)

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        return self._layout.dashboard_layout(self.namespace, self._finder)

    def inventory_markdown(self) -> str:
        return self._layout.inventory_markdown(self._finder)

    def coverage(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> list[dict[str, Any]]:
        interaction = self._finder.coverage("interaction matrix")
        if self._finder.waiting and self._is_evaluation(trainer) and not evaluation_has_data(trainer):
            interaction.update(runs=False, why="the cross input's layout is read on a batch, and this evaluation has "
                               "no data: pass a dataloader, or give the layout as cross_fields=[...]")
        return [{"analysis": f"spectra of {len(self.units)} view(s)", "runs": True, "why": ""}, interaction]

    def start_evaluation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._read_weights_as_sharded(pl_module)
        super().start_evaluation(trainer, pl_module)  # the inventory
        init = next((r for r in self.restored_history if r.get("stage") == "init"), None)
        if init is not None and not self.has_record("init"):  # the live run's baseline, for the *_vs_init tags
            self._record(init)
            self._guarded("logging the initial analysis", lambda: self.log_record(trainer, SpectrumRecord.from_dict(init)))

    def _read_weights_as_sharded(self, pl_module: torch.nn.Module) -> None:
        self._layout.check_readable(pl_module)
        if resharded(pl_module):
            # The strategy replaced the parameters: the cross kernel is resolved again on the current ones (no
            # batch has run yet, so nothing the first batch finds is lost).
            self._finder.setup(pl_module, self.units, legacy=self._layout.table_order_layout)

    # ---- what ------------------------------------------------------------------------------------------------
    # The contract (see AnalysisCallback). Row-sharded tables: each rank's Gram of its own rows first (prepare),
    # then the all-reduces (agree). A failure in the local part on one rank is known to every rank before any
    # of them enters an all-reduce (it would wait there for a rank gone back to training).
    def prepare(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[tuple[str, str], RowNormalizedGram]:
        return self.local_sharded_grams()

    def agree(self, trainer: "pl.Trainer", local: dict[tuple[str, str], RowNormalizedGram]) -> ContextManager[Any]:
        return contextlib.nullcontext({key: all_reduce_gram(gram) for key, gram in local.items()})

    def compute(self, pl_module: "pl.LightningModule | None",
                sharded_grams: Mapping[tuple[str, str], RowNormalizedGram]) -> SpectrumRecord:
        return self.analyse(sharded_grams)

    def analyse(self, sharded_grams: Mapping[tuple[str, str], RowNormalizedGram] | None = None) -> SpectrumRecord:
        """Compute every view's per-field spectra (and the interaction matrix) now.

        ``sharded_grams``: the Grams of the ``row_sharded`` fields by (view, field), already summed over the
        ranks. By default they are computed and all-reduced here, so every rank must call this together.
        """
        if sharded_grams is None:
            sharded_grams = {key: all_reduce_gram(gram) for key, gram in self.local_sharded_grams().items()}
        # Every read of a sharded weight (a collective, which raises on every rank together if it fails) comes
        # before any local computation: a failure of the local part on one rank then cannot leave another rank
        # waiting in a read, only in the one flag all-reduce that every rank reaches after this.
        grams = {(view.name, fld.name): sharded_grams[(view.name, fld.name)]
                 if isinstance(view, TableView) and self._is_sharded(view.table.name) else field_gram(view, fld)
                 for view in self.units for fld in view.fields}
        interaction_reads = self._interaction_reads()
        views = {view.name: view_spectra(view, lambda fld, view=view: grams[(view.name, fld.name)])
                 for view in self.units}
        return SpectrumRecord(views=views, interaction=self._interaction(interaction_reads))

    def _interaction_reads(self) -> InteractionReads | None:
        """What the interaction matrix reads of the weights, every collective of it (see
        :func:`interaction_reads`), or ``None`` while the cross layer's layout is unknown."""
        if self._finder.layout is None:
            return None
        return interaction_reads(self._finder.layout, self._finder.kernel, self.units)

    def _interaction(self, reads: InteractionReads | None = None) -> Interaction | None:
        """The interaction matrix through the cross layer (see :func:`interaction_matrix`), if its layout is known.
        ``reads``: from :meth:`_interaction_reads` (read now by default)."""
        reads = self._interaction_reads() if reads is None else reads
        if reads is None:
            return None
        return interaction_matrix(reads, self._finder.kernel)

    def local_sharded_grams(self) -> dict[tuple[str, str], RowNormalizedGram]:
        """This rank's Gram of its own rows of every ``row_sharded`` field, by (view, field), in one fixed order."""
        return {(view.name, fld.name): row_normalized_gram(view.field_weight(fld))
                for view in self.units if isinstance(view, TableView) and self._is_sharded(view.table.name)
                for fld in view.fields}

    def log_record(self, trainer: "pl.Trainer", record: SpectrumRecord) -> None:
        self._log(trainer, record, self.initial_record())
        self.writer.flush(trainer)

    def initial_record(self) -> SpectrumRecord | None:
        """The fit-start baseline (stage ``"init"``) from the history, or None."""
        return next((SpectrumRecord.from_dict(r) for r in self.history if r["stage"] == "init"), None)

    def initial_information_abundance(self, view: str, field: str,
                                      initial: SpectrumRecord | None = None) -> float | None:
        """IA of a field at fit start, from ``initial`` (the baseline record) or else from the history."""
        initial = self.initial_record() if initial is None else initial
        fld = initial.views[view].fields.get(field) if initial is not None and view in initial.views else None
        return None if fld is None else fld.information_abundance

    # ---- where ----------------------------------------------------------------------------------------------
    def _log(self, trainer: "pl.Trainer", record: SpectrumRecord, initial: SpectrumRecord | None) -> None:
        ns, step = self.namespace, record.step
        spectra: dict[str, list[float]] = {}
        for view_name, view in record.views.items():
            if self.histograms:
                spectra.update({f"{ns}/{view_name}/{name}/normalized_spectrum":
                                fld.normalized_spectrum[: min(fld.cardinality, view.width)]
                                for name, fld in view.fields.items()})
            if view.excluded_rows > self._layout.padding_rows.get(view_name, 0) and not self._warned_excluded:
                self._warned_excluded = True
                warnings.warn(
                    f"EmbeddingSpectrumMonitor: {view.excluded_rows} rows of '{view_name}' are non-finite or all "
                    "zero and were left out of the spectrum (logged as collapse/<view>/excluded_rows).",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if self.images and trainer.is_global_zero:
                self._log_view_images(trainer, view_name, record, initial)
        self.writer.scalars(trainer, spectrum_tags(replace(record, interaction=None), initial), step)
        if spectra:
            self.writer.histograms(trainer, spectra, step)
        self._log_interaction(trainer, record)

    def _log_interaction(self, trainer: "pl.Trainer", record: SpectrumRecord) -> None:
        interaction = record.interaction
        if interaction is None:
            return
        ns, view = self.namespace, interaction.view
        self.writer.scalars(trainer, interaction_tags(interaction), record.step)
        if self.images and trainer.is_global_zero:
            when = "initial weights" if record.stage == "init" else f"epoch {record.epoch}"
            self.writer.image(trainer, f"{ns}/{view}/interaction_information_abundance",
                              interaction_image(interaction, record.views[view].fields, when), record.step)

    def _log_view_images(self, trainer: "pl.Trainer", view_name: str, record: SpectrumRecord,
                         initial: SpectrumRecord | None) -> None:
        when = "initial weights" if record.stage == "init" else f"epoch {record.epoch}"
        view = record.views[view_name]
        self.writer.image(trainer, f"{self.namespace}/{view_name}/spectrum_heatmap",
                          spectrum_heatmap_image(view_name, view, when), record.step)
        init_view = initial.views.get(view_name) if initial is not None and record.stage != "init" else None
        if init_view is not None:
            self.writer.image(trainer, f"{self.namespace}/{view_name}/information_abundance_vs_init",
                              ia_vs_init_image(view_name, view, init_view, when), record.step)
