"""Figures drawn straight into pixels with Pillow, for the images a monitor logs at every analysis and for the
heatmaps and line charts of the end-of-run report.

A matplotlib figure costs 0.1 to 0.3 s of CPU, mostly laying out its text; a monitor that logs several maps per
epoch would spend more time drawing than a short training run spends training, and a report of a few such
figures costs more than 10% of a short run. These draw the same content (a labelled heatmap with its colour bar,
a line chart with ticks, grid and legend) in a few milliseconds: text in matplotlib's own font (DejaVu Sans,
shipped with matplotlib), matplotlib's colour maps and colour cycle, tick values from matplotlib's tick locator,
and lines and markers drawn at twice the size and scaled down, so they are anti-aliased like matplotlib's.
Grouped bar charts and other one-off figures stay in :mod:`lightning_recanalysis.plotting`.

Every function returns an ``[H, W, 3]`` uint8 array, the layout :meth:`AnalysisWriter.image` takes;
:func:`png_bytes` encodes one for a file or a web page.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

__all__ = ["heatmap_image", "line_image", "side_by_side", "png_bytes"]

_INK = (20, 20, 20)
_GRID = (232, 232, 232)  # matplotlib's grid at alpha 0.3 on white
_FRAME = (204, 204, 204)  # matplotlib's legend frame
_BLANK = (242, 242, 242)  # an undefined (NaN) heatmap cell: no colour of any colour map, and no number in it
_SUPERSAMPLE = 2  # lines and markers are drawn this many times larger and scaled down: anti-aliasing


@lru_cache(maxsize=1)
def _font_file() -> str | None:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.exists() else None


@lru_cache(maxsize=16)
def _font(size: int):
    # matplotlib's default font, so a Pillow figure reads like a matplotlib one beside it.
    if _font_file() is not None:
        try:
            return ImageFont.truetype(_font_file(), size)
        except OSError:
            pass
    try:  # Pillow >= 10.1 bundles a scalable font
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: its fixed bitmap font
        return ImageFont.load_default()


@lru_cache(maxsize=4096)
def _glyphs(text: str, size: int) -> Image.Image:
    """``text`` rendered once as an alpha mask: maps logged every epoch repeat the same labels and the same
    two-decimal values, and pasting a cached mask is ~20 times faster than laying the text out again.

    Every mask of one size is one line high (ascent + descent), whatever its letters, so texts placed at the
    same y share a baseline."""
    font = _font(size)
    right = font.getbbox(text)[2] if text else 0
    try:
        ascent, descent = font.getmetrics()
        height = ascent + descent
    except AttributeError:  # the bitmap font has no metrics
        height = font.getbbox("Ag")[3]
    mask = Image.new("L", (max(1, right), max(1, height)), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    return mask


def _size(text: str, size: int) -> tuple[int, int]:
    return _glyphs(text, size).size


def _write(image: Image.Image, xy: tuple[float, float], text: str, size: int, fill=_INK) -> None:
    image.paste(fill, (int(round(xy[0])), int(round(xy[1]))), _glyphs(text, size))


@lru_cache(maxsize=256)
def _vertical_glyphs(text: str, size: int) -> Image.Image:
    return _glyphs(text, size).rotate(90, expand=True)


def _vertical_text(image: Image.Image, xy: tuple[float, float], text: str, size: int) -> None:
    """Text rotated 90 degrees (reading upwards), centred on ``xy``."""
    mask = _vertical_glyphs(text, size)
    image.paste(_INK, (int(xy[0]) - mask.width // 2, int(xy[1]) - mask.height // 2), mask)


@lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def _colors(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """RGB per value; NaN (undefined) gets the light grey of a blank cell, never a colour of the map."""
    lut = _lut(cmap)
    scaled = np.nan_to_num((values - vmin) / (vmax - vmin if vmax > vmin else 1.0), nan=0.0)
    rgb = lut[np.clip((scaled * 255).round().astype(np.int64), 0, 255)]
    rgb[~np.isfinite(values)] = _BLANK
    return rgb


def _nice_ticks(low: float, high: float, bins: int, integer: bool = False) -> list[float]:
    """Round tick values within [low, high], as matplotlib's own axes choose them."""
    if not high > low:
        return [low]
    ticks = MaxNLocator(nbins=max(1, bins), steps=[1, 2, 2.5, 5, 10], integer=integer).tick_values(low, high)
    span = high - low
    return [float(t) for t in ticks if low - 1e-9 * span <= t <= high + 1e-9 * span]


