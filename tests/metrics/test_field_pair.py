"""FieldPairCounts against a Python dictionary count on random data, its MI against torchmetrics on the same
bucketed values, the warm-up's choice of frequent values, bad input, and two processes summing to one."""

import collections
import math

import pytest
import torch
from torchmetrics.functional.clustering import mutual_info_score

from ddp_helpers import run_ranks
from lightning_recanalysis.metrics import FieldPairCounts
from lightning_recanalysis.metrics.field_pair_torch import code_parts, count_buckets_torch

DIMS = [2, 5, 9, 60, 1]  # a binary field, small ones, one with more values than kept, a single-valued one
V = 4


def _random_batches(n=700, batch=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Skewed values, so the most frequent ones are well defined; labels depend on fields 1 and 2.
    cols = [torch.multinomial(1.0 / torch.arange(1, d + 1).double(), n, replacement=True, generator=g) for d in DIMS]
    x = torch.stack(cols, 1)
    y = ((x[:, 1] + x[:, 2]) % 3 == 0).long() ^ (torch.rand(n, generator=g) < 0.2).long()
    return [(x[k : k + batch], y[k : k + batch]) for k in range(0, n, batch)], x, y


def _oracle_vocabulary(rows, num_values):
    """Most frequent values per field over the given rows, ties to the smaller value (a Counter, no torch)."""
    vocab = []
    for f in range(rows.shape[1]):
        counter = collections.Counter(rows[:, f].tolist())
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        vocab.append([v for v, _ in ranked[:num_values]])
    return vocab


def _bucket(vocab, f, value):
    return vocab[f].index(value) if value in vocab[f] else V


@pytest.mark.parametrize("lookup_limit,block_rows,flush", [(1 << 22, 1 << 15, 1 << 22), (0, 1 << 15, 1 << 22),
                                                            (1 << 22, 37, 150)],
                         ids=["lookup-table", "binary-search", "row-blocks-and-early-flushes"])
def test_counts_equal_a_dictionary_count_and_the_warm_up_picks_the_most_frequent_values(monkeypatch, lookup_limit,
                                                                                         block_rows, flush):
    # Both ways of finding a value's bucket (a dense table, or a binary search when ids are too large for one);
    # the CPU count in blocks of 37 rows, flushed every 150 codes (a block boundary inside every batch).
    monkeypatch.setattr("lightning_recanalysis.metrics.field_vocabulary.LOOKUP_LIMIT", lookup_limit)
    monkeypatch.setattr("lightning_recanalysis.metrics.field_pair._COUNT_BLOCK_ROWS", block_rows)
    monkeypatch.setattr("lightning_recanalysis.metrics.field_pair._FLUSH_CODES", flush)
    monkeypatch.setattr("lightning_recanalysis.metrics.field_pair._FLUSH_MIN_ROWS_CPU", min(flush, 1 << 15))
    batches, x, y = _random_batches()
    metric = FieldPairCounts(len(DIMS), num_values=V, warmup_batches=3)
    for xb, yb in batches:
        metric.update(xb, yb)
    assert (metric._tables.lookup is None) == (lookup_limit == 0)
    vocab = _oracle_vocabulary(x[:300], V)  # the first three batches
    assert metric.vocabulary == vocab
    pair_dict, field_dict = collections.Counter(), collections.Counter()
    for row, label in zip(x.tolist(), y.tolist()):
        b = [_bucket(vocab, f, v) for f, v in enumerate(row)]
        for i in range(len(DIMS)):
            field_dict[(i, b[i], label)] += 1
            for j in range(i + 1, len(DIMS)):
                pair_dict[(i, j, b[i], b[j], label)] += 1
    first, second = metric.pairs()
    dense = {(int(first[p]), int(second[p]), a, c, t): int(metric.pair_tables()[p, a, c, t])
             for p in range(first.numel()) for a in range(V + 1) for c in range(V + 1) for t in range(2)}
    assert {k: v for k, v in dense.items() if v} == dict(pair_dict)
    fields = {(i, a, t): int(metric.field_tables()[i, a, t])
              for i in range(len(DIMS)) for a in range(V + 1) for t in range(2)}
    assert {k: v for k, v in fields.items() if v} == dict(field_dict)
    assert metric.samples == len(y)
    # Field 3 has 60 values, 4 kept: the rest is "other"; field 0 (2 values) is never bucketed away.
    other = metric.other_fraction()
    assert float(other[0]) == 0.0 and float(other[3]) == pytest.approx(
        sum(v not in vocab[3] for v in x[:, 3].tolist()) / len(y))
    listed = [(int(a), int(b)) for a, b in zip(first, second)]
    assert metric.pair_index(3, 1) == metric.pair_index(1, 3) == listed.index((1, 3))


def test_mutual_information_equals_torchmetrics_on_the_bucketed_values():
    batches, x, y = _random_batches(seed=1)
    metric = FieldPairCounts(len(DIMS), num_values=V, warmup_batches=2)
    for xb, yb in batches:
        metric.update(xb, yb)
    out = metric.compute(base=math.e)
    buckets = metric.buckets(x)
    vocab = _oracle_vocabulary(x[:200], V)
    assert torch.equal(buckets, torch.tensor([[_bucket(vocab, f, v) for f, v in enumerate(r)] for r in x.tolist()]))
    for i in range(len(DIMS)):
        for j in range(len(DIMS)):
            joint = buckets[:, i] * (V + 1) + buckets[:, j] if i != j else buckets[:, i]
            expected = float(mutual_info_score(joint, y))
            # torchmetrics sums in float32, so agree to its precision.
            assert float(out["mutual_information"][i, j]) == pytest.approx(expected, rel=2e-4, abs=1e-6), (i, j)
    # The single-valued field 4 carries nothing, and adds nothing to any pair: zeros, not NaN.
    assert float(out["field_mutual_information"][4]) == 0.0
    assert torch.allclose(out["interaction_information"][4], torch.zeros(len(DIMS), dtype=torch.float64), atol=1e-12)
    assert not torch.isnan(out["mutual_information"]).any()
    # The planted pair (1, 2) has the largest interaction information.
    ii = out["interaction_information"]
    assert divmod(int(torch.argmax(ii)), len(DIMS)) in ((1, 2), (2, 1))


def test_fewer_batches_than_the_warm_up_are_counted_at_compute_and_reset_keeps_the_vocabulary():
    batches, x, y = _random_batches(n=150, batch=100)
    metric = FieldPairCounts(len(DIMS), num_values=V, warmup_batches=8)
    for xb, yb in batches:
        metric.update(xb, yb)
    assert not metric.frozen and metric.samples == 0
    out = metric.compute()
    assert metric.frozen and int(out["samples"]) == 150 and metric.samples == 150
    assert metric.vocabulary == _oracle_vocabulary(x, V)
    vocabulary = metric.vocabulary
    metric.reset()
    assert metric.samples == 0 and metric.vocabulary == vocabulary
    metric.update(*batches[0])
    assert metric.samples == 100  # counted at once with the kept vocabulary


def test_a_given_vocabulary_skips_the_warm_up():
    batches, x, y = _random_batches()
    vocab = [[1, 0], [4, 3, 2], [0], [59, 7, 3, 1], []]
    metric = FieldPairCounts(len(DIMS), num_values=V, vocabulary=vocab)
    metric.update(*batches[0])
    assert metric.samples == 100
    b = metric.buckets(torch.tensor([[1, 2, 0, 59, 0], [0, 0, 5, 8, 0]]))
    assert b.tolist() == [[0, 2, 0, 0, V], [1, V, V, V, V]]


def test_huge_ids_are_bucketed_by_binary_search_like_small_ones_by_the_lookup_table():
    # Ids up to 2^40 (hashed features) would need a lookup table of 2^40 entries: the metric searches instead.
    big = 2**40
    vocab = [[big + 7, 3, big], [0, 2]]
    metric = FieldPairCounts(2, num_values=3, vocabulary=vocab)
    assert metric._tables.lookup is None
    x = torch.tensor([[big, 2], [3, 0], [big + 7, 1], [big + 8, 5], [0, 2]])
    assert metric.buckets(x).tolist() == [[2, 1], [1, 0], [0, 3], [3, 3], [3, 1]]
    small = FieldPairCounts(2, num_values=3, vocabulary=[[17, 3, 9], [0, 2]])
    assert small._tables.lookup is not None
    x = torch.tensor([[9, 2], [3, 0], [17, 1], [18, 5], [0, 2]])
    assert small.buckets(x).tolist() == [[2, 1], [1, 0], [0, 3], [3, 3], [3, 1]]
    small.update(x, torch.tensor([1, 0, 1, 1, 0]))
    assert int(small.pair_tables()[0, 2, 1, 1]) == 1 and int(small.pair_tables()[0, 3, 3, 1]) == 1
    assert int(small.field_tables()[0, 3].sum()) == 2 and int(small.field_tables()[1, 3].sum()) == 2


def test_bad_batches_raise_errors_that_name_the_field_and_both_counts():
    names = ["user", "item", "ad", "site", "hour"]
    metric = FieldPairCounts(5, num_values=V, field_names=names, field_dims=DIMS)
    good = torch.zeros(4, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"have 4 fields \(shape \(4, 4\)\).*configured for 5 fields \(user, item, ad"):
        metric.update(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4))
    with pytest.raises(ValueError, match="integer value ids"):
        metric.update(good.float(), torch.zeros(4))
    bad = good.clone()
    bad[2, 1] = -3
    with pytest.raises(ValueError, match=r"item \(column 1\) has a negative id -3"):
        metric.update(bad, torch.zeros(4))
    bad = good.clone()
    bad[0, 2] = 9
    with pytest.raises(ValueError, match=r"ad \(column 2\) has id 9, outside \[0, 9\)"):
        metric.update(bad, torch.zeros(4))
    with pytest.raises(ValueError, match="0/1 responses, found 0.5"):
        metric.update(good, torch.tensor([0, 1, 0.5, 1]))
    with pytest.raises(ValueError, match=r"label must be \[B\] with B = 4"):
        metric.update(good, torch.zeros(3))
    with pytest.raises(ValueError, match="field_names has 2 names for num_fields=5"):
        FieldPairCounts(5, field_names=["a", "b"])
    with pytest.raises(ValueError, match="not a pair of two distinct fields"):
        metric.pair_index(2, 2)
    assert metric.samples == 0 and not metric._held  # nothing bad was held or counted


