"""BehaviorTargetCounts against a dictionary count (the authors' way) on random data with padding, in its dense
and sparse states; the planted ground truth recovered; independent labels under the sample-size bound; bad input."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chi2, spearmanr

import lightning_recanalysis.metrics.behavior_counting as behavior_counting
import lightning_recanalysis.metrics.dense_counts as dense_counts
from lightning_recanalysis.functional import mutual_information
from lightning_recanalysis.metrics import BehaviorTargetCounts
from lightning_recanalysis.metrics.sparse_keys import decode_keys, sum_equal_keys


def dictionary_counts(batches):
    """The oracle: one dictionary increment per real behaviour, positions counted back from the last real one."""
    triples, totals = Counter(), Counter()
    for target, behavior, label, mask in batches:
        for t, row, y, m in zip(target.tolist(), behavior.tolist(), label.tolist(), mask.tolist()):
            totals[(t, int(y))] += 1
            position = 0
            for c, real in zip(reversed(row), reversed(m)):
                if real:
                    position += 1
                    triples[(t, c, position, int(y))] += 1
    return triples, totals


def random_batches(seed, n_batches, batch, length, categories, pad_value, gaps):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        target = torch.randint(0, categories, (batch,), generator=g)
        behavior = torch.randint(0, categories, (batch, length), generator=g)
        label = torch.randint(0, 2, (batch,), generator=g).float()
        if gaps:
            mask = torch.rand(batch, length, generator=g) > 0.3
        else:  # left padding, lengths 0..L (some rows with no behaviour at all)
            lengths = torch.randint(0, length + 1, (batch,), generator=g)
            mask = torch.arange(length)[None, :] >= (length - lengths)[:, None]
        out.append((target, torch.where(mask, behavior, torch.full_like(behavior, pad_value)), label, mask))
    return out


def stored_counts(metric) -> dict:
    """The metric's (target, behaviour, position, label) counts, decoded from its sorted keys, as a dictionary."""
    keys, counts = metric._merged("triple")
    return dict(zip(zip(*(x.tolist() for x in decode_keys(keys))), counts.tolist()))


def assert_tables_match(metric, triples, totals, categories, length):
    cats = list(range(categories))
    for t in range(categories):
        table = metric.table(t, cats, length)
        assert table.shape == (categories, length, 2, 2)
        x1 = torch.tensor([[[triples[(t, c, p, y)] for y in (0, 1)] for p in range(1, length + 1)] for c in cats])
        total = torch.tensor([totals[(t, 0)], totals[(t, 1)]])
        assert torch.equal(table[:, :, 1, :], x1)
        assert torch.equal(table[:, :, 0, :], total - x1)  # every other sample of t, shorter sequences included


@pytest.mark.parametrize("per_position", [False, True])
@pytest.mark.parametrize("gaps, pad_value", [(False, 0), (False, -1), (True, 7)])
def test_dense_counts_equal_a_dictionary_count_with_padding(gaps, pad_value, per_position, monkeypatch):
    if per_position:  # the one-bincount-per-position path of large dense arrays, forced on a small one
        monkeypatch.setattr(dense_counts, "DENSE_IN_CACHE_CELLS", 0)
        monkeypatch.setattr(dense_counts, "ROWS_PER_POSITION_PASS", 1)
    batches = random_batches(0, 6, 50, 9, 6, pad_value, gaps)
    metric = BehaviorTargetCounts()
    for b in batches:
        metric.update(*b)
    triples, totals = dictionary_counts(batches)
    assert_tables_match(metric, triples, totals, 6, 9)
    assert metric._dense is not None  # a small vocabulary stays in the dense array
    keys, counts = metric._merged("triple")
    assert keys.numel() == len(triples) and int(counts.sum()) == sum(triples.values())


def sparse_counts_checked(batches):
    """The batches counted by a metric that holds them as sparse keys, checked key by key against a dictionary
    count; returns the metric and the dictionary's counts and (target, label) totals."""
    metric = BehaviorTargetCounts()
    for b in batches:
        metric.update(*b)
    triples, totals = dictionary_counts(batches)
    assert metric._dense is None
    assert stored_counts(metric) == dict(triples)
    return metric, triples, totals


