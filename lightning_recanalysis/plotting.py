"""matplotlib figures (headless ``Agg``) for the TensorBoard images and the end-of-run report: the grouped bar
charts and the heatmaps the monitors draw with it. The report's line charts and its simple heatmaps are drawn
with :mod:`lightning_recanalysis.raster` instead (Pillow, about a tenth of the cost).

Every figure states its colour scale with a colour bar and names its axes; heatmaps take row and column labels
so fields are named, not numbered.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .raster import _cell_text  # noqa: E402

__all__ = ["heatmap_figure", "figure_to_png", "grouped_bar_figure", "ia_bar_figure"]


def _tick_labels(labels: Sequence[str] | None, n: int, max_ticks: int) -> tuple[list[int], list[str]]:
    if labels is None:
        labels = [str(i + 1) for i in range(n)]
    step = max(1, int(np.ceil(n / max_ticks)))
    idx = list(range(0, n, step))
    return idx, [str(labels[i]) for i in idx]


def heatmap_figure(
    matrix,
    *,
    title: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    colorbar_label: str = "",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    cmap: str = "viridis",
    annotate: bool = False,
    fmt: str = "{:.2f}",
) -> Figure:
    """A labelled heatmap with its colour scale; ``matrix`` is rows x columns (numpy or torch)."""
    data = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=np.float64)
    n_rows, n_cols = data.shape
    fig = Figure(figsize=(min(12.0, max(6.5, 2.5 + 0.28 * n_cols)), min(10.0, max(3.2, 1.8 + 0.24 * n_rows))), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    xi, xl = _tick_labels(col_labels, n_cols, 40)
    yi, yl = _tick_labels(row_labels, n_rows, 40)
    ax.set_xticks(xi, xl, rotation=90 if col_labels is not None and n_cols > 8 else 0, fontsize=7)
    ax.set_yticks(yi, yl, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if annotate and n_rows * n_cols <= 400:
        for r in range(n_rows):
            for c in range(n_cols):
                if not np.isfinite(data[r, c]):
                    continue
                # Text colour from the cell's own brightness, so any colour map (diverging too) stays legible.
                red, green, blue, _ = image.cmap(image.norm(data[r, c]))
                light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
                ax.text(c, r, _cell_text(fmt, data[r, c]), ha="center", va="center", fontsize=6,
                        color="black" if light else "white")
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    fig.tight_layout()
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (for the report)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def grouped_bar_figure(
    groups: dict[str, Sequence[float]],
    categories: Sequence[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    colors: Sequence[str] | None = None,
    reference: tuple[float, str] | None = None,
    inches_per_category: float = 0.3,
) -> Figure:
    """One bar per group side by side for each category (x tick), with an optional dashed reference line."""
    x = np.arange(len(categories))
    fig = Figure(figsize=(min(12.0, 3.0 + inches_per_category * len(categories)), 3.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(groups))
    for i, (label, values) in enumerate(groups.items()):
        color = colors[i] if colors is not None else None
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, values, width, label=label, color=color)
    if reference is not None:
        ax.axhline(reference[0], color="grey", linestyle="--", linewidth=1, label=reference[1])
    ax.set_xticks(x, list(categories), rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ia_bar_figure(view_name: str, view: dict, initial_view: dict, when: str) -> Figure:
    """Information abundance per field now beside at initialisation (Guo et al.'s Figure 2), fields sorted by
    cardinality; the dashed line is the width K, the most a field can reach."""
    names = sorted(view["fields"], key=lambda f: (view["fields"][f]["cardinality"], f))
    now = [view["fields"][n]["information_abundance"] for n in names]
    init = [initial_view["fields"].get(n, {}).get("information_abundance", float("nan")) for n in names]
    return grouped_bar_figure(
        {"initialisation": init, when: now},
        [f"{n} ({view['fields'][n]['cardinality']})" for n in names],
        title=f"{view_name}: information abundance per field",
        xlabel="field (cardinality), sorted by cardinality",
        ylabel="information abundance",
        colors=["#9ecae1", "#e6550d"],
        reference=(view["width"], f"width K = {view['width']}"),
    )
