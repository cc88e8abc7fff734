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
from torch import nn

from ..functional.interaction import interaction_information_abundance, partner_grams
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
from .. import sharding
from ..tables import (
    ColumnGroups,
    EmbeddingTable,
    FieldDims,
    TableView,
    describe_tables,
    discover_tables,
    is_square_linear,
    named_cross_layer,
    refresh_parameters,
)
from .base import AnalysisCallback

__all__ = ["EmbeddingSpectrumMonitor"]


class EmbeddingSpectrumMonitor(AnalysisCallback):
    r"""Singular-value spectra and information abundance of every embedding table, per field, while training.

    Runs once at fit start on the initial weights (the paper's "randomly initialised" baseline, logged at step 0)
    and then at the end of every ``every_n_epochs``-th training epoch. Tables are found by
    :func:`~lightning_recanalysis.tables.discover_tables`; a model with none is an error at ``setup``.

    Logged tags (``<view>`` is the table's module name, or ``table[group]`` for a column-split table;
    ``<field>`` a field name; all at step ``trainer.global_step``):

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
        - ``collapse/inventory``: the tables, fields and column groups found.
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
        cross_layer: qualified name of a DCNv2 cross layer (an ``nn.Linear`` whose square weight maps the
            concatenated field embeddings, field order, starting at column ``cross_offset``), ``"auto"`` to take
            the first square ``nn.Linear`` of side N x K for a multi-field table, or ``None`` to skip the
            interaction analysis.
        cross_offset: column of the cross input where the first field's embedding starts.
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
        self.tables: list[EmbeddingTable] = []
        self._cross: tuple[str, nn.Linear, TableView] | None = None
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
        self._cross = self._find_cross_layer(pl_module)
        from lightning.pytorch.utilities import rank_zero_info

        n_views = sum(len(t.column_groups) for t in self.tables)
        n_fields = sum(len(t.fields) * len(t.column_groups) for t in self.tables)
        cross = f"; interaction analysis through '{self._cross[0]}'" if self._cross else ""
        rank_zero_info(f"EmbeddingSpectrumMonitor: {len(self.tables)} table(s), {n_views} view(s), {n_fields} field "
                       f"spectra per analysis{cross} (inventory in TensorBoard's Text tab, collapse/inventory)")

    def _is_sharded(self, table_name: str) -> bool:
        from fnmatch import fnmatch

        return any(fnmatch(table_name, p) for p in self.row_sharded)

    def _find_cross_layer(self, model: nn.Module) -> tuple[str, nn.Linear, TableView] | None:
        if self.cross_layer is None:
            return None
        multi_field = [v for t in self.tables for v in t.views() if len(v.fields) > 1]
        modules = dict(model.named_modules())
        if self.cross_layer != "auto":
            layer = named_cross_layer(model, self.cross_layer)
            side = layer.weight.shape[0] - self.cross_offset
            for view in multi_field:
                if side >= len(view.fields) * view.width:
                    return self.cross_layer, layer, view
            raise ValueError(
                f"cross_layer '{self.cross_layer}' has side {layer.weight.shape[0]}, too small for the fields of any "
                f"table ({[(v.name, len(v.fields), v.width) for v in multi_field]}) at cross_offset={self.cross_offset}"
            )
        for name, layer in modules.items():
            if is_square_linear(layer):
                for view in multi_field:
                    if layer.weight.shape[0] == self.cross_offset + len(view.fields) * view.width:
                        return name, layer, view
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

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._is_analysis_epoch(trainer):
            self._analyse(trainer, "epoch", trainer.current_epoch)

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        layout: dict[str, dict[str, list]] = {}
        for table in self.tables:
            for view in table.views():
                base = f"{self.namespace}/{re.escape(view.name)}"
                layout[f"collapse: {view.name}"] = {
                    "information abundance, all fields": ["Multiline", [rf"^{base}/[^/]+/information_abundance$"]],
                    "IA / IA at initialisation": ["Multiline", [rf"^{base}/[^/]+/information_abundance_vs_init$"]],
                    "effective rank, all fields": ["Multiline", [rf"^{base}/[^/]+/effective_rank$"]],
                    "mean IA over fields": ["Multiline", [rf"^{base}/mean_information_abundance$"]],
                }
        if self._cross is not None:
            view = self._cross[2]
            base = f"{self.namespace}/{re.escape(view.name)}/interaction"
            layout[f"collapse: {view.name}"]["interaction: mean IA of each field's sub-embeddings"] = [
                "Multiline", [rf"^{base}/[^/]+/mean_information_abundance$"]]
        return layout

    def inventory_markdown(self) -> str:
        text = describe_tables(self.tables)
        if self._cross is not None:
            name, layer, view = self._cross
            text += (f"\n\nInteraction analysis: cross layer `{name}` ({layer.weight.shape[0]} x "
                     f"{layer.weight.shape[1]}) over the {len(view.fields)} fields of `{view.name}`.")
        return text

    def _read_weights_as_sharded(self, pl_module: nn.Module) -> None:
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
        if self._cross is not None:
            name, _, view = self._cross
            self._cross = (name, dict(pl_module.named_modules())[name], view)

    # ---- what ------------------------------------------------------------------------------------------------
    def analyse(self, sharded_grams: Mapping[tuple[str, str], RowNormalizedGram] | None = None) -> dict[str, Any]:
        """Compute every view's per-field spectra (and the interaction matrix) now; returns plain values.

        ``sharded_grams``: the Grams of the ``row_sharded`` fields by (view, field), already summed over the
        ranks. By default they are computed and all-reduced here, so every rank must call this together.
        """
        if sharded_grams is None:
            sharded_grams = {key: all_reduce_gram(gram) for key, gram in self.local_sharded_grams().items()}
        views: dict[str, Any] = {}
        for table in self.tables:
            for view in table.views():
                views[view.name] = self._analyse_view(view, sharded_grams)
        result: dict[str, Any] = {"views": views}
        if self._cross is not None:
            name, layer, view = self._cross
            k, n = view.width, len(view.fields)
            weight = sharding.full_tensor(layer.weight)[self.cross_offset : self.cross_offset + n * k,
                                                        self.cross_offset : self.cross_offset + n * k]
            if sharding.is_sharded(view.table.parameter):
                matrix = self._sharded_interaction(view, weight)
            else:
                matrix = interaction_information_abundance([view.field_weight(f) for f in view.fields], weight)
            result["interaction"] = {
                "view": view.name,
                "layer": name,
                "fields": [f.name for f in view.fields],
                "matrix": matrix.tolist(),
            }
        return result

    @staticmethod
    def _sharded_interaction(view: TableView, weight: torch.Tensor) -> torch.Tensor:
        """The interaction matrix of a view whose table is a ``DTensor``: each source field's partner Grams
        are a sum over its rows (:func:`~lightning_recanalysis.sharding.row_sum`), so no rank holds the table."""
        k, n = view.width, len(view.fields)
        out = torch.zeros(n, n, dtype=torch.float64)
        for i, fld in enumerate(view.fields):
            w_i = weight[:, i * k : (i + 1) * k].T.to(torch.float64)
            grams = sharding.row_sum(view.table.parameter,
                                     lambda rows, w_i=w_i: partner_grams(rows, w_i.to(rows.device), n, k),
                                     rows=(fld.start, fld.stop), columns=(view.group.start, view.group.stop))
            sv = torch.linalg.eigvalsh(grams).clamp_min(0.0).sqrt().flip(-1)[:, : min(fld.cardinality, k)]
            out[i] = information_abundance(sv).cpu()
        return out

    def local_sharded_grams(self) -> dict[tuple[str, str], RowNormalizedGram]:
        """This rank's Gram of its own rows of every ``row_sharded`` field, by (view, field), in one fixed order."""
        return {(view.name, fld.name): row_normalized_gram(view.field_weight(fld))
                for table in self.tables if self._is_sharded(table.name)
                for view in table.views() for fld in view.fields}

    def _analyse_view(self, view: TableView,
                      sharded_grams: Mapping[tuple[str, str], RowNormalizedGram]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        excluded = 0
        for fld in view.fields:
            if self._is_sharded(view.table.name):
                gram = sharded_grams[(view.name, fld.name)]
            else:
                gram = view.field_gram(fld)
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
        interaction = record.get("interaction")
        if interaction is not None:
            matrix = interaction["matrix"]
            for name, row in zip(interaction["fields"], matrix):
                scalars[f"{ns}/{interaction['view']}/interaction/{name}/mean_information_abundance"] = sum(row) / len(row)
            if self.images and trainer.is_global_zero:
                own = record["views"][interaction["view"]]["fields"]
                names = interaction["fields"]
                order = sorted(range(len(names)), key=lambda i: own[names[i]]["information_abundance"])
                when = "initial weights" if record["stage"] == "init" else f"epoch {record['epoch']}"
                self.writer.image(trainer, f"{ns}/{interaction['view']}/interaction_information_abundance",
                                  heatmap_image([[interaction["matrix"][i][j] for j in order] for i in order],
                                                title=f"IA of field i's sub-embedding as field j sees it, {when}",
                                                row_labels=[names[i] for i in order],
                                                col_labels=[names[i] for i in order],
                                                xlabel="partner field j (by own IA)", ylabel="source field i",
                                                colorbar_label="IA", vmin=None, vmax=None, cmap="magma",
                                                annotate=len(names) <= 12), step)
        self.writer.scalars(trainer, scalars, step)

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
    order = sorted(range(len(names)), key=lambda i: own_fields[names[i]]["information_abundance"])
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