def test_sparse_counts_equal_a_dictionary_count(monkeypatch):
    # 400 categories: the (target, behaviour, position, label) space outgrows the dense array at once.
    batches = random_batches(1, 4, 64, 12, 400, -1, gaps=True)
    metric, triples, totals = sparse_counts_checked(batches)
    for t in (0, 17, 399):
        table = metric.table(t, [3, 250, 399], 12)
        expected = sum(v for (tt, c, _, _), v in triples.items() if tt == t and c in (3, 250, 399))
        assert int(table[:, :, 1, :].sum()) == expected


def test_dense_array_grows_then_turns_sparse_without_losing_counts(monkeypatch):
    monkeypatch.setattr(behavior_counting, "DENSE_MAX_CELLS", 40_000)
    metric = BehaviorTargetCounts()
    batches = []
    for step, categories in enumerate((4, 9, 20, 60, 90)):  # ids revealed batch by batch
        b = random_batches(10 + step, 1, 40, 8, categories, 0, gaps=False)[0]
        batches.append(b)
        metric.update(*b)
        metric.flush()
        shapes = metric._dense_shape
        assert (metric._dense is None) == (step >= 3), (step, shapes)
    triples, totals = dictionary_counts(batches)
    assert stored_counts(metric) == dict(triples)


def test_counting_in_the_dense_array_never_loads_the_compiled_loops(monkeypatch):
    """A vocabulary the dense int64 array holds is counted without numba: its import (0.4 s) would land in the
    first training step of every such run. Several batches wait and are counted together (the path that checks
    them part by part)."""
    from lightning_recanalysis.metrics import compiled_counts

    monkeypatch.setattr(compiled_counts, "_tried", False)
    monkeypatch.setattr(compiled_counts, "_kernels", None)
    metric = BehaviorTargetCounts()
    batches = random_batches(3, 4, 40, 8, 20, 0, gaps=True)
    for batch in batches:
        metric.update(*batch)
    metric.flush()
    assert metric._dense is not None and not compiled_counts._tried
    assert stored_counts(metric) == dict(dictionary_counts(batches)[0])


def test_strided_inputs_reach_the_compiled_loops_as_the_types_they_were_built_for():
    """Targets and labels taken as columns of a larger tensor (strided) are made contiguous first: numba would
    otherwise compile another version of each loop inside a training step (0.5 s here). Checked by the loops'
    signatures, not by time."""
    from lightning_recanalysis.metrics import compiled_counts
    from lightning_recanalysis.metrics.warm_up import warm_up

    if not compiled_counts.available():
        pytest.skip("numba is not installed")
    warm_up()
    loops = compiled_counts.loops()
    kernels = [loops.bucket_sizes, loops.bucket_codes, loops.run_lengths]
    before = [len(k.signatures) for k in kernels]
    g = torch.Generator().manual_seed(0)
    features = torch.randint(0, 3000, (512, 3), generator=g)
    behavior = torch.randint(0, 3000, (512, 6), generator=g)
    mask = torch.rand(512, 6, generator=g) > 0.3
    metric = BehaviorTargetCounts()
    metric.update(features[:, 0], behavior, features[:, 1] % 2, mask)
    metric.flush()
    assert [len(k.signatures) for k in kernels] == before
    assert stored_counts(metric) == dict(dictionary_counts([(features[:, 0], behavior, features[:, 1] % 2, mask)])[0])


def test_same_category_table_and_label_counts_equal_the_dictionary():
    batches = random_batches(2, 3, 80, 10, 5, 0, gaps=True)
    metric = BehaviorTargetCounts()
    for b in batches:
        metric.update(*b)
    triples, totals = dictionary_counts(batches)
    table = metric.same_category_table(10)
    for p in range(1, 11):
        for y in (0, 1):
            same = sum(v for (t, c, pp, yy), v in triples.items() if t == c and pp == p and yy == y)
            assert int(table[p - 1, 1, y]) == same
            assert int(table[p - 1, 0, y]) == sum(v for (t, yy), v in totals.items() if yy == y) - same
    assert metric.label_counts().tolist() == [sum(v for (t, y), v in totals.items() if y == y_) for y_ in (0, 1)]
    categories, per_label = metric.target_frequencies()
    assert per_label.sum(1).tolist() == sorted(per_label.sum(1).tolist(), reverse=True)
    for c, row in zip(categories.tolist(), per_label.tolist()):
        assert row == [totals[(c, 0)], totals[(c, 1)]]


