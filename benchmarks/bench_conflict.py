"""What the multi-task monitors cost: on the MMoE demo end to end, and one gradient probe against backward passes.

    python -m benchmarks.bench_conflict [--repeats 3] [--epochs N] [--quick]
    python -m benchmarks.bench_conflict --checkouts BEFORE_DIR AFTER_DIR [--repeats 5]

1. **Training time.** The MMoE demo (``python -m demo_models mmoe``: synthetic two-task data, its default epochs)
   trained in a fresh process per run, configurations interleaved repetition by repetition, median fit time:
   ``none`` (``--no-monitors``), ``conflict`` (GradientConflictMonitor alone, default cadence), ``both``
   (GradientConflictMonitor and EntanglementMonitor without references) and ``references`` (both, the
   EntanglementMonitor with the two single-task references, as ``python -m demo_models mmoe`` attaches them: the
   conflict subsets; the references are trained once beforehand, not timed). Ratio = median / median of
   ``none``; the target for ``conflict`` is under 1.05.
2. **One probe.** On one demo batch (256 rows), median CPU time over many repetitions of: the probe (one
   ``autograd.grad`` per task to the looked-up rows, the per-id sums and the per-field Grams), one backward pass
   of the total loss to every parameter, and one backward pass per task to every parameter. The target: the
   probe costs no more than one backward pass per task.

3. **Two checkouts** (``--checkouts``): each directory holds ``lightning_recanalysis``, ``benchmarks`` and
   ``demo_models`` (``git archive REV lightning_recanalysis benchmarks demo_models | tar -x -C DIR``). Fresh
   processes alternate ``none`` (BEFORE), ``references`` (BEFORE) and ``references`` (AFTER), each importing its
   own checkout (the paths are printed); the CPU time inside both monitors per checkout, min-median-max, and the
   after / before ratio per repetition. A change that must not alter the output is checked separately
   (``scripts/demo_fingerprint.py``).

On a machine shared with other work the end-to-end ratios (wall and even CPU time) move by 15% or more from
one run of this benchmark to the next, in both directions; the CPU time spent inside the monitors' hooks is the
stable measure of their cost (it leaves out only the forward hooks' capture, a list append per lookup on probed
steps). Every process runs torch on one thread, so that other work on the machine does not turn thread contention into
noise (the demo models are small: a second thread gains little).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import lightning_recanalysis

from ._common import machine, median, run_worker, table

SUPPORTS_QUICK = True
CONFIGS = ("none", "conflict", "both", "references")
#: Where the parent process trained the single-task references for the ``references`` configuration.
REFERENCES_ENV = "BENCH_CONFLICT_REFERENCES"


def fit_worker(config: str, epochs: int) -> dict:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from demo_models.multitask import build

    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    references = None
    if config == "references":
        root = Path(os.environ[REFERENCES_ENV])
        references = {t: root / f"reference_{t}-synthetic" / "single-task" for t in ("click", "purchase")}
    experiment = build(model="mmoe", data="synthetic", seed=0, monitors=config != "none", references=references)
    callbacks = experiment.callbacks[:1] if config == "conflict" else experiment.callbacks
    inside = _time_hooks(callbacks)
    # A TensorBoard logger as the demo has: the monitors' heatmaps and histograms are part of their cost.
    logger = TensorBoardLogger(tempfile.mkdtemp(prefix="bench_conflict_"), name="run", default_hp_metric=False)
    trainer = pl.Trainer(max_epochs=epochs or experiment.max_epochs, logger=logger, callbacks=callbacks,
                         accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, deterministic=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.fit(experiment.module, experiment.train_loader, experiment.val_loader)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    shutil.rmtree(logger.root_dir, ignore_errors=True)
    probes = experiment.callbacks[0].history[-1]["measured_steps"] if config != "none" else 0
    return {"package": str(Path(lightning_recanalysis.__file__).parent), "seconds": seconds,
            "cpu_seconds": cpu_seconds, "steps": trainer.global_step, "probes_last_epoch": probes,
            "monitor_seconds": sum(inside.values()),
            "per_monitor": {cls: sum(v for (c, _), v in inside.items() if c == cls) for cls, _ in inside},
            "per_hook": {f"{c}.{hook}": v for (c, hook), v in inside.items()}}


def _time_hooks(callbacks) -> dict:
    """Wrap every hook a monitor overrides with a timer: CPU seconds spent inside the monitors, per hook."""
    from lightning.pytorch.callbacks import Callback

    spent: dict = {}
    for callback in callbacks:
        for name in dir(Callback):
            if not (name.startswith("on_") or name in ("setup", "teardown")):
                continue
            if getattr(type(callback), name) is getattr(Callback, name):
                continue

            def timed(*args, __hook=getattr(callback, name), __key=(type(callback).__name__, name), **kwargs):
                start = time.thread_time()  # CPU time of this thread: what the hook costs, whatever else runs
                try:
                    return __hook(*args, **kwargs)
                finally:
                    spent[__key] = spent.get(__key, 0.0) + time.thread_time() - start

            setattr(callback, name, timed)
    return spent


def compare_checkouts(before: str, after: str, repeats: int, epochs: int) -> None:
    """Part 3 of the module docstring: the monitors' CPU time in two checkouts, alternating fresh processes."""
    runs = [("none", before), ("references", before), ("references", after)]
    results: dict[int, list[dict]] = {k: [] for k in range(len(runs))}
    for _ in range(repeats):
        for k, (config, root) in enumerate(runs):
            env = {**os.environ, "PYTHONPATH": str(Path(root).resolve())}
            proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_conflict", "--worker", config, str(epochs)],
                                  capture_output=True, text=True, cwd=root, env=env, timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"worker {config} in {root} failed:\n{proc.stderr[-2000:]}")
            results[k].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    none = median(r["cpu_seconds"] for r in results[0])
    print(f"MMoE demo with both monitors and the two references, {repeats} alternating fresh processes per "
          f"checkout; {machine()}; training without monitors: {none:.2f} s of CPU (median)")
    for k, label, root in ((1, "before", before), (2, "after", after)):
        ms = [r["monitor_seconds"] * 1e3 for r in results[k]]
        print(f"  {label} ({results[k][0].get('package', root + ' (path not reported)')}): inside both monitors {_spread(ms, '.0f')} ms of CPU, "
              f"{_spread([m / 1e3 / none for m in ms])} of training without monitors")
    ratios = [a["monitor_seconds"] / b["monitor_seconds"] for a, b in zip(results[2], results[1])]
    print(f"  after / before, per repetition: {_spread(ratios, '.3f')}")


