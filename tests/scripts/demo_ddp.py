"""Train small demo models with all their monitors and AnalysisReport, on DEVICES CPU processes (Lightning "ddp",
gloo) or one, and dump what each rank holds: ``python demo_ddp.py MODELS OUT_DIR DEVICES``.

MODELS is a comma-separated list of demo models (``all``: every one); they train one after the other in the same
processes, which share the start-up (importing torch and Lightning takes longer than training a small model).
Every model trains on the same rows whatever DEVICES is: the builder's synthetic data drawn smaller, loaders of
single rows in order, rank r of N taking rows r, r + N, r + 2N, ... (a DistributedSampler without shuffling:
Lightning's own would shuffle the training rows), and a per-rank batch of ``BATCH // N`` rows, so that step k of
every run covers the same rows (all ranks' shards of it together) as step k of one process. Per model and rank,
``OUT_DIR/<model>/rank<r>.json`` holds each monitor's history, the metric keys this rank sent to its loggers, the
files AnalysisReport wrote and the run's shape. Run by tests/demos/test_ddp.py, through the scenario groups of
tests/scripts/scenario_groups.py (:func:`scenario`).
"""

import json
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch.utils.data import DataLoader, DistributedSampler

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_common import wait_for_other_ranks  # noqa: E402

from demo_models.__main__ import _builder  # noqa: E402
from demo_models.data.batches import TensorBatches  # noqa: E402
from demo_models.registry import MODELS  # noqa: E402
from lightning_recanalysis import AnalysisReport, GradientConflictMonitor  # noqa: E402

#: Synthetic rows of every model: after the builder's train/validation split (10% or 20% held out) both parts
#: are multiples of 2 * 128, so that two ranks split every batch evenly and the DistributedSampler pads nothing.
N_SAMPLES = 2560
#: Rows per step over all ranks: 9 training steps per epoch for DCNv2, DIN and TIN (2304 rows), 8 for the
#: multi-task models (2048 rows); FieldPairCorrelationMonitor chooses its values from the first 8 steps.
BATCH = 256
EPOCHS = 2


class KeyRecorder(Logger):
    """Remembers the metric keys this rank sends to its loggers. TensorBoardLogger writes on rank 0 only, so its
    files cannot show what the other ranks would have logged; this logger, called on every rank, does."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    @property
    def name(self) -> str:
        return "keys"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.keys.update(metrics)


def shard(loader: DataLoader, devices: int) -> DataLoader:
    """This rank's rows of the builder's loader, one sample per index and in order: rank r takes rows r, r + N, ...

    The rank is known before the first fit: Lightning starts ranks 1..N-1 with ``LOCAL_RANK`` set (one node).
    """
    assert isinstance(loader.dataset, TensorBatches), type(loader.dataset)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    sampler = DistributedSampler(loader.dataset, num_replicas=devices, rank=rank, shuffle=False, drop_last=False)
    assert len(loader.dataset) % devices == 0, "uneven shards: the sampler would repeat rows"
    return DataLoader(loader.dataset, batch_size=BATCH // devices, sampler=sampler)


def run(model: str, out: Path, devices: int) -> pl.Trainer:
    pl.seed_everything(0, verbose=False)
    experiment = _builder(model)(model=model, data="synthetic", seed=0, monitors=True, n_samples=N_SAMPLES)
    monitors = list(experiment.callbacks)
    for monitor in monitors:
        monitor.strict = True  # an analysis error fails the run instead of becoming a warning
        if isinstance(monitor, GradientConflictMonitor):
            monitor.every_n_steps = 2  # several probes per epoch (the demo's 50 would probe only batch 0)
    report = AnalysisReport()
    recorder = KeyRecorder()
    trainer = pl.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        # TensorBoard first: AnalysisReport writes into the first logger's log_dir.
        logger=[TensorBoardLogger(str(out), name=model, version=0, default_hp_metric=False), recorder],
        callbacks=[*monitors, report], deterministic=True, log_every_n_steps=4, use_distributed_sampler=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    start = time.perf_counter()
    trainer.fit(experiment.module, shard(experiment.train_loader, devices),
                shard(experiment.val_loader, devices) if experiment.val_loader is not None else None)
    dump = {
        "model": model,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "train_batches_per_rank": len(trainer.train_dataloader),
        "fit_seconds": time.perf_counter() - start,
        "monitors": {type(m).__name__: {"history": m.history, "failures": m.failures} for m in monitors},
        "logged_keys": sorted(recorder.keys),
        "report_files": sorted(os.path.relpath(p, out) for p in report.paths.values()),
    }
    (out / model).mkdir(parents=True, exist_ok=True)
    (out / model / f"rank{trainer.global_rank}.json").write_text(json.dumps(dump))
    return trainer


def scenario(out: Path, models: str, devices: int) -> pl.Trainer:
    """Every model of ``models`` (comma-separated, or ``all``), one after the other; returns the first Trainer."""
    torch.set_num_threads(1)
    first = None
    for model in list(MODELS) if models == "all" else models.split(","):
        trainer = run(model, out, devices)
        first = first or trainer
    return first


if __name__ == "__main__":
    out_dir = Path(sys.argv[2])
    wait_for_other_ranks(scenario(out_dir, sys.argv[1], int(sys.argv[3])), out_dir)
