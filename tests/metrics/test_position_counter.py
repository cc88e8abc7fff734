"""PositionCodeCounter (8 bytes a key, runs merged in place in one arena) against a Python dictionary count, on
every path its runs take (kept apart, merged from apart, merged forward and backward, a grown arena with and without
memory maps, positions added by a longer batch); BehaviorTargetCounts' moves between it and the 16-byte keys; and
the metric's counts held outside torchmetrics' states (the dense array, this counter, waiting batches) kept by
``state_dict``, ``forward`` and ``merge_state``."""

import copy
import pickle
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_recanalysis.metrics import (
    BehaviorTargetCounts,
    behavior_counting,
    code_arena,
    compiled_counts,
    position_counter,
    position_dense,
)
from lightning_recanalysis.functional import target_relative_positions
from lightning_recanalysis.metrics.position_counter import PositionCodeCounter
from lightning_recanalysis.metrics.sparse_keys import decode_keys, encode_keys

from .test_behavior_target import dictionary_counts, stored_counts

pytestmark = pytest.mark.skipif(not compiled_counts.available(), reason="numba is not installed")


def zipf_batch(rng, rows, length, targets, behaviors, padding=False):
    """Frequent ids and a long tail, so that keys repeat within and across batches; with ``padding``, each cell's
    position is given (0: padding) and rows have gaps."""
    t = np.minimum(rng.zipf(1.3, rows) - 1, targets - 1)
    b = np.minimum(rng.zipf(1.3, (rows, length)) - 1, behaviors - 1)
    b[:, -1] = t  # the target's own category at position 1
    y = rng.integers(0, 2, rows)
    positions = None
    if padding:
        real = rng.random((rows, length)) > 0.3
        positions = np.where(real, np.cumsum(real[:, ::-1], axis=1)[:, ::-1], 0).astype(np.int64)
    return t, b, y, positions


def counted(seed, rows_per_batch, length, targets, behaviors, dense=False):
    """A counter fed Zipf batches of these sizes, and the batches; with ``dense``, the counter may take the dense
    array (see ``dense_at_once``)."""
    rng = np.random.default_rng(seed)
    counter, batches = PositionCodeCounter(dense=dense), []
    for rows in rows_per_batch:
        batches.append(zipf_batch(rng, rows, length, targets, behaviors))
        counter.add_batch(*batches[-1], length)
    return counter, batches


def oracle(batches):
    counts = Counter()
    for t, b, y, positions in batches:
        rows, length = b.shape
        for i in range(rows):
            for j in range(length):
                p = length - j if positions is None else positions[i, j]
                if p:
                    counts[(int(t[i]), int(b[i, j]), int(p), int(y[i]))] += 1
    return counts


def as_dict(counter):
    keys, counts = counter.stored()
    assert np.all(np.diff(keys) > 0)  # sorted, unique
    return dict(zip(zip(*(x.tolist() for x in decode_keys(torch.from_numpy(keys)))), counts.tolist()))


@pytest.fixture
def calls(monkeypatch):
    """How often each compiled merge ran: the test shows which paths its batches took."""
    loops = compiled_counts.loops()
    seen = Counter()
    for name in ("merge_forward", "merge_backward"):
        kernel = getattr(loops, name)

        def counted(*args, _kernel=kernel, _name=name):
            seen[_name] += 1
            return _kernel(*args)

        monkeypatch.setattr(loops, name, counted)
    return seen


# Batch sizes that make every kind of step happen: a run shorter than the top one is kept apart, a longer one
# is merged from where it was counted (backward), a cascade merges equal runs forward, the final merge goes
# backward where the lower run is the longer; the lengths rise, so later runs have more positions.
SCHEDULE = [(300, 6), (120, 6), (60, 6), (500, 6), (40, 8), (40, 8), (900, 8), (30, 10), (200, 10), (80, 4)]


def with_mask(batch, left_padded):
    """The batch's padding given as a ``valid`` mask instead of positions per cell (with ``left_padded``, each
    row's real cells moved to its last columns); returns the counter's arguments and the positions the oracle
    reads."""
    t, b, y, positions = batch
    valid = positions > 0
    if left_padded:
        valid = np.arange(b.shape[1])[None, :] >= (b.shape[1] - valid.sum(1))[:, None]
    return (t, b, y, None), valid, (t, b, y, target_relative_positions(torch.from_numpy(valid)).numpy())


