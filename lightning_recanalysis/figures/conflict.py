"""Figures of the gradient-conflict analysis (``conflict/``): the task x task cosine map
:class:`~lightning_recanalysis.GradientConflictMonitor` logs live, and the report's field x task-pair map and trend."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .heatmap import heatmap_image
from .line import line_image

__all__ = ["cosine_heatmap", "field_pair_cosine_image", "cosine_trend_image"]


def cosine_heatmap(mean: np.ndarray, tasks: Sequence[str], title: str) -> np.ndarray:
    """A small labelled task x task heatmap of mean cosines as an HWC uint8 image.

    Colours run from -1 (red) through 0 (white) to 1 (blue); undefined (NaN) cells are blank; every cell is
    written out (up to 20 x 20). Drawn with Pillow, like every image logged during training.

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


def field_pair_cosine_image(view: str, matrix: np.ndarray, fields: Sequence[str], pairs: Sequence[str],
                            epoch: int) -> np.ndarray:
    """Fields (rows) x task pairs (columns, ``"a_vs_b"``) of one view's mean gradient cosine, -1 (red) to 1
    (blue), every cell written out; undefined (NaN) cells blank.

    Example:
        >>> import numpy as np
        >>> from lightning_recanalysis.figures import field_pair_cosine_image
        >>> image = field_pair_cosine_image("emb", np.array([[-0.3], [np.nan]]), ["user", "item"], ["ctr_vs_cvr"], 2)
        >>> image.dtype
        dtype('uint8')
    """
    return heatmap_image(matrix, title=f"{view}: mean gradient cosine, epoch {epoch}", row_labels=list(fields),
                         col_labels=[p.replace("_vs_", " vs ") for p in pairs], xlabel="task pair", ylabel="field",
                         colorbar_label="cosine (-1 opposite, +1 aligned)", vmin=-1, vmax=1, cmap="RdBu",
                         cell=(26, 26), annotate=True)


def cosine_trend_image(series: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> np.ndarray:
    """Mean gradient cosine over training, one line per ``"view/field/pair"`` (``(global steps, cosines)``).

    Example:
        >>> from lightning_recanalysis.figures import cosine_trend_image
        >>> cosine_trend_image({"emb/user/ctr_vs_cvr": ([10, 20], [0.1, -0.2])}).shape
        (360, 600, 3)
    """
    return line_image(dict(series), title="mean gradient cosine per field and task pair", xlabel="global step",
                      ylabel="mean cosine", ylim=(-1.05, 1.05))

