"""Train demo models with all their monitors on 2 CPU processes, either under Lightning's ModelParallelStrategy
with every embedding table (and then the whole model) wrapped by FSDP2's ``fully_shard``, or under plain DDP, on
the same rows in the same order: ``python model_parallel_demos.py MODELS OUT_DIR MODE [--no-monitors]``, MODE
``fsdp`` or ``ddp``; or ``tp`` (tensor parallelism: every embedding table split by columns over the two
processes, which both train on every row) and ``single`` (one process on every row, what ``tp`` must log). Per
model, rank 0 writes the monitors' histories and the gathered weights after fit. Run by
tests/sharding/test_model_parallel.py, through the scenario groups of tests/scripts/scenario_groups.py
(:func:`scenario`)."""

import json
import os
import sys
import types
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module
from torch.utils.data import DataLoader, DistributedSampler

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_common import wait_for_other_ranks  # noqa: E402

from demo_models.__main__ import _builder  # noqa: E402
from lightning_recanalysis import GradientConflictMonitor  # noqa: E402

N_SAMPLES = 2560  # as tests/scripts/demo_ddp.py: both splits divide evenly between two ranks


def configure_model(self) -> None:
    """FSDP2 as a user would apply it: each embedding table its own unit (rows split, Shard(0)), then the rest.

    TIN reads its position table's weight directly in ``forward`` (not through the module's own forward, where a
    unit of its own would be gathered): that table stays in the root unit, sharded by rows all the same."""
    mesh = self.device_mesh["data_parallel"]
    for name, module in self.named_modules():
        if isinstance(module, nn.Embedding) and name != "position_embedding":
            fully_shard(module, mesh=mesh)
    fully_shard(self, mesh=mesh)


def configure_model_tp(self) -> None:
    """Tensor parallelism as torch documents it for an embedding: each table's columns split over the
    tensor-parallel processes (``ColwiseParallel``, weight Shard(1)), the looked-up rows gathered whole. (TIN's
    position table, read directly in ``forward``, stays whole.)"""
    mesh = self.device_mesh["tensor_parallel"]
    for name, module in self.named_modules():
        if isinstance(module, nn.Embedding) and name != "position_embedding":
            parallelize_module(module, mesh, ColwiseParallel(output_layouts=Replicate()))


def rank_rows(loader: DataLoader, replicas: int = 2) -> DataLoader:
    """This rank's share of the rows, in order (of two: rank r takes rows r, r + 2, ...), 128 to a batch."""
    rank = int(os.environ.get("LOCAL_RANK", 0)) if replicas > 1 else 0
    sampler = DistributedSampler(loader.dataset, num_replicas=replicas, rank=rank, shuffle=False)
    return DataLoader(loader.dataset, batch_size=128, sampler=sampler)


def run(model: str, out: Path, mode: str, with_monitors: bool) -> pl.Trainer:
    pl.seed_everything(0, verbose=False)
    experiment = _builder(model)(model=model, data="synthetic", seed=0, monitors=True, n_samples=N_SAMPLES)
    monitors = list(experiment.callbacks) if with_monitors else []
    for monitor in monitors:
        monitor.strict = True
        if isinstance(monitor, GradientConflictMonitor):
            monitor.every_n_steps = 3
    if mode == "fsdp":
        experiment.module.configure_model = types.MethodType(configure_model, experiment.module)
        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    elif mode == "tp":
        # Dropout draws from the generator that DTensor's random-op tracker also moves under tensor
        # parallelism: without it the tp and single runs train to the same weights, so they can be compared.
        for module in experiment.module.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        experiment.module.configure_model = types.MethodType(configure_model_tp, experiment.module)
        strategy = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=2)
    else:
        strategy = "ddp" if mode == "ddp" else "auto"
        for module in experiment.module.modules() if mode == "single" else ():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    replicas = 2 if mode in ("fsdp", "ddp") else 1
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1 if mode == "single" else 2, strategy=strategy,
                         callbacks=monitors,
                         logger=False, use_distributed_sampler=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    val = rank_rows(experiment.val_loader, replicas) if experiment.val_loader is not None else None
    trainer.fit(experiment.module, rank_rows(experiment.train_loader, replicas), val)
    weights = {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
               for name, p in experiment.module.named_parameters()}
    if trainer.global_rank == 0:
        tag = f"{model}_{mode}_{'monitors' if with_monitors else 'plain'}"
        placements = {name: [repr(p) for p in getattr(param, "placements", [])]
                      for name, param in experiment.module.named_parameters()}
        (out / f"{tag}.json").write_text(json.dumps({type(m).__name__: m.history for m in monitors}))
        (out / f"{tag}_placements.json").write_text(json.dumps(placements))
        torch.save(weights, out / f"{tag}.pt")
    return trainer


def scenario(out: Path, models: str, mode: str, with_monitors: bool = True) -> pl.Trainer:
    """Every model of ``models`` (comma-separated), one after the other; returns the first Trainer."""
    torch.set_num_threads(1)
    first = None
    for name in models.split(","):
        trainer = run(name, out, mode, with_monitors)
        first = first or trainer
    return first


if __name__ == "__main__":
    out_dir = Path(sys.argv[2])
    wait_for_other_ranks(scenario(out_dir, sys.argv[1], sys.argv[3], "--no-monitors" not in sys.argv), out_dir)
