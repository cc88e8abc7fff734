"""Figures of the dimensional-collapse analysis (``collapse/``): the images
:class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` logs live and the report shows (the same pixels), and
the report's bar chart of IA per field against initialisation.

They read the monitor's record: ``view = {"width": K, "fields": {name: {"cardinality", "information_abundance",
"normalized_spectrum", ...}}}`` and ``interaction = {"view", "layer", "fields", "matrix", ["source_fields"]}``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .bars import grouped_bar_figure
from .heatmap import heatmap_image
from .line import line_image

__all__ = ["spectrum_heatmap_image", "ia_vs_init_image", "interaction_image", "ia_bar_figure", "ia_over_time_image"]


def _by_cardinality(view: Mapping[str, Any]) -> list[str]:
    return sorted(view["fields"], key=lambda f: (view["fields"][f]["cardinality"], f))


def _field_labels(view: Mapping[str, Any], names: list[str]) -> list[str]:
    return [f"{n} ({view['fields'][n]['cardinality']})" for n in names]


def spectrum_heatmap_image(view_name: str, view: Mapping[str, Any], when: str) -> np.ndarray:
    """Fields (rows, ascending cardinality) x singular-value index k, s_k / s_1 on a 0..1 colour scale: a row that
    goes dark after a few columns is a field that uses only those directions. A field of c rows (less any
    excluded) has at most c singular values: its cells k > c cannot exist and are hatched, with a legend line,
    so they are not read as collapsed directions.

    Example:
        >>> from lightning_recanalysis.figures import spectrum_heatmap_image
        >>> view = {"width": 3, "fields": {
        ...     "user": {"cardinality": 50, "normalized_spectrum": [1.0, 0.5, 0.1]},
        ...     "item": {"cardinality": 9, "normalized_spectrum": [1.0, 0.1, 0.0]}}}
        >>> spectrum_heatmap_image("table", view, "epoch 0").dtype
        dtype('uint8')
    """
    names = _by_cardinality(view)
    width = view["width"]
    rows = [list(view["fields"][n]["normalized_spectrum"])[:width] for n in names]
    rows = [r + [0.0] * (width - len(r)) for r in rows]
    ranks = [max(0, view["fields"][n]["cardinality"] - view["fields"][n].get("excluded_rows", 0)) for n in names]
    return heatmap_image(
        rows, title=f"{view_name}: normalised singular values, {when}", row_labels=_field_labels(view, names),
        col_labels=[str(i + 1) for i in range(width)], xlabel="singular value index k",
        ylabel="field (cardinality)", colorbar_label="s_k / s_1", annotate=False,
        absent=[[k >= rank for k in range(width)] for rank in ranks],
        absent_label="no such singular value: the field has fewer rows than k")


def ia_vs_init_image(view_name: str, view: Mapping[str, Any], initial_view: Mapping[str, Any], when: str) -> np.ndarray:
    """Two rows, IA per field at initialisation and now, fields by cardinality, on the scale 1..K (K the width,
    the most a field can reach); a field missing at initialisation is a blank cell.

    Example:
        >>> from lightning_recanalysis.figures import ia_vs_init_image
        >>> view = {"width": 4, "fields": {"user": {"cardinality": 50, "information_abundance": 2.5}}}
        >>> init = {"width": 4, "fields": {"user": {"cardinality": 50, "information_abundance": 3.5}}}
        >>> ia_vs_init_image("table", view, init, "epoch 0").shape[2]
        3
    """
    names = _by_cardinality(view)
    rows = [[initial_view["fields"].get(n, {}).get("information_abundance", float("nan")) for n in names],
            [view["fields"][n]["information_abundance"] for n in names]]
    return heatmap_image(
        rows, title=f"{view_name}: IA per field (max {view['width']})", row_labels=["initial", when],
        col_labels=_field_labels(view, names), xlabel="field (cardinality), by cardinality", ylabel="",
        colorbar_label="information abundance", vmin=1.0, vmax=float(view["width"]), annotate=True)


def interaction_image(interaction: Mapping[str, Any], own_fields: Mapping[str, Any], when: str,
                      order: str = "field") -> np.ndarray:
    """Entry (i, j): the IA of field i's sub-embedding as partner j sees it through the cross layer; colour scale:
    the data's range (magma). ``order="field"``: both axes in the cross layer's field order, the order of the
    field-pair maps, so the two lay one over the other; ``order="ia"``: both sorted by the source fields' own IA
    (``own_fields[name]["information_abundance"]``), lowest first, where the interaction-collapse law shows (low-IA
    fields drag down the fields they interact with). The title says which.

    Example:
        >>> from lightning_recanalysis.figures import interaction_image
        >>> interaction = {"fields": ["a", "b"], "matrix": [[2.0, 1.0], [1.5, 3.0]]}
        >>> own = {"a": {"information_abundance": 3.0}, "b": {"information_abundance": 1.0}}
        >>> interaction_image(interaction, own, "epoch 1").ndim
        3
    """
    if order not in ("field", "ia"):
        raise ValueError(f"interaction_image: order is 'field' or 'ia', not {order!r}")
    names, matrix = interaction["fields"], interaction["matrix"]
    sources = interaction.get("source_fields", names)
    index = list(range(len(names)))
    if order == "ia":
        index.sort(key=lambda i: own_fields[sources[i]]["information_abundance"])
    how = "fields in the cross layer's order" if order == "field" else "fields by own IA, lowest first"
    return heatmap_image([[matrix[i][j] for j in index] for i in index],
                         title=f"IA of field i's sub-embedding as field j sees it, {when}",
                         row_labels=[names[i] for i in index], col_labels=[names[i] for i in index],
                         xlabel=f"partner field j ({how})", ylabel="source field i",
                         colorbar_label="IA", vmin=None, vmax=None, cmap="magma", annotate=len(names) <= 12)


def ia_bar_figure(view_name: str, view: Mapping[str, Any], initial_view: Mapping[str, Any], when: str) -> np.ndarray:
    """Information abundance per field now beside at initialisation (Guo et al.'s Figure 2), fields sorted by
    cardinality; the dashed line is the width K, the most a field can reach.

    Example:
        >>> from lightning_recanalysis.figures import ia_bar_figure
        >>> view = {"width": 4, "fields": {"user": {"cardinality": 50, "information_abundance": 2.5}}}
        >>> init = {"width": 4, "fields": {"user": {"cardinality": 50, "information_abundance": 3.5}}}
        >>> ia_bar_figure("table", view, init, "epoch 0").shape[2]
        3
    """
    names = _by_cardinality(view)
    now = [view["fields"][n]["information_abundance"] for n in names]
    init = [initial_view["fields"].get(n, {}).get("information_abundance", float("nan")) for n in names]
    return grouped_bar_figure(
        {"initialisation": init, when: now},
        _field_labels(view, names),
        title=f"{view_name}: information abundance per field",
        xlabel="field (cardinality), sorted by cardinality",
        ylabel="information abundance",
        colors=["#9ecae1", "#e6550d"],
        reference=(view["width"], f"width K = {view['width']}"),
    )


def ia_over_time_image(view_name: str, series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                       of_ceiling: bool = False) -> np.ndarray:
    """IA of a few fields over training: ``series`` maps a legend label to ``(global steps, IA)``; with
    ``of_ceiling`` the values are IA / min(cardinality, K), on a 0..1 scale where the lowest line is the most
    collapsed field whatever its cardinality.

    Example:
        >>> from lightning_recanalysis.figures import ia_over_time_image
        >>> ia_over_time_image("table", {"user (most collapsed)": ([0, 10], [7.5, 3.0])}).shape
        (360, 600, 3)
    """
    if of_ceiling:
        return line_image(dict(series), title=f"{view_name}: IA as a share of its max, min(cardinality, K)",
                          xlabel="global step", ylabel="IA / min(cardinality, K)", ylim=(0.0, 1.05))
    return line_image(dict(series), title=f"{view_name}: information abundance over training", xlabel="global step",
                      ylabel="information abundance")