def _tick_texts(ticks: Sequence[float]) -> list[str]:
    """The fewest decimals that tell the ticks apart (0, 0.25, 0.5 -> 0.00, 0.25, 0.50), matplotlib's minus."""
    step = min((abs(b - a) for a, b in zip(ticks, ticks[1:]) if b != a), default=1.0)
    decimals = next((d for d in range(7) if abs(round(step, d) - step) <= 1e-6 * step), 6)
    if max((abs(t) for t in ticks), default=0.0) >= 1e5 or 0 < step < 1e-4:
        return [f"{t:.3g}".replace("-", "\u2212") for t in ticks]
    return [f"{t + 0.0:.{decimals}f}".replace("-", "\u2212") for t in ticks]


def _cell_text(fmt: str, value: float) -> str:
    """``fmt.format(value)``, without the sign of a value that rounds to zero ("-0.000" reads as negative)."""
    text = fmt.format(value)
    if text.startswith("-") and not any(c in "123456789" for c in text):
        return text[1:]
    return text


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
    cell: int | tuple[int, int] = 22,
    annotate: bool = True,
    fmt: str = "{:.2f}",
    colorbar: bool = True,
) -> np.ndarray:
    """A heatmap of ``matrix`` (rows x columns) with labelled axes, a title and a colour bar.

    Cell values are written in the cells when ``annotate`` (``fmt``; up to 400 cells), dark or light by the
    cell's own brightness so any colour map stays legible; undefined (NaN) cells are blank. ``vmin``/``vmax``
    None take the data's range. ``cell`` is the cell's size in pixels (one number: square; or ``(width,
    height)``); cells widen to fit their numbers, and to fit short column labels when there are few columns.
    Column labels wider than a cell are written upwards.
    """
    data = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"heatmap_image takes a 2-D matrix, got shape {data.shape}")
    n_rows, n_cols = data.shape
    finite = data[np.isfinite(data)]
    low = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None else 0.0)
    high = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    rows = [str(r) for r in (row_labels if row_labels is not None else range(1, n_rows + 1))]
    cols = [str(c) for c in (col_labels if col_labels is not None else range(1, n_cols + 1))]
    annotate = annotate and 0 < n_rows * n_cols <= 400
    title_size, label_size, tick_size, cell_text = 14, 13, 11, 10  # px; matplotlib's 10 pt at 100 dpi is 14 px

    cell_w, cell_h = (cell, cell) if isinstance(cell, int) else cell
    texts = [[_cell_text(fmt, v) if np.isfinite(v) else "" for v in row] for row in data] if annotate else []
    if annotate:
        cell_w = max(cell_w, max((_size(t, cell_text)[0] for row in texts for t in row), default=0) + 6)
    col_w = max((_size(c, tick_size)[0] for c in cols), default=0)
    if n_cols <= 6 and col_w + 8 <= 140:  # a few short labels read better level, under wider cells
        cell_w = max(cell_w, col_w + 8)
    upright = col_w + 4 > cell_w  # column labels too wide for their cells are written upwards
    line_h = _size("Ag", tick_size)[1]
    col_step = max(1, math.ceil((line_h if upright else col_w + 4) / cell_w))  # thin labels that would overlap
    label_h = _size("Ag", label_size)[1]
    # The upright axis and colour-bar labels span the map's height: a few rows get taller cells (up to 30 px),
    # and whatever is still missing becomes margin above and below the map, so no label is cut.
    upright_len = max(_size(colorbar_label, label_size)[0] if colorbar and colorbar_label else 0,
                      _size(ylabel, label_size)[0] if ylabel else 0) + 4
    if upright_len > cell_h * max(1, n_rows):
        cell_h = max(cell_h, min(30, math.ceil(upright_len / max(1, n_rows))))
    row_step = max(1, math.ceil(line_h / cell_h))
    grid_w, grid_h = max(1, n_cols) * cell_w, max(1, n_rows) * cell_h
    overhang = max(0, upright_len - grid_h)

    row_w = max([_size(r, tick_size)[0] for r in rows[::row_step]] + [0])
    left = 10 + (label_h + 6 if ylabel else 0) + row_w + 6
    top = 8 + _size(title, title_size)[1] + 8 + overhang // 2
    col_h = max([_size(c, tick_size)[0] for c in cols[::col_step]] + [0]) if upright else line_h
    bottom_h = max(4 + col_h + (6 + label_h if xlabel else 0) + 8, overhang - overhang // 2 + 8)
    bar_x = left + grid_w + 14
    bar_ticks = _nice_ticks(low, high, max(2, min(6, grid_h // 28))) if colorbar else []
    bar_texts = _tick_texts(bar_ticks)
    bar_w = (14 + 4 + max(_size(t, tick_size)[0] for t in bar_texts) + (6 + label_h if colorbar_label else 0)
             if colorbar else 0)
    content_w = bar_x + bar_w + 10 if colorbar else left + grid_w + 10
    width = max(content_w, _size(title, title_size)[0] + 20)
    shift = (width - content_w) // 2  # a title wider than the map: centre the map under it
    left, bar_x = left + shift, bar_x + shift
    height = top + grid_h + bottom_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    # The cells: each value's colour, blown up to cell_w x cell_h pixels.
    if n_rows and n_cols:
        pixels = np.repeat(np.repeat(_colors(data, cmap, low, high), cell_h, axis=0), cell_w, axis=1)
        image.paste(Image.fromarray(pixels, "RGB"), (left, top))
    draw.rectangle([left - 1, top - 1, left + grid_w, top + grid_h], outline=_INK)
    if annotate:
        cell_rgb = _colors(data, cmap, low, high).astype(np.float64) / 255
        light = cell_rgb @ np.array([0.299, 0.587, 0.114]) > 0.5  # the text colour follows the cell's brightness
        for r in range(n_rows):
            for c in range(n_cols):
                if texts[r][c]:
                    tw, th = _size(texts[r][c], cell_text)
                    _write(image, (left + c * cell_w + (cell_w - tw) / 2, top + r * cell_h + (cell_h - th) / 2),
                           texts[r][c], cell_text, (0, 0, 0) if light[r, c] else (255, 255, 255))
    for r in range(0, n_rows, row_step):
        tw, th = _size(rows[r], tick_size)
        _write(image, (left - 6 - tw, top + r * cell_h + (cell_h - th) / 2), rows[r], tick_size)
    for c in range(0, n_cols, col_step):
        x = left + c * cell_w + cell_w / 2
        if upright:
            mask = _vertical_glyphs(cols[c], tick_size)
            image.paste(_INK, (int(x - mask.width / 2), top + grid_h + 4), mask)
        else:
            _write(image, (x - _size(cols[c], tick_size)[0] / 2, top + grid_h + 4), cols[c], tick_size)
    _write(image, ((width - _size(title, title_size)[0]) / 2, 8), title, title_size)
    if xlabel:
        _write(image, (left + grid_w / 2 - _size(xlabel, label_size)[0] / 2, top + grid_h + 4 + col_h + 6), xlabel,
               label_size)
    if ylabel:
        _vertical_text(image, (10 + shift + label_h / 2, top + grid_h / 2), ylabel, label_size)

    if colorbar:  # the colour map from low (bottom) to high (top), with round tick values
        gradient = _colors(np.linspace(high, low, max(grid_h, 2))[:, None], cmap, low, high)
        image.paste(Image.fromarray(np.repeat(gradient, 14, axis=1), "RGB"), (bar_x, top))
        draw.rectangle([bar_x - 1, top - 1, bar_x + 14, top + grid_h], outline=_INK)
        for value, text in zip(bar_ticks, bar_texts):
            y = top + int(round((high - value) / (high - low) * (grid_h - 1))) if high > low else top
            draw.line([bar_x + 14, y, bar_x + 17, y], fill=_INK)
            _write(image, (bar_x + 20, y - line_h / 2), text, tick_size)
        if colorbar_label:
            _vertical_text(image, (bar_x + bar_w - label_h / 2, top + grid_h / 2), colorbar_label, label_size)
    return np.asarray(image)


def _legend_size(names: Sequence[str], size: int) -> tuple[int, int, int]:
    """Width and height of a legend box listing ``names`` one a line, and the height of one line."""
    line_h = _size("Ag", size)[1] + 3
    return 8 + 22 + 6 + max(_size(n, size)[0] for n in names) + 8, 6 + line_h * len(names) + 4, line_h


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
    reach 5% beyond the data unless ``ylim`` is given."""
    from matplotlib import colormaps

    palette = [tuple(int(round(255 * v)) for v in colormaps["tab10"](i)[:3]) for i in range(10)]
    width, height = size
    title_size, label_size, tick_size, legend_size = 14, 14, 13, 10  # px: matplotlib's sizes at 100 dpi
    s = _SUPERSAMPLE
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

    label_h, tick_h = _size("Ag", label_size)[1], _size("Ag", tick_size)[1]
    y_ticks = _nice_ticks(y_low, y_high, max(3, (height - 100) // 30))
    y_texts = _tick_texts(y_ticks)
    left = 10 + label_h + 8 + max(_size(t, tick_size)[0] for t in y_texts) + 4 + 5
    top = 8 + _size(title, title_size)[1] + 8
    right = width - 16
    bottom = height - (8 + label_h + 4 + tick_h + 3 + 5)
    integer = bool(np.all(np.round(xs) == xs))
    x_ticks = _nice_ticks(x_low, x_high, max(3, (right - left) // 60), integer=integer)
    x_texts = _tick_texts(x_ticks)
    plot_w, plot_h = right - left, bottom - top
    to_x = lambda v: (np.asarray(v) - x_low) / (x_high - x_low) * plot_w  # noqa: E731  (plot-area pixels)
    to_y = lambda v: (y_high - np.asarray(v)) / (y_high - y_low) * plot_h  # noqa: E731

    # The legend: the corner covering the fewest points of the curves (sampled along their segments too).
    names = [name for name, _, _ in curves] if len(curves) > 1 else []
    legend_at, below_h = None, 0
    if names:
        box_w, box_h, entry_h = _legend_size(names, legend_size)
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
        pdraw.line([(0, y), (plot_w * s, y)], fill=_GRID, width=s)
    for value in x_ticks:
        x = float(to_x(value)) * s
        pdraw.line([(x, 0), (x, plot_h * s)], fill=_GRID, width=s)
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
    draw.rectangle([left * s - s, top * s - s, right * s, bottom * s], outline=_INK, width=s)
    for value in y_ticks:
        y = (top + float(to_y(value))) * s
        draw.line([((left - 5) * s, y), (left * s, y)], fill=_INK, width=s)
    for value in x_ticks:
        x = (left + float(to_x(value))) * s
        draw.line([(x, bottom * s), (x, (bottom + 5) * s)], fill=_INK, width=s)
    entries = []
    if legend_at is not None:
        lx, ly = legend_at
        box = [lx * s, ly * s, (lx + box_w) * s, (ly + box_h) * s]
        if hasattr(draw, "rounded_rectangle"):  # Pillow >= 8.2: matplotlib's rounded legend frame
            draw.rounded_rectangle(box, radius=3 * s, fill="white", outline=_FRAME, width=s)
        else:
            draw.rectangle(box, fill="white", outline=_FRAME, width=s)
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
        _write(image, (left - 8 - _size(text, tick_size)[0], top + float(to_y(value)) - tick_h / 2), text, tick_size)
    for value, text in zip(x_ticks, x_texts):
        _write(image, (left + float(to_x(value)) - _size(text, tick_size)[0] / 2, bottom + 5 + 3), text, tick_size)
    for _, _, _, name, tx, ty in entries:
        _write(image, (tx, ty), name, legend_size)
    _write(image, ((left + right - _size(title, title_size)[0]) / 2, 8), title, title_size)
    _write(image, ((left + right - _size(xlabel, label_size)[0]) / 2, bottom + 5 + 3 + tick_h + 4), xlabel, label_size)
    _vertical_text(image, (10 + label_h / 2, (top + bottom) / 2), ylabel, label_size)
    return np.asarray(image)


def side_by_side(images: Sequence[np.ndarray], gap: int = 12) -> np.ndarray:
    """Images in one row, top-aligned on white (e.g. two maps of the same cells)."""
    height = max(im.shape[0] for im in images)
    parts = []
    for index, im in enumerate(images):
        if index:
            parts.append(np.full((height, gap, 3), 255, dtype=np.uint8))
        parts.append(np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """An ``[H, W, 3]`` uint8 image as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
