"""The Pillow toolkit the figures are drawn with: text in matplotlib's font, colour maps, round ticks, and the
two helpers every caller needs (:func:`side_by_side`, :func:`png_bytes`).

A matplotlib figure's cost is mostly laying out its text; a monitor that logs several maps per epoch would
spend more time drawing than a short training run spends training (``python -m
benchmarks.bench_figures`` measures the two side by side). The figures of this package are therefore drawn
straight into pixels: text in matplotlib's own font (DejaVu Sans, shipped with matplotlib), matplotlib's colour
maps and colour cycle, tick values from matplotlib's tick locator, and lines and markers drawn at twice the size
and scaled down, so they are anti-aliased like matplotlib's. No figure is drawn with matplotlib itself.

Every figure is an ``[H, W, 3]`` uint8 array, the layout :meth:`AnalysisWriter.image` takes; :func:`png_bytes`
encodes one for a file or a web page.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import matplotlib
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from .png import encode_png

__all__ = [
    "ABSENT_LINE", "BLANK", "FRAME", "GRID", "INK", "SUPERSAMPLE", "cell_text", "colormap_colors", "hatch",
    "legend_size", "nice_ticks", "png_bytes", "side_by_side", "text_size", "tick_texts", "vertical_glyphs",
    "vertical_text", "wrap_text", "write_text",
]

INK = (20, 20, 20)
GRID = (232, 232, 232)  # matplotlib's grid at alpha 0.3 on white
FRAME = (204, 204, 204)  # matplotlib's legend frame
BLANK = (242, 242, 242)  # an undefined (NaN) heatmap cell: no colour of any colour map, and no number in it
ABSENT_LINE = (190, 190, 190)  # the hatching of a cell that cannot exist (white between the lines)
SUPERSAMPLE = 2  # lines and markers are drawn this many times larger and scaled down: anti-aliasing


@lru_cache(maxsize=1)
def _font_file() -> str | None:
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
    two-decimal values, and pasting a cached mask is much cheaper than laying the text out again.

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


def text_size(text: str, size: int) -> tuple[int, int]:
    """Width and height in pixels of ``text`` at ``size`` points (one line high, whatever its letters).

    Example:
        >>> w, h = text_size("IA", 12)
        >>> w > 0 and h > 0, text_size("IAIA", 12)[0] > w
        (True, True)
    """
    return _glyphs(text, size).size


def legend_size(names: Sequence[str], size: int) -> tuple[int, int, int]:
    """Width and height of a legend box listing ``names`` one a line, and the height of one line."""
    line_h = text_size("Ag", size)[1] + 3
    return 8 + 22 + 6 + max(text_size(n, size)[0] for n in names) + 8, 6 + line_h * len(names) + 4, line_h


def write_text(image: Image.Image, xy: tuple[float, float], text: str, size: int, fill=INK) -> None:
    """Draw ``text`` with its top-left corner at ``xy`` (rounded to pixels), in ``fill``."""
    image.paste(fill, (int(round(xy[0])), int(round(xy[1]))), _glyphs(text, size))


def wrap_text(text: str, size: int, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels at ``size`` (a word wider than
    ``width`` stays whole on its own line).

    Example:
        >>> wrap_text("one two three", 12, 10_000)
        ['one two three']
        >>> len(wrap_text("one two three", 12, text_size("one two", 12)[0]))
        2
    """
    lines: list[str] = []
    for word in text.split():
        if lines and text_size(f"{lines[-1]} {word}", size)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def hatch(image: Image.Image, box: tuple[int, int, int, int], spacing: int = 5) -> None:
    """Fill ``box`` (left, top, right, bottom; inclusive) white with thin diagonal lines: a cell that cannot
    exist, told apart from every colour of a colour map and from a blank (undefined) cell."""
    left, top, right, bottom = box
    draw = ImageDraw.Draw(image)
    draw.rectangle(box, fill="white")
    for offset in range(-(bottom - top), right - left + 1, spacing):  # lines of slope -1, clipped to the box
        x0, y0 = left + offset, bottom
        x1, y1 = left + offset + (bottom - top), top
        if x0 < left:
            x0, y0 = left, bottom - (left - x0)
        if x1 > right:
            x1, y1 = right, top + (x1 - right)
        if x0 <= x1:
            draw.line([(x0, y0), (x1, y1)], fill=ABSENT_LINE)


@lru_cache(maxsize=256)
def vertical_glyphs(text: str, size: int) -> Image.Image:
    """The alpha mask of ``text`` rotated to read upwards (a y-axis label), cached."""
    return _glyphs(text, size).rotate(90, expand=True)