@pytest.mark.parametrize("padding", ["none", "positions", "mask-left-padded", "mask-with-gaps"])
@pytest.mark.parametrize("memory_maps", [True, False], ids=["mremap", "copying-arena"])
def test_counts_equal_a_dictionary_on_every_merge_path(padding, memory_maps, calls, monkeypatch):
    if not memory_maps:
        monkeypatch.delattr(code_arena.mmap, "MAP_PRIVATE")
    rng = np.random.default_rng(7)
    counter, batches = PositionCodeCounter(dense=False), []
    for k, (rows, length) in enumerate(SCHEDULE):
        batch = zipf_batch(rng, rows, length, 3000, 20_000, padding != "none")
        if padding.startswith("mask"):
            arguments, valid, batch = with_mask(batch, padding == "mask-left-padded")
            counter.add_batch(*arguments, length, valid=valid)
        else:
            counter.add_batch(*batch, length)
        batches.append(batch)
        if k == 4:  # a query in the middle merges the runs; counting goes on after it
            assert as_dict(counter) == dict(oracle(batches))
    assert counter._arena._can_map is memory_maps
    assert calls["merge_forward"] and calls["merge_backward"]
    expected = oracle(batches)
    assert as_dict(counter) == dict(expected)
    assert counter.total == sum(expected.values())


@pytest.fixture
def dense_at_once(monkeypatch):
    """The dense array is taken as soon as a counter may take it (after its first batch): whatever few keys it
    holds, the cells' bytes are within the patched bytes a key."""
    monkeypatch.setattr(position_dense, "DENSE_BYTES_PER_KEY", 1 << 40)


@pytest.fixture(params=[False, True], ids=["runs", "dense-array"])
def dense(request):
    """Whether the counter under test takes its dense array (at once, see ``dense_at_once``) or keeps sorted runs."""
    if request.param:
        request.getfixturevalue("dense_at_once")
    return request.param


def test_queries_equal_the_dictionary(dense):
    counter, batches = counted(3, (400, 150, 700), 7, 50, 40, dense=dense)
    assert counter.is_dense is dense
    expected = oracle(batches)
    keys = list(expected) + [(2, 39, 7, 1), (49, 0, 3, 0), (1, 1, 9, 0)]  # and keys never counted (position 9 too)
    wanted = encode_keys(*(torch.tensor(part) for part in zip(*keys)))
    assert counter.lookup(wanted.numpy()).tolist() == [expected[k] for k in keys]
    beyond = encode_keys(torch.tensor([70_000, 3]), torch.tensor([1, 40_000]), torch.tensor([1, 1]),
                         torch.tensor([0, 0]))
    assert counter.lookup(beyond.numpy()).tolist() == [0, 0]  # ids past the compact code: never counted here
    same = np.zeros((9, 2), np.int64)
    for (t, b, p, y), n in expected.items():
        if t == b:
            same[p - 1, y] += n
    assert counter.same_category(9).tolist() == same.tolist()
    for target in (0, 1, 7, 49, 60_000):
        assert counter.behaviors_of(target).tolist() == sorted({b for (t, b, _, _) in expected if t == target})


def test_pickle_and_deepcopy_keep_the_counts(dense):
    counter, batches = counted(5, (200, 90, 50), 5, 100, 100, dense=dense)
    assert counter.is_dense is dense
    expected = dict(oracle(batches))
    for clone in (copy.deepcopy(counter), pickle.loads(pickle.dumps(counter))):
        assert as_dict(clone) == expected
        clone.add_batch(*batches[0], 5)  # and counts on from there
        doubled = oracle(batches + batches[:1])
        assert as_dict(clone) == dict(doubled)
    assert as_dict(counter) == expected


def metric_batches(seed, n_batches, categories, big_at=None, big_id=40_000):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_batches):
        target = torch.randint(0, categories, (50,), generator=g)
        behavior = torch.randint(0, categories, (50, 6), generator=g)
        if k == big_at:
            behavior[3, 2] = big_id  # beyond 2^15: no compact code
        mask = torch.rand(50, 6, generator=g) > 0.2
        out.append((target, torch.where(mask, behavior, 0), torch.randint(0, 2, (50,), generator=g), mask))
    return out


