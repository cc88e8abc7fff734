"""What the field-pair correlation costs: memory of the counts, time per counted batch, time of one analysis, and
the monitor's share of the DCNv2 demo's training time.

    python -m benchmarks.bench_field_pair [--epochs N] [--batches 30] [--quick] [--no-demo]

1. *Memory*: the bytes of ``FieldPairCounts``' states (int64 counts of every pair's (V+1) x (V+1) x 2 table) for
   8 (the synthetic demo), 26 and 39 fields (Criteo), at the default V = 31, beside the formula.
2. *Counting*: time per batch of Zipf-distributed ids after the warm-up (``update`` of every batch and the flush
   that counts them, one torch thread and all of them), and per sample and pair (wall and CPU time, min median
   max of 5 repetitions); and the CPU count side by side with one ``bincount`` over every pair's codes at once
   (the way it counted before), on the same rows.
3. *Analysis*: one epoch-end analysis (MI matrices, learned strength, three heatmaps, the text) for 39 fields.
4. *Share of training*: the DCNv2 demo at its defaults (8 epochs) with only ``FieldPairCorrelationMonitor``, every
   hook of the monitor timed (``benchmarks.bench_overhead``'s instrumentation), in a fresh process; the share of
   the whole ``fit`` spent inside the monitor. On the synthetic data (8 fields, the default) and the Criteo sample
   (39 fields, 900 rows: a data set so small that the once-per-epoch analysis dominates).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ._common import machine, run_worker, table

SUPPORTS_QUICK = True


def _zipf_batch(batch: int, fields: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, 10_001, dtype=torch.float64) ** 1.1
    x = torch.multinomial(weights, batch * fields, replacement=True, generator=g).view(batch, fields)
    return x, torch.randint(0, 2, (batch,), generator=g)


def count_worker(fields: int, batch: int, threads: int, batches: int) -> dict:
    """Per batch: ``update`` of ``batches`` batches and the flush that counts them, over ``batches``. Then the CPU
    count itself against one ``bincount`` over every pair's codes at once (the former way), interleaved, on
    the same rows."""
    import numpy as np

    from lightning_recanalysis.metrics import FieldPairCounts

    if threads:
        torch.set_num_threads(threads)
    metric = FieldPairCounts(fields)
    data = [_zipf_batch(batch, fields, s) for s in range(batches + metric.warmup_batches)]
    for x, y in data[: metric.warmup_batches]:
        metric.update(x, y)

    def update_all():
        metric.reset()  # keeps the vocabulary
        for x, y in data[metric.warmup_batches :]:
            metric.update(x, y)
        metric.flush()

    update_all()
    walls, cpus = [], []
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        update_all()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    per_batch = statistics.median(walls) / batches
    pair_samples = batches * batch * max(1, fields * (fields - 1) // 2)
    state = sum(t.numel() * t.element_size() for t in (metric.pair_counts, metric.field_counts))

    x = torch.cat([x for x, _ in data[metric.warmup_batches :]])
    y = torch.cat([y for _, y in data[metric.warmup_batches :]])
    first, second = (t.numpy() for t in metric.pairs())
    k = metric.num_buckets
    cells = k * k * 2

    def ours():
        metric.reset()
        metric._count_numpy(x, y)
        return metric.pair_counts.reshape(-1).numpy()

    def one_bincount():
        bt, label = metric._buckets_numpy(x), y.numpy().astype(np.int32)
        base = (np.arange(first.size, dtype=np.int32) * cells)[:, None]
        codes = (bt[first] * (2 * k) + base + bt[second] * 2 + label).reshape(-1)
        return np.bincount(codes, minlength=first.size * cells)

    same = bool(np.array_equal(ours(), one_bincount()))
    seconds: dict = {"ours": [], "one": []}
    for _ in range(5):
        for name, fn in (("ours", ours), ("one", one_bincount)):
            tick = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - tick)
    codes = x.shape[0] * first.size
    return {"update_ms": 1000 * per_batch, "state_bytes": state, "same": same,
            "update_ns": [1e9 * v / pair_samples for v in sorted(walls)],
            "update_cpu_ns": [1e9 * v / pair_samples for v in sorted(cpus)],
            "ours_ns": 1e9 * statistics.median(seconds["ours"]) / codes,
            "one_ns": 1e9 * statistics.median(seconds["one"]) / codes}


def _spread(values) -> str:
    values = sorted(values)
    return f"{values[0]:.2f} {statistics.median(values):.2f} {values[-1]:.2f}"


def analysis_worker(fields: int) -> dict:
    """One full epoch-end analysis and its logging for ``fields`` fields, on counts of 20 batches."""
    import tempfile

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_recanalysis import FieldPairCorrelationMonitor

    k = 16
    cross = torch.nn.Linear(fields * k, fields * k)
    monitor = FieldPairCorrelationMonitor(fields, pair_strength=None, cross_layer=None)
    monitor._cross = ("cross", cross, k)
    for s in range(20):
        monitor.counts.update(*_zipf_batch(1024, fields, s))
    with tempfile.TemporaryDirectory() as out:
        trainer = pl.Trainer(logger=TensorBoardLogger(out), accelerator="cpu", devices=1)
        start = time.perf_counter()
        record = {"stage": "epoch", "epoch": 0, "step": 0, **monitor.analyse(torch.nn.Module())}
        analysed = time.perf_counter()
        monitor._log(trainer, record)
        logged = time.perf_counter()
    return {"analyse_s": analysed - start, "log_s": logged - analysed}


def demo_worker(data: str, epochs: int) -> dict:
    """The DCNv2 demo at its defaults on ``data`` with only the field-pair monitor, its hooks timed."""
    import tempfile
    from collections import defaultdict

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from demo_models.dcnv2 import build

    from .bench_overhead import _instrument

    pl.seed_everything(0, verbose=False)
    experiment = build(model="dcnv2", data=data, seed=0, monitors=True)
    callbacks = [c for c in experiment.callbacks if type(c).__name__ == "FieldPairCorrelationMonitor"]
    seconds: dict = defaultdict(float)
    _instrument(callbacks, seconds)
    with tempfile.TemporaryDirectory() as out:
        trainer = pl.Trainer(max_epochs=epochs or experiment.max_epochs, accelerator="cpu", devices=1,
                             logger=TensorBoardLogger(out, name="b"),
                             callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False)
        start = time.perf_counter()
        trainer.fit(experiment.module, experiment.train_loader, experiment.val_loader)
        total = time.perf_counter() - start
    monitor = callbacks[0]
    return {"total": total, "inside": sum(seconds.values()), "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "agreement": monitor.history[-1]["agreement"],
            "agreement_interaction": monitor.history[-1]["agreement_interaction"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the demo runs (default: the demo's, 8)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per counting measurement")
    parser.add_argument("--quick", action="store_true", help="2 epochs of the synthetic demo, 10 timed batches")
    parser.add_argument("--no-demo", action="store_true", help="memory and counting only (no analysis, no demo)")
    parser.add_argument("--worker", nargs="+")
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "count":
            result = count_worker(*(int(v) for v in rest))
        elif kind == "analysis":
            result = analysis_worker(int(rest[0]))
        else:
            result = demo_worker(rest[0], int(rest[1]))
        print(json.dumps(result))
        return
    epochs = args.epochs or (2 if args.quick else 0)  # 0: the demo's own number of epochs
    batches = 10 if args.quick else args.batches
    print(f"field-pair correlation cost; {machine()}; num_values = 31 (32 buckets), batch 1024")
    rows = []
    for fields in (8, 26, 39):
        one = run_worker("benchmarks.bench_field_pair", "count", str(fields), "1024", "1", str(batches))
        every = run_worker("benchmarks.bench_field_pair", "count", str(fields), "1024", "0", str(batches))
        pairs = fields * (fields - 1) // 2
        formula = (pairs * 32 * 32 * 2 + fields * 32 * 2) * 8
        rows.append([str(fields), str(pairs), f"{one['state_bytes'] / 2**20:.2f} MiB", f"{formula / 2**20:.2f} MiB",
                     f"{one['update_ms']:.2f} ms", f"{every['update_ms']:.2f} ms",
                     _spread(one["update_ns"]), _spread(one["update_cpu_ns"]),
                     f"{one['one_ns'] / one['ours_ns']:.1f}x slower", "yes" if one["same"] else "NO"])
    print(table(["fields", "pairs", "count state", "formula", "per batch, 1 thread", "per batch, all threads",
                 "ns per sample and pair (wall)", "(CPU time)", "one bincount for all pairs", "same counts"], rows))
    print("per sample and pair: update of every batch and the flush, 1 thread, min median max of 5 repetitions; "
          "CPU time is the process's own, which a busy neighbour on a shared machine inflates less than wall time")
    if args.no_demo:
        return
    analysis = run_worker("benchmarks.bench_field_pair", "analysis", "39")
    print(f"\none epoch-end analysis, 39 fields: MI matrices + learned strength {analysis['analyse_s'] * 1000:.0f} ms, "
          f"three heatmaps + text {analysis['log_s']:.2f} s")
    rows = []
    for data in (("synthetic",) if args.quick else ("synthetic", "criteo-sample")):
        try:
            r = run_worker("benchmarks.bench_field_pair", "demo", data, str(epochs), timeout=1800)
        except RuntimeError as err:  # the Criteo sample may be absent
            print(f"(demo on {data} skipped: {str(err).splitlines()[-1]})")
            continue
        rows.append([data, str(r["epochs"]), str(r["steps"]), f"{r['total']:.1f}", f"{r['inside']:.2f}",
                     f"{100 * r['inside'] / r['total']:.2f}%", f"{r['agreement']:.3f}",
                     f"{r['agreement_interaction']:.3f}"])
    print("\nDCNv2 demo at its defaults, FieldPairCorrelationMonitor alone, its hooks timed:")
    print(table(["data", "epochs", "steps", "fit s", "inside monitor s", "share", "agreement (MI)",
                 "agreement (II)"], rows))


if __name__ == "__main__":
    main()
