"""Grouped bar charts, the one kind of figure drawn with matplotlib (headless ``Agg``): they appear only in the
end-of-run report, once per table, so matplotlib's cost (0.1 to 0.3 s a figure) is paid a few times a run, and
its bar layout and legend are worth it. Every other figure is drawn with Pillow (:mod:`.pillow`).
"""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)  # before any pyplot import anywhere: no display is ever needed
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["figure_to_png", "grouped_bar_figure"]


def figure_to_png(fig: Figure) -> bytes:
    """Render a matplotlib figure to PNG bytes (for the report).

    Example:
        >>> from lightning_recanalysis.figures import figure_to_png, grouped_bar_figure
        >>> fig = grouped_bar_figure({"a": [1.0]}, ["x"], title="t", xlabel="x", ylabel="y")
        >>> figure_to_png(fig)[:4]
        b'\\x89PNG'
    """
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
    """One bar per group side by side for each category (x tick), with an optional dashed reference line.

    Example:
        >>> from lightning_recanalysis.figures import grouped_bar_figure
        >>> fig = grouped_bar_figure({"init": [3.0, 4.0], "now": [2.0, 4.0]}, ["a", "b"], title="IA",
        ...                          xlabel="field", ylabel="IA", reference=(4.0, "width"))
        >>> len(fig.axes[0].patches)
        4
    """
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