@pytest.fixture
def sparse_small_flushes(monkeypatch):
    monkeypatch.setattr(behavior_counting, "_FLUSH_BEHAVIORS", 500)
    monkeypatch.setattr(behavior_counting, "_FLUSH_MAX_BEHAVIORS", 500)
    monkeypatch.setattr(behavior_counting, "_FLUSH_COMPILED_MAX_BEHAVIORS", 500)
    monkeypatch.setattr(behavior_counting, "DENSE_MAX_CELLS", 1_000)


def test_metric_moves_to_16_byte_keys_when_an_id_outgrows_the_compact_code(sparse_small_flushes):
    batches = metric_batches(1, 12, 2_000, big_at=7)
    metric = BehaviorTargetCounts()
    for k, b in enumerate(batches):
        metric.update(*b)
        metric.flush()
        assert (metric._compact is not None) == (k < 7)
    triples, _ = dictionary_counts(batches)
    assert metric._compact_off and stored_counts(metric) == dict(triples)
    target = int(batches[7][0][3])
    assert 40_000 in metric.behavior_categories(target).tolist()


def test_metric_leaves_the_compact_counter_before_a_count_could_overflow(sparse_small_flushes, monkeypatch):
    monkeypatch.setattr(position_counter, "MAX_COMPACT_TOTAL", 2_000)  # stands in for 2^32 - 1
    batches = metric_batches(2, 10, 2_000)
    metric = BehaviorTargetCounts()
    held = []
    for b in batches:
        metric.update(*b)
        metric.flush()
        held.append(metric._compact is not None)
    assert held[0] and not held[-1]  # 300 cells a batch: the 7th would pass 2,000
    triples, _ = dictionary_counts(batches)
    assert stored_counts(metric) == dict(triples)


def test_metric_answers_the_same_from_the_compact_counter_and_from_16_byte_keys(sparse_small_flushes):
    batches = metric_batches(3, 8, 30)
    compact, wide = BehaviorTargetCounts(), BehaviorTargetCounts()
    wide._compact_off = True  # the 16-byte keys from the start
    for b in batches:
        compact.update(*b)
        wide.update(*b)
    compact.flush()
    wide.flush()
    assert compact._compact is not None and wide._compact is None
    for t in range(30):
        assert torch.equal(compact.table(t, list(range(30)), 6), wide.table(t, list(range(30)), 6))
        assert torch.equal(compact.behavior_categories(t), wide.behavior_categories(t))
    assert torch.equal(compact.same_category_table(6), wide.same_category_table(6))


def test_largest_ids_fill_all_32_bits_of_a_code():
    rng = np.random.default_rng(11)
    t = np.array([65_535, 65_535, 0, 40_000])
    b = np.array([[32_767, 0, 1], [32_767, 32_767, 5], [32_767, 1, 0], [7, 32_766, 32_767]])
    y = np.array([1, 1, 0, 1])
    counter, batches = PositionCodeCounter(), []
    for k in range(3):
        order = rng.permutation(4)
        batches.append((t[order], b[order], y[order], None))
        counter.add_batch(*batches[-1], 3)
    expected = oracle(batches)
    assert as_dict(counter) == dict(expected)
    assert counter.behaviors_of(65_535).tolist() == [0, 1, 5, 32_767]


def test_a_batch_of_padding_only_counts_nothing():
    counter = PositionCodeCounter()
    t, b, y = np.array([1, 2]), np.array([[3, 4], [5, 6]]), np.array([0, 1])
    counter.add_batch(t, b, y, np.zeros((2, 2), np.int64), 2)
    assert counter.stored()[0].size == 0 and counter.total == 0
    counter.add_batch(t, b, y, None, 2)
    assert as_dict(counter) == dict(oracle([(t, b, y, None)]))


def test_a_failed_remap_falls_back_to_copying_with_exact_counts(monkeypatch):
    remap = code_arena.Arena._remap
    calls = Counter()

    def failing(self, capacity):
        calls["remap"] += 1
        if calls["remap"] == 2:  # the first growth of the maps: as if mremap were refused
            raise OSError("mremap refused")
        return remap(self, capacity)

    monkeypatch.setattr(code_arena.Arena, "_remap", failing)
    monkeypatch.setattr(code_arena.Arena, "_GRAIN", 64)  # capacities in steps of 64 codes: many growths
    counter, batches = counted(13, (100, 300, 900, 2_700, 8_100, 50), 6, 3000, 20_000)
    assert calls["remap"] == 2 and not counter._arena._can_map  # copying from then on
    assert counter._arena.capacity > 8_100 * 6 // 2
    assert as_dict(counter) == dict(oracle(batches))