def test_hand_counted_example():
    # Two samples of target 3, one of target 5. Sample 0 (label 1): behaviours (old -> new) 3, 4, 3.
    # Sample 1 (label 0): one behaviour, 3. Sample 2 (label 1): padding only.
    metric = BehaviorTargetCounts()
    metric.update(torch.tensor([3, 3, 5]), torch.tensor([[3, 4, 3], [-1, -1, 3], [-1, -1, -1]]),
                  torch.tensor([1, 0, 1]), torch.tensor([[1, 1, 1], [0, 0, 1], [0, 0, 0]]))
    table = metric.table(3, [3, 4], 3)
    # Category 3 at p = 1: both samples (one of each label); X = 0 is nobody.
    assert table[0, 0].tolist() == [[0, 0], [1, 1]]
    # Category 3 at p = 3: sample 0 only; sample 1 (too short) counts as X = 0.
    assert table[0, 2].tolist() == [[1, 0], [0, 1]]
    # Category 4 at p = 2: sample 0 only.
    assert table[1, 1].tolist() == [[1, 0], [0, 1]]
    assert metric.table(5, [3], 3).sum().item() == 3  # target 5: one sample, X = 0 at all 3 positions
    assert metric.table(8, [3], 3).sum().item() == 0  # a target never seen
    assert float(mutual_information(metric.table(5, [3], 3)).abs().max()) == 0.0


def test_bad_input_names_the_argument():
    metric = BehaviorTargetCounts(num_categories=10)
    t, b, y = torch.tensor([1, 2]), torch.tensor([[1, 2], [3, 4]]), torch.tensor([0, 1])

    def counted(*args):  # values are checked when the batch is counted
        metric.update(*args)
        metric.flush()

    with pytest.raises(ValueError, match="label must hold 0/1 responses, found 2"):
        counted(t, b, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="label must hold 0/1 responses, found 0.5"):
        counted(t, b, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"target_category ids must lie in \[0, 10\).*found -1"):
        counted(torch.tensor([-1, 2]), b, y)
    with pytest.raises(ValueError, match=r"behavior_category ids .* \[0, 10\).*found 10"):
        counted(t, torch.tensor([[1, 10], [3, 4]]), y)
    # Shapes and dtypes are checked at once.
    with pytest.raises(ValueError, match="behavior_category must be \\[B, L\\] with B = 2"):
        metric.update(t, torch.tensor([[1, 2]]), y)
    with pytest.raises(ValueError, match="label must be \\[B\\]"):
        metric.update(t, b, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="mask must have the shape"):
        metric.update(t, b, y, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="integer category ids"):
        metric.update(t.float(), b, y)
    # An out-of-range id under the mask is padding, not an error; nothing of the bad batches was counted.
    counted(t, torch.tensor([[1, 99], [3, 4]]), y, torch.tensor([[1, 0], [1, 1]]))
    assert metric.label_counts().tolist() == [1, 1]


def test_batches_waiting_together_are_checked_like_one():
    """Several batches counted in one flush: each bad value is found whichever batch holds it, with the same
    message, and padding out of range in one batch is zeroed there only."""
    t, b, y = torch.tensor([1, 2]), torch.tensor([[1, 2], [3, 4]]), torch.tensor([0, 1])
    bad = [((t, b, torch.tensor([0, 2])), "label must hold 0/1 responses, found 2"),
           ((torch.tensor([3, 10]), b, y), r"target_category ids must lie in \[0, 10\).*found 10"),
           ((t, torch.tensor([[1, -1], [3, 4]]), y), r"behavior_category ids .* \[0, 10\).*found -1")]
    for batch, message in bad:
        metric = BehaviorTargetCounts(num_categories=10)
        metric.update(t, b, y)
        metric.update(*batch)
        with pytest.raises(ValueError, match=message):
            metric.flush()
    metric = BehaviorTargetCounts(num_categories=10)
    batches = [(t, b, y, torch.ones(2, 2, dtype=torch.bool)),
               (t, torch.tensor([[1, 99], [3, 4]]), y, torch.tensor([[1, 0], [1, 1]]))]
    for batch in batches:
        metric.update(*batch)
    metric.flush()
    assert stored_counts(metric) == dict(dictionary_counts(batches)[0])
    assert metric.label_counts().tolist() == [2, 2]


