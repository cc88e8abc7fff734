"""EmbeddingSpectrumMonitor: dimensional collapse of embedding tables, live in TensorBoard.

Guo et al., "On the Embedding Collapse when Scaling up Recommendation Models" (ICML 2024): for each field's table
E_i, normalise its rows, take the singular values s_1 >= ... >= s_r and read

    information abundance  IA = sum(s) / s_1           in [1, min(rows, K)]

beside the same number for the randomly initialised table. See :mod:`lightning_recanalysis.functional.spectrum`.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Mapping, Sequence

import torch

from ..functional.interaction import interaction_information_abundance
from ..functional.spectrum import (
    RowNormalizedGram,
    all_reduce_gram,
    effective_rank,
    information_abundance,
    normalized_spectrum,
    row_normalized_gram,
    singular_values_from_gram,
    stable_rank,
)
from ..plotting import heatmap_figure
from ..raster import heatmap_image
from ..sharded_interaction import interaction_from_partner_grams, sharded_partner_grams
from .. import sharding
from ..field_sets import AnalysisUnit, FieldSet, analysis_units, field_gram
from ..tables import (ColumnGroups, EmbeddingTable, FieldDims, TableView, describe_tables, discover_tables,
                      refresh_parameters)
from ._cross import CrossFinder, resharded, table_order_layout
from .base import AnalysisCallback

__all__ = ["EmbeddingSpectrumMonitor"]


class EmbeddingSpectrumMonitor(AnalysisCallback):
    r"""Singular-value spectra and information abundance of every embedding table, per field, while training.

    Runs once at fit start on the initial weights (the paper's "randomly initialised" baseline, logged at step 0)
    and then at the end of every ``every_n_epochs``-th training epoch. Tables are found by
    :func:`~lightning_recanalysis.tables.discover_tables`; a model with none is an error at ``setup``.

    **Where the fields are.** A field is a row range of a table (``field_dims``), a whole table, or a table shared
    by several features (analysed once, named by all: ``item+hist_item``). The single-field tables of one width
    form one *field set* (``field_sets=True``), shown like the fields of a concatenated table: a per-feature model
    of N tables gets one spectrum heatmap, one IA chart and one finding for its N fields, named after the
    tables' common module prefix; tables of several widths get one field set per width, ``<prefix>[K=<width>]``
    (IA is bounded by the width, so widths are not mixed on one scale). See :mod:`lightning_recanalysis.field_sets`.

    **Cross layer.** The interaction matrix reads a DCN-style cross layer's kernel: an ``nn.Linear``, a ``[D, D]``
    or ``[L, D, D]`` tensor (``cross_layer_index``), or DCNv2's mixture of low-rank experts (the gate-free sum
    over experts of U_e C_e V_e^T; see :mod:`lightning_recanalysis.cross`). The fields' order in its input is
    the table's own for a concatenated table whose side fits exactly (as before), given as ``cross_fields``, or
    found on the first training batch by matching the input's columns against each embedding lookup
    (:mod:`lightning_recanalysis.cross_discovery`; dense features anywhere are allowed). The initial interaction
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
          colour 0 to 1, zero-padded to K.
        - ``collapse/<view>/information_abundance_vs_init``: IA per field now beside IA at fit start.
        - ``collapse/<view>/interaction_information_abundance``: the N x N matrix of IA of field i's
          sub-embedding as seen by field j through the first cross layer, rows and columns sorted by the
          fields' own IA (Guo et al.'s interaction-collapse figure).

    Text (TensorBoard):
        - ``collapse/inventory``: the tables, fields, column groups and field sets found, and the cross layer's
          kernel form and input layout (logged again at the first training batch when the order is read there).
        - ``collapse/findings``: the most collapsed fields and the interaction-collapse correlation, in words.

    Custom Scalars (with :class:`~lightning_recanalysis.AnalysisReport`): per view, one chart each for IA,
    IA vs init and effective rank of all its fields, and the interaction row means.

    Args:
        include / exclude / parameters / field_dims / column_groups: table discovery, see
            :func:`~lightning_recanalysis.tables.discover_tables`.
        row_sharded: globs of table names whose rows are split across ranks (each rank's weight holds its own
            shard, as in TorchRec row-wise sharding): their Gram matrices are summed over the process group with
            one all-reduce per field, so every rank gets the whole table's spectrum. Such a table is one field.
            Each rank's part is computed before any all-reduce: if it fails on one rank, every rank skips the
            analysis (with a warning) instead of waiting for that rank in the all-reduce.
        cross_layer: the DCN cross layer: a module name (square ``nn.Linear``, a module holding ``kernels`` or a
            low-rank mixture), a kernel tensor's name, ``{"U": .., "V": .., "C": ..}``, ``"auto"`` (a square
            ``nn.Linear`` of side ``cross_offset`` + N K for a concatenated table, else the first recognised
            kernel whose input holds the fields on the first batch), or ``None`` to skip the interaction analysis.
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
    """

    namespace = "collapse"

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
        self.tables: list[EmbeddingTable] = []
        self.units: list[AnalysisUnit] = []
        self._finder = CrossFinder(cross_layer, layer_index=cross_layer_index, cross_fields=cross_fields,
                                   input_module=cross_input, owner=type(self).__name__, quiet_auto=True)
        self._warned_excluded = False

    def _state_key_fields(self) -> dict[str, Any]:
        return {"include": self.include, "exclude": self.exclude, "parameters": self.parameters}

    # ---- setup: everything that can be wrong is found here, before the first step ------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self.tables = discover_tables(
            pl_module,
            include=self.include,
            exclude=self.exclude,
            parameters=self.parameters,
            field_dims=self.field_dims,
            column_groups=self.column_groups,
        )
        for table in self.tables:
            if self._is_sharded(table.name) and len(table.fields) > 1:
                raise ValueError(
                    f"table '{table.name}' is row_sharded, so each rank holds different rows and fields cannot be "
                    "located by row: drop its field_dims (it is analysed as one field), or give each field its own table"
                )
        self.units = analysis_units(self.tables, field_sets=self.field_sets,
                                    keep_alone=lambda t: self._is_sharded(t.name))
        self._finder.setup(pl_module, self.units, legacy=self._table_order_layout)
        from lightning.pytorch.utilities import rank_zero_info

        n_views = len(self.units)
        n_fields = sum(len(u.fields) for u in self.units)
        cross = (f"; interaction analysis through '{self._finder.kernel.name}'" if self._finder.layout else
                 "; the cross layer's field order is read on the first training batch" if self._finder.waiting else "")
        rank_zero_info(f"EmbeddingSpectrumMonitor: {len(self.tables)} table(s), {n_views} view(s), {n_fields} field "
                       f"spectra per analysis{cross} (inventory in TensorBoard's Text tab, collapse/inventory)")

    def _is_sharded(self, table_name: str) -> bool:
        from fnmatch import fnmatch

        return any(fnmatch(table_name, p) for p in self.row_sharded)

    def _table_order_layout(self, kernels):
        """A concatenated table whose fields fill an ``nn.Linear`` cross layer from ``cross_offset`` in table order
        (auto: the side fits exactly; named: at least): the demo's layout, read without a batch, as before."""
        multi = [u for u in self.units if isinstance(u, TableView) and len(u.fields) > 1]
        linear = [k for k in kernels if k.form.startswith("nn.Linear")]
        for kernel in linear:
            for view in multi:
                need = self.cross_offset + len(view.fields) * view.width
                if kernel.side == need or (self.cross_layer != "auto" and kernel.side > need):
                    return kernel, table_order_layout(kernel, view, self.cross_offset)
        return None

    # ---- when ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        if not self._is_real_fit(trainer):
            return
        self._read_weights_as_sharded(pl_module)
        self.writer.text(trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step)
        # A resumed run already holds its baseline; the weights now are trained ones. (Every rank has the same
        # history, so all of them take this branch or none.)
        if self.log_initial and not self.has_record("init"):
            self._analyse(trainer, "init", 0)

    # The cross input's layout, when it has to be read from a batch: hooks for the first training step's forward
    # only, matched before its backward (the weights are still the initial ones, so the baseline's interaction
    # matrix can be computed then). Nothing is hooked on any later step.
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._finder.waiting:
            self._finder.start()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._finder.finish():
            self._layout_found(trainer)
            self._interaction_at_init(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._finder.finish():  # no backward seen (manual optimisation without one): layout only
            self._layout_found(trainer)

    def _layout_found(self, trainer) -> None:
        # The inventory again, now with the layout read from the batch (same tag, the step of that batch).
        if trainer is not None:
            self._guarded("logging the inventory", lambda: self.writer.text(
                trainer, f"{self.namespace}/inventory", self.inventory_markdown(), trainer.global_step))

    def _interaction_at_init(self, trainer) -> None:
        initial = next((r for r in self.history if r["stage"] == "init"), None)
        if initial is None or initial.get("interaction") is not None or trainer.global_step != 0:
            return
        ok, interaction = self._together(trainer, "the initial interaction analysis", self._interaction)
        if ok and interaction is not None:
            initial["interaction"] = interaction
            self._record(initial)
            self._guarded("logging the initial interaction analysis",
                          lambda: (self._log_interaction(trainer, initial), self.writer.flush(trainer)))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._is_analysis_epoch(trainer):
            self._analyse(trainer, "epoch", trainer.current_epoch)

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        layout: dict[str, dict[str, list]] = {}
        for view in self.units:
            if True:
                base = f"{self.namespace}/{re.escape(view.name)}"
                layout[f"collapse: {view.name}"] = {
                    "information abundance, all fields": ["Multiline", [rf"^{base}/[^/]+/information_abundance$"]],
                    "IA / IA at initialisation": ["Multiline", [rf"^{base}/[^/]+/information_abundance_vs_init$"]],
                    "effective rank, all fields": ["Multiline", [rf"^{base}/[^/]+/effective_rank$"]],
                    "mean IA over fields": ["Multiline", [rf"^{base}/mean_information_abundance$"]],
                }
        if self._finder.layout is not None:
            view = self._finder.layout.unit_slots()[0].unit
            base = f"{self.namespace}/{re.escape(view)}/interaction"
            layout[f"collapse: {view}"]["interaction: mean IA of each field's sub-embeddings"] = [
                "Multiline", [rf"^{base}/[^/]+/mean_information_abundance$"]]
        return layout

    def inventory_markdown(self) -> str:
        text = describe_tables(self.tables)
        sets = [u for u in self.units if isinstance(u, FieldSet)]
        for unit in sets:
            text += (f"\n\nField set `{unit.name}` ({len(unit.fields)} tables of width {unit.width}, shown together): "
                     + ", ".join(f"{f.name} = `{f.table.name}`" for f in unit.fields))
        if self._finder.layout is not None:
            slots = self._finder.layout.unit_slots()
            text += (f"\n\nInteraction analysis: {self._finder.describe()}. Interaction matrix over the "
                     f"{len(slots)} fields of `{slots[0].unit}`.")
        elif self._finder.waiting:
            text += "\n\nInteraction analysis: the cross layer's field order is read on the first training batch."
        return text

    def _read_weights_as_sharded(self, pl_module: torch.nn.Module) -> None:
        """Take the weights as the strategy left them after ``configure_model`` and check that every one can be
        read exactly (a ``DTensor`` of row, column or replicated placements; see :mod:`~lightning_recanalysis.
        sharding`): an error here, before the first step, names the table and its placement."""
        refresh_parameters(self.tables, pl_module)
        for table in self.tables:
            layout = sharding.check_readable(table.parameter, table.name)
            if layout.kind != "local" and self._is_sharded(table.name):
                raise ValueError(
                    f"table '{table.name}' is a DTensor ({list(layout.placements)}), which the monitor reads "
                    "across ranks by itself: drop it from row_sharded (that option is for a table split by hand, "
                    "whose every rank holds a plain tensor of its own rows)")
        if resharded(pl_module):
            # The strategy replaced the parameters: the cross kernel is resolved again on the current ones (no
            # batch has run yet, so nothing the first batch finds is lost).
            self._finder.setup(pl_module, self.units, legacy=self._table_order_layout)

    # ---- what ------------------------------------------------------------------------------------------------
    def analyse(self, sharded_grams: Mapping[tuple[str, str], RowNormalizedGram] | None = None) -> dict[str, Any]:
        """Compute every view's per-field spectra (and the interaction matrix) now; returns plain values.

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
        views: dict[str, Any] = {}
        for view in self.units:
            views[view.name] = self._analyse_view(view, grams)
        result: dict[str, Any] = {"views": views}
        interaction = self._interaction(interaction_reads)
        if interaction is not None:
            result["interaction"] = interaction
        return result

    def _interaction_reads(self):
        """What the interaction matrix reads of the weights, every collective of it: ``(unit, slots, kernel,
        partner Grams)`` (the Grams ``None`` for plain tables, read locally later), or ``None``."""
        layout = self._finder.layout
        if layout is None:
            return None
        slots = layout.unit_slots()
        unit = next(u for u in self.units if u.name == slots[0].unit)
        by_name = {f.name: f for f in unit.fields}
        columns = torch.cat([torch.arange(s.start, s.stop) for s in slots])
        weight = self._finder.kernel.matrix()
        columns = columns.to(weight.device)
        kernel = weight[columns][:, columns]
        sources = [unit.field_source(by_name[s.field]) for s in slots]
        grams = None
        if any(sharding.is_sharded(parameter) for parameter, _, _ in sources):
            grams = sharded_partner_grams(sources, kernel, unit.width)
        return unit, slots, kernel, grams

    def _interaction(self, reads=None) -> dict[str, Any] | None:
        """The interaction matrix over the fields of the unit with most fields in the cross input, in input order:
        the kernel restricted to those fields' columns (dense columns and other fields left out), so entry (i, j)
        is the IA of E_i W_ij^T with W_ij the block that maps field i's columns into field j's. ``reads``: from
        :meth:`_interaction_reads` (read now by default)."""
        reads = self._interaction_reads() if reads is None else reads
        if reads is None:
            return None
        unit, slots, kernel, grams = reads
        by_name = {f.name: f for f in unit.fields}
        if grams is not None:
            matrix = interaction_from_partner_grams(grams, unit.width)
        else:
            matrix = interaction_information_abundance([unit.field_weight(by_name[s.field]) for s in slots], kernel)
        out = {"view": unit.name, "layer": self._finder.kernel.name, "fields": [s.name for s in slots],
               "matrix": matrix.tolist()}
        if any(s.name != s.field for s in slots):
            out["source_fields"] = [s.field for s in slots]
        if not self._finder.kernel.form.startswith("nn.Linear"):
            out["kernel"] = self._finder.kernel.form
        return out

    def local_sharded_grams(self) -> dict[tuple[str, str], RowNormalizedGram]:
        """This rank's Gram of its own rows of every ``row_sharded`` field, by (view, field), in one fixed order."""
        return {(view.name, fld.name): row_normalized_gram(view.field_weight(fld))
                for view in self.units if isinstance(view, TableView) and self._is_sharded(view.table.name)
                for fld in view.fields}

    def _analyse_view(self, view: TableView, grams: Mapping[tuple[str, str], RowNormalizedGram]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        excluded = 0
        for fld in view.fields:
            gram = grams[(view.name, fld.name)]
            excluded += gram.excluded_rows
            rows = gram.rows + gram.excluded_rows
            sv = singular_values_from_gram(gram.gram, min(rows, view.width))
            fields[fld.name] = {
                "cardinality": rows,
                "information_abundance": float(information_abundance(sv)),
                "effective_rank": float(effective_rank(sv)),
                "stable_rank": float(stable_rank(sv)),
                "normalized_spectrum": normalized_spectrum(sv, view.width).tolist(),
                "excluded_rows": gram.excluded_rows,
            }
        if isinstance(view, FieldSet):
            return {"width": view.width, "table": view.name, "group": "all", "tables": view.table_names,
                    "fields": fields, "excluded_rows": excluded}
        return {"width": view.width, "table": view.table.name, "group": view.group.name,
                "fields": fields, "excluded_rows": excluded}

    def _analyse(self, trainer, stage: str, epoch: int) -> None:
        what = "the initial spectrum analysis" if stage == "init" else f"the spectrum analysis of epoch {epoch}"
        step = trainer.global_step
        # Row-sharded tables: each rank's Gram of its own rows first, then the all-reduces. A failure in the
        # local part on one rank is known to every rank before any of them enters an all-reduce (it would
        # wait there for a rank gone back to training), and every rank skips the analysis.
        ok, local = self._together(trainer, what, self.local_sharded_grams)
        if not ok:
            return
        sharded = {key: all_reduce_gram(gram) for key, gram in local.items()}
        ok, result = self._together(trainer, what, lambda: self.analyse(sharded))
        if not ok:  # failed on some rank: no rank keeps a record, so the histories stay the same
            return
        record = {"stage": stage, "epoch": epoch, "step": step, **result}
        self._record(record)
        self._guarded(f"logging {what}", lambda: self._log_analysis(trainer, record))

    def _log_analysis(self, trainer, record: dict[str, Any]) -> None:
        step = record["step"]
        initial = next((r for r in self.history if r["stage"] == "init"), None)
        self._log(trainer, record, initial)
        if trainer.is_global_zero:
            from ..report.model import ReportThresholds
            from ..report.sections.collapse import collapse_findings

            findings = collapse_findings(self.history, ReportThresholds())
            self.writer.text(trainer, f"{self.namespace}/findings",
                             "\n".join(f"- {f}" for f in findings) or "- no field is collapsed yet", step)
        self.writer.flush(trainer)

    def initial_information_abundance(
        self, view: str, field: str, initial: dict[str, Any] | None = None
    ) -> float | None:
        """IA of a field at fit start, from ``initial`` (the baseline record) or else from the history."""
        if initial is None:
            initial = next((r for r in self.history if r["stage"] == "init"), None)
        try:
            return initial["views"][view]["fields"][field]["information_abundance"]
        except (TypeError, KeyError):
            return None

    # ---- where ----------------------------------------------------------------------------------------------
    def _log(self, trainer, record: dict[str, Any], initial: dict[str, Any] | None) -> None:
        ns, step = self.namespace, record["step"]
        scalars: dict[str, float] = {}
        for view_name, view in record["views"].items():
            ias = []
            for field_name, fld in view["fields"].items():
                prefix = f"{ns}/{view_name}/{field_name}"
                for key in ("information_abundance", "effective_rank", "stable_rank"):
                    scalars[f"{prefix}/{key}"] = fld[key]
                ias.append(fld["information_abundance"])
                init_ia = self.initial_information_abundance(view_name, field_name, initial)
                if init_ia:
                    scalars[f"{prefix}/information_abundance_vs_init"] = fld["information_abundance"] / init_ia
                if self.histograms:
                    spectrum = fld["normalized_spectrum"][: min(fld["cardinality"], view["width"])]
                    self.writer.histogram(trainer, f"{prefix}/normalized_spectrum", spectrum, step)
            scalars[f"{ns}/{view_name}/mean_information_abundance"] = sum(ias) / max(1, len(ias))
            scalars[f"{ns}/{view_name}/excluded_rows"] = float(view["excluded_rows"])
            if view["excluded_rows"] and not self._warned_excluded:
                self._warned_excluded = True
                warnings.warn(
                    f"EmbeddingSpectrumMonitor: {view['excluded_rows']} rows of '{view_name}' are non-finite or all "
                    "zero and were left out of the spectrum (logged as collapse/<view>/excluded_rows).",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if self.images and trainer.is_global_zero:
                self._log_view_images(trainer, view_name, view, initial, record["epoch"], record["stage"], step)
        self.writer.scalars(trainer, scalars, step)
        self._log_interaction(trainer, record)

    def _log_interaction(self, trainer, record: dict[str, Any]) -> None:
        interaction = record.get("interaction")
        if interaction is None:
            return
        ns, step = self.namespace, record["step"]
        matrix, names = interaction["matrix"], interaction["fields"]
        scalars = {f"{ns}/{interaction['view']}/interaction/{name}/mean_information_abundance": sum(row) / len(row)
                   for name, row in zip(names, matrix)}
        self.writer.scalars(trainer, scalars, step)
        if self.images and trainer.is_global_zero:
            own = record["views"][interaction["view"]]["fields"]
            sources = interaction.get("source_fields", names)
            order = sorted(range(len(names)), key=lambda i: own[sources[i]]["information_abundance"])
            when = "initial weights" if record["stage"] == "init" else f"epoch {record['epoch']}"
            self.writer.image(trainer, f"{ns}/{interaction['view']}/interaction_information_abundance",
                              heatmap_image([[matrix[i][j] for j in order] for i in order],
                                            title=f"IA of field i's sub-embedding as field j sees it, {when}",
                                            row_labels=[names[i] for i in order],
                                            col_labels=[names[i] for i in order],
                                            xlabel="partner field j (by own IA)", ylabel="source field i",
                                            colorbar_label="IA", vmin=None, vmax=None, cmap="magma",
                                            annotate=len(names) <= 12), step)

    def _log_view_images(self, trainer, view_name, view, initial, epoch, stage, step) -> None:
        # Live images are drawn with Pillow (milliseconds); the report redraws them with matplotlib.
        when = "initial weights" if stage == "init" else f"epoch {epoch}"
        names = _sorted_by_cardinality(view)
        labels = [f"{n} ({view['fields'][n]['cardinality']})" for n in names]
        self.writer.image(trainer, f"{self.namespace}/{view_name}/spectrum_heatmap", heatmap_image(
            [view["fields"][n]["normalized_spectrum"] for n in names],
            title=f"{view_name}: normalised singular values, {when}", row_labels=labels,
            col_labels=[str(i + 1) for i in range(view["width"])], xlabel="singular value index k",
            ylabel="field (cardinality)", colorbar_label="s_k / s_1", annotate=False), step)
        if initial is not None and stage != "init":
            init_view = initial["views"].get(view_name)
            if init_view is not None:
                rows = [[init_view["fields"].get(n, {}).get("information_abundance", float("nan")) for n in names],
                        [view["fields"][n]["information_abundance"] for n in names]]
                self.writer.image(trainer, f"{self.namespace}/{view_name}/information_abundance_vs_init", heatmap_image(
                    rows, title=f"{view_name}: IA per field (max {view['width']})", row_labels=["initial", when],
                    col_labels=labels, xlabel="field (cardinality), by cardinality", ylabel="",
                    colorbar_label="information abundance", vmin=1.0, vmax=float(view["width"]), annotate=True), step)


def _sorted_by_cardinality(view: dict[str, Any]) -> list[str]:
    return sorted(view["fields"], key=lambda f: (view["fields"][f]["cardinality"], f))


def spectrum_heatmap_figure(view_name: str, view: dict[str, Any], when: str):
    """Fields (rows, ascending cardinality) x singular-value index, s_k / s_1 on a 0..1 colour scale."""
    names = _sorted_by_cardinality(view)
    matrix = [view["fields"][n]["normalized_spectrum"] for n in names]
    labels = [f"{n} ({view['fields'][n]['cardinality']})" for n in names]
    return heatmap_figure(
        matrix,
        title=f"{view_name}: normalised singular values, {when}",
        row_labels=labels,
        col_labels=[str(i + 1) for i in range(view["width"])],
        xlabel="singular value index k",
        ylabel="field (cardinality), sorted by cardinality",
        colorbar_label="s_k / s_1",
    )


def interaction_figure(interaction: dict[str, Any], own_fields: dict[str, Any], record: dict[str, Any]):
    """IA of field i's sub-embedding as seen by field j, both axes sorted by the fields' own IA."""
    names = interaction["fields"]
    sources = interaction.get("source_fields", names)
    order = sorted(range(len(names)), key=lambda i: own_fields[sources[i]]["information_abundance"])
    matrix = [[interaction["matrix"][i][j] for j in order] for i in order]
    labels = [names[i] for i in order]
    when = "initial weights" if record["stage"] == "init" else f"epoch {record['epoch']}"
    return heatmap_figure(
        matrix,
        title=f"{interaction['view']}: IA of sub-embeddings via {interaction['layer']}, {when}",
        row_labels=labels,
        col_labels=labels,
        xlabel="partner field j (sorted by own IA)",
        ylabel="source field i (sorted by own IA)",
        colorbar_label="information abundance",
        vmin=None,
        vmax=None,
        cmap="magma",
    )


__all__ += ["spectrum_heatmap_figure", "interaction_figure"]
