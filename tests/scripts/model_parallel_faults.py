"""Faults on one rank only under FSDP2 (Lightning's ModelParallelStrategy, 2 CPU processes, gloo), where every
backward pass makes collectives: ``python model_parallel_faults.py OUT_DIR SCENARIO``. Each rank writes what its
monitors recorded. Run by tests/sharding/test_model_parallel.py (through the scenario groups of
tests/scripts/scenario_groups.py, :func:`scenario`: what a scenario plants is undone when it ends), with a
timeout: a rank left waiting fails the test.

SCENARIO:
- ``nan_task``: at batch 2, rank 1 reports a NaN loss for the task ``click`` (training itself is unaffected);
- ``missing_task``: at batch 2, rank 1 leaves the task ``buy`` out of ``task_losses``;
- ``discovery``: rank 1 cannot read the cross layer's input on its first batch (planted), rank 0 can;
- ``spectrum_fault``: rank 1's spectrum of the first field fails at the end of epoch 0 (planted), between the
  reads of the two FSDP2-sharded tables.
"""

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, Dataset, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_common import wait_for_other_ranks  # noqa: E402

import lightning_recanalysis.model.spectrum_analysis as spectrum_analysis  # noqa: E402
import lightning_recanalysis.model.cross.discovery as cross_discovery  # noqa: E402

FIELDS = {"user": 40, "item": 60}
DIM = 8
N_SAMPLES, BATCH = 1024, 64  # 8 batches per rank


class Rows(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.stack([torch.randint(0, d, (N_SAMPLES,), generator=g) for d in FIELDS.values()], 1)
        self.click = ((self.x[:, 0] % 2) ^ (self.x[:, 1] % 3 == 0)).float()
        self.buy = (self.x[:, 1] % 2).float()

    def __len__(self) -> int:
        return N_SAMPLES

    def __getitem__(self, i):
        return {"features": self.x[i], "label": self.click[i], "buy": self.buy[i]}


class TwoTaskDCN(pl.LightningModule):
    """A table per feature, a DCNv2 cross layer, a shared tower (an FSDP2 unit of its own, so that a backward
    through it all-gathers its weights) and one head per task."""

    task_names = ("click", "buy")

    def __init__(self, scenario: str) -> None:
        super().__init__()
        self.scenario = scenario
        self.embedding_dict = nn.ModuleDict({n: nn.Embedding(d, DIM) for n, d in FIELDS.items()})
        side = len(FIELDS) * DIM
        self.cross = nn.Linear(side, side)
        self.tower = nn.Sequential(nn.Linear(side, 16), nn.ReLU())
        self.heads = nn.Linear(16, 2)
        self.task_losses = {}

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for table in self.embedding_dict.values():
            fully_shard(table, mesh=mesh)
        fully_shard(self.tower, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([self.embedding_dict[n](features[:, i]) for i, n in enumerate(FIELDS)], dim=1)
        return self.heads(self.tower(x0 * self.cross(x0) + x0))

    def training_step(self, batch, batch_idx):
        logits = self(batch["features"])
        bce = nn.functional.binary_cross_entropy_with_logits
        click, buy = bce(logits[:, 0], batch["label"]), bce(logits[:, 1], batch["buy"])
        losses = {"click": click, "buy": buy}
        if batch_idx == 2 and self.global_rank == 1:
            if self.scenario == "nan_task":
                losses["click"] = click * float("nan")  # reported only: the training loss stays finite
            elif self.scenario == "missing_task":
                del losses["buy"]
        self.task_losses = losses
        return click + buy

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def scenario(out: Path, which: str) -> pl.Trainer:
    """One scenario (SCENARIO above); the functions it plants faults in are restored when it ends, so that other
    scenarios can follow in the same processes."""
    originals = [(cross_discovery, "match_cross_input", cross_discovery.match_cross_input),
                 (spectrum_analysis, "singular_values_from_gram", spectrum_analysis.singular_values_from_gram)]
    try:
        return _run(out, which)
    finally:
        for owner, attribute, original in originals:
            setattr(owner, attribute, original)


def _run(out: Path, scenario: str) -> pl.Trainer:
    from lightning_recanalysis import EmbeddingSpectrumMonitor, FieldPairCorrelationMonitor, GradientConflictMonitor

    pl.seed_everything(0, verbose=False)
    if scenario == "discovery" and int(os.environ.get("LOCAL_RANK", 0)) == 1:
        def unreadable(x0, lookups, kernel_name="cross layer"):
            raise ValueError("planted on rank 1: fields 'user' and 'item' match the same columns (several fields)")
        cross_discovery.match_cross_input = unreadable
    if scenario == "spectrum_fault" and int(os.environ.get("LOCAL_RANK", 0)) == 1:
        original, calls = spectrum_analysis.singular_values_from_gram, []

        def failing(*args, **kwargs):  # calls 1-2: the two fields at fit start; 3: the first field after epoch 0
            calls.append(1)
            if len(calls) == 3:
                raise MemoryError("planted on rank 1")
            return original(*args, **kwargs)
        spectrum_analysis.singular_values_from_gram = failing  # where the monitor's spectra are taken
    if scenario == "spectrum_fault":
        monitors = [EmbeddingSpectrumMonitor(cross_layer=None)]
    elif scenario == "discovery":
        monitors = [EmbeddingSpectrumMonitor(strict=True),
                    FieldPairCorrelationMonitor(list(FIELDS), field_dims=list(FIELDS.values()), strict=True)]
    else:
        monitors = [GradientConflictMonitor(every_n_steps=1, strict=True)]
    trainer = pl.Trainer(max_epochs=2 if scenario == "spectrum_fault" else 1, accelerator="cpu", devices=2,
                         callbacks=monitors, strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
                         logger=False, use_distributed_sampler=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    data = Rows()
    sampler = DistributedSampler(data, num_replicas=2, rank=int(os.environ.get("LOCAL_RANK", 0)), shuffle=False)
    trainer.fit(TwoTaskDCN(scenario), DataLoader(data, batch_size=BATCH, sampler=sampler))
    (out / f"{scenario}_rank{trainer.global_rank}.json").write_text(
        json.dumps({type(m).__name__: m.history for m in monitors} | {"failures": [m.failures for m in monitors]}))
    return trainer


if __name__ == "__main__":
    torch.set_num_threads(1)
    out_dir = Path(sys.argv[1])
    wait_for_other_ranks(scenario(out_dir, sys.argv[2]), out_dir)