@pytest.mark.parametrize("change, message", [
    (lambda t, b, y, p: (t, b, y + 1, p), "labels must be 0 or 1"),
    (lambda t, b, y, p: (t, b - 5, y, p), "ids must lie in"),
    (lambda t, b, y, p: (t + 70_000, b, y, p), "ids must lie in"),
    (lambda t, b, y, p: (t, b, y, p + 5), "positions must lie in"),
])
def test_bad_input_is_an_error_that_says_what_to_change(change, message):
    rng = np.random.default_rng(17)
    t, b, y, positions = zipf_batch(rng, 20, 4, 50, 50, padding=True)
    with pytest.raises(ValueError, match=message):
        PositionCodeCounter().add_batch(*change(t, b, y, positions), 4)


@pytest.mark.parametrize("valid", [False, True])
def test_more_columns_than_positions_is_an_error_and_counts_nothing(valid):
    """Positions read off the columns (or the mask) run up to L = 4: n_positions = 3 is refused, before anything
    is counted or remembered."""
    rng = np.random.default_rng(3)
    t, b, y, _ = zipf_batch(rng, 20, 4, 50, 50, padding=False)
    counter = PositionCodeCounter()
    mask = np.ones(b.shape, dtype=bool) if valid else None
    with pytest.raises(ValueError, match="4 columns need n_positions >= that, got 3"):
        counter.add_batch(t, b, y, None, 3, valid=mask)
    assert counter.total == 0 and counter._max_ids == (-1, -1) and as_dict(counter) == {}


@pytest.fixture(params=[(5, False), (2_000, False), (2_000, True), (50_000, False)],
                ids=["dense", "8-byte", "8-byte-dense-array", "16-byte"])
def store(request, sparse_small_flushes, monkeypatch):
    """Where the metric holds its counts: its own dense array (5 categories), the 8-byte counter's runs or its
    dense array (taken after its first batch), or the 16-byte keys (ids past 2^15). Returns (categories,
    whether the 8-byte counter's dense array is taken)."""
    categories, dense_counter = request.param
    if categories == 5:
        monkeypatch.setattr(behavior_counting, "DENSE_MAX_CELLS", 1 << 22)
    if dense_counter:
        request.getfixturevalue("dense_at_once")
    return categories, dense_counter


def test_a_persistent_state_dict_holds_every_count(store):
    categories, dense_counter = store
    batches = metric_batches(4, 6, categories)
    metric = BehaviorTargetCounts()
    metric.persistent(True)
    for b in batches:
        metric.update(*b)
    state = metric.state_dict()
    assert (metric._dense is not None, metric._compact is not None) == (categories == 5, categories == 2_000)
    assert dense_counter is (metric._compact is not None and metric._compact.is_dense)
    loaded = BehaviorTargetCounts()
    loaded.persistent(True)
    loaded.update(*batches[0])  # counts held before loading are replaced by the loaded ones
    loaded.load_state_dict(state)
    triples, _ = dictionary_counts(batches)
    assert stored_counts(loaded) == dict(triples) == stored_counts(metric)
    loaded.update(*batches[0])  # and counting goes on from there
    assert stored_counts(loaded) == dict(dictionary_counts(batches + batches[:1])[0])


def test_a_batch_the_compact_counter_cannot_take_moves_every_count_to_one_store(sparse_small_flushes, monkeypatch):
    """A batch counted another way (here without numba; on CUDA alike) while the 8-byte counter holds counts:
    its counts and those held must end in one store, which every query reads."""
    batches = metric_batches(5, 6, 2_000)
    metric = BehaviorTargetCounts()
    for b in batches[:3]:
        metric.update(*b)
    metric.flush()
    assert metric._compact is not None
    # The metric finds no compiled loops (the counters themselves still do): its numpy path counts the rest.
    monkeypatch.setattr(behavior_counting, "compiled_counts", SimpleNamespace(available=lambda: False))
    for b in batches[3:]:
        metric.update(*b)
    metric.flush()
    monkeypatch.undo()
    triples, _ = dictionary_counts(batches)
    assert metric._compact is None and stored_counts(metric) == dict(triples)
    target = int(batches[4][0][0])
    assert metric.behavior_categories(target).tolist() == sorted({c for (t, c, _, _) in triples if t == target})


