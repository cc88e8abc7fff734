"""The Pillow renderers: heatmaps with blank undefined cells and labels that fit, numbers without a spurious minus,
legends that never hide data."""

from lightning_recanalysis.figures import heatmap_image, line_image, png_bytes
from lightning_recanalysis.figures.pillow import cell_text


def test_raster_heatmap_blank_cells_and_labels_that_fit():
    title = "a title longer than the map itself"
    image = heatmap_image([[0.5, float("nan")]], title=title, col_labels=["a vs b", "a vs c"], ylabel="field",
                          colorbar_label="cosine (-1 opposite, +1 aligned)", vmin=-1, vmax=1, cmap="RdBu", cell=22)
    height, width, _ = image.shape
    assert width >= 200 and height >= 180  # room for the title, and for the upright colour-bar label (one row)
    # The undefined cell is a light grey, no colour of the map (white is the map's 0 here).
    grey = image[(image == 242).all(axis=2)]
    assert len(grey) > 100
    assert png_bytes(image)[:8] == b"\x89PNG\r\n\x1a\n"


def test_cell_values_that_round_to_zero_carry_no_minus_sign():
    # A Miller-Madow-corrected MI of -4e-5 bits prints as zero, not as a negative "-0.000".
    assert [cell_text("{:.3f}", v) for v in (-4e-5, -0.0, 4e-5, -0.0021, -1.5)] == [
        "0.000", "0.000", "0.000", "-0.002", "-1.500"]
    assert cell_text("{:.1e}", -1e-5) == "-1.0e-05" and cell_text("{:.2f}", -0.004) == "0.00"


def test_raster_line_legend_never_hides_data():
    x = list(range(20))
    low = {"one": (x, [0.3 * i / 19 for i in x]), "two": (x, [0.1] * 20)}
    assert line_image(low, title="t", xlabel="x", ylabel="y", ylim=(0, 1)).shape == (360, 600, 3)  # legend inside
    # Lines through all four corners leave none free: the legend goes under the plot, which grows taller.
    crowded = {f"series {k}": (x, [k % 2 if i < 10 else 1 - k % 2 for i in range(20)]) for k in range(6)}
    image = line_image(crowded | {"diagonal": (x, [i / 19 for i in x]), "anti": (x, [1 - i / 19 for i in x])},
                       title="t", xlabel="x", ylabel="y", ylim=(-0.05, 1.05))
    assert image.shape[0] > 360 and image.shape[1] == 600
