"""Stacked histograms drawn straight into pixels (Pillow), e.g. for the conflict-subset figure
(:mod:`~lightning_recanalysis.figures.conflict_subset`): bars in each bin's colour, a second count stacked on
them in a light tint of it."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .pillow import GRID, INK, nice_ticks, text_size, tick_texts, vertical_text, wrap_text, write_text

__all__ = ["stacked_histogram_image", "bin_colors", "NEAR", "MIDDLE", "FAR"]

NEAR, MIDDLE, FAR = (31, 119, 180), (150, 150, 150), (214, 39, 40)  # tab:blue, grey, tab:red


@lru_cache(maxsize=64)  # a handful of colours, each tinted for every bin of every panel
def _tint(color: tuple[int, int, int], amount: float = 0.7) -> tuple[int, int, int]:
    return tuple(int(round(c + (255 - c) * amount)) for c in color)


def stacked_histogram_image(edges: Sequence[float], lower: Sequence[float], upper: Sequence[float],
                            colors: Sequence[tuple[int, int, int]], *, title: str, xlabel: str, ylabel: str,
                            notes: Sequence[str] = (), size: tuple[int, int] = (440, 290),
                            note_size: int = 10) -> np.ndarray:
    """Bars over ``edges``: ``lower`` counts in each bin's colour, ``upper`` stacked on them in a tint of it,
    with round ticks, a grid, a title, axis labels and ``notes`` under the axes. A title or a note wider than the
    image is broken into lines (the image grows taller), so no text is cut.

    Example:
        >>> from lightning_recanalysis.figures import NEAR, FAR, stacked_histogram_image
        >>> stacked_histogram_image([0, 1, 2], [3, 1], [1, 2], [NEAR, FAR], title="t", xlabel="x", ylabel="y").shape
        (290, 440, 3)
    """
    width, height = size
    edges = np.asarray(edges, dtype=np.float64)
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    title_size, label_size, tick_size = 13, 12, 11
    label_h, tick_h, note_h = text_size("Ag", label_size)[1], text_size("Ag", tick_size)[1], text_size("Ag", note_size)[1] + 2
    titles = wrap_text(title, title_size, width - 16)
    title_h = text_size("Ag", title_size)[1]
    notes = [line for note in notes for line in wrap_text(note, note_size, width - 16)]
    height += title_h * (len(titles) - 1)
    y_high = float(max(1.0, (lower + upper).max(initial=0.0))) * 1.05
    y_ticks = nice_ticks(0.0, y_high, max(3, (height - 100) // 35), integer=True)
    y_texts = tick_texts(y_ticks)
    left = 8 + label_h + 6 + max(text_size(t, tick_size)[0] for t in y_texts) + 8
    top, right = 8 + title_h * len(titles) + 6, width - 12
    bottom = height - (6 + label_h + 3 + tick_h + 3 + 5) - note_h * len(notes)
    x_low, x_high = float(edges[0]), float(edges[-1]) if edges[-1] > edges[0] else float(edges[0]) + 1.0
    x_ticks = nice_ticks(x_low, x_high, max(3, (right - left) // 60))
    x_texts = tick_texts(x_ticks)
    plot_w, plot_h = right - left, bottom - top
    to_x = lambda v: left + (v - x_low) / (x_high - x_low) * plot_w  # noqa: E731
    to_y = lambda v: bottom - v / y_high * plot_h  # noqa: E731

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for value in y_ticks:
        draw.line([(left, to_y(value)), (right, to_y(value))], fill=GRID)
    for k, color in enumerate(colors):
        x0, x1 = to_x(edges[k]), max(to_x(edges[k]) + 1, to_x(edges[k + 1]) - 1)
        if lower[k] > 0:
            draw.rectangle([x0, to_y(lower[k]), x1, bottom], fill=color)
        if upper[k] > 0:
            draw.rectangle([x0, to_y(lower[k] + upper[k]), x1, to_y(lower[k])], fill=_tint(color))
    draw.rectangle([left - 1, top - 1, right, bottom], outline=INK)
    for value, text in zip(y_ticks, y_texts):
        draw.line([(left - 5, to_y(value)), (left, to_y(value))], fill=INK)
        write_text(image, (left - 8 - text_size(text, tick_size)[0], to_y(value) - tick_h / 2), text, tick_size)
    for value, text in zip(x_ticks, x_texts):
        draw.line([(to_x(value), bottom), (to_x(value), bottom + 5)], fill=INK)
        write_text(image, (to_x(value) - text_size(text, tick_size)[0] / 2, bottom + 8), text, tick_size)
    for index, line in enumerate(titles):
        write_text(image, ((width - text_size(line, title_size)[0]) / 2, 6 + title_h * index), line, title_size)
    label_y = bottom + 8 + tick_h + 3
    write_text(image, ((left + right - text_size(xlabel, label_size)[0]) / 2, label_y), xlabel, label_size)
    vertical_text(image, (8 + label_h / 2, (top + bottom) / 2), ylabel, label_size)
    for index, note in enumerate(notes):
        write_text(image, (8, label_y + label_h + 4 + note_h * index), note, note_size)
    return np.asarray(image)


def bin_colors(edges: Sequence[float], low: float, high: float) -> list[tuple[int, int, int]]:
    """Each bin's colour by its centre: NEAR at or below ``low``, FAR above ``high``, MIDDLE between.

    Example:
        >>> from lightning_recanalysis.figures import FAR, MIDDLE, NEAR, bin_colors
        >>> bin_colors([0, 1, 2, 3], low=1.0, high=2.0) == [NEAR, MIDDLE, FAR]
        True
    """
    edges = np.asarray(edges, dtype=np.float64)
    centers = (edges[1:] + edges[:-1]) / 2
    return [NEAR if c <= low else FAR if c > high else MIDDLE for c in centers]
