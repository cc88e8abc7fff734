"""A labelled heatmap with its colour bar, drawn with Pillow in milliseconds (see :mod:`.pillow` for why): the
one heatmap renderer of the package, for the monitors' live TensorBoard images and the report alike."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .pillow import (INK, cell_text, colormap_colors, hatch, nice_ticks, text_size, tick_texts, vertical_glyphs,
                     vertical_text, write_text)

__all__ = ["heatmap_image"]


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
    absent=None,
    absent_label: str = "",
) -> np.ndarray:
    """A heatmap of ``matrix`` (rows x columns) with labelled axes, a title and a colour bar.

    Cell values are written in the cells when ``annotate`` (``fmt``; up to 400 cells), dark or light by the
    cell's own brightness so any colour map stays legible; undefined (NaN) cells are blank. ``vmin``/``vmax``
    None take the data's range. ``cell`` is the cell's size in pixels (one number: square; or ``(width,
    height)``); cells widen to fit their numbers, and to fit short column labels when there are few columns.
    Column labels wider than a cell are written upwards. ``absent`` (a boolean matrix of the same shape) marks
    cells that cannot exist (a singular value beyond a field's rank): they are hatched, carry no number and take
    no part in the colour scale, and ``absent_label`` names them in a legend line under the map.

    Example:
        >>> import numpy as np
        >>> from lightning_recanalysis.figures import heatmap_image
        >>> image = heatmap_image(np.eye(3), title="identity", colorbar_label="value")
        >>> image.dtype, image.ndim, image.shape[2]
        (dtype('uint8'), 3, 3)
        >>> image[image.shape[0] // 2, 0].tolist()  # white margin left of the axis labels
        [255, 255, 255]
    """
    data = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"heatmap_image takes a 2-D matrix, got shape {data.shape}")
    n_rows, n_cols = data.shape
    absent = np.zeros(data.shape, bool) if absent is None else np.asarray(absent, dtype=bool)
    if absent.shape != data.shape:
        raise ValueError(f"heatmap_image: absent has shape {absent.shape}, the matrix {data.shape}")
    data = np.where(absent, np.nan, data)
    finite = data[np.isfinite(data)]
    low = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None else 0.0)
    high = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    rows = [str(r) for r in (row_labels if row_labels is not None else range(1, n_rows + 1))]
    cols = [str(c) for c in (col_labels if col_labels is not None else range(1, n_cols + 1))]
    annotate = annotate and 0 < n_rows * n_cols <= 400
    title_size, label_size, tick_size, value_size = 14, 13, 11, 10  # px; matplotlib's 10 pt at 100 dpi is 14 px

    cell_w, cell_h = (cell, cell) if isinstance(cell, int) else cell
    texts = [[cell_text(fmt, v) if np.isfinite(v) else "" for v in row] for row in data] if annotate else []
    if annotate:
        cell_w = max(cell_w, max((text_size(t, value_size)[0] for row in texts for t in row), default=0) + 6)
    col_w = max((text_size(c, tick_size)[0] for c in cols), default=0)
    if n_cols <= 6 and col_w + 8 <= 140:  # a few short labels read better level, under wider cells
        cell_w = max(cell_w, col_w + 8)
    upright = col_w + 4 > cell_w  # column labels too wide for their cells are written upwards
    line_h = text_size("Ag", tick_size)[1]
    col_step = max(1, math.ceil((line_h if upright else col_w + 4) / cell_w))  # thin labels that would overlap
    label_h = text_size("Ag", label_size)[1]
    # The upright axis and colour-bar labels span the map's height: a few rows get taller cells (up to 30 px),
    # and whatever is still missing becomes margin above and below the map, so no label is cut.
    upright_len = max(text_size(colorbar_label, label_size)[0] if colorbar and colorbar_label else 0,
                      text_size(ylabel, label_size)[0] if ylabel else 0) + 4
    if upright_len > cell_h * max(1, n_rows):
        cell_h = max(cell_h, min(30, math.ceil(upright_len / max(1, n_rows))))
    row_step = max(1, math.ceil(line_h / cell_h))
    grid_w, grid_h = max(1, n_cols) * cell_w, max(1, n_rows) * cell_h
    overhang = max(0, upright_len - grid_h)

    row_w = max([text_size(r, tick_size)[0] for r in rows[::row_step]] + [0])
    left = 10 + (label_h + 6 if ylabel else 0) + row_w + 6
    top = 8 + text_size(title, title_size)[1] + 8 + overhang // 2
    col_h = max([text_size(c, tick_size)[0] for c in cols[::col_step]] + [0]) if upright else line_h
    legend = absent_label if absent.any() and absent_label else ""
    legend_h = line_h + 6 if legend else 0
    bottom_h = max(4 + col_h + (6 + label_h if xlabel else 0) + legend_h + 8, overhang - overhang // 2 + 8)
    bar_x = left + grid_w + 14
    bar_ticks = nice_ticks(low, high, max(2, min(6, grid_h // 28))) if colorbar else []
    bar_texts = tick_texts(bar_ticks)
    bar_w = (14 + 4 + max(text_size(t, tick_size)[0] for t in bar_texts) + (6 + label_h if colorbar_label else 0)
             if colorbar else 0)
    content_w = bar_x + bar_w + 10 if colorbar else left + grid_w + 10
    width = max(content_w, text_size(title, title_size)[0] + 20, 10 + 20 + text_size(legend, tick_size)[0] + 10)
    shift = (width - content_w) // 2  # a title wider than the map: centre the map under it
    left, bar_x = left + shift, bar_x + shift
    height = top + grid_h + bottom_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    # The cells: each value's colour, blown up to cell_w x cell_h pixels.
    if n_rows and n_cols:
        pixels = np.repeat(np.repeat(colormap_colors(data, cmap, low, high), cell_h, axis=0), cell_w, axis=1)
        image.paste(Image.fromarray(pixels, "RGB"), (left, top))
    for r, c in zip(*np.nonzero(absent)):
        hatch(image, (left + c * cell_w, top + r * cell_h, left + (c + 1) * cell_w - 1, top + (r + 1) * cell_h - 1))
    draw.rectangle([left - 1, top - 1, left + grid_w, top + grid_h], outline=INK)
    if annotate:
        cell_rgb = colormap_colors(data, cmap, low, high).astype(np.float64) / 255
        light = cell_rgb @ np.array([0.299, 0.587, 0.114]) > 0.5  # the text colour follows the cell's brightness
        for r in range(n_rows):
            for c in range(n_cols):
                if texts[r][c]:
                    tw, th = text_size(texts[r][c], value_size)
                    write_text(image, (left + c * cell_w + (cell_w - tw) / 2, top + r * cell_h + (cell_h - th) / 2),
                           texts[r][c], value_size, (0, 0, 0) if light[r, c] else (255, 255, 255))
    for r in range(0, n_rows, row_step):
        tw, th = text_size(rows[r], tick_size)
        write_text(image, (left - 6 - tw, top + r * cell_h + (cell_h - th) / 2), rows[r], tick_size)
    for c in range(0, n_cols, col_step):
        x = left + c * cell_w + cell_w / 2
        if upright:
            mask = vertical_glyphs(cols[c], tick_size)
            image.paste(INK, (int(x - mask.width / 2), top + grid_h + 4), mask)
        else:
            write_text(image, (x - text_size(cols[c], tick_size)[0] / 2, top + grid_h + 4), cols[c], tick_size)
    write_text(image, ((width - text_size(title, title_size)[0]) / 2, 8), title, title_size)
    if xlabel:
        write_text(image, (left + grid_w / 2 - text_size(xlabel, label_size)[0] / 2, top + grid_h + 4 + col_h + 6), xlabel,
               label_size)
    if ylabel:
        vertical_text(image, (10 + shift + label_h / 2, top + grid_h / 2), ylabel, label_size)
    if legend:  # a hatched swatch and what the hatched cells are
        y = height - 8 - line_h
        x = max(10, min(left, width - 10 - 20 - text_size(legend, tick_size)[0]))
        hatch(image, (x, y + 1, x + 13, y + line_h - 2))
        draw.rectangle([x, y + 1, x + 13, y + line_h - 2], outline=INK)
        write_text(image, (x + 20, y), legend, tick_size)

    if colorbar:  # the colour map from low (bottom) to high (top), with round tick values
        gradient = colormap_colors(np.linspace(high, low, max(grid_h, 2))[:, None], cmap, low, high)
        image.paste(Image.fromarray(np.repeat(gradient, 14, axis=1), "RGB"), (bar_x, top))
        draw.rectangle([bar_x - 1, top - 1, bar_x + 14, top + grid_h], outline=INK)
        for value, text in zip(bar_ticks, bar_texts):
            y = top + int(round((high - value) / (high - low) * (grid_h - 1))) if high > low else top
            draw.line([bar_x + 14, y, bar_x + 17, y], fill=INK)
            write_text(image, (bar_x + 20, y - line_h / 2), text, tick_size)
        if colorbar_label:
            vertical_text(image, (bar_x + bar_w - label_h / 2, top + grid_h / 2), colorbar_label, label_size)
    return np.asarray(image)

