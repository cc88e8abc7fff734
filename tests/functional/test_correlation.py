"""The correlation maths against independent oracles: a hand-written float64 2 x 2 mutual information,
torchmetrics' mutual information, the learned-correlation formula written out in numpy, and scipy's Spearman."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torchmetrics.functional.clustering import mutual_info_score

from lightning_recanalysis.functional import (
    learned_correlation,
    mutual_information,
    rank_correlation,
    target_relative_positions,
)


def hand_mi(table, base=2.0) -> float:
    """MI of a 2 x 2 count table, written out cell by cell in float64."""
    n = [[float(table[x][y]) for y in range(2)] for x in range(2)]
    total = sum(map(sum, n))
    if total == 0:
        return 0.0
    px = [(n[x][0] + n[x][1]) / total for x in range(2)]
    py = [(n[0][y] + n[1][y]) / total for y in range(2)]
    mi = 0.0
    for x in range(2):
        for y in range(2):
            p = n[x][y] / total
            if p > 0:
                mi += p * math.log(p / (px[x] * py[y]))
    return mi / math.log(base)


def test_mutual_information_equals_the_hand_formula_with_empty_cells():
    rng = np.random.default_rng(0)
    tables = rng.integers(0, 50, size=(200, 2, 2))
    tables[::7, 0, 1] = 0  # empty cells
    tables[::11, 1, :] = 0  # X never 1
    got = mutual_information(torch.from_numpy(tables))
    assert got.dtype == torch.float64 and got.shape == (200,)
    expected = [hand_mi(t) for t in tables]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)
    nats = mutual_information(torch.from_numpy(tables), base=math.e)
    np.testing.assert_allclose(nats.numpy(), [hand_mi(t, math.e) for t in tables], rtol=1e-12, atol=1e-15)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_mutual_information_equals_torchmetrics_on_the_samples_behind_the_table():
    rng = np.random.default_rng(1)
    for _ in range(5):
        table = rng.integers(1, 40, size=(2, 2))
        x = np.repeat([0, 0, 1, 1], table.reshape(-1))
        y = np.repeat([0, 1, 0, 1], table.reshape(-1))
        oracle = float(mutual_info_score(torch.from_numpy(x), torch.from_numpy(y)))  # natural log, float32
        ours = float(mutual_information(torch.from_numpy(table), base=math.e))
        assert ours == pytest.approx(oracle, rel=1e-3, abs=1e-6)


def test_mutual_information_known_values_and_shapes():
    # X = Y, both fair: exactly one bit. Independent: exactly zero. Empty: zero, not NaN.
    assert float(mutual_information(torch.tensor([[5, 0], [0, 5]]))) == pytest.approx(1.0, abs=1e-12)
    assert float(mutual_information(torch.tensor([[3, 6], [1, 2]]))) == pytest.approx(0.0, abs=1e-12)
    empty = mutual_information(torch.zeros(3, 4, 2, 2))
    assert empty.shape == (3, 4) and not torch.isnan(empty).any() and float(empty.abs().max()) == 0.0
    one_class = mutual_information(torch.tensor([[4, 0], [9, 0]]))  # every label 0
    assert float(one_class) == 0.0
    with pytest.raises(ValueError, match=r"\[\.\.\., 2, 2\]"):
        mutual_information(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        mutual_information(torch.tensor([[1, -1], [0, 2]]))


def numpy_learned_map(behavior, target, representation, scaled):
    """The released script's map, step by step in float64 numpy."""
    e = np.asarray(behavior, dtype=np.float64)
    v = np.asarray(target, dtype=np.float64)
    a = np.einsum("cpd,d->cp", e, v)
    if scaled:
        a = a / np.sqrt(e.shape[-1])
    z = (a - a.mean()) / a.std()
    w = np.exp(z - z.max())
    w = w / w.sum()
    r = e * v if representation == "product" else e
    s = w * np.linalg.norm(r, axis=-1)
    return (s - s.min()) / (s.max() - s.min())