def test_forward_returns_the_batch_and_keeps_every_count(store):
    categories, _ = store
    batches = metric_batches(6, 5, categories)
    metric = BehaviorTargetCounts()
    for b in batches:
        alone = BehaviorTargetCounts()
        alone.update(*b)
        assert torch.equal(metric(*b), alone.same_category_table())
    triples, totals = dictionary_counts(batches)
    assert stored_counts(metric) == dict(triples)
    assert metric.label_counts().tolist() == [sum(n for (_, y), n in totals.items() if y == label) for label in (0, 1)]


def test_merge_state_adds_every_count_of_another_metric(store):
    categories, dense_counter = store
    batches = metric_batches(7, 6, categories)
    first, second = BehaviorTargetCounts(), BehaviorTargetCounts()
    for k, b in enumerate(batches):
        (first if k % 2 else second).update(*b)
    assert dense_counter is (first._local_compact() is not None and first._local_compact().is_dense)
    first.merge_state(second)
    triples, _ = dictionary_counts(batches)
    assert stored_counts(first) == dict(triples)
    assert first.num_positions == 6
    first.update(*batches[0])  # and counting goes on
    assert stored_counts(first) == dict(dictionary_counts(batches + batches[:1])[0])


# ---- the dense array ----------------------------------------------------------------------------------------------
def repeated_batch(rng, rows, length, targets, behaviors, padding=False):
    """Few ids, many rows: every cell is counted hundreds of times, so uint8 cells wrap (carries)."""
    t = rng.integers(0, targets, rows)
    b = rng.integers(0, behaviors, (rows, length))
    y = rng.integers(0, 2, rows)
    positions = None
    if padding:
        real = rng.random((rows, length)) > 0.3
        positions = np.where(real, np.cumsum(real[:, ::-1], axis=1)[:, ::-1], 0).astype(np.int64)
    return t, b, y, positions


@pytest.mark.parametrize("padding", [False, True], ids=["by-column", "positions-per-cell"])
def test_dense_counts_past_255_equal_a_dictionary(padding, dense_at_once):
    rng = np.random.default_rng(11)
    counter, batches = PositionCodeCounter(), []
    for k, rows in enumerate((500, 6000, 8000, 5000)):
        t, b, y, positions = repeated_batch(rng, rows, 4, 3, 4, padding)  # behaviours 0 to 3 ...
        if k == 0:  # ... and once behaviour 4, at (target 2, position 1, label 1)
            t[0], y[0], b[0, -1] = 2, 1, 4
            if positions is not None:
                positions[0] = [4, 3, 2, 1]
        batches.append((t, b, y, positions))
        counter.add_batch(*batches[-1], 4)
    # 255 more at that cell: 256 in all, so it wraps to 0 and holds its whole count in one carry
    t, b, y = np.full(255, 2), rng.integers(0, 4, (255, 4)), np.ones(255, np.int64)
    b[:, -1] = 4
    batches.append((t, b, y, None))
    counter.add_batch(t, b, y, None, 4)
    expected = oracle(batches)
    assert counter.is_dense and counter._dense_shape == (3, 4, 5)  # taken after the first batch
    assert max(expected.values()) > 512 and expected[(2, 4, 1, 1)] == 256
    assert counter._folded()[0].size > 0
    assert as_dict(counter) == dict(expected)
    assert counter.total == sum(expected.values())
    keys = list(expected) + [(0, 4, 2, 0), (0, 0, 5, 1)]  # and never counted: (0, 4, 2, 0), a position beyond
    wanted = encode_keys(*(torch.tensor(part) for part in zip(*keys)))
    assert counter.lookup(wanted.numpy()).tolist() == [expected.get(k, 0) for k in keys]
    same = np.zeros((4, 2), np.int64)
    for (t, b, p, y), n in expected.items():
        if t == b:
            same[p - 1, y] += n
    assert counter.same_category(4).tolist() == same.tolist()
    for target in range(3):
        assert counter.behaviors_of(target).tolist() == sorted({b for (t, b, _, _) in expected if t == target})


