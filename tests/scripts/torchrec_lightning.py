"""A LightningModule whose configure_model hands its TorchRec EmbeddingBagCollection to DistributedModelParallel,
trained under Lightning's ModelParallelStrategy on 2 CPU processes (gloo) with EmbeddingSpectrumMonitor attached:
``python torchrec_lightning.py OUT_DIR SHARDING`` (``table_wise`` or ``column_wise``). Rank r writes the monitor's
history; rank 0 also every table at fit start and at each epoch end as TorchRec's own sharded lookup returns it
(a bag of one id per row), the oracle of tests/sharding/test_torchrec_sharding.py, which runs it through the scenario
groups of tests/scripts/scenario_groups.py (:func:`scenario`)."""

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torchrec
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_common import wait_for_other_ranks  # noqa: E402

from lightning_recanalysis import EmbeddingSpectrumMonitor  # noqa: E402

TABLES = {"user": 500, "item": 307}
WIDTH = 8


def kjt(ids: torch.Tensor, lengths: torch.Tensor) -> KeyedJaggedTensor:
    return KeyedJaggedTensor.from_lengths_sync(keys=list(TABLES), values=ids, lengths=lengths)


class Recommender(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ebc = torchrec.EmbeddingBagCollection(
            tables=[torchrec.EmbeddingBagConfig(name=f"t_{n}", embedding_dim=WIDTH, num_embeddings=rows,
                                                feature_names=[n]) for n, rows in TABLES.items()],
            device=torch.device("cpu"))
        self.head = nn.Linear(WIDTH * len(TABLES), 1)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        return self.head(self.ebc(features).values()).squeeze(-1)


class TorchRecModule(pl.LightningModule):
    def __init__(self, sharding: str) -> None:
        super().__init__()
        self.sharding = sharding
        self.model = Recommender()

    def configure_model(self) -> None:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
        from torchrec.distributed.types import ShardingEnv

        # The tables learn in the backward pass (TorchRec's fused optimizer); the head through configure_optimizers.
        sharder = EmbeddingBagCollectionSharder(fused_params={"optimizer": EmbOptimType.EXACT_SGD,
                                                              "learning_rate": 0.5})
        constraints = {f"t_{n}": ParameterConstraints(sharding_types=[self.sharding], min_partition=4)
                       for n in TABLES}
        planner = EmbeddingShardingPlanner(topology=Topology(world_size=dist.get_world_size(), compute_device="cpu"),
                                           constraints=constraints)
        plan = planner.collective_plan(self.model, [sharder], dist.GroupMember.WORLD)
        self.model = DistributedModelParallel(self.model, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
                                              device=torch.device("cpu"), plan=plan, sharders=[sharder])

    def forward(self, features):
        return self.model(features)

    def training_step(self, batch, batch_idx):
        features, label = batch
        return nn.functional.binary_cross_entropy_with_logits(self(features), label)

    def configure_optimizers(self):
        return torch.optim.SGD([p for n, p in self.named_parameters() if ".head." in n], lr=0.1)


def collate(rows):
    x = torch.stack([r[0] for r in rows])
    return kjt(x.T.reshape(-1), torch.ones(x.numel(), dtype=torch.long)), torch.stack([r[1] for r in rows])


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randint(0, rows, (1024,), generator=g) for rows in TABLES.values()], 1)
    data = TensorDataset(x, ((x[:, 0] % 2) ^ (x[:, 1] % 3 == 0)).float())
    rank = int(os.environ.get("LOCAL_RANK", 0))
    return DataLoader(data, batch_size=64, sampler=DistributedSampler(data, 2, rank, shuffle=False), collate_fn=collate)


class LookupEveryRow(pl.Callback):
    """Every row of every table as the sharded model looks it up (every rank takes part), after the monitor."""

    def __init__(self) -> None:
        self.tables: list[dict[str, torch.Tensor]] = []

    def _take(self, pl_module) -> None:
        batch = max(TABLES.values())
        lengths = torch.cat([(torch.arange(batch) < rows).long() for rows in TABLES.values()])
        with torch.no_grad():
            pooled = pl_module.model.module.ebc(kjt(torch.cat([torch.arange(r) for r in TABLES.values()]),
                                                    lengths)).to_dict()
        self.tables.append({n: pooled[n][:rows].clone() for n, rows in TABLES.items()})

    def on_fit_start(self, trainer, pl_module) -> None:
        self._take(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._take(pl_module)


def scenario(out: Path, sharding: str) -> pl.Trainer:
    pl.seed_everything(0)
    monitor = EmbeddingSpectrumMonitor(strict=True)
    oracle = LookupEveryRow()
    trainer = pl.Trainer(accelerator="cpu", devices=2, max_epochs=2, callbacks=[monitor, oracle],
                         strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(TorchRecModule(sharding), loader())
    (out / f"history_rank{trainer.global_rank}.json").write_text(json.dumps(monitor.history))
    if trainer.global_rank == 0:
        torch.save(oracle.tables, out / "tables.pt")
    return trainer


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    wait_for_other_ranks(scenario(out_dir, sys.argv[2]), out_dir)
