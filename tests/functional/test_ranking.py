"""subset_aurocs against torchmetrics' binary_auroc and scipy's Mann-Whitney U, ties included."""

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from torchmetrics.functional.classification import binary_auroc

from lightning_recanalysis.functional import subset_aurocs


def test_every_subset_matches_torchmetrics_and_mann_whitney_with_ties():
    g = torch.Generator().manual_seed(0)
    n = 3000
    # Scores rounded to two decimals: many ties, within and across the classes.
    scores = (torch.rand(n, generator=g, dtype=torch.float64) * 4).round(decimals=2)
    target = (torch.rand(n, generator=g) < torch.sigmoid(scores.float() - 2)).long()
    other = torch.rand(n, generator=g) < 0.5
    masks = [torch.ones(n, dtype=torch.bool), other, ~other, target.bool() | other, torch.zeros(n, dtype=torch.bool)]
    got = subset_aurocs(scores, target, masks)
    for mask, value in zip(masks[:3], got[:3]):
        expected = float(binary_auroc(scores[mask], target[mask]))
        assert value == pytest.approx(expected, abs=1e-6)  # torchmetrics computes in float32
        pos, neg = scores[mask][target[mask] == 1].numpy(), scores[mask][target[mask] == 0].numpy()
        assert value == pytest.approx(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)), rel=1e-12)
    # A subset of positives only, and an empty one, have no AUROC.
    assert got[3] is not None and got[4] is None
    only_positives = subset_aurocs(scores, target, [target.bool()])
    assert only_positives == [None]


@pytest.mark.parametrize("n", [1, 2, 2000])
def test_distinct_scores_match_torchmetrics_and_the_counting_of_ties(n):
    """Distinct scores take the rank-by-cumulative-count path; oracles: torchmetrics, and the runs-of-ties path
    itself (the same scores with one tie added far below every other score, from a pair outside every subset)."""
    rng = np.random.default_rng(n)
    scores = rng.normal(size=n)
    target = rng.random(n) < 0.4
    other = rng.random(n) < 0.5
    masks = [np.ones(n, bool), other, ~other, target | other]
    got = subset_aurocs(scores, target, masks)
    for mask, value in zip(masks, got):
        if value is None:
            assert target[mask].all() or not target[mask].any()
            continue
        expected = float(binary_auroc(torch.from_numpy(scores[mask]), torch.from_numpy(target[mask]).long()))
        assert value == pytest.approx(expected, abs=1e-6)
    tied = np.concatenate([scores, [-100.0, -100.0]])  # a tie: the other path; its two pairs in no subset
    with_tie = subset_aurocs(tied, np.concatenate([target, [True, False]]),
                             [np.concatenate([m, [False, False]]) for m in masks])
    assert with_tie == got  # exactly: both sum integer (or half-integer) ranks


def test_hand_computed_value_and_shape_errors():
    # Positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5), (0.9>0.1), (0.5=0.5: half), (0.5>0.1) -> 3.5/4.
    assert subset_aurocs(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0]), [np.ones(4, bool)]) == [0.875]
    with pytest.raises(ValueError, match="same number of values"):
        subset_aurocs(np.zeros(3), np.zeros(4), [])
    with pytest.raises(ValueError, match="each mask must have 3 values"):
        subset_aurocs(np.zeros(3), np.zeros(3), [np.ones(2, bool)])


def test_integer_masks_are_refused_and_saturating_logits_keep_their_order():
    scores, target = np.array([0.9, 0.5, 0.5, 0.1, 0.3]), np.array([1, 1, 0, 0, 1])
    with pytest.raises(ValueError, match="masks must be boolean"):
        subset_aurocs(scores, target, [np.array([1, 1, 1, 1, 0])])  # would index rows 1 and 0, not select
    # Logits 30 > 25 > 20 > 18 rank the positives first: AUROC 1 by hand. A float32 sigmoid rounds all four to 1.0.
    assert subset_aurocs(np.array([30.0, 20.0, 25.0, 18.0]), np.array([1, 0, 1, 0]), [np.ones(4, bool)]) == [1.0]


def test_the_order_of_tied_scores_does_not_move_a_single_bit():
    """Ties share their mean rank, so any order of equal scores gives the same AUROC to the last bit: checked by
    permuting the pairs (which reorders the ties in the sort) against the values on the original order."""
    rng = np.random.default_rng(7)
    n = 5000
    scores = np.round(rng.normal(size=n), 1)  # about 80 distinct values: long runs of ties
    target = rng.random(n) < 0.3
    masks = [np.ones(n, bool), rng.random(n) < 0.5, rng.random(n) < 0.1]
    reference = subset_aurocs(scores, target, masks)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(n)
        assert subset_aurocs(scores[perm], target[perm], [m[perm] for m in masks]) == reference
    pos, neg = scores[target], scores[~target]
    assert reference[0] == pytest.approx(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)), rel=1e-12)
