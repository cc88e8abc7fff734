"""Conflict subsets, percentiles, placement shares and histograms against a float64 numpy oracle, and the
agreement and rank correlation against hand-derived values and scipy."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from lightning_recanalysis.functional.conflict_subset import (
    conflict_histograms,
    conflict_rank_correlations,
    conflict_subsets,
    frequent_ids,
    geometry_agreement,
    pair_distances,
    percentile,
    percentiles,
    placement_shares,
)


def hidden_pairs(seed, n=997):
    rng = np.random.default_rng(seed)
    a = rng.gamma(2.0, size=n)
    b = np.where(rng.random(n) < 0.3, a, rng.gamma(2.0, size=n))  # partly the same geometry
    b[:50] = a[:50]  # ties across references and within one
    a[50:60] = a[60]
    view = 0.5 * a + rng.normal(size=n) ** 2
    return a, b, view


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("high,low", [(60.0, 40.0), (75.0, 25.0), (50.0, 50.0)])
def test_subsets_percentiles_and_shares_equal_numpy(seed, high, low):
    a, b, view = hidden_pairs(seed)
    for q in (0.0, 12.5, low, high, 100.0):
        assert percentile(torch.from_numpy(a), q) == pytest.approx(np.percentile(a, q), rel=1e-12, abs=1e-12)
    masks = conflict_subsets({"like": torch.from_numpy(a), "finish": torch.from_numpy(b)}, high=high, low=low)
    expected = {
        "like_far_finish_near": (a > np.percentile(a, high)) & (b <= np.percentile(b, low)),
        "finish_far_like_near": (b > np.percentile(b, high)) & (a <= np.percentile(a, low)),
    }
    assert list(masks) == list(expected)
    for mode, mask in masks.items():
        np.testing.assert_array_equal(mask.numpy(), expected[mode])
        chosen = view[expected[mode]]
        shares = placement_shares(torch.from_numpy(view), mask, high=high, low=low)
        top = np.mean(chosen > np.percentile(view, high))
        bottom = np.mean(chosen <= np.percentile(view, low))
        assert shares["top"] == pytest.approx(top, abs=1e-12)
        assert shares["bottom"] == pytest.approx(bottom, abs=1e-12)
        assert shares["middle"] == pytest.approx(1 - top - bottom, abs=1e-12)
        hist = conflict_histograms(torch.from_numpy(view), masks, bins=39, high=high, low=low)
        edges = np.linspace(view.min(), view.max(), 40)
        np.testing.assert_allclose(hist["edges"], edges, rtol=1e-12)
        np.testing.assert_array_equal(hist["modes"][mode]["conflict"], np.histogram(chosen, bins=edges)[0])
        np.testing.assert_array_equal(hist["modes"][mode]["rest"], np.histogram(view[~expected[mode]], bins=edges)[0])
        assert hist["low"] == pytest.approx(np.percentile(view, low))
        assert hist["high"] == pytest.approx(np.percentile(view, high))


def test_pair_distances_and_frequent_ids():
    rng = np.random.default_rng(3)
    u, i = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    np.testing.assert_allclose(pair_distances(torch.from_numpy(u).float(), torch.from_numpy(i).float()).numpy(),
                               np.linalg.norm(u - i, axis=1), rtol=1e-6)
    counts = torch.tensor([0, 5, 1, 0, 9, 3, 3, 7])
    seen = np.array([5, 1, 9, 3, 3, 7])
    np.testing.assert_array_equal(frequent_ids(counts).numpy(), counts.numpy() > np.percentile(seen, 60))


def test_agreement_and_rank_correlation_on_a_planted_geometry():
    """A view that copies the 'like' reference reproduces it on every conflict pair (agreement 1 with like, -1
    with finish); a view that copies nothing of it (constant) agrees with neither."""
    rng = np.random.default_rng(0)
    like, finish = torch.from_numpy(rng.random(1000)), torch.from_numpy(rng.random(1000))
    masks = conflict_subsets({"like": like, "finish": finish})
    for mode, mask in masks.items():
        like_is_far = mode.startswith("like_far")
        shares = placement_shares(like, mask)
        assert geometry_agreement(shares, far=like_is_far) == 1.0
        assert geometry_agreement(shares, far=not like_is_far) == -1.0
        flat = placement_shares(torch.ones(1000, dtype=torch.float64), mask)
        assert flat == {"top": 0.0, "middle": 0.0, "bottom": 1.0}  # all ties sit at the percentile: "near"
    view = like + 0.1 * torch.from_numpy(rng.random(1000))
    rhos = conflict_rank_correlations(view, {"like": like, "finish": finish}, list(masks.values()))
    union = (masks["like_far_finish_near"] | masks["finish_far_like_near"]).numpy()
    assert rhos["like"] == pytest.approx(spearmanr(view.numpy()[union], like.numpy()[union])[0], abs=1e-12)
    assert rhos["finish"] == pytest.approx(spearmanr(view.numpy()[union], finish.numpy()[union])[0], abs=1e-12)
    assert rhos["like"] > 0.9 and rhos["finish"] < -0.5


def test_bad_input():
    with pytest.raises(ValueError, match="same pairs"):
        conflict_subsets({"a": torch.rand(5), "b": torch.rand(6)})
    with pytest.raises(ValueError, match="low <= high"):
        conflict_subsets({"a": torch.rand(5), "b": torch.rand(5)}, high=30, low=70)
    with pytest.raises(ValueError, match="two tasks"):
        conflict_subsets({"a": torch.rand(5)})


@pytest.mark.parametrize("n", [1, 2, 3, 10, 997, 10_000])
def test_percentiles_are_the_order_statistics_of_a_full_sort_bit_for_bit(n):
    """The percentiles read only the order statistics they need (a partition, not a sort): the values must be
    exactly those of the linear interpolation on a fully sorted copy (the definition in the module docstring),
    ties and repeated values included, so that the conflict subsets do not move by one pair."""
    rng = np.random.default_rng(n)
    x = np.round(rng.gamma(2.0, size=n), 2)  # two decimals: many ties
    ordered = np.sort(x)
    qs = [0.0, 12.5, 40.0, 50.0, 60.0, 99.9, 100.0]
    expected = []
    for q in qs:
        h = (n - 1) * q / 100.0
        lo = int(h)
        hi = min(lo + 1, n - 1)
        expected.append(float(ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])))
    assert percentiles(torch.from_numpy(x), qs) == expected  # exact, not approx
    assert percentiles(torch.from_numpy(x).float(), [40.0]) == [percentile(torch.from_numpy(x.astype(np.float32)), 40)]
