"""Figures of the entanglement analysis' conflict subsets: the live image the monitor logs at every analysis and
the report's figure are the same pixels.

The authors' figure (Pan et al., KDD 2024): one view's user-item distances in 39 equal-width bins over all
selected pairs, the conflict subset stacked under the rest, each bin coloured by where it lies among the view's
own distances: blue at or below the view's 40th percentile ("near"), red above its 60th ("far"), grey between.
The conflict pairs are drawn in the full colour, the rest in a light tint of it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .histogram import bin_colors, stacked_histogram_image
from .pillow import side_by_side

__all__ = ["LIVE_PANEL_SIZE", "conflict_subset_image", "conflict_subset_panel"]

#: The live panel's size: TensorBoard scales an image to its card's width, 348 px in the Images tab (a 350 px card
#: less its border; the Time Series tab's cards are at least 335 px), so a panel drawn this wide is shown at its own
#: size, pixel for pixel, its smallest text (11 px) at least 10 px high.
LIVE_PANEL_SIZE = (348, 300)


def conflict_subset_panel(view: str, view_record: Mapping, mode: str, low_q: float = 40.0, high_q: float = 60.0,
                          size: tuple[int, int] = LIVE_PANEL_SIZE, note_size: int = 11) -> np.ndarray:
    """One conflict mode of one view (``view_record["modes"][mode]``) as one panel: the image the monitor logs
    live per view and mode, sized for TensorBoard's default card (:data:`LIVE_PANEL_SIZE`); a title or note wider
    than the panel is broken into lines.

    Example:
        >>> from lightning_recanalysis.figures import conflict_subset_panel
        >>> shares = {"top": 0.5, "middle": 0.25, "bottom": 0.25}
        >>> view = {"edges": [0.0, 1.0, 2.0], "low": 0.5, "high": 1.5,
        ...         "modes": {"a_far_b_near": {"conflict": [2, 1], "rest": [5, 3], "shares": shares}}}
        >>> conflict_subset_panel("user", view, "a_far_b_near").shape[1]
        348
    """
    colors = bin_colors(view_record["edges"], view_record["low"], view_record["high"])
    data = view_record["modes"][mode]
    shares = data["shares"]
    share_text = ", ".join(f"{name} {shares[key]:.0%}" if shares[key] == shares[key] else f"{name} -"
                           for name, key in ((f"top {100 - high_q:g}%", "top"), ("middle", "middle"),
                                             (f"bottom {low_q:g}%", "bottom")))
    return stacked_histogram_image(
        view_record["edges"], data["conflict"], data["rest"], colors,
        title=f"{view}: {mode.replace('_', ' ')}", xlabel="user-item L2 distance in this view", ylabel="pairs",
        notes=[f"dark: the {int(sum(data['conflict']))} conflict pairs ({share_text}); light: the rest.",
               f"Blue/grey/red: the view's bottom {low_q:g}% / middle / top {100 - high_q:g}%."],
        size=size, note_size=note_size)


def conflict_subset_image(view: str, view_record: Mapping, low_q: float = 40.0, high_q: float = 60.0) -> np.ndarray:
    """One panel per conflict mode (:func:`conflict_subset_panel`, report size), side by side, for one view's
    record (``{"edges", "low", "high", "modes": {mode: {"conflict", "rest", "shares"}}}``, as the entanglement
    monitor keeps it).

    Example:
        >>> from lightning_recanalysis.figures import conflict_subset_image
        >>> shares = {"top": 0.5, "middle": 0.25, "bottom": 0.25}
        >>> view = {"edges": [0.0, 1.0, 2.0], "low": 0.5, "high": 1.5,
        ...         "modes": {"positive_negative": {"conflict": [2, 1], "rest": [5, 3], "shares": shares}}}
        >>> conflict_subset_image("user", view).shape
        (290, 440, 3)
    """
    return side_by_side([conflict_subset_panel(view, view_record, mode, low_q, high_q, size=(440, 290), note_size=10)
                         for mode in view_record["modes"]])