def test_no_behaviour_one_class_and_unseen_targets_give_zeros():
    metric = BehaviorTargetCounts()
    metric.update(torch.tensor([0, 1]), torch.zeros(2, 4, dtype=torch.long), torch.ones(2),
                  torch.zeros(2, 4, dtype=torch.bool))
    assert metric.label_counts().tolist() == [0, 2]
    for target in (0, 1, 7):
        mi = mutual_information(metric.table(target, [0, 1], 4))
        assert not torch.isnan(mi).any() and float(mi.abs().max()) == 0.0
    assert float(mutual_information(metric.same_category_table()).abs().max()) == 0.0
    metric.reset()
    assert metric.label_counts().tolist() == [0, 0] and metric._merged("triple")[0].numel() == 0


@pytest.fixture(scope="module")
def planted():
    from demo_models.data.sequences import planted_sequences

    data = planted_sequences(n_samples=200_000, seed=5)
    metric = BehaviorTargetCounts(num_categories=data.num_categories)
    t = data.tensors
    for start in range(0, len(t["label"]), 4096):
        metric.update(*(t[k][start:start + 4096] for k in ("target_category", "behavior_category", "label", "mask")))
    return data, metric


def test_planted_ground_truth_recovers_the_plant(planted):
    data, metric = planted
    categories, _ = metric.target_frequencies()
    for target in categories[:3].tolist():
        mi = mutual_information(metric.table(target, list(range(data.num_categories)), 10))  # [C, 10]
        # Semantic pattern: the target's own category is the most informative row at every position 1..10...
        assert torch.equal(mi.argmax(0), torch.full((10,), target))
        # ... and temporal decay: it falls with position.
        rho = spearmanr(mi[target].numpy(), np.arange(1, 11)).correlation
        assert rho <= -0.9, (target, rho, mi[target])
    same = mutual_information(metric.same_category_table(10))
    assert spearmanr(same.numpy(), np.arange(1, 11)).correlation <= -0.9


def test_independent_labels_stay_under_the_sample_size_bound():
    """Under independence, the G-test statistic G = 2 N ln(2) MI_bits follows chi-square with 1 degree of
    freedom. Bound: every cell of every target below chi2.ppf(1 - 0.01 / m, 1) / (2 N_t ln 2), a Bonferroni
    correction over the m cells tested at family level 1%."""
    from demo_models.data.sequences import planted_sequences

    data = planted_sequences(n_samples=60_000, seed=6, strength=0.0)
    metric = BehaviorTargetCounts()
    t = data.tensors
    metric.update(t["target_category"], t["behavior_category"], t["label"], t["mask"])
    c, p = data.num_categories, data.max_length
    m = c * c * p
    worst = 0.0
    for target in range(c):
        mi = mutual_information(metric.table(target, list(range(c)), p))
        n_t = int(metric.label_counts(target).sum())
        bound = chi2.ppf(1 - 0.01 / m, 1) / (2 * n_t * math.log(2))
        worst = max(worst, float(mi.max()) / bound)
    assert worst < 1.0, worst
    # And the planted data, same size, are far above it: the bound is not vacuous.
    signal = planted_sequences(n_samples=60_000, seed=6)
    metric.reset()
    s = signal.tensors
    metric.update(s["target_category"], s["behavior_category"], s["label"], s["mask"])
    mi = mutual_information(metric.table(0, [0], 1))
    n_0 = int(metric.label_counts(0).sum())
    assert float(mi) > 10 * chi2.ppf(1 - 0.01 / m, 1) / (2 * n_0 * math.log(2))


def test_counts_of_two_parts_add_up_like_ranks():
    """What DDP's sync does, without processes: the list states of two metrics concatenated and re-summed."""
    batches = random_batches(3, 4, 60, 8, 300, 0, gaps=False)
    whole, first, second = BehaviorTargetCounts(), BehaviorTargetCounts(), BehaviorTargetCounts()
    for i, b in enumerate(batches):
        whole.update(*b)
        (first if i % 2 else second).update(*b)
    merged = [first._merged("triple"), second._merged("triple")]
    keys, counts = sum_equal_keys(torch.cat([m[0] for m in merged]), torch.cat([m[1] for m in merged]))
    expected = whole._merged("triple")
    assert torch.equal(keys, expected[0]) and torch.equal(counts, expected[1])


