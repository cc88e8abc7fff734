"""Live images sized for TensorBoard's card: the conflict-subset panel is drawn at the card's width (348 px, shown
pixel for pixel), one mode an image, and its lines of text, measured in the pixels, are at least 10 px high."""

import numpy as np

from lightning_recanalysis.figures import LIVE_PANEL_SIZE, conflict_subset_image, conflict_subset_panel


def _view():
    edges = np.linspace(0.1, 0.8, 40).tolist()
    counts = np.histogram(np.random.default_rng(0).normal(0.4, 0.1, 5000), bins=edges)[0]
    shares = {"top": 0.41, "middle": 0.22, "bottom": 0.37}
    mode = {"conflict": (counts // 8).tolist(), "rest": (counts - counts // 8).tolist(), "shares": shares}
    return {"edges": edges, "low": 0.35, "high": 0.42,
            "modes": {"click_far_purchase_near": mode, "purchase_far_click_near": mode}}


def _text_bands(image: np.ndarray, top: int) -> list[int]:
    """Heights of the runs of rows below ``top`` that hold dark (text) pixels: one per line of text."""
    dark = (image[top:].max(axis=2) < 120).any(axis=1)
    edges = np.flatnonzero(np.diff(np.r_[0, dark.astype(np.int8), 0]))
    return [int(stop - start) for start, stop in zip(edges[::2], edges[1::2])]


def test_the_live_panel_is_one_mode_at_the_cards_width_with_legible_text():
    view = _view()
    panel = conflict_subset_panel("embedding[purchase]", view, "purchase_far_click_near")
    assert panel.shape[1] == LIVE_PANEL_SIZE[0] == 348  # TensorBoard's Images card: shown at its own size
    # Under the plot: the x tick labels, the axis label and the wrapped notes, in 11 px type (a line of words at
    # least 10 px high from ascender to descender), none cut by an edge.
    frame = np.flatnonzero(((panel < 60).all(axis=2)).mean(axis=1) > 0.5)  # the frame's top and bottom edges
    ticks, *lines = _text_bands(panel, int(frame.max()) + 6)
    assert ticks >= 8  # digits of 11 px type: 0.73 of the type's size
    assert len(lines) >= 3 and min(lines) >= 10, lines  # words, ascender to descender
    assert (panel[:, -3:] == 255).all()  # a white margin on the right: no text runs off the image
    assert (panel[:, :3] == 255).all()  # nor off the left
    # The report keeps the modes side by side, at report size.
    assert conflict_subset_image("embedding", view).shape[1] > 2 * LIVE_PANEL_SIZE[0]
