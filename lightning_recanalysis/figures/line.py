"""A line chart with ticks, grid and legend, drawn with Pillow in milliseconds (see :mod:`.pillow` for why)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
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

__all__ = ["line_image", "agreement_image"]


def _draw_legend_samples(draw: ImageDraw.ImageDraw, entries, s: int) -> None:
    """Line-and-marker samples onto ``draw`` (the supersampled canvas, scale ``s``); the labels later, at 1x."""
    for x, y, color in entries:
        draw.line([(x * s, y * s), ((x + 22) * s, y * s)], fill=color, width=round(2.1 * s))
        r = 2.1 * s
        draw.ellipse([(x + 11) * s - r, y * s - r, (x + 11) * s + r, y * s + r], fill=color)


def line_image(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (600, 360),
    ylim: tuple[float, float] | None = None,
) -> np.ndarray:
    """One line with markers per named ``(x, y)`` series, on axes with round ticks, a grid, a title, axis labels
    and, for more than one series, a legend: in the corner of the plot where it hides the fewest points, or
    below the plot when every corner would hide some (the image then grows taller). Like matplotlib's, the axes
    reach 5% beyond the data unless ``ylim`` is given.

    Example:
        >>> from lightning_recanalysis.figures import line_image
        >>> line_image({"IA": ([0, 1, 2], [4.0, 3.0, 2.5])}, title="t", xlabel="step", ylabel="IA").shape
        (360, 600, 3)
    """
    palette = [tuple(int(round(255 * v)) for v in colormaps["tab10"](i)[:3]) for i in range(10)]
    width, height = size
    title_size, label_size, tick_size, legend_font = 14, 14, 13, 10  # px: matplotlib's sizes at 100 dpi
    s = SUPERSAMPLE
    curves = [(name, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
              for name, (x, y) in series.items()]
    xs = np.concatenate([x for _, x, _ in curves] or [np.zeros(1)])
    ys = np.concatenate([y for _, _, y in curves] or [np.zeros(1)])
    xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
    xs, ys = (xs if xs.size else np.zeros(1)), (ys if ys.size else np.zeros(1))

    def padded(low: float, high: float) -> tuple[float, float]:
        if high > low:
            return low - 0.05 * (high - low), high + 0.05 * (high - low)
        pad = 0.05 * abs(low) or 0.5  # one value: 5% of it either side (0: half a unit)
        return low - pad, high + pad

    x_low, x_high = padded(float(xs.min()), float(xs.max()))
    y_low, y_high = ylim if ylim is not None else padded(float(ys.min()), float(ys.max()))

    label_h, tick_h = text_size("Ag", label_size)[1], text_size("Ag", tick_size)[1]
    y_ticks = nice_ticks(y_low, y_high, max(3, (height - 100) // 30))
    y_texts = tick_texts(y_ticks)
    left = 10 + label_h + 8 + max(text_size(t, tick_size)[0] for t in y_texts) + 4 + 5
    top = 8 + text_size(title, title_size)[1] + 8
    right = width - 16
    bottom = height - (8 + label_h + 4 + tick_h + 3 + 5)
    integer = bool(np.all(np.round(xs) == xs))
    x_ticks = nice_ticks(x_low, x_high, max(3, (right - left) // 60), integer=integer)
    x_texts = tick_texts(x_ticks)
    plot_w, plot_h = right - left, bottom - top
    to_x = lambda v: (np.asarray(v) - x_low) / (x_high - x_low) * plot_w  # noqa: E731  (plot-area pixels)
    to_y = lambda v: (y_high - np.asarray(v)) / (y_high - y_low) * plot_h  # noqa: E731

    # The legend: the corner covering the fewest points of the curves (sampled along their segments too).
    names = [name for name, _, _ in curves] if len(curves) > 1 else []
    legend_at, below_h = None, 0
    if names:
        box_w, box_h, entry_h = legend_size(names, legend_font)
        px, py = [], []
        for _, x, y in curves:
            ok = np.isfinite(x) & np.isfinite(y)
            gx, gy = to_x(x[ok]), to_y(y[ok])
            if gx.size > 1:
                t = np.linspace(0, 1, 8)[:, None]
                gx = np.concatenate([gx, (gx[:-1] + t * np.diff(gx)).ravel()])
                gy = np.concatenate([gy, (gy[:-1] + t * np.diff(gy)).ravel()])
            px.append(gx)
            py.append(gy)
        px, py = np.concatenate(px), np.concatenate(py)
        best = None
        if box_w <= 0.6 * plot_w and box_h <= 0.6 * plot_h:
            inset = 6
            corners = [(plot_w - inset - box_w, inset), (inset, inset), (inset, plot_h - inset - box_h),
                       (plot_w - inset - box_w, plot_h - inset - box_h)]  # upper right first, as matplotlib's order
            hidden = [int(np.sum((px >= cx - 4) & (px <= cx + box_w + 4) & (py >= cy - 4) & (py <= cy + box_h + 4)))
                      for cx, cy in corners]
            if min(hidden) == 0:
                best = corners[hidden.index(0)]
        if best is not None:
            legend_at = (left + best[0], top + best[1])
        else:  # no free corner: a legend under the x label, in as many columns as fit
            columns = max(1, min(len(names), (width - 20) // (box_w - 8)))
            per_column = math.ceil(len(names) / columns)
            below_h = 6 + entry_h * per_column + 4 + 6
    total_h = height + below_h
    big = Image.new("RGB", (width * s, total_h * s), "white")
    draw = ImageDraw.Draw(big)

    # The plot area on its own canvas, so lines outside ``ylim`` are cut at the frame, as matplotlib clips them.
    plot = Image.new("RGB", (plot_w * s, plot_h * s), "white")
    pdraw = ImageDraw.Draw(plot)
    for value in y_ticks:
        y = float(to_y(value)) * s
        pdraw.line([(0, y), (plot_w * s, y)], fill=GRID, width=s)
    for value in x_ticks:
        x = float(to_x(value)) * s
        pdraw.line([(x, 0), (x, plot_h * s)], fill=GRID, width=s)
    for index, (_, x, y) in enumerate(curves):
        color = palette[index % len(palette)]
        ok = np.isfinite(x) & np.isfinite(y)
        points = list(zip((to_x(x[ok]) * s).tolist(), (to_y(y[ok]) * s).tolist()))
        if len(points) > 1:
            pdraw.line(points, fill=color, width=round(2.1 * s), joint="curve")
        r = 2.1 * s
        for px_, py_ in points:
            pdraw.ellipse([px_ - r, py_ - r, px_ + r, py_ + r], fill=color)
    big.paste(plot, (left * s, top * s))
    draw.rectangle([left * s - s, top * s - s, right * s, bottom * s], outline=INK, width=s)
    for value in y_ticks:
        y = (top + float(to_y(value))) * s
        draw.line([((left - 5) * s, y), (left * s, y)], fill=INK, width=s)
    for value in x_ticks:
        x = (left + float(to_x(value))) * s
        draw.line([(x, bottom * s), (x, (bottom + 5) * s)], fill=INK, width=s)
    entries = []
    if legend_at is not None:
        lx, ly = legend_at
        box = [lx * s, ly * s, (lx + box_w) * s, (ly + box_h) * s]
        if hasattr(draw, "rounded_rectangle"):  # Pillow >= 8.2: matplotlib's rounded legend frame
            draw.rounded_rectangle(box, radius=3 * s, fill="white", outline=FRAME, width=s)
        else:
            draw.rectangle(box, fill="white", outline=FRAME, width=s)
        entries = [(lx + 8, ly + 6 + entry_h * i + entry_h / 2 - 1, palette[i % len(palette)], name, lx + 36,
                    ly + 6 + entry_h * i) for i, name in enumerate(names)]
    elif names:
        column_w = box_w - 8
        x0 = (width - columns * column_w) / 2
        y0 = height + 6
        entries = [(x0 + column_w * (i // per_column), y0 + entry_h * (i % per_column) + entry_h / 2 - 1,
                    palette[i % len(palette)], name, x0 + column_w * (i // per_column) + 28,
                    y0 + entry_h * (i % per_column)) for i, name in enumerate(names)]
    _draw_legend_samples(draw, [(x, y, c) for x, y, c, _, _, _ in entries], s)

    image = big.reduce(s)  # the anti-aliasing: each pixel the mean of s x s drawn ones
    for value, text in zip(y_ticks, y_texts):
        write_text(image, (left - 8 - text_size(text, tick_size)[0], top + float(to_y(value)) - tick_h / 2), text, tick_size)
    for value, text in zip(x_ticks, x_texts):
        write_text(image, (left + float(to_x(value)) - text_size(text, tick_size)[0] / 2, bottom + 5 + 3), text, tick_size)
    for _, _, _, name, tx, ty in entries:
        write_text(image, (tx, ty), name, legend_font)
    write_text(image, ((left + right - text_size(title, title_size)[0]) / 2, 8), title, title_size)
    write_text(image, ((left + right - text_size(xlabel, label_size)[0]) / 2, bottom + 5 + 3 + tick_h + 4), xlabel, label_size)
    vertical_text(image, (10 + label_h / 2, (top + bottom) / 2), ylabel, label_size)
    return np.asarray(image)


def agreement_image(history: Sequence[tuple[float, float]] | Mapping[str, Sequence[tuple[float, float]]], *,
                    name: str = "", title: str, ylabel: str) -> np.ndarray:
    """A rank correlation (or any value in [-1, 1]) over training: ``history`` is ``(global step, value)`` pairs,
    drawn as one series ``name``, or ``{name: pairs}`` for several labelled series (e.g. the two correlations a
    finding quotes); on a fixed -1..1 scale, so two runs' charts compare at a glance.

    Example:
        >>> from lightning_recanalysis.figures import agreement_image
        >>> agreement_image([(10, 0.2), (20, 0.6)], name="Spearman rho", title="t", ylabel="rho").shape
        (360, 600, 3)
        >>> agreement_image({"with MI": [(10, 0.2)], "with II": [(10, 0.4)]}, title="t", ylabel="rho").shape
        (360, 600, 3)
    """
    by_name = dict(history) if isinstance(history, Mapping) else {name: history}
    series = {n: ([s for s, _ in h], [a for _, a in h]) for n, h in by_name.items()}
    return line_image(series, title=title, xlabel="global step", ylabel=ylabel, ylim=(-1.05, 1.05))
