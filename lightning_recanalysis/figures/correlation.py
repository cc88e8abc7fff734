"""Figures of the target-behaviour correlation analysis (``correlation/``, Zhou et al. 2024): the maps
:class:`~lightning_recanalysis.FeatureCorrelationMonitor` logs every epoch and the report's side-by-side maps.

A target's record: ``{"name", "behavior_names", "positions", "ground_truth", "learned", "agreement"}``, the maps
behaviour category (rows) x target-relative position (columns), min-max normalised.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .heatmap import heatmap_image
from .line import line_image
from .pillow import side_by_side

__all__ = ["correlation_map_image", "correlation_maps_image", "same_category_image"]


def correlation_map_image(target: Mapping[str, Any], which: str, when: str) -> np.ndarray:
    """Behaviour categories (rows, most informative first) x positions, one map of one target category;
    ``which`` is ``"ground_truth"`` or ``"learned"``.

    Example:
        >>> from lightning_recanalysis.figures import correlation_map_image
        >>> target = {"name": "shoes", "behavior_names": ["shoes", "hats"], "positions": [1, 2, 3],
        ...           "ground_truth": [[1.0, 0.5, 0.0], [0.2, 0.1, 0.0]], "agreement": None}
        >>> correlation_map_image(target, "ground_truth", "epoch 0").dtype
        dtype('uint8')
    """
    title = {"ground_truth": "ground truth MI(X; Y)", "learned": "learned correlation"}[which]
    if which == "learned" and target.get("agreement") is not None:
        title += f", rank corr. {target['agreement']:.2f}"
    return heatmap_image(
        target[which],
        title=f"target {target['name']}: {title} ({when})",
        row_labels=target["behavior_names"],
        col_labels=[str(p) for p in target["positions"]],
        xlabel="target-relative position p (1 = most recent)",
        ylabel="behaviour category",
        colorbar_label="normalised correlation",
        # Cell values would be 100 more labels per map; the colour bar reads them, the history holds them.
        annotate=False,
    )


def correlation_maps_image(target: Mapping[str, Any], when: str) -> np.ndarray:
    """The ground-truth and (where there is one) the learned map of one target side by side, on one 0..1 colour
    scale (its bar on the right of the last map): the report's figure.

    Example:
        >>> from lightning_recanalysis.figures import correlation_map_image, correlation_maps_image
        >>> target = {"name": "shoes", "behavior_names": ["shoes", "hats"], "positions": [1, 2],
        ...           "ground_truth": [[1.0, 0.0], [0.5, 0.2]], "learned": [[0.9, 0.1], [0.4, 0.0]], "agreement": 0.8}
        >>> both = correlation_maps_image(target, "epoch 1")
        >>> target["learned"] = None
        >>> both.shape[1] > correlation_maps_image(target, "epoch 1").shape[1]
        True
    """
    panels = [(f"target {target['name']}: ground truth MI(X; Y), min-max, {when}", target["ground_truth"])]
    if target.get("learned") is not None:
        title = "learned correlation"
        if target.get("agreement") is not None:
            title += f" (rank corr. {target['agreement']:.2f})"
        panels.append((title, target["learned"]))
    # Cells sized so that the maps of up to ~20 positions fit the report's width side by side.
    cell = (max(12, min(34, 440 // max(1, len(target["positions"])))), 26)
    return side_by_side([
        heatmap_image(matrix, title=title, row_labels=target["behavior_names"],
                      col_labels=[str(p) for p in target["positions"]],
                      xlabel="target-relative position p (1 = most recent)",
                      ylabel="behaviour category" if index == 0 else "",
                      colorbar_label="normalised correlation (0..1)", cell=cell, annotate=False,
                      colorbar=index == len(panels) - 1)
        for index, (title, matrix) in enumerate(panels)], gap=24)


def same_category_image(record: Mapping[str, Any]) -> np.ndarray:
    """MI by position of "the behaviour at p has the target's category" vs the label.

    Example:
        >>> from lightning_recanalysis.figures import same_category_image
        >>> record = {"same_category_positions": [1, 2, 3], "same_category_mi": [0.3, 0.1, 0.05], "samples": 100}
        >>> same_category_image(record).shape
        (360, 600, 3)
    """
    return line_image(
        {"same category as target": (record["same_category_positions"], record["same_category_mi"])},
        title=f"behaviour at p has the target's category vs label ({record['samples']} samples)",
        xlabel="target-relative position p (1 = most recent)",
        ylabel="mutual information (bits)",
    )