def test_the_dense_array_is_taken_within_the_memory_bound_and_counting_goes_on(calls):
    """Runs first (they merge), then the dense array, taken only once the distinct keys held reach its cells over
    DENSE_BYTES_PER_KEY (10 targets x 2 labels x 5 positions x 12 behaviours = 1,200 cells: 75 keys)."""
    rng = np.random.default_rng(5)
    counter, batches, dense_after = PositionCodeCounter(), [], None
    for k, rows in enumerate((5, 4, 6, 3, 8, 200, 300)):
        batches.append(repeated_batch(rng, rows, 5, 10, 12))
        batches[-1][0][0], batches[-1][1][0, 0] = 9, 11  # the largest ids from the start: the cells stay 1,200
        counter.add_batch(*batches[-1], 5)
        distinct = len(oracle(batches))
        if dense_after is None and counter.is_dense:
            dense_after = k
            assert counter._dense.size == 1200 and distinct * position_dense.DENSE_BYTES_PER_KEY >= 1200
    assert dense_after is not None and dense_after > 0 and calls["merge_forward"] + calls["merge_backward"] > 0
    assert counter._arena.capacity == 0 and not counter._runs  # the runs' memory let go
    assert as_dict(counter) == dict(oracle(batches))


@pytest.mark.parametrize("change", ["larger target", "larger behaviour", "more positions"])
def test_a_batch_beyond_the_dense_array_lays_it_out_again_larger(change, dense_at_once):
    rng = np.random.default_rng(9)
    counter, batches = PositionCodeCounter(), []
    for rows in (300, 16000):
        batches.append(repeated_batch(rng, rows, 4, 4, 6))
        counter.add_batch(*batches[-1], 4)
    assert counter.is_dense and counter._dense_shape == (4, 4, 6)
    assert counter._folded()[0].size > 0  # cells past 255: their carries must move with them
    t, b, y, _ = repeated_batch(rng, 2000, 4, 4, 6)
    width = 4
    if change == "larger target":
        t[0] = 9
    elif change == "larger behaviour":
        b[0, 0] = 20
    else:
        b, width = np.concatenate([b, b[:, :2]], axis=1), 6  # positions 5 and 6 are new
    batches.append((t, b, y, None))
    counter.add_batch(t, b, y, None, width)
    grown = {"larger target": (16, 4, 6), "larger behaviour": (4, 4, 24), "more positions": (4, 6, 6)}[change]
    assert counter.is_dense and counter._dense_shape == grown  # a grown id: at least half again, multiples of 8
    batches.append(repeated_batch(rng, 300, 4, 4, 6))
    counter.add_batch(*batches[-1], 4)
    assert as_dict(counter) == dict(oracle(batches))


def test_a_batch_the_bound_does_not_allow_the_dense_array_for_moves_the_counts_back_to_runs(dense_at_once, monkeypatch):
    rng = np.random.default_rng(9)
    counter, batches = PositionCodeCounter(), []
    for rows in (300, 300):
        batches.append(repeated_batch(rng, rows, 4, 4, 6))
        counter.add_batch(*batches[-1], 4)
    assert counter.is_dense
    monkeypatch.setattr(position_dense, "DENSE_BYTES_PER_KEY", 16)  # 4 x 2 x 4 x 201 cells: far beyond 16 a key
    t, b, y, _ = repeated_batch(rng, 200, 4, 4, 6)
    b[0, 0] = 200
    batches.append((t, b, y, None))
    counter.add_batch(t, b, y, None, 4)
    assert not counter.is_dense and len(counter._runs) >= 1
    batches.append(repeated_batch(rng, 300, 4, 4, 6))
    counter.add_batch(*batches[-1], 4)
    assert not counter.is_dense  # the keys held stay short of the larger array's bound
    assert as_dict(counter) == dict(oracle(batches))


