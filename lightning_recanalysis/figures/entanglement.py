"""Figures of the interest-entanglement analysis (``entanglement/``): the report's user-item distance histograms by
label subset. The conflict-subset figure is :mod:`.conflict_subset`."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .line import line_image

__all__ = ["distance_histogram_image"]


def distance_histogram_image(view: str, by_subset: Mapping[str, Mapping[str, Sequence[float]]]) -> np.ndarray:
    """The entanglement monitor's user-item distance histogram of one view, one line per label subset
    (``{subset: {"centers", "density"}}``).

    Example:
        >>> from lightning_recanalysis.figures import distance_histogram_image
        >>> hist = {"both": {"centers": [0.5, 1.5], "density": [0.8, 0.2]}}
        >>> distance_histogram_image("emb", hist).shape
        (360, 600, 3)
    """
    series = {s: (h["centers"], h["density"]) for s, h in by_subset.items()}
    return line_image(series, title=f"{view}: distance histogram by label subset", xlabel="L2 distance",
                      ylabel="density")
