"""Figures of the collapse analysis: fields ordered by cardinality (spectra) or by their own IA (interaction)
whatever the record's order, bars that are the record's numbers, and one renderer for the live image and the
report's figure."""

import numpy as np

from lightning_recanalysis.records import SpectrumRecord
from matplotlib import colormaps

from lightning_recanalysis.figures import ia_bar_figure, interaction_image, spectrum_heatmap_image
from lightning_recanalysis.report.model import ReportThresholds
from lightning_recanalysis.report.sections.collapse import collapse_section


def _view(order):
    fields = {"user": {"cardinality": 900, "information_abundance": 2.0, "normalized_spectrum": [1.0, 0.0, 0.0]},
              "item": {"cardinality": 40, "information_abundance": 3.0, "normalized_spectrum": [1.0, 1.0, 1.0]},
              "city": {"cardinality": 7, "information_abundance": 1.5, "normalized_spectrum": [1.0, 0.5, 0.0]}}
    return {"width": 3, "excluded_rows": 0, "fields": {n: {**fields[n], "effective_rank": 1.0, "stable_rank": 1.0}
                                                      for n in order}}


def test_spectrum_rows_follow_cardinality_not_record_order():
    a = spectrum_heatmap_image("t", _view(["user", "item", "city"]), "epoch 1")
    b = spectrum_heatmap_image("t", _view(["city", "user", "item"]), "epoch 1")
    assert np.array_equal(a, b)
    # Rows by ascending cardinality: city (s = 1, 0.5, 0) above item (1, 1, 1) above user (1, 0, 0). Colours are
    # matplotlib's viridis (the oracle): 0.5 is city's cell, 0 is mostly user's two cells (one is city's).
    def median_row(value):
        rgb = (np.asarray(colormaps["viridis"](value)[:3]) * 255).round().astype(np.uint8)
        rows, _ = np.nonzero((a == rgb).all(axis=2))
        assert len(rows) >= 22 * 22
        return np.median(rows)

    assert median_row(0.5) < median_row(0.0)


def test_interaction_axes_sorted_by_the_fields_own_ia():
    own = {"a": {"information_abundance": 3.0}, "b": {"information_abundance": 1.0}, "c": {"information_abundance": 2.0}}
    m = np.arange(9.0).reshape(3, 3)
    first = interaction_image({"fields": ["a", "b", "c"], "matrix": m.tolist()}, own, "epoch 0", order="ia")
    perm = [1, 2, 0]  # the same matrix with its fields in another order
    second = interaction_image({"fields": ["b", "c", "a"], "matrix": m[np.ix_(perm, perm)].tolist()}, own, "epoch 0",
                               order="ia")
    assert np.array_equal(first, second)
    # By default the axes keep the cross layer's field order (the field-pair maps' order): the two differ.
    assert not np.array_equal(interaction_image({"fields": ["b", "c", "a"], "matrix": m[np.ix_(perm, perm)].tolist()},
                                                own, "epoch 0"), first)


def test_spectrum_cells_beyond_a_fields_rows_are_hatched_not_dark():
    view = _view(["user", "item", "city"])
    view["width"] = 12  # city has 7 rows: k = 8..12 cannot exist; item (40) and user (900) fill all 12
    for f in view["fields"].values():
        f["normalized_spectrum"] = f["normalized_spectrum"] + [0.0] * 9
    image = spectrum_heatmap_image("t", view, "epoch 1")
    dark = (np.asarray(colormaps["viridis"](0.0)[:3]) * 255).round().astype(np.uint8)
    hatch_line = np.array([190, 190, 190], np.uint8)
    rows_dark = np.nonzero((image == dark).all(axis=2))[0]
    rows_hatched = np.nonzero((image == hatch_line).all(axis=2))[0]
    assert rows_hatched.size > 100  # the 5 impossible cells of city's row, and the legend's swatch
    # city is the first row (lowest cardinality): its hatched cells lie above every dark (collapsed) cell.
    assert np.median(rows_hatched) < np.median(rows_dark)
    no_impossible = spectrum_heatmap_image("t", _view(["user", "item", "city"]), "epoch 1")
    # No impossible cell: no hatching, nor a legend line (a few anti-aliased text pixels share the grey).
    assert (no_impossible == hatch_line).all(axis=2).sum() < 20 and no_impossible.shape[0] < image.shape[0]


def _bars(image, colors):
    """(left x, colour index, height in pixels) of every bar of the given colours, left to right: runs of a bar
    colour along a row just above the x axis, each measured upwards along its middle column."""
    rgbs = [np.array([int(c[k : k + 2], 16) for k in (1, 3, 5)]) for c in colors]
    masks = [(image == rgb).all(axis=2) for rgb in rgbs]
    axis_row = max(int(np.nonzero(m.any(axis=1))[0].max()) for m in masks)  # the lowest row a bar reaches
    bars = []
    for index, mask in enumerate(masks):
        row = mask[axis_row - 1]
        edges = np.flatnonzero(np.diff(np.r_[0, row.astype(np.int8), 0]))
        for start, stop in zip(edges[::2], edges[1::2]):
            column = mask[: axis_row + 1, (start + stop) // 2]
            top = axis_row - np.argmin(column[::-1])  # first non-bar pixel going up
            bars.append((int(start), index, axis_row - top))
    return sorted(bars)


def test_ia_bars_are_the_records_numbers_in_cardinality_order():
    view, init = _view(["user", "item", "city"]), _view(["user", "item", "city"])
    init["fields"]["user"] = {**init["fields"]["user"], "information_abundance": 2.75}
    image = ia_bar_figure("t", view, init, "epoch 1")
    bars = _bars(image, ["#9ecae1", "#e6550d"])  # initialisation, now: the figure's two colours
    # Left to right by cardinality: city, item, user; each the initialisation bar, then now.
    assert [b[1] for b in bars] == [0, 1, 0, 1, 0, 1]
    heights = np.array([b[2] for b in bars], dtype=np.float64)
    expected = np.array([1.5, 1.5, 3.0, 3.0, 2.75, 2.0])
    # Bars start at 0, so their pixel heights are proportional to the values (to a pixel of anti-aliasing).
    assert np.allclose(heights / heights.max() * 3.0, expected, atol=2 * 3.0 / heights.max())


def test_report_draws_the_live_images_pixels():
    init = {"stage": "init", "epoch": 0, "step": 0, "views": {"t": _view(["user", "item", "city"])}}
    last = {"stage": "epoch", "epoch": 1, "step": 10, "views": {"t": _view(["user", "item", "city"])}}
    section = collapse_section([SpectrumRecord.from_dict(r) for r in (init, last)], ReportThresholds())
    spectrum = next(f for f in section.figures if f.name == "collapse_t_spectrum")
    assert np.array_equal(spectrum.figure, spectrum_heatmap_image("t", last["views"]["t"], "epoch 1"))