def test_sorted_keys_added_to_the_dense_array_carry_past_255(dense_at_once):
    rng = np.random.default_rng(4)
    counter, batches = PositionCodeCounter(), [repeated_batch(rng, 400, 3, 3, 4)]
    counter.add_batch(*batches[0], 3)
    assert counter.is_dense
    extra = Counter({(1, 2, 3, 0): 1000, (2, 3, 1, 1): 256, (0, 0, 2, 1): 5})
    keys = encode_keys(*(torch.tensor(part) for part in zip(*sorted(extra))))
    counter.add_sorted(keys.numpy(), np.array([extra[k] for k in sorted(extra)], np.int64))
    assert counter.is_dense
    assert as_dict(counter) == dict(oracle(batches) + extra)
    assert counter.total == sum((oracle(batches) + extra).values())


def test_metric_answers_the_same_from_the_dense_array_and_from_16_byte_keys(sparse_small_flushes, dense_at_once):
    batches = metric_batches(3, 8, 30)
    compact, wide = BehaviorTargetCounts(), BehaviorTargetCounts()
    wide._compact_off = True
    for b in batches:
        compact.update(*b)
        wide.update(*b)
    compact.flush()
    wide.flush()
    assert compact._compact is not None and compact._compact.is_dense
    for t in range(30):
        assert torch.equal(compact.table(t, list(range(30)), 6), wide.table(t, list(range(30)), 6))
        assert torch.equal(compact.behavior_categories(t), wide.behavior_categories(t))
    assert torch.equal(compact.same_category_table(6), wide.same_category_table(6))
    assert torch.equal(compact._merged("triple")[1], wide._merged("triple")[1])


def test_positions_the_dense_array_grew_to_survive_the_move_back_to_runs_and_pickle(monkeypatch):
    """Taken, grown to a third position, then back to runs for an id the bound cannot take (400 bytes a key here,
    so that eight keys take the array); every run must have the counter's positions (a run with fewer made the
    merges read past its offsets)."""
    monkeypatch.setattr(position_dense, "DENSE_BYTES_PER_KEY", 400)
    counter, batches = PositionCodeCounter(), []
    for t, b, y, width in (([0, 1, 1, 0], [[0, 1], [1, 2], [3, 0], [2, 3]], [0, 1, 0, 1], 2),
                           ([1], [[2, 3, 1]], [1], 3)):
        batches.append((np.array(t), np.array(b), np.array(y), None))
        counter.add_batch(*batches[-1], width)
    assert counter.is_dense and counter._dense_shape[1] == 3 and counter._positions == 3
    for clone in (pickle.loads(pickle.dumps(counter)), copy.deepcopy(counter)):
        assert as_dict(clone) == dict(oracle(batches))
        # behaviour 1 of target 1 is also at position 3, which only the grown array has
        assert clone.behaviors_of(1).tolist() == counter.behaviors_of(1).tolist() == [0, 1, 2, 3]
        clone.add_batch(np.array([1]), np.array([[3, 3, 3]]), np.array([0]), None, 3)  # and counts on
        assert as_dict(clone) == dict(oracle(batches + [(np.array([1]), np.array([[3, 3, 3]]), np.array([0]), None)]))
    batches.append((np.array([900]), np.array([[5, 4, 3, 1]]), np.array([1]), None))
    counter.add_batch(*batches[-1], 4)
    assert not counter.is_dense
    assert all(run.offsets.size == counter._positions + 1 for run in counter._runs)
    batches.append((np.array([2, 900]), np.array([[1, 2, 3, 4], [0, 0, 0, 0]]), np.array([0, 1]), None))
    counter.add_batch(*batches[-1], 4)
    assert as_dict(counter) == dict(oracle(batches))


def test_a_state_saved_without_its_largest_ids_reads_them_off_its_codes():
    """A counter pickled before it kept its largest ids: the dense array it takes must still hold them."""
    old = PositionCodeCounter(dense=False)
    batches = [(np.array([3, 1]), np.array([[5, 3], [4, 1]]), np.array([1, 0]), None)]
    old.add_batch(*batches[0], 2)
    state = {key: value for key, value in old.__getstate__().items() if key in ("runs", "positions", "total")}
    loaded = PositionCodeCounter.__new__(PositionCodeCounter)
    loaded.__setstate__(state)
    assert loaded._max_ids == (3, 5)
    batches.append((np.array([0, 1]), np.array([[1, 0], [1, 1]]), np.array([0, 1]), None))  # smaller ids
    loaded.add_batch(*batches[-1], 2)
    assert as_dict(loaded) == dict(oracle(batches))


