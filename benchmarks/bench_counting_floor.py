"""Exact streamed counting against what a user would pick instead: a one-shot ``np.unique`` (the floor) and polars.

    python -m benchmarks.bench_counting_floor [--categories 1000,10000] [--sequences 200000] [--length 50]
                                              [--batch 1024] [--repeats 5] [--quick]

The question is the correlation analysis' ground truth: how often each (target, behaviour, position, label) occurs.

* **Ours, streamed**: ``BehaviorTargetCounts.update`` batch by batch (``--batch`` sequences, as a training step
  hands them over; the mask marks left padding), then the first query (``table``), which counts what waits and
  merges the sorted runs. Queries can come after any batch, and the memory held grows with the distinct keys, not
  with the behaviours.
* **The floor, ``np.unique``**: the same counts from one call, ``np.unique(keys, return_counts=True)``, over the
  int64 keys of every behaviour at once, built from long-format arrays beforehand (not timed: the floor gets its
  keys for free). It sorts all keys in one go with numpy's vectorised sort (AVX-512 where the CPU has it) and
  finds the run boundaries in one pass. It is a floor, not a rival: it needs every behaviour in memory at once (8
  bytes each, and a sorted copy), cannot answer a query until the data has ended, and never merges. A streamed
  counter sorts each flush (uint32 codes bucketed by position, cheaper to sort than the floor's int64) but must
  merge each flush's sorted run into the counts held: that merge is what the floor does not pay.
* **polars**: ``DataFrame.group_by([target, behaviour, position, label]).len()`` on the long-format columns (the
  frame built beforehand, not timed), on every thread polars takes (its default). Skipped when polars is not
  installed (``pip install polars``).

Every method's counts are checked against the floor's, key by key. Data: ids from a Zipf(1.2) law over
``--categories``, 15% of behaviours of the target's own category, lengths uniform in 1..``--length``, labels
Bernoulli(0.3). Each method runs once untimed first (compiled loops loaded, memory touched), then ``--repeats``
times, interleaved (ours, floor, polars, ours, ...), so that drift in machine load reaches all alike; the table
gives medians and the spread (min to max), and the ratio is taken repetition by repetition.

Memory: ours at its largest between two batches (its counts: sorted runs not yet merged may hold a key twice, and
the merge buffer) over 8 bytes per distinct key (a 4-byte code and a 4-byte count); beside it, the work arrays a
flush is sorted in, which scale with the flush (at most about 2^20 behaviours), not with the counts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ._common import machine, table

SUPPORTS_QUICK = True


def make_data(categories: int, sequences: int, length: int, seed: int = 0):
    """Targets ``[N]``, behaviours ``[N, L]`` (int64), labels ``[N]``, and the left-padding mask ``[N, L]``."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, categories + 1) ** 1.2
    weights /= weights.sum()
    target = rng.choice(categories, sequences, p=weights)
    behavior = rng.choice(categories, (sequences, length), p=weights)
    behavior = np.where(rng.random((sequences, length)) < 0.15, target[:, None], behavior)
    label = (rng.random(sequences) < 0.3).astype(np.int64)
    lengths = rng.integers(1, length + 1, sequences)
    mask = np.arange(length)[None, :] >= (length - lengths)[:, None]
    return target, behavior, label, mask


def long_format(target, behavior, label, mask):
    """One row per real behaviour: target, behaviour, position (1 = the most recent), label."""
    rows, cols = np.nonzero(mask)
    return target[rows], behavior[rows, cols], behavior.shape[1] - cols, label[rows]


def streamed(tensors, batch: int):
    """Ours: the metric fed batch by batch, then its first query. Returns seconds, the metric and the peak bytes of
    its counts between two batches."""
    from lightning_recanalysis.metrics import BehaviorTargetCounts

    from .bench_counting import _state_bytes

    target, behavior, label, mask = tensors
    metric = BehaviorTargetCounts()
    peak = elapsed = 0.0
    for start in range(0, target.shape[0], batch):
        stop = start + batch
        begin = time.perf_counter()
        metric.update(target[start:stop], behavior[start:stop], label[start:stop], mask[start:stop])
        elapsed += time.perf_counter() - begin
        peak = max(peak, _state_bytes(metric))  # outside the timing: it only reads sizes
    begin = time.perf_counter()
    metric.table(0, [0], 1)
    elapsed += time.perf_counter() - begin
    return elapsed, metric, max(peak, _state_bytes(metric))