def vertical_text(image: Image.Image, xy: tuple[float, float], text: str, size: int) -> None:
    """Text rotated 90 degrees (reading upwards), centred on ``xy``."""
    mask = vertical_glyphs(text, size)
    image.paste(INK, (int(xy[0]) - mask.width // 2, int(xy[1]) - mask.height // 2), mask)


@lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    return (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def colormap_colors(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """RGB per value; NaN (undefined) gets the light grey of a blank cell, never a colour of the map."""
    lut = _lut(cmap)
    scaled = np.nan_to_num((values - vmin) / (vmax - vmin if vmax > vmin else 1.0), nan=0.0)
    rgb = lut[np.clip((scaled * 255).round().astype(np.int64), 0, 255)]
    rgb[~np.isfinite(values)] = BLANK
    return rgb


def nice_ticks(low: float, high: float, bins: int, integer: bool = False) -> list[float]:
    """Round tick values within [low, high], as matplotlib's own axes choose them."""
    if not high > low:
        return [low]
    ticks = MaxNLocator(nbins=max(1, bins), steps=[1, 2, 2.5, 5, 10], integer=integer).tick_values(low, high)
    span = high - low
    return [float(t) for t in ticks if low - 1e-9 * span <= t <= high + 1e-9 * span]


def tick_texts(ticks: Sequence[float]) -> list[str]:
    """The fewest decimals that tell the ticks apart (0, 0.25, 0.5 -> 0.00, 0.25, 0.50), matplotlib's minus."""
    step = min((abs(b - a) for a, b in zip(ticks, ticks[1:]) if b != a), default=1.0)
    decimals = next((d for d in range(7) if abs(round(step, d) - step) <= 1e-6 * step), 6)
    if max((abs(t) for t in ticks), default=0.0) >= 1e5 or 0 < step < 1e-4:
        return [f"{t:.3g}".replace("-", "\u2212") for t in ticks]
    return [f"{t + 0.0:.{decimals}f}".replace("-", "\u2212") for t in ticks]


def cell_text(fmt: str, value: float) -> str:
    """``fmt.format(value)``, without the sign of a value that rounds to zero ("-0.000" reads as negative)."""
    text = fmt.format(value)
    if text.startswith("-") and not any(c in "123456789" for c in text):
        return text[1:]
    return text


def side_by_side(images: Sequence[np.ndarray], gap: int = 12, titles: Sequence[str] | None = None,
                 title_size: int = 13) -> np.ndarray:
    """Images in one row, top-aligned on white (e.g. two maps of the same cells); with ``titles``, each written
    above its image, centred and broken into lines that fit the image's width (so a title never runs into its
    neighbour's).

    Example:
        >>> import numpy as np
        >>> from lightning_recanalysis.figures import side_by_side
        >>> side_by_side([np.zeros((4, 3, 3), np.uint8), np.zeros((2, 5, 3), np.uint8)], gap=2).shape
        (4, 10, 3)
        >>> side_by_side([np.zeros((4, 300, 3), np.uint8)], titles=["run a"]).shape[0] > 4
        True
    """
    if titles is not None:
        line_h = text_size("Ag", title_size)[1]
        headed = []
        for im, title in zip(images, titles):
            lines = wrap_text(title, title_size, im.shape[1] - 8)
            width = max([im.shape[1]] + [text_size(line, title_size)[0] + 8 for line in lines])
            head = Image.new("RGB", (width, 6 + line_h * len(lines) + 4), "white")
            for k, line in enumerate(lines):
                write_text(head, ((width - text_size(line, title_size)[0]) / 2, 6 + line_h * k), line, title_size)
            body = np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=255)
            headed.append(np.concatenate([np.asarray(head), body], axis=0))
        images = headed
    height = max(im.shape[0] for im in images)
    parts = []
    for index, im in enumerate(images):
        if index:
            parts.append(np.full((height, gap, 3), 255, dtype=np.uint8))
        parts.append(np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """An ``[H, W, 3]`` uint8 image as PNG bytes, for a file or a web page: :func:`~.png.encode_png` at zlib level
    6, which on the report's figures takes half the time of Pillow's encoder at its default level and writes
    slightly smaller files (``python -m benchmarks.bench_png``).

    Example:
        >>> import numpy as np
        >>> from lightning_recanalysis.figures import png_bytes
        >>> png_bytes(np.full((2, 2, 3), 255, np.uint8))[:4]
        b'\\x89PNG'
    """
    return encode_png(np.ascontiguousarray(image), level=6)