def test_carries_take_memory_by_the_keys_not_by_the_behaviours(dense_at_once):
    rng = np.random.default_rng(2)
    t, b, y = rng.integers(0, 4, 20_000), rng.integers(0, 4, (20_000, 3)), rng.integers(0, 2, 20_000)
    counter = PositionCodeCounter()
    sizes = []
    for k in range(40):  # 2.4 million behaviours over at most 96 keys, each far past 255
        counter.add_batch(t, b, y, None, 3)
        if k in (9, 39):
            sizes.append(counter.nbytes())
    assert counter.is_dense and sizes[0] == sizes[1]
    expected = oracle([(t, b, y, None)])
    assert as_dict(counter) == {key: 40 * n for key, n in expected.items()}


def test_a_dense_array_whose_carries_would_break_the_bound_is_not_kept():
    """At the real bound, 96 keys each past 255: the array (96 cells), its carries' buffer and 16 bytes a carried
    key would take more than 16 bytes a key, so the counts stay in runs, and within the bound."""
    rng = np.random.default_rng(2)
    t, b, y = rng.integers(0, 4, 20_000), rng.integers(0, 4, (20_000, 3)), rng.integers(0, 2, 20_000)
    counter = PositionCodeCounter()
    for _ in range(10):
        counter.add_batch(t, b, y, None, 3)
    keys = len(oracle([(t, b, y, None)]))
    assert not counter.is_dense and counter.nbytes() <= position_dense.DENSE_BYTES_PER_KEY * keys


def test_batches_counted_together_go_on_in_runs_when_the_dense_array_is_left_part_way():
    """The first of two batches counted together pushes every key of a small dense array past 255, so that the
    array's carries break the bound and its counts move back into runs; the second batch is counted there."""
    keys = 100
    counter = PositionCodeCounter()
    t, b, y = np.zeros(2 * keys, np.int64), np.tile(np.arange(keys), 2)[:, None].copy(), np.repeat([0, 1], keys)
    counter.add_batch(t, b, y, None, 1)
    assert counter.is_dense
    many = (np.zeros(2 * keys * 300, np.int64), np.tile(b, (300, 1)).copy(), np.tile(y, 300).copy(), None)
    few = (np.zeros(4, np.int64), np.array([[1], [2], [3], [4]]), np.zeros(4, np.int64), None)
    counter.add_batches([(*many, None), (*few, None)], 1, (0, keys - 1))
    assert not counter.is_dense
    expected = oracle([(t, b, y, None), many, few])
    assert as_dict(counter) == dict(expected) and counter.total == sum(expected.values())


def test_runs_that_arrive_shorter_and_shorter_are_merged_within_the_bound():
    """Each batch's run one key shorter than the last: none is ever as long as the run below it, which the binary
    counter's rule alone would leave piling up; the runs stay few and within twice the longest."""
    counter = PositionCodeCounter(dense=False)
    keys = np.arange(2_000)
    t, b, y = keys // 200, (keys // 2) % 100, keys % 2
    batches = []
    for shorter in range(60):
        n = keys.size - shorter
        batches.append((t[:n].copy(), b[:n, None].copy(), y[:n].copy(), None))
        counter.add_batch(*batches[-1], 1)
        held = [run.length for run in counter._runs]
        assert len(held) <= code_arena.MAX_RUNS and sum(held) <= 2 * max(held)
    assert counter._arena.high_water <= 4 * keys.size
    assert as_dict(counter) == dict(oracle(batches))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32])
def test_a_mask_of_any_dtype_counts_as_the_bool_mask(dtype):
    t, b, y = np.array([1, 2]), np.array([[3, 4, 5], [6, 7, 8]]), np.array([0, 1])
    mask = np.array([[0, 1, 1], [1, 0, 1]])
    counters = [PositionCodeCounter(dense=False) for _ in range(2)]
    counters[0].add_batch(t, b, y, None, 3, valid=mask.astype(bool))
    counters[1].add_batch(t, b, y, None, 3, valid=mask.astype(dtype))
    positions = target_relative_positions(torch.from_numpy(mask)).numpy()
    assert as_dict(counters[1]) == as_dict(counters[0]) == dict(oracle([(t, b, y, positions)]))
