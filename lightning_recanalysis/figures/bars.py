"""Grouped bar charts (the report's information abundance per field), drawn with Pillow like every other figure.

They were matplotlib figures until the import of matplotlib's figure machinery and the drawing of two charts were
most of what the end-of-run report added to a short run (``benchmarks/bench_report.py``); the chart is the same:
one bar per group side by side for each category, category names written upwards under their bars, an optional
dashed reference line, a legend in a corner the bars leave free.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from PIL import Image, ImageDraw

from .pillow import (
    FRAME,
    GRID,
    INK,
    SUPERSAMPLE,
    legend_size,
    nice_ticks,
    text_size,
    tick_texts,
    vertical_text,
    write_text,
)

__all__ = ["grouped_bar_figure"]

_REFERENCE = (128, 128, 128)


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
) -> np.ndarray:
    """One bar per group side by side for each category, with an optional dashed reference line at
    ``reference[0]`` (labelled ``reference[1]`` in the legend); an ``[H, W, 3]`` uint8 image, 100 pixels per
    inch as the other figures (``inches_per_category`` sets the width, up to 12 inches). A NaN value draws no bar.

    The y axis starts at 0 (or the lowest value, if negative) and reaches 5% beyond the highest value or the
    reference, as matplotlib's bar charts do.

    Example:
        >>> from lightning_recanalysis.figures import grouped_bar_figure
        >>> image = grouped_bar_figure({"init": [3.0, 4.0], "now": [2.0, 4.0]}, ["a", "b"], title="IA",
        ...                            xlabel="field", ylabel="IA", reference=(4.0, "width"))
        >>> image.shape[1], image.dtype
        (360, dtype('uint8'))
    """
    names = list(groups)
    values = np.array([[float(v) for v in groups[name]] for name in names], dtype=np.float64).reshape(len(names), -1)
    n = len(categories)
    palette = ([tuple(int(round(255 * c)) for c in to_rgb(color)) for color in colors] if colors is not None else
               [tuple(int(round(255 * c)) for c in colormaps["tab10"](i)[:3]) for i in range(10)])
    title_size, label_size, tick_size, category_size, legend_font = 14, 14, 13, 10, 10  # px at 100 dpi
    s = SUPERSAMPLE

    finite = values[np.isfinite(values)]
    high = max([0.0, *finite.tolist(), *([reference[0]] if reference is not None else [])])
    low = min(0.0, float(finite.min()) if finite.size else 0.0)
    y_low, y_high = low, high + 0.05 * ((high - low) or 1.0)

    width = int(round(100 * min(12.0, 3.0 + inches_per_category * n)))
    label_h, tick_h = text_size("Ag", label_size)[1], text_size("Ag", tick_size)[1]
    y_ticks = nice_ticks(y_low, y_high, 6)
    y_texts = tick_texts(y_ticks)
    left = 10 + label_h + 8 + max(text_size(t, tick_size)[0] for t in y_texts) + 4 + 5
    top = 8 + text_size(title, title_size)[1] + 8
    right = width - 16
    plot_w, plot_h = right - left, 250
    bottom = top + plot_h
    category_w = max((text_size(c, category_size)[0] for c in categories), default=0)  # upright once rotated
    height = bottom + 5 + 3 + category_w + 4 + label_h + 8

    # Category i is centred at x = i; its group's bars share 0.8 of the unit; 5% margin either side.
    span = (n - 1) + 0.8
    x_low, x_high = -0.4 - 0.05 * span, n - 1 + 0.4 + 0.05 * span
    to_x = lambda v: (np.asarray(v, dtype=np.float64) - x_low) / (x_high - x_low) * plot_w  # noqa: E731
    to_y = lambda v: (y_high - np.asarray(v, dtype=np.float64)) / (y_high - y_low) * plot_h  # noqa: E731
    bar_w = 0.8 / max(1, len(names))
    bars = [(g, i, (i + (g - (len(names) - 1) / 2) * bar_w), values[g, i])
            for g in range(len(names)) for i in range(n) if np.isfinite(values[g, i])]

    # The legend in the corner that hides the fewest bars (upper right first), else below the x label.
    entries = names + ([reference[1]] if reference is not None else [])
    box_w, box_h, entry_h = legend_size(entries, legend_font)
    inset = 6
    corners = [(plot_w - inset - box_w, inset), (inset, inset)]
    zero_y = float(to_y(0.0))

    def hidden(corner) -> int:
        cx, cy = corner
        return sum(1 for _, _, x, v in bars
                   if float(to_x(x + bar_w / 2)) >= cx and float(to_x(x - bar_w / 2)) <= cx + box_w
                   and min(float(to_y(v)), zero_y) <= cy + box_h)

    counts = [hidden(c) for c in corners]
    below = min(counts) > 0 or box_w > plot_w
    legend_at = None if below else corners[counts.index(min(counts))]
    columns = max(1, min(len(entries), (width - 20) // max(1, box_w - 8)))
    per_column = math.ceil(len(entries) / columns)
    total_h = height + (6 + entry_h * per_column + 10 if below else 0)

    big = Image.new("RGB", (width * s, total_h * s), "white")
    draw = ImageDraw.Draw(big)
    for value in y_ticks:
        y = (top + float(to_y(value))) * s
        draw.line([(left * s, y), (right * s, y)], fill=GRID, width=s)
    for g, _, x, v in bars:
        x0, x1 = left + float(to_x(x - bar_w / 2)), left + float(to_x(x + bar_w / 2))
        y0, y1 = sorted((top + float(to_y(v)), top + zero_y))
        draw.rectangle([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], fill=palette[g % len(palette)])
    if reference is not None:
        y = (top + float(to_y(reference[0]))) * s
        for x in np.arange(left * s, right * s, 9 * s):  # dashes: 6 on, 3 off
            draw.line([(x, y), (min(x + 6 * s, right * s), y)], fill=_REFERENCE, width=s)
    draw.rectangle([left * s - s, top * s - s, right * s, bottom * s], outline=INK, width=s)
    for value in y_ticks:
        y = (top + float(to_y(value))) * s
        draw.line([((left - 5) * s, y), (left * s, y)], fill=INK, width=s)
    for i in range(n):
        x = (left + float(to_x(i))) * s
        draw.line([(x, bottom * s), (x, (bottom + 5) * s)], fill=INK, width=s)
    if legend_at is not None:
        lx, ly = left + legend_at[0], top + legend_at[1]
        box = [lx * s, ly * s, (lx + box_w) * s, (ly + box_h) * s]
        if hasattr(draw, "rounded_rectangle"):  # Pillow >= 8.2
            draw.rounded_rectangle(box, radius=3 * s, fill="white", outline=FRAME, width=s)
        else:
            draw.rectangle(box, fill="white", outline=FRAME, width=s)
        places = [(lx + 8, ly + 6 + entry_h * k) for k in range(len(entries))]
    else:
        column_w = box_w - 8
        x0 = (width - columns * column_w) / 2
        places = [(x0 + column_w * (k // per_column), height + 6 + entry_h * (k % per_column))
                  for k in range(len(entries))]
    for k, (x, y) in enumerate(places):
        middle = y + entry_h / 2 - 1
        if k < len(names):  # a filled patch, as matplotlib's bar legend
            draw.rectangle([x * s, (middle - 4) * s, (x + 22) * s, (middle + 4) * s], fill=palette[k % len(palette)])
        else:
            for dash in (0, 9, 18):
                draw.line([((x + dash) * s, middle * s), ((x + min(dash + 6, 22)) * s, middle * s)],
                          fill=_REFERENCE, width=s)

    image = big.reduce(s)
    for value, text in zip(y_ticks, y_texts):
        write_text(image, (left - 8 - text_size(text, tick_size)[0], top + float(to_y(value)) - tick_h / 2), text, tick_size)
    for i, name in enumerate(categories):  # upwards, ending just under the tick
        vertical_text(image, (left + float(to_x(i)), bottom + 8 + text_size(name, category_size)[0] / 2), name,
                       category_size)
    for k, (x, y) in enumerate(places):
        write_text(image, (x + 28, y), entries[k], legend_font)
    write_text(image, ((left + right - text_size(title, title_size)[0]) / 2, 8), title, title_size)
    write_text(image, ((left + right - text_size(xlabel, label_size)[0]) / 2, bottom + 5 + 3 + category_w + 4), xlabel,
           label_size)
    vertical_text(image, (10 + label_h / 2, (top + bottom) / 2), ylabel, label_size)
    return np.asarray(image)
