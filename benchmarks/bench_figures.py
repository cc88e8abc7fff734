"""Why the heatmaps are drawn with Pillow: ``python -m benchmarks.bench_figures [--repeats N] [--quick]``.

Draws the monitors' heatmaps at the sizes the demos log them (a 26-field spectrum of width 16, a 26 x 26
interaction map, a 39 x 39 field-pair map with its numbers, a 4 x 4 cosine map) with the package's renderer
(:func:`lightning_recanalysis.figures.heatmap_image`, Pillow) and with matplotlib (``imshow`` with ticks, labels,
colour bar and cell numbers, the heatmap the report drew before), each encoded to PNG as TensorBoard and the
report need it. The two are timed alternately, figure by figure, in one process, so both see the same machine
load; the first drawing of each (fonts, colour maps) is left out of the timings and reported apart. Prints the
milliseconds per figure (median, and min..max over the repeats) and the ratio matplotlib / Pillow.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lightning_recanalysis.figures import heatmap_image, png_bytes  # noqa: E402

from ._common import machine, table  # noqa: E402

SUPPORTS_QUICK = True


def matplotlib_heatmap_png(data: np.ndarray, *, title: str, labels: Sequence[str], colorbar_label: str,
                           cmap: str, vmin, vmax, annotate: bool) -> bytes:
    """The baseline: a labelled matplotlib heatmap with its colour bar (and cell numbers), as PNG bytes."""
    n_rows, n_cols = data.shape
    fig = Figure(figsize=(min(12.0, max(6.5, 2.5 + 0.28 * n_cols)), min(10.0, max(3.2, 1.8 + 0.24 * n_rows))), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(n_cols), [str(i + 1) for i in range(n_cols)], fontsize=7)
    ax.set_yticks(range(n_rows), list(labels)[:n_rows], fontsize=7)
    ax.set_title(title, fontsize=10)
    if annotate:
        for r in range(n_rows):
            for c in range(n_cols):
                ax.text(c, r, f"{data[r, c]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label(colorbar_label)
    fig.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def cases() -> dict[str, dict]:
    rng = np.random.default_rng(0)
    names = [f"C{i}" for i in range(39)]
    return {
        "spectrum 26 x 16": dict(data=np.sort(rng.random((26, 16)), axis=1)[:, ::-1], labels=names,
                                 colorbar_label="s_k / s_1", cmap="viridis", vmin=0.0, vmax=1.0, annotate=False),
        "interaction 26 x 26": dict(data=rng.random((26, 26)) * 16, labels=names, colorbar_label="IA",
                                    cmap="magma", vmin=None, vmax=None, annotate=False),
        "field pairs 39 x 39": dict(data=rng.random((39, 39)) * 0.1, labels=names, colorbar_label="bits",
                                    cmap="viridis", vmin=0.0, vmax=None, annotate=False),
        "field pairs 12 x 12, numbers": dict(data=rng.random((12, 12)) * 0.1, labels=names, colorbar_label="bits",
                                             cmap="viridis", vmin=0.0, vmax=None, annotate=True),
        "cosines 4 x 4, numbers": dict(data=rng.uniform(-1, 1, (4, 4)), labels=names, colorbar_label="cosine",
                                       cmap="RdBu", vmin=-1.0, vmax=1.0, annotate=True),
    }


def pillow_png(case: dict) -> bytes:
    n_rows, n_cols = case["data"].shape
    return png_bytes(heatmap_image(case["data"], title="a heatmap", row_labels=case["labels"][:n_rows],
                                   col_labels=[str(i + 1) for i in range(n_cols)],
                                   colorbar_label=case["colorbar_label"], cmap=case["cmap"], vmin=case["vmin"],
                                   vmax=case["vmax"], annotate=case["annotate"]))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    print(f"machine: {machine()}; {repeats} repeats, alternating renderers; ms per figure, PNG included")
    rows = []
    for name, case in cases().items():
        first_pillow = _timed(lambda: pillow_png(case))  # the first drawing loads fonts and colour maps
        first_mpl = _timed(lambda: matplotlib_heatmap_png(title="a heatmap", **case))
        pillow, mpl = [], []
        for _ in range(repeats):
            pillow.append(_timed(lambda: pillow_png(case)) * 1e3)
            mpl.append(_timed(lambda: matplotlib_heatmap_png(title="a heatmap", **case)) * 1e3)
        ratios = sorted(m / p for m, p in zip(mpl, pillow))
        rows.append([name, f"{statistics.median(pillow):.1f} ({min(pillow):.1f}..{max(pillow):.1f})",
                     f"{statistics.median(mpl):.0f} ({min(mpl):.0f}..{max(mpl):.0f})",
                     f"{statistics.median(ratios):.0f}x ({ratios[0]:.0f}..{ratios[-1]:.0f})",
                     f"{first_pillow * 1e3:.0f} / {first_mpl * 1e3:.0f}"])
    print(table(["heatmap", "Pillow ms", "matplotlib ms", "matplotlib / Pillow", "first draw ms (P / mpl)"], rows))


if __name__ == "__main__":
    main()
