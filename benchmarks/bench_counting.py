"""Counting (target, behaviour, position, label) for the correlation analysis, and FeatureCorrelationMonitor's cost.

    python -m benchmarks.bench_counting [--sequences 1000000] [--length 50] [--categories 100,1000,10000]
                                        [--baseline-sequences 40000] [--full-baseline] [--threads 1]
                                        [--demo-repeats 3] [--no-demo] [--quick]

**Counting.** ``BehaviorTargetCounts.update`` on 1,000,000 sequences of 50 behaviours (fed in batches of 65,536
sequences), against the authors' way: a Python dictionary incremented once per behaviour,
``counts[(target, category, position, label)] += 1``, over Python lists (the conversion to lists is not timed).
Both on one core (``--threads 1``). The dictionary takes about a microsecond per behaviour, i.e. about a minute
for 5 * 10^7 behaviours, so by default it runs on ``--baseline-sequences`` sequences (an equal slice of every
batch, so that both methods see the same drift in machine load) and its time is extrapolated linearly (its cost
per behaviour does not fall with size); ``--full-baseline`` runs it on all of them. Its counts are compared,
key by key, with the metric's counts of the same sequences: they must be identical.

Three vocabularies by default: 100 categories, where the whole (target, behaviour, position, label) space fits
the metric's dense array (counting is one ``bincount``), and 1,000 and 10,000, real vocabulary sizes, where it
does not and the counts are sparse keys (counting sorts the batch's codes, then merges its distinct keys into the
sorted state), until, at 1,000 categories, the keys held are many enough that one byte per cell of the whole space
fits the memory bound, and the counter takes a dense array (``metrics/position_counter.py``). Beside wall time,
each method's own CPU time (``time.process_time``), less inflated by a busy neighbour; and the state's bytes per
8-byte distinct key.

On a virtual machine, memory the process has never touched can cost far more to touch the first time (on this
project's 2-core VM, 2.5 to 13 ns per 8 bytes, against 0.25 ns to write it again), and both methods touch fresh
memory as their counts grow: a run right after another that freed much memory may be faster than one in a
fresh machine: the README gives each figure over several runs of the command, each a fresh process.

``--floor`` adds a reference point per vocabulary: one increment per behaviour into a dense uint8 array of every
(target, label, position, behaviour) cell, already touched, compiled with numba: no memory to allocate, no count
ever moved or kept past 255. It is what one random memory update per behaviour costs on the machine, the least a
dense exact counter can cost, and a bound on the speed-up such a counter could show against the dictionary
("floor x dict"). It is measured only where the array fits in 1 GiB (1,000 categories: 100 MB; 10,000 would
take 10 GB).

Data: categories drawn from a Zipf-like law (a few frequent categories, a long tail, as in real logs), targets
likewise, 15% of behaviours of the target's own category, labels Bernoulli(0.3).

**Monitor cost.** The TIN demo (``python -m demo_models tin``) trained with and without the monitor (its
defaults, as the demo configures it), each fit in a fresh process, the two interleaved repetition by
repetition; medians of the fit times. Beside the A/B ratio, the time spent inside the monitor's own hooks
during the monitored fits (counting, analysis, images) as a share of the fit: the same quantity without the
run-to-run noise of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ._common import machine, median, run_worker, table

SUPPORTS_QUICK = True
BATCH = 65_536


def _zipf(n: int, exponent: float = 1.0) -> torch.Tensor:
    return 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** exponent


def make_chunk(index: int, sequences: int, length: int, categories: int):
    """One batch of the benchmark data, reproducible from its index alone (so it is never all in memory)."""
    g = torch.Generator().manual_seed(1000 + index)
    weights = _zipf(categories)
    target = torch.multinomial(weights, sequences, replacement=True, generator=g)
    behavior = torch.multinomial(weights, sequences * length, replacement=True, generator=g).view(sequences, length)
    own = torch.rand(sequences, length, generator=g) < 0.15
    behavior = torch.where(own, target[:, None], behavior)
    label = (torch.rand(sequences, generator=g) < 0.3).to(torch.int64)
    return target, behavior, label


def dictionary_counts(target, behavior, label) -> tuple[dict, float, float]:
    """The authors' way: one dictionary increment per behaviour. Returns the counts, the seconds it took and its CPU
    seconds."""
    t_list, b_list, y_list = target.tolist(), behavior.tolist(), label.tolist()
    length = len(b_list[0]) if b_list else 0
    counts: dict = {}
    start, cpu = time.perf_counter(), time.process_time()
    for t, row, y in zip(t_list, b_list, y_list):
        for j, c in enumerate(row):
            key = (t, c, length - j, y)  # position 1 = the last column, the most recent behaviour
            counts[key] = counts.get(key, 0) + 1
    return counts, time.perf_counter() - start, time.process_time() - cpu


FLOOR_MAX_CELLS = 1 << 30


def floor_seconds(sequences: int, length: int, categories: int) -> float | None:
    """Seconds of ``--floor``'s dense uint8 increments over the benchmark's batches (their generation not timed),
    or None where the array would exceed ``FLOOR_MAX_CELLS`` or numba is missing."""
    cells = categories * 2 * length * categories
    try:
        import numba
        import numpy as np
    except ImportError:
        return None
    if cells > FLOOR_MAX_CELLS:
        return None

    @numba.njit(nogil=True)
    def increment(target, behavior, label, dense, n_behaviors):  # pragma: no cover - compiled
        batch, width = behavior.shape
        for i in range(batch):
            row = (target[i] * 2 + label[i]) * width * n_behaviors  # [target, label, position, behaviour]
            for j in range(width):
                dense[row + j * n_behaviors + behavior[i, j]] += 1  # wraps past 255: only the time matters

    dense = np.ones(cells, np.uint8)  # written once, so that no page is touched for the first time below
    increment(np.zeros(1, np.int64), np.zeros((1, length), np.int64), np.zeros(1, np.int64), dense, categories)
    seconds = 0.0
    for index in range((sequences + BATCH - 1) // BATCH):
        n = min(BATCH, sequences - index * BATCH)
        target, behavior, label = (x.numpy() for x in make_chunk(index, n, length, categories))
        start = time.perf_counter()
        increment(target, behavior, label, dense, categories)
        seconds += time.perf_counter() - start
    return seconds


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


def _state_bytes(metric) -> int:
    """Bytes the metric holds for its counts: sparse keys and counts of both counters, the dense array, and the
    8-byte-a-key counter's arena (the part ever written: pages never written take no memory) and merge buffer."""
    compact = metric._compact.nbytes() if metric._compact is not None else 0
    tensors = [t for name in ("triple_keys", "triple_counts", "target_keys", "target_counts")
               for t in getattr(metric, name)]
    if metric._dense is not None:
        tensors.append(metric._dense)
    return compact + sum(t.numel() * t.element_size() for t in tensors)