@pytest.mark.parametrize("categories", [5, 3000])  # the dense array, sparse keys
def test_a_two_rank_sync_gathers_one_int64_tensor_per_state_and_sums_the_ranks(categories):
    """Pins torchmetrics' private ``_sync_dist`` that the metric overrides: ``sync`` calls it with the
    ``dist_sync_fn`` given, which receives each state (the dense counts folded into the list states, as int64
    tensors, also on a rank that saw no batch) and whose results are summed; ``unsync`` restores one rank."""
    batches = random_batches(5, 3, 40, 6, categories, 0, gaps=False)
    metric, idle = BehaviorTargetCounts(), BehaviorTargetCounts()
    for b in batches:
        metric.update(*b)
    _, totals = dictionary_counts(batches)
    per_label = [sum(n for (_, y), n in totals.items() if y == label) for label in (0, 1)]
    target = int(batches[0][0][0])
    single = metric.table(target, list(range(5)), 6)
    sent = []

    def two_ranks(tensor, group=None):  # this rank and an identical second one
        sent.append(tensor.dtype)
        return [tensor, tensor.clone()]

    with metric.sync_context(dist_sync_fn=two_ranks, distributed_available=lambda: True):
        assert torch.equal(metric.table(target, list(range(5)), 6), 2 * single)
        assert metric.label_counts().tolist() == [2 * n for n in per_label]
    assert sent == [torch.int64] * 5  # triple keys and counts, target keys and counts, max_length
    assert torch.equal(metric.table(target, list(range(5)), 6), single)
    sent.clear()
    with idle.sync_context(dist_sync_fn=two_ranks, distributed_available=lambda: True):
        assert idle.label_counts().tolist() == [0, 0]
    assert sent == [torch.int64] * 5


def test_sync_and_unsync_keep_waiting_batches_and_the_dense_array():
    """torchmetrics copies the states before a sync and restores the copy after: batches still waiting to be
    counted, and the dense array, must survive that round trip (a one-process gather stands in for DDP)."""
    batches = random_batches(4, 3, 30, 6, 5, 0, gaps=False)
    metric = BehaviorTargetCounts()
    for b in batches:
        metric.update(*b)
    triples, totals = dictionary_counts(batches)
    one_rank = dict(dist_sync_fn=lambda tensor, group=None: [tensor], distributed_available=lambda: True)
    for _ in range(2):
        with metric.sync_context(**one_rank):
            assert metric._is_synced
            assert_tables_match(metric, triples, totals, 5, 6)
        assert not metric._is_synced
        assert_tables_match(metric, triples, totals, 5, 6)


@pytest.mark.parametrize("categories", [1_000, 10_000], ids=["int32-codes", "int64-codes"])
def test_sparse_counts_over_many_flushes_and_merges_equal_a_dictionary_count(categories, monkeypatch):
    """Real vocabulary sizes on the sparse path: Zipf-like ids (keys that repeat across batches, added in place,
    and new keys, merged into the sorted state), flushed every few batches."""
    monkeypatch.setattr(behavior_counting, "_FLUSH_BEHAVIORS", 1_500)
    monkeypatch.setattr(behavior_counting, "_FLUSH_MAX_BEHAVIORS", 1_500)
    monkeypatch.setattr(behavior_counting, "_FLUSH_COMPILED_MAX_BEHAVIORS", 1_500)
    g = torch.Generator().manual_seed(categories)
    weights = 1.0 / torch.arange(1, categories + 1, dtype=torch.float64)
    batches = []
    for _ in range(25):
        target = torch.multinomial(weights, 64, replacement=True, generator=g)
        behavior = torch.multinomial(weights, 64 * 12, replacement=True, generator=g).view(64, 12)
        mask = torch.rand(64, 12, generator=g) > 0.2
        batches.append((target, torch.where(mask, behavior, -1), torch.randint(0, 2, (64,), generator=g), mask))
    metric, triples, totals = sparse_counts_checked(batches)
    assert torch.equal(metric.label_counts(), torch.tensor([sum(v for (_, y), v in totals.items() if y == y_)
                                                            for y_ in (0, 1)]))
