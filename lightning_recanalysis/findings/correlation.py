"""Findings of ``correlation/``: does the data show the target-behaviour pattern, and did the model learn it?

Zhou et al. 2024: in the ground-truth map (mutual information between "the behaviour at position p has category
c" and the label) the target's own category is the most informative row and its information decays with the
position p. The rules:

- **fine** (``no_signal``): no cell of the ground-truth map carries MI beyond what shuffled labels give (a G-test
  per cell, Bonferroni over the cells): there is nothing to learn, so the model is not judged;
- **problem** (``missed_correlation``): the data hold a signal and the upper end of the 95% interval of the rank
  correlation (Spearman over the map's cells) between the learned and the ground-truth map is below
  ``min_agreement``;
- **problem** (``missed_correlation``) too when the data's own-category row decays with position (Spearman with
  the position at most -0.8) and the learned own-category row does not depend on position at all: a model without
  position information (DIN) cannot learn the temporal decay, whatever the rest of the map agrees on;
- **fine** (``agreement``) when its lower end is above, **inconclusive** in between.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..functional.correlation import rank_correlation
from ..records import BehaviorTargetRecord
from .finding import Finding
from .thresholds import ReportThresholds
from .uncertainty import g_test_p, spearman_interval

__all__ = ["correlation_findings", "data_signal", "own_category_pattern", "target_finding"]


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


def data_signal(target: Mapping[str, Any], alpha: float) -> tuple[bool, float, int]:
    """Whether the target's ground-truth map holds any signal: some cell's MI beyond what shuffled labels give.

    Each cell is a 2 x 2 table over the target's samples, so G = 2 N ln(2) MI is chi-squared with one degree of
    freedom under independence (:func:`~.uncertainty.g_test_p`); a signal is a cell below ``alpha`` / cells
    (Bonferroni). Returns (signal, the smallest p-value, cells).

    Example:
        >>> data_signal({"samples": 5000, "ground_truth_mi": [[0.02, 0.0], [0.0, 0.0]]}, 0.05)[0]
        True
        >>> data_signal({"samples": 50, "ground_truth_mi": [[0.001, 0.0], [0.0, 0.0]]}, 0.05)[0]
        False
    """
    cells = [v for row in target["ground_truth_mi"] for v in row]
    if not cells:
        return False, 1.0, 0
    smallest = min(g_test_p(v, int(target["samples"])) for v in cells)
    return smallest < alpha / len(cells), smallest, len(cells)


#: A decay this clear (Spearman of the own-category row's MI with the position) is the temporal pattern to learn.
DECAY = -0.8

MISSED_ADVICE = ("The model's attention does not reproduce the data's target-aware pattern: target-aware temporal "
                 "attention (TIN, Zhou et al., WWW 2024: a position embedding on both sides and a target-aware "
                 "representation) is the published remedy; check also that the category embedding trains.")


def target_finding(target: Mapping[str, Any], pattern: Mapping[str, Any] | None,
                   thresholds: ReportThresholds) -> Finding:
    """The finding on one target category: the data's signal and pattern and, with a learned map, the model's
    agreement with its interval.

    Example:
        >>> target = {"name": "shoes", "target_category": 2, "samples": 1200, "agreement": 0.2,
        ...           "ground_truth_mi": [[0.05, 0.02], [0.0, 0.0]], "learned": [[0.1, 0.2], [0.3, 0.4]]}
        >>> pattern = {"own_category_is_top_row": True, "own_row_vs_position_spearman": -0.9,
        ...            "learned_own_row_vs_position_spearman": 0.1}
        >>> f = target_finding(target, pattern, ReportThresholds())
        >>> f.verdict, f.kind  # 4 cells cannot tell 0.2 from 0.5
        ('inconclusive', 'agreement')
    """
    signal, smallest, cells = data_signal(target, thresholds.alpha)
    subject = f"target_{target['target_category']}"
    head = f"Target category **{target['name']}** ({target['samples']:,} samples)"
    if not signal:
        return Finding("correlation", "no_signal", "fine", subject,
                       f"{head}: the data hold no target-behaviour signal: no cell's MI exceeds what shuffled labels "
                       f"give (smallest p = {smallest:.2g} over {cells} cells, Bonferroni at {thresholds.alpha}).",
                       "Nothing for the model to learn here: judge it on another target, or count more samples.")
    sentence = head + ": "
    if pattern is not None:
        decay = pattern["own_row_vs_position_spearman"]
        where = "is the most informative row" if pattern["own_category_is_top_row"] else "is not the top row"
        sentence += (f"in the data its own category {where}, and its information "
                     f"{'decays' if decay < 0 else 'does not decay'} with position (Spearman vs position "
                     f"{decay:+.2f}).")
    else:
        sentence += "the data hold a signal (its own category is not among the map's rows)."
    agreement = target.get("agreement")
    if agreement is None:
        return Finding("correlation", "data_pattern", "fine", subject, sentence,
                       "Give the monitor the model's embeddings (category_embedding=...) to compare what it learned.")
    low, high = spearman_interval(agreement, cells)
    learned_decay = float("nan") if pattern is None else pattern.get("learned_own_row_vs_position_spearman",
                                                                     float("nan"))
    shape = ("" if pattern is None else "; its own-category row is flat: it does not depend on position"
             if not np.isfinite(learned_decay) else f"; its own-category row is Spearman vs position {learned_decay:+.2f}")
    measured = f"rank correlation {agreement:.2f}, 95% interval {low:+.2f} to {high:+.2f} over {cells} cells{shape}"
    if high < thresholds.min_agreement:
        return Finding("correlation", "missed_correlation", "problem", subject,
                       f"{sentence} The model's learned map **disagrees** with it ({measured}).", MISSED_ADVICE,
                       severity=min(1.0, thresholds.min_agreement - agreement))
    if pattern is not None and pattern["own_row_vs_position_spearman"] <= DECAY and not np.isfinite(learned_decay):
        # The data's own-category information decays with position and the learned row cannot: the model has no
        # position information (DIN), whatever the rest of the map agrees on.
        return Finding("correlation", "missed_correlation", "problem", subject,
                       f"{sentence} The model's learned own-category row **does not depend on position**, so it "
                       f"cannot follow the decay ({measured}).", MISSED_ADVICE, severity=0.5)
    if low >= thresholds.min_agreement:
        return Finding("correlation", "agreement", "fine", subject,
                       f"{sentence} The model's learned map agrees with it ({measured}).", "")
    return Finding("correlation", "agreement", "inconclusive", subject,
                   f"{sentence} The model's learned map cannot yet be told to agree or disagree ({measured}).",
                   "More categories or positions in the map (num_behavior_categories, num_positions) narrow the "
                   "interval.", severity=0.1)


def correlation_findings(records: Sequence[BehaviorTargetRecord], thresholds: ReportThresholds) -> list[Finding]:
    """One finding per analysed target category of the last epoch's record; none before the first epoch.

    Example:
        >>> from lightning_recanalysis.records import BehaviorTargetRecord
        >>> target = {"target_category": 2, "name": "shoes", "samples": 5000, "behavior_categories": [2],
        ...           "positions": [1, 2], "ground_truth_mi": [[0.01, 0.03]], "learned": None, "agreement": None}
        >>> record = BehaviorTargetRecord.from_dict({"stage": "epoch", "targets": [target]})
        >>> [(f.verdict, f.kind) for f in correlation_findings([record], ReportThresholds())]
        [('fine', 'data_pattern')]
    """
    epochs = [r for r in records if r.stage == "epoch"]
    if not epochs:
        return []
    return [target_finding(t, own_category_pattern(t), thresholds) for t in epochs[-1].targets]