def _spread(values: list[float], fmt: str = ".1%") -> str:
    """``min-median-max`` of ``values``: the spread over fresh processes, not only their median."""
    return "-".join(format(v, fmt) for v in (min(values), median(values), max(values)))


def probe_costs(repeats: int) -> dict:
    """Median seconds of one probe, one full backward, and one backward per task, on one MMoE demo batch."""
    from demo_models.multitask import build
    from lightning_recanalysis.callbacks.conflict import GradientConflictMonitor

    torch.set_num_threads(1)
    experiment = build(model="mmoe", data="synthetic", seed=0, monitors=True)
    module = experiment.module
    monitor: GradientConflictMonitor = experiment.callbacks[0]
    monitor.setup(None, module, "fit")
    batch = next(iter(experiment.train_loader))
    params = [p for p in module.parameters() if p.requires_grad]

    def forward(hooked: bool):
        if hooked:
            monitor._probe.arm()  # the monitor's gradient probe (callbacks/_gradient_probe.py) hooks the tables
        logits = module(batch["features"])
        forward.captures = monitor._probe.take()  # the hooks go before the losses, as in training
        module.task_losses = {t: torch.nn.functional.binary_cross_entropy_with_logits(logits[:, i], batch["labels"][:, i])
                              for i, t in enumerate(module.task_names)}
        return sum(module.task_losses.values())

    timings = {"probe": [], "backward_total": [], "backward_per_task": []}
    for _ in range(repeats):  # interleaved: each repetition times all three on fresh graphs
        forward(True)
        start = time.thread_time()
        monitor._probe.measure(module, forward.captures)
        timings["probe"].append(time.thread_time() - start)

        total = forward(False)
        start = time.thread_time()
        torch.autograd.grad(total, params)
        timings["backward_total"].append(time.thread_time() - start)

        forward(False)
        start = time.thread_time()
        for loss in module.task_losses.values():
            torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        timings["backward_per_task"].append(time.thread_time() - start)
    return {k: median(v) for k, v in timings.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=0, help="training epochs (default: the demo's own)")
    parser.add_argument("--probe-repeats", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 2 repetitions")
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "EPOCHS"))
    parser.add_argument("--checkouts", nargs=2, metavar=("BEFORE_DIR", "AFTER_DIR"),
                        help="compare the monitors' CPU time in two checkouts (part 3 above)")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(fit_worker(args.worker[0], int(args.worker[1]))))
        return
    if args.quick:
        args.repeats, args.epochs, args.probe_repeats = 2, 1, 50
    from demo_models.references import train_references

    torch.set_num_threads(1)  # as every worker, and as the demo trains them
    reference_dir = tempfile.mkdtemp(prefix="bench_conflict_references_")
    start = time.perf_counter()
    train_references("synthetic", 0, Path(reference_dir), epochs=args.epochs or None)
    print(f"training the two single-task references (once, not timed below): {time.perf_counter() - start:.1f} s")
    os.environ[REFERENCES_ENV] = reference_dir
    if args.checkouts:
        compare_checkouts(*args.checkouts, repeats=args.repeats, epochs=args.epochs)
        shutil.rmtree(reference_dir, ignore_errors=True)
        return
    results = {c: [] for c in CONFIGS}
    for _ in range(args.repeats):
        for config in CONFIGS:  # interleaved, so drift in machine load hits every configuration alike
            results[config].append(run_worker("benchmarks.bench_conflict", config, str(args.epochs)))
    secs = {c: median(r["seconds"] for r in results[c]) for c in CONFIGS}
    cpu = {c: median(r["cpu_seconds"] for r in results[c]) for c in CONFIGS}
    print(f"MMoE demo (synthetic, {results['none'][0]['steps']} steps), median of {args.repeats} fresh processes; "
          f"{machine()}, torch on 1 thread")
    inside = {c: median(r["monitor_seconds"] for r in results[c]) for c in CONFIGS}
    rows = [[c, f"{secs[c]:.2f}", f"{secs[c] / secs['none']:.3f}", f"{cpu[c]:.2f}", f"{cpu[c] / cpu['none']:.3f}",
             f"{inside[c]:.3f}", f"{1 + inside[c] / cpu['none']:.3f}", str(results[c][0]["probes_last_epoch"])]
            for c in CONFIGS]
    print(table(["monitors", "wall s", "wall ratio", "CPU s", "CPU ratio", "CPU s inside monitors",
                 "1 + inside / none", "probes/epoch"], rows))
    for config in ("both", "references"):
        for cls in results[config][0]["per_monitor"]:
            share = median(r["per_monitor"][cls] for r in results[config]) / cpu["none"]
            print(f"  inside {cls} (config '{config}'): {share:.1%} of the CPU time of training without monitors")
        print(f"  inside both monitors (config '{config}'), min-median-max over the {args.repeats} processes: "
              f"{_spread([r['monitor_seconds'] / cpu['none'] for r in results[config]])} of that time, "
              f"{_spread([r['monitor_seconds'] * 1e3 for r in results[config]], '.0f')} ms of CPU")
    hooks = results["references"][0]["per_hook"]
    print("  inside EntanglementMonitor (config 'references') by hook: " + ", ".join(
        f"{h.split('.', 1)[1]} {median(r['per_hook'][h] for r in results['references']) / cpu['none']:.1%}"
        for h in hooks if h.startswith("EntanglementMonitor.")))
    shutil.rmtree(reference_dir, ignore_errors=True)
    print("(wall ratio: end to end, at the mercy of other processes on the machine; CPU ratio: the process's own "
          "CPU time, far less so; 1 + inside / none: only the CPU time spent inside the monitors' hooks)")
    costs = probe_costs(args.probe_repeats)
    print(f"\none probe on a 256-row batch, median of {args.probe_repeats}:")
    print(table(["what", "milliseconds", "probe / this"], [
        [k, f"{v * 1e3:.2f}", f"{costs['probe'] / v:.2f}"] for k, v in costs.items()]))


if __name__ == "__main__":
    main()
