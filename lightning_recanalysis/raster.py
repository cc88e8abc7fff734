"""Figures drawn straight into pixels with Pillow, for images a monitor logs at every analysis.

A matplotlib figure costs 0.1 to 0.5 s of CPU, mostly laying out its text; a monitor that logs several maps per
epoch would spend more time drawing than a short training run spends training. These draw the same content (a
labelled heatmap with its colour bar, a line chart with its axes) in a few milliseconds. Pillow is already
installed with matplotlib; the colour maps are matplotlib's. For one-off figures of the end-of-run report,
:mod:`lightning_recanalysis.plotting` remains the better-looking choice.

Both return ``[H, W, 3]`` uint8 arrays, the layout :meth:`AnalysisWriter.image` takes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

__all__ = ["heatmap_image", "line_image"]

_INK = (20, 20, 20)
_GRID = (215, 215, 215)


@lru_cache(maxsize=8)
def _font(size: int):
    try:  # Pillow >= 10.1 bundles a scalable font
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: its fixed bitmap font
        return ImageFont.load_default()


@lru_cache(maxsize=4096)
def _glyphs(text: str, size: int) -> Image.Image:
    """``text`` rendered once as an alpha mask: maps logged every epoch repeat the same labels and the same
    two-decimal values, and pasting a cached mask is ~20 times faster than laying the text out again."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (max(1, right), max(1, bottom)), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    return mask


def _size(text: str, size: int) -> tuple[int, int]:
    return _glyphs(text, size).size


def _write(image: Image.Image, xy: tuple[float, float], text: str, size: int, fill=_INK) -> None:
    image.paste(fill, (int(xy[0]), int(xy[1])), _glyphs(text, size))


@lru_cache(maxsize=64)
def _vertical_glyphs(text: str, size: int) -> Image.Image:
    return _glyphs(text, size).rotate(90, expand=True)


