"""Train a small DCN on 2 CPU processes under Lightning's ModelParallelStrategy (FSDP2 row shards, or tensor
parallel column shards of the embedding) with the monitors attached, and save what each rank logged beside the
gathered weights at every analysis: ``python model_parallel.py OUT_DIR MODE``, MODE ``fsdp``, ``tp`` or ``fsdp_tp``
(or ``ddp`` and ``single``, the data-parallel layouts whose counts they must match). Run by
tests/sharding/test_model_parallel.py (through the scenario groups of tests/scripts/scenario_groups.py,
:func:`scenario`), which recomputes every record in one process from those weights."""

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_common import wait_for_other_ranks  # noqa: E402

FIELD_DIMS = (7, 50, 301)
DIM = 6


class ShardedDCN(pl.LightningModule):
    """One concatenated table, a DCNv2 full-matrix cross layer and a linear head; sharded in configure_model."""

    def __init__(self, mode: str = "none") -> None:
        super().__init__()
        self.mode = mode
        self.embedding = nn.Embedding(sum(FIELD_DIMS), DIM)
        self.register_buffer("offsets", torch.tensor([0, FIELD_DIMS[0], FIELD_DIMS[0] + FIELD_DIMS[1]]))
        side = len(FIELD_DIMS) * DIM
        self.cross = nn.Linear(side, side)
        self.head = nn.Linear(side, 1)

    def configure_model(self) -> None:
        if self.mode == "fsdp":
            mesh = self.device_mesh["data_parallel"]
            fully_shard(self.embedding, mesh=mesh)
            fully_shard(self.cross, mesh=mesh)
            fully_shard(self, mesh=mesh)
        elif self.mode == "fsdp_tp":
            # Lightning's recipe for both on 4 processes: FSDP2 on the data-parallel dimension only, so each
            # tensor-parallel coordinate holds its own copy of the row-sharded table (a 1-D sub-mesh).
            mesh = self.device_mesh["data_parallel"]
            fully_shard(self.embedding, mesh=mesh)
            fully_shard(self.cross, mesh=mesh)
            fully_shard(self, mesh=mesh)
        elif self.mode == "tp":
            # Each rank holds half of every row's columns: the embedding weight is Shard(1).
            parallelize_module(self.embedding, self.device_mesh["tensor_parallel"],
                               ColwiseParallel(output_layouts=Replicate()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(x + self.offsets).flatten(1)
        return self.head(x0 * self.cross(x0) + x0).squeeze(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def loader(mode: str) -> DataLoader:
    """Rows in order, split between the data-parallel ranks (two for FSDP2 and DDP, one for tensor parallelism
    and one process): runs with the same data-parallel layout count the same batches."""
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randint(0, d, (2048,), generator=g) for d in FIELD_DIMS], 1)
    y = ((x[:, 0] % 2) ^ (x[:, 2] % 3 == 0)).float()
    replicas = 2 if mode in ("fsdp", "ddp", "fsdp_tp") else 1
    # The data-parallel coordinate: rank // 2 on the 2 x 2 mesh (data_parallel, tensor_parallel).
    rank = int(os.environ.get("LOCAL_RANK", 0)) // (2 if mode == "fsdp_tp" else 1) if replicas > 1 else 0
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=128, sampler=DistributedSampler(data, replicas, rank, shuffle=False))


def monitors():
    from lightning_recanalysis import EmbeddingSpectrumMonitor, FieldPairCorrelationMonitor

    return [EmbeddingSpectrumMonitor(field_dims={"a": 7, "b": 50, "c": 301}, strict=True),
            FieldPairCorrelationMonitor(["a", "b", "c"], features=0, label=1, field_dims=list(FIELD_DIMS),
                                        cross_layer="cross", strict=True)]


class Snapshots(pl.Callback):
    """The whole weights at fit start and at every epoch end, gathered (in a test only: tables are small)."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def _take(self, pl_module) -> None:
        self.weights.append({name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
                             for name, p in pl_module.named_parameters()})

    def on_fit_start(self, trainer, pl_module) -> None:
        self._take(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._take(pl_module)


def scenario(out: Path, mode: str) -> pl.Trainer:
    pl.seed_everything(0)
    strategy = {"fsdp": lambda: ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
                "tp": lambda: ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=2),
                "fsdp_tp": lambda: ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=2),
                "ddp": lambda: "ddp", "single": lambda: "auto"}[mode]()
    attached = monitors()
    snapshots = Snapshots()
    trainer = pl.Trainer(accelerator="cpu", devices={"single": 1, "fsdp_tp": 4}.get(mode, 2), strategy=strategy,
                         max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[*attached, snapshots], use_distributed_sampler=False)
    model = ShardedDCN(mode)
    trainer.fit(model, loader(mode))
    rank = trainer.global_rank
    tag = "monitors" + ("" if mode in ("fsdp", "tp", "fsdp_tp") else f"_{mode}")
    (out / f"{tag}_history_rank{rank}.json").write_text(
        json.dumps({type(m).__name__: m.history for m in attached}))
    kinds = {name: [str(p) for p in getattr(param, "placements", [])] for name, param in model.named_parameters()}
    (out / f"{tag}_placements_rank{rank}.json").write_text(json.dumps(kinds))
    if rank == 0:
        torch.save(snapshots.weights, out / f"{tag}_weights.pt")
    return trainer


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    wait_for_other_ranks(scenario(out_dir, sys.argv[2]), out_dir)
