"""The compiled counting loops (numba) against independent oracles: numpy's sort for merges, a Python dictionary
for a batch's counts; and BehaviorTargetCounts' sparse path equal with and without them."""

from collections import Counter

import numpy as np
import pytest
import torch

import lightning_recanalysis.metrics.behavior_counting as behavior_counting
from lightning_recanalysis.metrics import BehaviorTargetCounts, compiled_counts
from lightning_recanalysis.metrics.sparse_keys import BEHAVIOR_SHIFT, POSITION_SHIFT, TARGET_SHIFT, decode_keys

from .test_behavior_target import dictionary_counts, random_batches, stored_counts

needs_numba = pytest.mark.skipif(not compiled_counts.available(), reason="numba is not installed")


def numpy_merge(keys_a, counts_a, keys_b, counts_b):
    """The oracle: concatenate, sort, sum equal keys."""
    keys = np.concatenate([keys_a, keys_b])
    counts = np.concatenate([counts_a, counts_b])
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    if keys.size == 0:
        return keys, counts
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(counts, starts)


@needs_numba
@pytest.mark.parametrize("sizes", [(0, 0), (0, 5), (7, 0), (1, 1), (300, 40), (5_000, 5_000)])
def test_merge_runs_equals_a_sort_of_both_runs(sizes):
    rng = np.random.default_rng(sum(sizes))
    runs = []
    for n in sizes:  # a small key range, so that the runs share many keys; key 0 included
        keys = np.unique(rng.integers(0, 3 * max(sizes) + 1, n))
        runs.append((keys, rng.integers(1, 1000, keys.size)))
    keys, counts = compiled_counts.merge_runs(runs[0][0], runs[0][1], runs[1][0], runs[1][1])
    expected = numpy_merge(runs[0][0], runs[0][1], runs[1][0], runs[1][1])
    assert np.array_equal(keys, expected[0]) and np.array_equal(counts, expected[1])


def _position_runs(target, behavior, label, positions, code_dtype):
    length = behavior.shape[1]
    b_bits = max(1, int(behavior.max()).bit_length())
    code_bits = max(1, int(target.max()).bit_length()) + b_bits + 1
    n_positions = length if positions.size == 0 else max(length, int(positions.max()))
    work = [np.empty(behavior.size, code_dtype) for _ in range(2)]
    return compiled_counts.position_runs(target, behavior, label, positions, n_positions, b_bits, code_bits, *work,
                                         POSITION_SHIFT, TARGET_SHIFT, BEHAVIOR_SHIFT)


@needs_numba
@pytest.mark.parametrize("code_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("explicit", [False, True], ids=["by-column", "explicit-positions"])
def test_position_runs_equal_a_dictionary_count(code_dtype, explicit):
    rng = np.random.default_rng(3)
    batch, length = 500, 9
    target = rng.integers(0, 3000, batch)
    behavior = rng.integers(0, 3000, (batch, length))
    behavior[:, 4] = target  # the target's own category, so that keys repeat
    label = rng.integers(0, 2, batch)
    if explicit:  # any position per cell, 0 = padding (not counted)
        positions = rng.integers(0, length + 1, (batch, length))
    else:
        positions = np.zeros((0, 0), dtype=np.int64)
    expected = Counter()
    for i in range(batch):
        for j in range(length):
            p = length - j if not explicit else positions[i, j]
            if p:
                expected[(target[i], behavior[i, j], p, label[i])] += 1
    keys, counts = _position_runs(target, behavior, label, positions, code_dtype)
    assert np.all(np.diff(keys) > 0)  # sorted and unique, in the stored key order
    decoded = zip(*(part.tolist() for part in decode_keys(torch.from_numpy(keys))))
    assert dict(zip(decoded, counts.tolist())) == dict(expected)


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
@pytest.mark.parametrize("categories, gaps", [(400, True), (3000, False), (200_000, True)],
                         ids=["gaps", "left-padding", "int64-codes"])
def test_sparse_path_equals_a_dictionary_count_with_and_without_numba(compiled, categories, gaps, monkeypatch):
    """Flushed every few batches, so that runs are merged in the counter (and queried between batches)."""
    if compiled and not compiled_counts.available():
        pytest.skip("numba is not installed")
    monkeypatch.setattr(compiled_counts, "available", lambda: compiled)
    monkeypatch.setattr(behavior_counting, "_FLUSH_BEHAVIORS", 700)
    monkeypatch.setattr(behavior_counting, "_FLUSH_MAX_BEHAVIORS", 700)
    monkeypatch.setattr(behavior_counting, "_FLUSH_COMPILED_MAX_BEHAVIORS", 700)
    monkeypatch.setattr(behavior_counting, "DENSE_MAX_CELLS", 1_000)  # sparse from the first batch
    batches = random_batches(categories, 12, 48, 10, categories, -1, gaps=gaps)
    metric = BehaviorTargetCounts()
    for k, b in enumerate(batches):
        metric.update(*b)
        if k == 5:  # a query in the middle merges the runs; counting goes on after it
            assert stored_counts(metric) == dict(dictionary_counts(batches[:6])[0])
    triples, totals = dictionary_counts(batches)
    assert metric._dense is None
    assert stored_counts(metric) == dict(triples)
    for t in {int(b[0][0]) for b in batches}:
        assert metric.label_counts(t).tolist() == [totals[(t, 0)], totals[(t, 1)]]
        seen = sorted({c for (tt, c, _, _) in triples if tt == t})
        assert metric.behavior_categories(t).tolist() == seen
