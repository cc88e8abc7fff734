"""What the monitors cost in training time, per demo model.

    python -m benchmarks.bench_overhead [--models dcnv2,tin,...] [--repeats 3] [--epochs N] [--quick]
                                        [--share-only [--by-hook]]

Two measurements, both side by side in one run:

1. *Time inside the monitors*: in a monitored run every hook of every monitor is timed; its share of the whole
   ``fit`` is the monitor's cost. Precise, because it does not subtract two noisy run times.
2. *Whole-run A/B*: the same model trained in fresh processes with the monitors and with ``--no-monitors``,
   interleaved repetition by repetition, median ratio. Honest but noisy on a shared 2-core machine.

Each monitor is measured alone and all together.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict

from ._common import machine, median, run_worker, table

SUPPORTS_QUICK = True

_HOOKS = ("setup", "on_fit_start", "on_train_start", "on_train_epoch_start", "on_train_batch_start",
          "on_train_batch_end", "on_before_backward", "on_after_backward", "on_train_epoch_end",
          "on_validation_epoch_start", "on_validation_batch_start", "on_validation_batch_end",
          "on_validation_epoch_end", "on_fit_end", "on_before_optimizer_step", "teardown")


def _instrument(callbacks, seconds: dict, by_hook: dict | None = None) -> None:
    """Wrap each monitor's own hooks with a timer (only hooks its class overrides); ``by_hook`` also gets the
    seconds of each ``Monitor.hook``."""
    from lightning.pytorch.callbacks import Callback

    for cb in callbacks:
        for hook in _HOOKS:
            if getattr(type(cb), hook, None) is getattr(Callback, hook, None):
                continue
            original = getattr(cb, hook)

            def timed(*args, _original=original, _name=type(cb).__name__, _hook=hook, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    spent = time.perf_counter() - start
                    seconds[_name] += spent
                    if by_hook is not None:
                        by_hook[f"{_name}.{_hook}"] += spent

            setattr(cb, hook, timed)


def worker(model: str, monitors: str, epochs: int | None, accelerator: str = "cpu", profiler=None) -> dict:
    """Train once; monitors is 'none', 'all' or one class name. ``profiler`` (a ``cProfile.Profile``) is
    enabled around ``fit`` only (``gpu_check`` uses it to show where the monitors' time goes)."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from demo_models.__main__ import _builder
    from demo_models.registry import DATASETS

    data = DATASETS[model][0]
    pl.seed_everything(0, verbose=False)
    experiment = _builder(model)(model=model, data=data, seed=0, monitors=monitors != "none")
    if monitors not in ("none", "all"):
        experiment.callbacks = [c for c in experiment.callbacks if type(c).__name__ == monitors]
    seconds: dict = defaultdict(float)
    by_hook: dict = defaultdict(float)
    _instrument(experiment.callbacks, seconds, by_hook)
    with tempfile.TemporaryDirectory() as out:
        trainer = pl.Trainer(max_epochs=epochs or experiment.max_epochs, accelerator=accelerator, devices=1,
                             logger=TensorBoardLogger(out, name="bench"), callbacks=experiment.callbacks,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        trainer.fit(experiment.module, experiment.train_loader, experiment.val_loader)
        total = time.perf_counter() - start
        if profiler is not None:
            profiler.disable()
    return {"total": total, "monitors": dict(seconds), "hooks": dict(by_hook),
            "names": [type(c).__name__ for c in experiment.callbacks]}


def main(argv=None) -> None:
    from demo_models.registry import MODELS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="2 epochs, 2 repeats")
    parser.add_argument("--share-only", action="store_true",
                        help="only the time inside the monitors (all together), min / median / max over the repeats")
    parser.add_argument("--by-hook", action="store_true",
                        help="with --share-only: also each monitor hook's share of fit (median), largest first")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "MONITORS", "EPOCHS"))
    args = parser.parse_args(argv)
    if args.worker:
        model, monitors, epochs = args.worker
        print(json.dumps(worker(model, monitors, int(epochs) or None)))
        return
    epochs = 2 if args.quick and args.epochs is None else (args.epochs or 0)
    repeats = 2 if args.quick else args.repeats
    print(f"monitor cost per demo model; {machine()}; median of {repeats} fresh processes, interleaved")
    rows = []
    if args.share_only:
        for model in args.models.split(","):
            runs = [run_worker("benchmarks.bench_overhead", model, "all", str(epochs)) for _ in range(repeats)]
            shares = sorted(sum(r["monitors"].values()) / r["total"] for r in runs)
            rows.append([model, f"{median(r['total'] for r in runs):.1f}",
                         " / ".join(f"{100 * x:.2f}%" for x in (shares[0], median(shares), shares[-1]))])
            if args.by_hook:
                hooks = {h: median(r["hooks"].get(h, 0.0) / r["total"] for r in runs) for h in runs[0]["hooks"]}
                for hook, share in sorted(hooks.items(), key=lambda kv: -kv[1])[:6]:
                    rows.append(["", "", f"{hook}: {100 * share:.2f}%"])
        print(table(["model", "fit s (monitored)", "time inside monitors: min / median / max"], rows))
        return
    for model in args.models.split(","):
        probe = run_worker("benchmarks.bench_overhead", model, "all", str(epochs))
        variants = ["none", "all"] + (probe["names"] if len(probe["names"]) > 1 else [])
        runs = defaultdict(list)
        for _ in range(repeats):
            for v in variants:
                runs[v].append(run_worker("benchmarks.bench_overhead", model, v, str(epochs)))
        base = median(r["total"] for r in runs["none"])
        for v in variants[1:]:
            inside = median(sum(r["monitors"].values()) / r["total"] for r in runs[v])
            ab = median(r["total"] for r in runs[v]) / base
            rows.append([model, "all monitors" if v == "all" else v, f"{base:.1f}",
                         f"{100 * inside:.2f}%", f"{100 * (ab - 1):+.1f}%"])
    print(table(["model", "monitors", "fit s (none)", "time inside monitors", "A/B run time vs none"], rows))


if __name__ == "__main__":
    main()
