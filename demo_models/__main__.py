"""``python -m demo_models MODEL [--data NAME] [--epochs N] [--out DIR] [--seed S] [--no-monitors]
[--accelerator cpu|gpu|auto] [--precision 32-true|bf16-mixed|...]``

Trains a demo model with the lightning_recanalysis monitors attached and writes TensorBoard event files (and the
end-of-run report) under ``DIR/MODEL-DATA``. ``MODEL`` may be ``all``. A multi-task model (shared_bottom, mmoe,
ple, stem) with monitors first trains its two single-task references (a Shared-Bottom on each task alone, under
``DIR/reference_TASK-DATA``; once per data set and call) for the entanglement monitor's conflict subsets;
``--references EARLIER_DIR`` reuses those of an earlier call instead.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from pathlib import Path

from .progress import EpochLines, log_every, quiet_lightning, say
from .references import MULTITASK_MODELS, existing_references, train_references
from .registry import DATASETS, MODELS


def _builder(model: str):
    module_name, func = MODELS[model].split(":")
    return getattr(importlib.import_module(module_name), func)


def run(model: str, data: str | None, epochs: int | None, out: Path, seed: int, monitors: bool,
        quiet: bool = False, only: list[str] | None = None, accelerator: str = "cpu",
        precision: str = "32-true", references: dict | None = None, n_samples: int | None = None) -> Path:
    """Train one demo model; returns its log directory.

    ``only`` keeps just the monitors whose class names are listed (the benchmarks time each monitor alone).
    ``references`` ({task: run directory}) are the single-task references of a multi-task model; without them
    a multi-task model with monitors trains its own first. ``n_samples``: rows of the synthetic data (default:
    the demo's own size).
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    data = data or DATASETS[model][0]
    if data not in DATASETS[model]:
        raise SystemExit(f"model '{model}' takes --data one of {list(DATASETS[model])}, not '{data}'")
    options = {}
    if monitors and model in MULTITASK_MODELS:
        options["references"] = references or train_references(data, seed, out, epochs, quiet, accelerator,
                                                               n_samples=n_samples)
    if n_samples is not None:
        options["n_samples"] = n_samples
    say(f"{model} on {data}: building the data and the model")
    pl.seed_everything(seed, workers=True, verbose=False)
    experiment = _builder(model)(model=model, data=data, seed=seed, monitors=monitors, **options)
    if only is not None:
        experiment.callbacks = [c for c in experiment.callbacks if type(c).__name__ in only]
    max_epochs = epochs if epochs is not None else experiment.max_epochs
    callbacks = list(experiment.callbacks) + [EpochLines(model)]
    if monitors and experiment.callbacks:
        from lightning_recanalysis import AnalysisReport

        callbacks.append(AnalysisReport())
    logger = TensorBoardLogger(str(out), name=f"{model}-{data}", version="monitors" if monitors else "no-monitors",
                               default_hp_metric=False)
    # A demo run is a fresh fit, not a resume: the previous run's event files, checkpoints and report in this
    # fixed directory would otherwise sit beside the new ones, and TensorBoard would draw both runs as one.
    previous = Path(logger.log_dir)
    if previous.is_dir():
        shutil.rmtree(previous)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        logger=logger,
        callbacks=callbacks,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        enable_progress_bar=not quiet and sys.stderr.isatty(),  # a redrawn bar is noise in a log
        enable_model_summary=False,
        log_every_n_steps=log_every(experiment.train_loader),
        # Bit-reproducible on CPU. On a GPU, deterministic cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before the
        # process starts and some scatter kernels have no deterministic version: warn instead of failing.
        deterministic=True if accelerator == "cpu" else "warn",
    )
    say(f"{model} on {data}: {experiment.description} ({max_epochs} epochs) -> {logger.log_dir}")
    start = time.perf_counter()
    trainer.fit(experiment.module, experiment.train_loader, experiment.val_loader)
    say(f"{model} on {data}: trained in {time.perf_counter() - start:.1f} s")
    return Path(logger.log_dir)


def _summary(logs: dict[str, Path], out: Path, seconds: float) -> None:
    """The end of a call: every report written, the command that opens TensorBoard, and a comparison to try."""
    reports = {name: log / "report.html" for name, log in logs.items() if (log / "report.html").exists()}
    took = f"{seconds // 60:.0f} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"
    say(f"done: {len(logs)} model{'s' if len(logs) > 1 else ''} trained and analysed in {took}")
    if reports:
        width = max(len(name) for name in reports)
        print("\nReports:", flush=True)
        for name, path in reports.items():
            print(f"  {name:<{width}}  {path}", flush=True)
    print(f"\nTensorBoard:  . .venv/bin/activate && tensorboard --logdir {out}", flush=True)
    pairs = [("mmoe", "stem"), ("dcnv2", "dcnv2_per_feature")]
    for a, b in pairs:
        if a in logs and b in logs:
            print(f"Compare:      python -m lightning_recanalysis compare {logs[a]} {logs[b]} "
                  f"--out {out}/compare_{a}_{b}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=[*MODELS, "all"], help="demo model to train, or 'all'")
    parser.add_argument("--data", default=None,
                        help="data set: " + "; ".join(f"{m}: {', '.join(d)}" for m, d in DATASETS.items())
                        + " (default: the first of each)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the model's own)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="log directory (default: runs/)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--samples", type=int, default=None, metavar="N",
                        help="rows of the synthetic data, for a quick try (default: each demo's own)")
    parser.add_argument("--no-monitors", action="store_true", help="train without any analysis callback")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (one line per epoch all the same)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: these models are small, and one thread per process is "
                        "several times faster than two when anything else shares the cores)")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu", "cuda", "auto"],
                        help="where to train (default cpu: the demo models are small)")
    parser.add_argument("--precision", default="32-true",
                        help="Lightning precision, e.g. 32-true (default), bf16-mixed, 16-mixed")
    parser.add_argument("--references", type=Path, default=None, metavar="EARLIER_OUT",
                        help="multi-task models: reuse the single-task references an earlier call trained under "
                        "EARLIER_OUT (its --out) instead of training them again")
    args = parser.parse_args(argv)
    quiet_lightning()
    begin = time.perf_counter()
    import torch

    torch.set_num_threads(max(1, args.threads))
    models = list(MODELS) if args.model == "all" else [args.model]
    references: dict[str, dict] = {}  # per data set: trained once for all the multi-task models of this call
    logs: dict[str, Path] = {}
    for model in models:
        data = args.data if args.data in DATASETS[model] or args.model != "all" else None
        data = data or DATASETS[model][0]
        if model in MULTITASK_MODELS and not args.no_monitors and data not in references:
            references[data] = (existing_references(data, args.references) if args.references is not None else
                                 train_references(data, args.seed, args.out, args.epochs, args.quiet, args.accelerator,
                                                  n_samples=args.samples))
        logs[model] = run(model, data, args.epochs, args.out, args.seed, not args.no_monitors, quiet=args.quiet,
                          accelerator=args.accelerator, precision=args.precision, references=references.get(data),
                          n_samples=args.samples)
    _summary(logs, args.out, time.perf_counter() - begin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