def one_shot_unique(keys: np.ndarray):
    begin = time.perf_counter()
    values, counts = np.unique(keys, return_counts=True)
    return time.perf_counter() - begin, values, counts


def polars_group_by(frame):
    begin = time.perf_counter()
    counts = frame.group_by(["t", "b", "p", "y"]).len()
    return time.perf_counter() - begin, counts


def _spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid * scale:.{digits}f} ({low * scale:.{digits}f}-{high * scale:.{digits}f})"


def run(categories: int, sequences: int, length: int, batch: int, repeats: int) -> tuple[list, list[str]]:
    from lightning_recanalysis.metrics.sparse_keys import encode_keys

    from .bench_counting import _work_bytes

    target, behavior, label, mask = make_data(categories, sequences, length)
    t, b, p, y = long_format(target, behavior, label, mask)
    keys = encode_keys(*(torch.from_numpy(x) for x in (t, b, p, y))).numpy()
    tensors = tuple(torch.from_numpy(x) for x in (target, behavior, label, mask))
    try:
        import polars as pl

        frame = pl.DataFrame({"t": t, "b": b, "p": p, "y": y})
    except ImportError:
        frame = None
    behaviours = keys.size
    # untimed first runs: compiled loops loaded, memory touched once
    _, values, counts = one_shot_unique(keys)
    streamed(tensors, batch)
    if frame is not None:
        polars_group_by(frame)
    times: dict[str, list[float]] = {"ours": [], "unique": [], "polars": []}
    ratios, peaks, notes = [], [], []
    for _ in range(repeats):
        seconds, metric, peak = streamed(tensors, batch)
        times["ours"].append(seconds)
        peaks.append(peak)
        seconds, values, counts = one_shot_unique(keys)
        times["unique"].append(seconds)
        ratios.append(times["ours"][-1] / seconds)
        if frame is not None:
            seconds, grouped = polars_group_by(frame)
            times["polars"].append(seconds)
    held_keys, held_counts = metric._merged("triple")
    identical = np.array_equal(held_keys.numpy(), values) and np.array_equal(held_counts.numpy(), counts)
    if frame is not None:
        grouped = grouped.sort(["p", "t", "b", "y"])
        polars_keys = encode_keys(*(torch.from_numpy(grouped[c].to_numpy().astype(np.int64)) for c in "tbpy"))
        identical &= np.array_equal(polars_keys.numpy(), values)
        identical &= np.array_equal(grouped["len"].to_numpy().astype(np.int64), counts)
    distinct = values.size + metric._merged("target")[0].numel()
    rows = [
        [f"{categories:,}", "np.unique, one shot (floor)", _spread(times["unique"], 1e9 / behaviours), "1.00", "-"],
        [f"{categories:,}", f"ours, streamed ({batch:,} a batch)", _spread(times["ours"], 1e9 / behaviours),
         _spread(ratios, digits=2), _spread([x / (8 * distinct) for x in peaks], digits=2)],
    ]
    if times["polars"]:
        rows.append([f"{categories:,}", "polars group_by, one shot", _spread(times["polars"], 1e9 / behaviours),
                     _spread([a / b for a, b in zip(times["polars"], times["unique"])], digits=2), "-"])
        over_ours = [a / b for a, b in zip(times["polars"], times["ours"])]
        notes.append(f"{categories:,} categories: polars / ours {_spread(over_ours, digits=2)}")
    notes.append(f"{categories:,} categories: {behaviours:,} behaviours, {values.size:,} distinct keys; counts "
                 f"identical to the floor's: {identical}; work arrays {_work_bytes(metric) / 2**20:.0f} MiB")
    return rows, notes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", default="1000,10000")
    parser.add_argument("--sequences", type=int, default=200_000)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the floor's sort)")
    parser.add_argument("--quick", action="store_true", help="50,000 sequences, 2 repetitions")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequences, args.repeats = 50_000, 2
    torch.set_num_threads(args.threads)
    from lightning_recanalysis.metrics.warm_up import warm_up

    print(f"exact counting, {args.sequences:,} sequences of up to {args.length}; {machine()}; "
          f"compiled loops loaded in {warm_up():.2f} s (once per process, not timed)")
    rows, notes = [], []
    for categories in (int(c) for c in args.categories.split(",")):
        more_rows, more_notes = run(categories, args.sequences, args.length, args.batch, args.repeats)
        rows += more_rows
        notes += more_notes
    print(table(["categories", "method", "ns a behaviour: median (min-max)", "x floor (per repetition)",
                 "peak memory / 8 B per distinct key"], rows))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
