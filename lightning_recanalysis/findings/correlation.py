"""Findings of ``correlation/``: does the data show the target-behaviour pattern, and did the model learn it?

Zhou et al. 2024: in the ground-truth map (mutual information between "the behaviour at position p has category
c" and the label) the target's own category is the most informative row and its information decays with the
position p; a model whose learned map has a rank correlation (Spearman over cells) with the data below
``min_agreement`` **disagrees** with it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..functional.correlation import rank_correlation
from ..records import BehaviorTargetRecord
from .thresholds import ReportThresholds

__all__ = ["correlation_findings", "own_category_pattern", "target_finding"]


def own_category_pattern(target: Mapping[str, Any]) -> dict[str, Any] | None:
    """The target's own-category row of the ground-truth map, read three ways: whether it is the most informative
    row (``own_category_is_top_row``), its Spearman rho with the position (``own_row_vs_position_spearman``;
    negative: the information decays) and the row scaled to a maximum of 1 (``own_row_normalized``); with a learned
    map also ``learned_own_row_vs_position_spearman``. None when the target's category is not among the map's rows.

    Example:
        >>> target = {"target_category": 2, "behavior_categories": [2, 5], "positions": [1, 2, 3],
        ...           "ground_truth_mi": [[0.4, 0.2, 0.1], [0.1, 0.1, 0.1]], "learned": None}
        >>> pattern = own_category_pattern(target)
        >>> pattern["own_category_is_top_row"], pattern["own_row_vs_position_spearman"], pattern["own_row_normalized"]
        (True, -1.0, [1.0, 0.5, 0.25])
    """
    gt = np.asarray(target["ground_truth_mi"], dtype=float)
    cats = target["behavior_categories"]
    if target["target_category"] not in cats or not gt.size:
        return None
    own_row = gt[cats.index(target["target_category"])]
    pattern = {
        "own_category_is_top_row": bool(own_row.sum() >= gt.sum(axis=1).max()),
        "own_row_vs_position_spearman": rank_correlation(own_row, target["positions"]),
        "own_row_normalized": (own_row / own_row.max()).tolist() if own_row.max() > 0 else own_row.tolist(),
    }
    if target.get("learned") is not None:
        learned_row = target["learned"][cats.index(target["target_category"])]
        pattern["learned_own_row_vs_position_spearman"] = rank_correlation(learned_row, target["positions"])
    return pattern


def target_finding(target: Mapping[str, Any], pattern: Mapping[str, Any], thresholds: ReportThresholds) -> str:
    """The sentence on one target category: the data's pattern and, with a learned map, the model's agreement.

    Example:
        >>> target = {"name": "shoes", "samples": 1200, "agreement": 0.2}
        >>> pattern = {"own_category_is_top_row": True, "own_row_vs_position_spearman": -0.9,
        ...            "learned_own_row_vs_position_spearman": 0.1}
        >>> print(target_finding(target, pattern, ReportThresholds()))
        Target category **shoes** (1,200 samples): in the data its own category is the most informative row, and
        its information decays with position (Spearman vs position -0.90). The model's learned map **disagrees**
        with it (rank correlation 0.20); its own-category row is Spearman vs position +0.10.
    """
    decay = pattern["own_row_vs_position_spearman"]
    where = "is the most informative row" if pattern["own_category_is_top_row"] else "is not the top row"
    sentence = (f"Target category **{target['name']}** ({target['samples']:,} samples): in the data its own "
                f"category {where}, and its information {'decays' if decay < 0 else 'does not decay'} with "
                f"position (Spearman vs position {decay:+.2f}).")
    if target.get("agreement") is not None:
        verb = "agrees with" if target["agreement"] >= thresholds.min_agreement else "**disagrees** with"
        learned_decay = pattern.get("learned_own_row_vs_position_spearman", float("nan"))
        shape = ("flat: it does not depend on position" if not np.isfinite(learned_decay)
                 else f"Spearman vs position {learned_decay:+.2f}")
        sentence += (f" The model's learned map {verb} it (rank correlation {target['agreement']:.2f}); its "
                     f"own-category row is {shape}.")
    return sentence


def correlation_findings(records: Sequence[BehaviorTargetRecord], thresholds: ReportThresholds) -> list[str]:
    """One sentence per analysed target category of the last epoch's record (at most
    ``max_findings_per_section``); none before the first epoch.

    Example:
        >>> from lightning_recanalysis.records import BehaviorTargetRecord
        >>> target = {"target_category": 2, "name": "shoes", "samples": 50, "behavior_categories": [2],
        ...           "positions": [1, 2], "ground_truth_mi": [[0.1, 0.3]], "learned": None, "agreement": None}
        >>> correlation_findings([BehaviorTargetRecord(stage="epoch", targets=[target])], ReportThresholds())
        ['Target category **shoes** (50 samples): in the data its own category is the most informative row, and its
        information does not decay with position (Spearman vs position +1.00).']
    """
    epochs = [r for r in records if r.stage == "epoch"]
    if not epochs:
        return []
    found = [target_finding(t, pattern, thresholds)
             for t in epochs[-1].targets if (pattern := own_category_pattern(t)) is not None]
    return found[: thresholds.max_findings_per_section]
