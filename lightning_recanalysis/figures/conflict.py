"""Figures of the gradient-conflict analysis (``conflict/``): the task x task cosine map
:class:`~lightning_recanalysis.GradientConflictMonitor` logs live."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .heatmap import heatmap_image

__all__ = ["cosine_heatmap"]


def cosine_heatmap(mean: np.ndarray, tasks: Sequence[str], title: str) -> np.ndarray:
    """A small labelled task x task heatmap of mean cosines as an HWC uint8 image.

    Colours run from -1 (red) through 0 (white) to 1 (blue); undefined (NaN) cells are blank; every cell is
    written out (up to 20 x 20). Drawn with Pillow: inside training a matplotlib figure cost about 0.1 s, a few
    times an epoch's probes on a small model.

    Example:
        >>> import numpy as np
        >>> from lightning_recanalysis.figures import cosine_heatmap
        >>> image = cosine_heatmap(np.array([[1.0, -0.5], [-0.5, 1.0]]), ["ctr", "cvr"], "user")
        >>> image.dtype, image.shape[2]
        (dtype('uint8'), 3)
    """
    return heatmap_image(np.asarray(mean, dtype=np.float64), title=title, row_labels=list(tasks),
                         col_labels=list(tasks), colorbar_label="cosine", vmin=-1.0, vmax=1.0, cmap="RdBu",
                         cell=(34, 22), annotate=True)