def _vertical_text(image: Image.Image, xy: tuple[int, int], text: str, size: int) -> None:
    """Text rotated 90 degrees (reading upwards), centred on ``xy``."""
    mask = _vertical_glyphs(text, size)
    image.paste(_INK, (xy[0] - mask.width // 2, xy[1] - mask.height // 2), mask)


@lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def _colors(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    lut = _lut(cmap)
    scaled = np.nan_to_num((values - vmin) / (vmax - vmin if vmax > vmin else 1.0), nan=0.0)
    return lut[np.clip((scaled * 255).round().astype(np.int64), 0, 255)]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not high > low:
        return [low]
    return list(np.linspace(low, high, count))


def heatmap_image(
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
    cell: int = 22,
    annotate: bool = True,
) -> np.ndarray:
    """A heatmap of ``matrix`` (rows x columns) with labelled axes, a title and a colour bar; cell values are
    written in the cells when ``annotate`` (two decimals)."""
    data = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"heatmap_image takes a 2-D matrix, got shape {data.shape}")
    n_rows, n_cols = data.shape
    finite = data[np.isfinite(data)]
    low = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None else 0.0)
    high = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    rows = [str(r) for r in (row_labels if row_labels is not None else range(1, n_rows + 1))]
    cols = [str(c) for c in (col_labels if col_labels is not None else range(1, n_cols + 1))]
    normal = _font(13)
    row_width = max([_size(r, 11)[0] for r in rows] + [0])
    left = 12 + (18 if ylabel else 0) + row_width + 6
    top = 12 + _size(title, 13)[1] + 10
    grid_w, grid_h = max(1, n_cols) * cell, max(1, n_rows) * cell
    bar_x = left + grid_w + 16
    tick_texts = [f"{t:.2g}" for t in _ticks(low, high)]
    bar_w = 14 + 4 + max(_size(t, 11)[0] for t in tick_texts) + (22 if colorbar_label else 0)
    width = max(bar_x + bar_w + 12, _size(title, 13)[0] + 24)
    height = top + grid_h + 8 + 14 + (20 if xlabel else 0) + 10
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    # The cells: each value's colour, blown up to cell x cell pixels.
    if n_rows and n_cols:
        pixels = np.repeat(np.repeat(_colors(data, cmap, low, high), cell, axis=0), cell, axis=1)
        image.paste(Image.fromarray(pixels, "RGB"), (left, top))
    draw.rectangle([left - 1, top - 1, left + grid_w, top + grid_h], outline=_INK)
    if annotate and n_rows * n_cols <= 400:
        mid = (low + high) / 2
        for r in range(n_rows):
            for c in range(n_cols):
                if np.isfinite(data[r, c]):
                    text = f"{data[r, c]:.2f}"
                    tw, th = _size(text, 9)
                    _write(image, (left + c * cell + (cell - tw) // 2, top + r * cell + (cell - th) // 2 - 1), text, 9,
                           (0, 0, 0) if data[r, c] > mid else (255, 255, 255))
    for r, label in enumerate(rows):
        tw, th = _size(label, 11)
        _write(image, (left - 6 - tw, top + r * cell + (cell - th) // 2 - 2), label, 11)
    step = max(1, int(np.ceil(n_cols * 22 / max(grid_w, 1))))  # thin the column labels if they would overlap
    for c in range(0, n_cols, step):
        tw, _ = _size(cols[c], 11)
        _write(image, (left + c * cell + (cell - tw) // 2, top + grid_h + 4), cols[c], 11)
    tw, _ = _size(title, 13)
    draw.text(((width - tw) // 2, 10), title, fill=_INK, font=normal)
    if xlabel:
        tw, _ = _size(xlabel, 13)
        _write(image, (left + grid_w // 2 - tw // 2, top + grid_h + 22), xlabel, 13)
    if ylabel:
        _vertical_text(image, (12 + 8, top + grid_h // 2), ylabel, 13)

    # The colour bar: the colour map from low (bottom) to high (top), with its ticks.
    gradient = _colors(np.linspace(high, low, max(grid_h, 2))[:, None], cmap, low, high)
    image.paste(Image.fromarray(np.repeat(gradient, 14, axis=1), "RGB"), (bar_x, top))
    draw.rectangle([bar_x - 1, top - 1, bar_x + 14, top + grid_h], outline=_INK)
    for value, text in zip(_ticks(low, high), tick_texts):
        y = top + int(round((high - value) / (high - low) * (grid_h - 1))) if high > low else top
        draw.line([bar_x + 14, y, bar_x + 17, y], fill=_INK)
        _write(image, (bar_x + 20, y - 7), text, 11)
    if colorbar_label:
        _vertical_text(image, (width - 16, top + grid_h // 2), colorbar_label, 11)
    return np.asarray(image)


def line_image(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (600, 360),
) -> np.ndarray:
    """One line (with markers) per named ``(x, y)`` series, on axes with ticks, a title and axis labels."""
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    width, height = size
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    small, normal = _font(11), _font(13)
    xs = np.concatenate([np.asarray(x, dtype=np.float64) for x, _ in series.values()] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(y, dtype=np.float64) for _, y in series.values()] or [np.zeros(1)])
    ys = ys[np.isfinite(ys)] if np.isfinite(ys).any() else np.zeros(1)
    x_low, x_high = float(xs.min()), float(xs.max())
    y_low, y_high = min(0.0, float(ys.min())), float(ys.max())
    if not x_high > x_low:
        x_high = x_low + 1.0
    if not y_high > y_low:
        y_high = y_low + 1.0
    # Round tick values (0, 0.005, 0.01, ...), the axis extended to the last one.
    y_ticks = list(MaxNLocator(nbins=5).tick_values(y_low, y_high))
    y_ticks = [t for t in y_ticks if t >= y_low - 1e-12]
    y_ticks = y_ticks[: next((i + 1 for i, t in enumerate(y_ticks) if t >= y_high - 1e-12), len(y_ticks))]
    y_high = max(y_high, y_ticks[-1])
    labels = [f"{t:.3g}" for t in y_ticks]
    left = 16 + 18 + max(_size(t, 11)[0] for t in labels) + 6
    top, right, bottom = 12 + _size(title, 13)[1] + 12, width - 16, height - 44
    to_x = lambda v: left + (v - x_low) / (x_high - x_low) * (right - left)  # noqa: E731
    to_y = lambda v: bottom - (v - y_low) / (y_high - y_low) * (bottom - top)  # noqa: E731
    for value, text in zip(y_ticks, labels):
        y = to_y(value)
        draw.line([left, y, right, y], fill=_GRID)
        tw, _ = _size(text, 11)
        _write(image, (left - 6 - tw, y - 7), text, 11)
    x_ticks = np.unique(np.round(np.linspace(x_low, x_high, min(11, int(x_high - x_low) + 1))))
    for value in x_ticks:
        x = to_x(value)
        draw.line([x, bottom, x, bottom + 4], fill=_INK)
        text = f"{value:g}"
        tw, _ = _size(text, 11)
        _write(image, (x - tw / 2, bottom + 6), text, 11)
    draw.rectangle([left, top, right, bottom], outline=_INK)
    for index, (name, (x, y)) in enumerate(series.items()):
        color = palette[index % len(palette)]
        points = [(to_x(a), to_y(b)) for a, b in zip(x, y) if np.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        if len(series) > 1:
            draw.text((right - 150, top + 6 + 14 * index), name, fill=color, font=small)
    tw, _ = _size(title, 13)
    draw.text(((width - tw) // 2, 10), title, fill=_INK, font=normal)
    tw, _ = _size(xlabel, 13)
    _write(image, ((left + right - tw) // 2, bottom + 22), xlabel, 13)
    _vertical_text(image, (14, (top + bottom) // 2), ylabel, 13)
    return np.asarray(image)