@pytest.mark.parametrize("representation", ["product", "behavior"])
@pytest.mark.parametrize("scaled", [False, True])
def test_learned_correlation_equals_the_formula_on_hand_built_embeddings(representation, scaled):
    g = torch.Generator().manual_seed(3)
    category = torch.randn(6, 8, generator=g)
    position = torch.randn(11, 8, generator=g) * 0.5
    behavior = category[:, None, :] + position[None, 1:, :]  # categories x positions 1..10
    target = category[2] + position[0]
    got = learned_correlation(behavior, target, representation=representation, scaled=scaled)
    expected = numpy_learned_map(behavior.numpy(), target.numpy(), representation, scaled)
    assert got.shape == (6, 10) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert float(got.min()) == 0.0 and float(got.max()) == 1.0


def test_learned_correlation_known_answer_and_degenerate_inputs():
    # Behaviour c at position p is (c == 0) * (1 / p) along the target's direction: the top cell is (0, 1) and
    # row 0 falls with position; the other rows are orthogonal to the target and tie.
    d = 4
    target = torch.tensor([1.0, 0.0, 0.0, 0.0])
    behavior = torch.zeros(3, 5, d)
    behavior[0, :, 0] = 1.0 / torch.arange(1, 6)
    behavior[1:, :, 1] = 1.0
    got = learned_correlation(behavior, target)
    assert got[0, 0] == 1.0
    assert torch.all(got[0, :-1] > got[0, 1:])
    assert torch.all(got[1:] == 0.0)
    # No ranking to show: zeros, never NaN.
    assert torch.equal(learned_correlation(torch.ones(2, 3, d), torch.ones(d)), torch.zeros(2, 3, dtype=torch.float64))
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    assert torch.equal(learned_correlation(torch.zeros(2, 3, d), torch.zeros(d)), zeros)
    with pytest.raises(ValueError, match="representation"):
        learned_correlation(behavior, target, representation="sum")
    with pytest.raises(ValueError, match=r"\[d\]"):
        learned_correlation(behavior, torch.ones(d + 1))


@pytest.mark.parametrize("a, b", [
    ([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]),  # constant first map
    ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]),  # constant second map
    ([2.0, 2.0], [2.0, 2.0]),  # both constant
])
def test_rank_correlation_of_a_constant_map_is_nan_as_in_scipy(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns that the correlation is undefined
        expected = spearmanr(a, b).correlation
    assert math.isnan(expected)
    assert math.isnan(rank_correlation(torch.tensor(a), torch.tensor(b)))
    assert math.isnan(rank_correlation(a, b))  # plain sequences, as the report passes them
    assert rank_correlation(a, b, undefined=0.0) == 0.0  # what the monitors log


def test_rank_correlation_of_sequences_and_arrays_equals_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=20), rng.integers(0, 4, size=20)
    expected = spearmanr(a, b).correlation
    assert rank_correlation(a.tolist(), b.tolist()) == pytest.approx(expected, abs=1e-12)
    assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-12)


def test_rank_correlation_equals_scipy_spearman_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(10):
        a = rng.integers(0, 6, size=(5, 7)).astype(float)  # many ties
        b = a + rng.normal(0, 2, size=a.shape)
        b[0, :3] = b[0, 0]
        ours = rank_correlation(torch.from_numpy(a), torch.from_numpy(b))
        assert ours == pytest.approx(spearmanr(a.ravel(), b.ravel()).correlation, abs=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        rank_correlation(torch.ones(2, 3), torch.ones(3, 2))


def test_target_relative_positions_count_real_behaviours_back_from_the_last():
    mask = torch.tensor([
        [0, 0, 1, 1, 1],  # left padding: L - column
        [1, 0, 1, 0, 1],  # gaps: padding is skipped
        [1, 1, 1, 1, 0],  # right padding: the last real behaviour is position 1
        [0, 0, 0, 0, 0],
    ], dtype=torch.bool)
    expected = torch.tensor([
        [0, 0, 3, 2, 1],
        [3, 0, 2, 0, 1],
        [4, 3, 2, 1, 0],
        [0, 0, 0, 0, 0],
    ])
    assert torch.equal(target_relative_positions(mask), expected)
