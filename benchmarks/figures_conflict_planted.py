"""The docs' planted-conflict figures: what GradientConflictMonitor finds on each multi-task demo, over seeds.

    python -m benchmarks.figures_conflict_planted [--seeds 0 1 2] [--models shared_bottom mmoe ple stem]

Per model and seed, in a fresh process: the demo as ``python -m demo_models MODEL --seed S`` builds it (``synthetic``
data, its default epochs and probe cadence, both multi-task monitors, no references), trained with every hook of
the monitors timed. Printed: the verdict of the finding on the planted field (``creative``), the other fields the
findings flag (none expected: the tasks agree on them), the last epoch's mean gradient cosine on ``creative`` and
the lowest one on an agreeing field, the probes of the last epoch, and the monitors' share of ``fit``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict

from ._common import run_worker, table


def worker(model: str, seed: int) -> dict:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger

    from demo_models.multitask import build

    from .bench_overhead import _instrument

    torch.set_num_threads(1)
    pl.seed_everything(seed, verbose=False)
    experiment = build(model, "synthetic", seed, monitors=True)
    conflict = experiment.callbacks[0]
    seconds: dict = defaultdict(float)
    _instrument(experiment.callbacks, seconds)
    with tempfile.TemporaryDirectory() as out:
        trainer = pl.Trainer(max_epochs=experiment.max_epochs, accelerator="cpu", devices=1,
                             logger=TensorBoardLogger(out, name="figures"), callbacks=experiment.callbacks,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        start = time.perf_counter()
        trainer.fit(experiment.module, experiment.train_loader, experiment.val_loader)
        total = time.perf_counter() - start
    planted = experiment.extra["conflict_field"]
    findings = conflict.current_findings()
    last = conflict.records[-1]
    # The shared embedding (STEM: its shared chunk, where the tasks meet; its task chunks take one task each).
    name = next((n for n in last.views if n.endswith("[shared]")), next(iter(last.views)))
    cosines = {field: stats.cosine_mean for field, pairs in last.views[name].fields.items() for stats in pairs.values()}
    return {"verdict": [f.verdict for f in findings if planted in f.subject],
            "others": sorted({f.subject for f in findings if planted not in f.subject}),
            "planted_cosine": cosines.get(planted), "lowest_other": min(v for k, v in cosines.items() if k != planted),
            "probes": last.measured_steps, "share": sum(seconds.values()) / total, "fit_s": total}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["shared_bottom", "mmoe", "ple", "stem"])
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SEED"))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    rows = []
    for model in args.models:
        for seed in args.seeds:
            r = run_worker("benchmarks.figures_conflict_planted", model, str(seed))
            rows.append([model, str(seed), ", ".join(r["verdict"]) or "none", ", ".join(r["others"]) or "none",
                         f"{r['planted_cosine']:+.2f}", f"{r['lowest_other']:+.2f}", str(r["probes"]),
                         f"{r['share']:.2%}", f"{r['fit_s']:.1f}"])
    print(table(["model", "seed", "planted field", "other fields flagged", "its cosine, last epoch",
                 "lowest agreeing field", "probes, last epoch", "monitors' share", "fit s"], rows))


if __name__ == "__main__":
    main()