def _work_bytes(metric) -> int:
    """Bytes of the work arrays a batch is sorted in: they scale with the largest batch, not with the counts."""
    return metric._compact.work_nbytes() if metric._compact is not None else 0


def metric_counts_as_dict(metric) -> dict:
    from lightning_recanalysis.metrics.sparse_keys import decode_keys as _decode

    keys, counts = metric._merged("triple")
    t, b, p, y = (x.tolist() for x in _decode(keys))
    return dict(zip(zip(t, b, p, y), counts.tolist()))


def first_use() -> str:
    """Load the compiled loops once, outside the timed counting: numba's import and the load of the cached machine
    code are paid once per process, not per behaviour. Says which path counts and what that first use cost."""
    from lightning_recanalysis.metrics import compiled_counts

    start = time.perf_counter()
    if not compiled_counts.available():
        return "numpy and torch (numba not installed or switched off)"
    from lightning_recanalysis.metrics.warm_up import warm_up

    warm_up()
    return (f"compiled (numba); importing numba and loading the cached loops took {time.perf_counter() - start:.2f} s, "
            "once per process (not in the times below)")


def counting(sequences: int, length: int, categories: int, baseline_sequences: int) -> dict:
    from lightning_recanalysis.metrics import BehaviorTargetCounts

    chunks = (sequences + BATCH - 1) // BATCH
    metric = BehaviorTargetCounts()
    ours = ours_cpu = 0.0
    baseline_secs, baseline_cpu, baseline_seen = 0.0, 0.0, 0
    check = BehaviorTargetCounts()
    reference: dict = {}
    peak = 0
    for index in range(chunks):
        n = min(BATCH, sequences - index * BATCH)
        target, behavior, label = make_chunk(index, n, length, categories)
        start, cpu = time.perf_counter(), time.process_time()
        metric.update(target, behavior, label)
        ours += time.perf_counter() - start
        ours_cpu += time.process_time() - cpu
        peak = max(peak, _state_bytes(metric))  # while counting: runs not yet merged may repeat keys
        # The dictionary counts a slice of every batch, so that drift in machine load reaches both methods.
        share = -(-baseline_sequences // chunks)
        if baseline_seen < baseline_sequences:
            take = min(n, share, baseline_sequences - baseline_seen)
            part, secs, cpu_secs = dictionary_counts(target[:take], behavior[:take], label[:take])
            baseline_secs += secs
            baseline_cpu += cpu_secs
            baseline_seen += take
            for key, value in part.items():
                reference[key] = reference.get(key, 0) + value
            check.update(target[:take], behavior[:take], label[:take])
    start, cpu = time.perf_counter(), time.process_time()
    # Counting is done once a question can be answered: the first query counts what waits and merges the runs,
    # and that is part of the cost (the 16-byte keys the checks below read are not).
    metric.table(0, [0], 1)
    ours += time.perf_counter() - start
    ours_cpu += time.process_time() - cpu
    keys, counts = metric._merged("triple")
    identical = metric_counts_as_dict(check) == reference
    total = int(counts.sum())
    return {
        "dense": metric._dense is not None,
        "ours_seconds": ours,
        "ours_cpu_seconds": ours_cpu,
        "baseline_cpu_seconds": baseline_cpu * sequences / max(baseline_seen, 1),
        "baseline_seconds_measured": baseline_secs,
        "baseline_sequences": baseline_seen,
        "baseline_seconds": baseline_secs * sequences / max(baseline_seen, 1),
        "identical": identical,
        "behaviours": total,
        "distinct_triples": int(keys.numel()),
        "distinct_keys": int(keys.numel()) + int(metric._merged("target")[0].numel()),
        "state_bytes": _state_bytes(metric),
        "peak_state_bytes": max(peak, _state_bytes(metric)),
        "work_bytes": _work_bytes(metric),
    }


# ---- monitor cost on the TIN demo --------------------------------------------------------------------------
def demo_worker(monitors: bool) -> dict:
    """One fit of the TIN demo as ``python -m demo_models tin`` runs it; times the monitor's hooks from inside."""
    import lightning.pytorch as pl

    from demo_models.registry import DATASETS
    from demo_models.sequence_demo import build

    pl.seed_everything(0, verbose=False)
    experiment = build(model="tin", data=DATASETS["tin"][0], seed=0, monitors=monitors)
    inside = {"seconds": 0.0}
    for callback in experiment.callbacks:
        for hook in ("on_train_batch_end", "on_train_epoch_end", "setup", "on_fit_start"):
            original = getattr(callback, hook)

            def timed(*args, _original=original, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    inside["seconds"] += time.perf_counter() - start

            setattr(callback, hook, timed)
    import tempfile

    from lightning.pytorch.loggers import TensorBoardLogger

    with tempfile.TemporaryDirectory() as out:
        trainer = pl.Trainer(
            max_epochs=experiment.max_epochs, logger=TensorBoardLogger(out, name="tin"),
            callbacks=list(experiment.callbacks), accelerator="cpu", devices=1, enable_progress_bar=False,
            enable_model_summary=False, log_every_n_steps=10, deterministic=True, enable_checkpointing=False,
        )
        start = time.perf_counter()
        trainer.fit(experiment.module, experiment.train_loader, experiment.val_loader)
        seconds = time.perf_counter() - start
    agreement = None
    for callback in experiment.callbacks:
        if getattr(callback, "history", None):
            agreement = callback.history[-1].get("agreement")
    return {"seconds": seconds, "monitor_seconds": inside["seconds"], "agreement": agreement}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=1_000_000)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--categories", default="100,1000,10000",
                        help="category vocabularies to count, comma-separated (default 100,1000,10000: the metric's "
                             "dense state, and its sparse state at two real vocabulary sizes)")
    parser.add_argument("--baseline-sequences", type=int, default=40_000)
    parser.add_argument("--full-baseline", action="store_true")
    parser.add_argument("--demo-repeats", type=int, default=3)
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--floor", action="store_true",
                        help="also time one dense uint8 increment per behaviour: the machine's floor (see above)")
    parser.add_argument("--quick", action="store_true", help="100,000 sequences, one demo repetition")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the dictionary runs on one core too, and the demo fits are "
                             "steadier on a shared machine)")
    parser.add_argument("--worker", choices=["monitors", "none"])
    args = parser.parse_args(argv)
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(demo_worker(args.worker == "monitors")))
        return
    if args.quick:
        args.sequences, args.baseline_sequences, args.demo_repeats = 100_000, 10_000, 1
    baseline_n = args.sequences if args.full_baseline else min(args.baseline_sequences, args.sequences)

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    behaviours = args.sequences * args.length
    print(f"counting {args.sequences:,} sequences x {args.length} = {behaviours:,} behaviours; {machine()}")
    print(f"sparse counting: {first_use()}")
    rows, notes = [], []
    for categories in (int(c) for c in str(args.categories).split(",")):
        result = counting(args.sequences, args.length, categories, baseline_n)
        state = "dense" if result["dense"] else "sparse"
        rows.append([f"{categories:,}", state, f"{result['baseline_seconds']:.1f}",
                     f"{1e9 * result['baseline_seconds'] / behaviours:.0f}", f"{result['ours_seconds']:.2f}",
                     f"{1e9 * result['ours_seconds'] / behaviours:.1f}",
                     _times(result['baseline_seconds'] / result['ours_seconds']),
                     _times(result['baseline_cpu_seconds'] / result['ours_cpu_seconds']), str(result["identical"]),
                     f"{result['distinct_triples']:,}", f"{result['state_bytes'] / 2**20:.0f}",
                     f"{result['state_bytes'] / max(8 * result['distinct_keys'], 1):.2f}",
                     f"{result['peak_state_bytes'] / max(8 * result['distinct_keys'], 1):.2f}",
                     f"{result['work_bytes'] / 2**20:.0f}"])
        if args.floor:
            floor = floor_seconds(args.sequences, args.length, categories)
            rows[-1] += (["-", "-"] if floor is None else
                         [f"{1e9 * floor / behaviours:.1f}", _times(result["baseline_seconds"] / floor)])
        if baseline_n != args.sequences:
            notes.append(f"{categories:,} categories: dictionary measured on {result['baseline_sequences']:,} "
                         f"sequences (a slice of every batch), {result['baseline_seconds_measured']:.1f} s, "
                         "extrapolated linearly")
    print(table(["categories", "state", "dict s", "dict ns/beh.", "ours s", "ours ns/beh.", "speed-up",
                 "(CPU time)", "identical", "distinct keys", "state MiB", "state / key bytes",
                 "peak while counting", "work MiB"] + (["floor ns/beh.", "floor x dict"] if args.floor else []),
                rows))
    print("speed-up (CPU time): the same ratio of each method's own CPU time, which a busy neighbour on a shared "
          "machine inflates less than wall time; state / key bytes: the state's bytes over 8 bytes per distinct "
          "key it holds ((target, behaviour, position, label) and (target, label)), at the end (every run merged) "
          "and at its largest between two batches (sorted runs not yet merged may hold a key more than once); work: "
          "the arrays one batch is sorted in, kept for the next batch (they scale with the batch, not the counts)")
    for note in notes:
        print(note)
    torch.set_num_threads(threads)
    if args.no_demo:
        return

    runs: dict[str, list] = {"none": [], "monitors": []}
    for _ in range(args.demo_repeats):
        for kind in ("none", "monitors"):  # interleaved, so drift in machine load hits both alike
            runs[kind].append(run_worker("benchmarks.bench_counting", kind, "--threads", str(args.threads),
                                         timeout=1200))
    plain = median(r["seconds"] for r in runs["none"])
    monitored = median(r["seconds"] for r in runs["monitors"])
    inside = median(r["monitor_seconds"] / r["seconds"] for r in runs["monitors"])
    print(f"\nTIN demo (synthetic data), FeatureCorrelationMonitor at its defaults; {args.threads} torch thread(s); "
          f"median of {args.demo_repeats} fresh-process fits each, interleaved")
    print(table(
        ["fit", "seconds (median)", "all fits"],
        [["--no-monitors", f"{plain:.1f}", ", ".join(f"{r['seconds']:.1f}" for r in runs["none"])],
         ["monitor", f"{monitored:.1f}", ", ".join(f"{r['seconds']:.1f}" for r in runs["monitors"])]],
    ))
    print(f"monitored / plain fit time: {monitored / plain:.3f} ({100 * (monitored / plain - 1):+.1f}%)")
    print(f"time inside the monitor's hooks: {100 * inside:.2f}% of the monitored fit (median)")
    agreements = [r["agreement"] for r in runs["monitors"] if r["agreement"] is not None]
    if agreements:
        print(f"learned vs ground-truth rank correlation at the end: {', '.join(f'{a:.2f}' for a in agreements)}")


if __name__ == "__main__":
    main()