# ---- two processes -------------------------------------------------------------------------------------------
def counting_rank(rank: int, world: int, out_dir) -> None:
    """One rank of the two-process count (in a gloo group of ``world`` processes, started by ``run_ranks``)."""
    torch.set_num_threads(1)
    batches, _, _ = _random_batches(n=800, batch=100, seed=3)
    metric = FieldPairCounts(len(DIMS), num_values=V, warmup_batches=2)
    for xb, yb in batches[rank::world]:  # each process sees every other batch, as a distributed sampler would
        metric.update(xb, yb)
    result = metric.compute()
    torch.save({"vocabulary": metric.vocabulary, "mi": result["mutual_information"], "samples": int(result["samples"]),
                "local_samples": metric.samples, "pair_counts": metric.pair_tables().clone()}, out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_processes_choose_one_vocabulary_and_sum_to_the_single_process_counts(tmp_path):
    run_ranks(counting_rank, 2, tmp_path, timeout=240)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    batches, x, y = _random_batches(n=800, batch=100, seed=3)
    # The warm-up of both processes together: batches 0 and 2 on rank 0, 1 and 3 on rank 1.
    vocab = _oracle_vocabulary(x[:400], V)
    assert rank0["vocabulary"] == rank1["vocabulary"] == vocab
    single = FieldPairCounts(len(DIMS), num_values=V, vocabulary=vocab)
    for xb, yb in batches:
        single.update(xb, yb)
    assert rank0["samples"] == rank1["samples"] == 800
    assert rank0["local_samples"] == rank1["local_samples"] == 400  # unsynced after compute: local counts again
    assert torch.equal(rank0["pair_counts"] + rank1["pair_counts"], single.pair_tables())
    assert torch.equal(rank0["mi"], rank1["mi"])
    assert torch.allclose(rank0["mi"], single.compute()["mutual_information"], rtol=1e-12, atol=0)


def test_after_the_warm_up_batches_wait_and_their_values_are_checked_when_counted():
    metric = FieldPairCounts(2, num_values=3, warmup_batches=1, field_names=["user", "item"])
    metric.update(torch.tensor([[0, 1], [1, 2]]), torch.tensor([0, 1]))  # the warm-up: checked and counted
    metric.update(torch.tensor([[0, 1]]), torch.tensor([1]))
    assert metric.samples == 3  # a read counts what waits
    metric.update(torch.tensor([[0, 1]]), torch.tensor([2]))  # waits: no value is read yet
    with pytest.raises(ValueError, match="0/1"):
        metric.compute()
    with pytest.raises(ValueError, match="fields"):  # shapes are still checked at once
        metric.update(torch.tensor([[0, 1, 2]]), torch.tensor([1]))


@pytest.mark.parametrize("num_fields", [1, 2, 5])
def test_the_torch_counting_path_equals_a_dictionary_count(num_fields):
    """The counting used on GPUs (torch's index_add_), run on CPU tensors, against one dictionary increment per
    (field, bucket, label) and per (pair, bucket of i, bucket of j, label)."""
    generator = torch.Generator().manual_seed(num_fields)
    k, rows = 4, 300
    buckets = torch.randint(0, k, (num_fields, rows), generator=generator, dtype=torch.int32)
    label = torch.randint(0, 2, (rows,), generator=generator, dtype=torch.int32)
    num_pairs = num_fields * (num_fields - 1) // 2
    fields = torch.zeros(num_fields, k, 2, dtype=torch.int64)
    pairs = torch.zeros(num_pairs, k, k, 2, dtype=torch.int64)
    count_buckets_torch(buckets, label, fields, pairs, code_parts(num_fields, k))
    field_oracle, pair_oracle = collections.Counter(), collections.Counter()
    b, y = buckets.tolist(), label.tolist()
    for r in range(rows):
        for f in range(num_fields):
            field_oracle[(f, b[f][r], y[r])] += 1
        p = 0
        for i in range(num_fields):
            for j in range(i + 1, num_fields):
                pair_oracle[(p, b[i][r], b[j][r], y[r])] += 1
                p += 1
    assert {tuple(c): int(fields[tuple(c)]) for c in torch.nonzero(fields).tolist()} == dict(field_oracle)
    assert {tuple(c): int(pairs[tuple(c)]) for c in torch.nonzero(pairs).tolist()} == dict(pair_oracle)
