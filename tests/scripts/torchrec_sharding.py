"""Shard a TorchRec EmbeddingBagCollection with DistributedModelParallel on 2 CPU processes (gloo) and read its
sharded state through lightning_recanalysis.parallel.sharding: ``python torchrec_sharding.py OUT_DIR KINDS`` with
KINDS a comma-separated list of ``table_wise``, ``column_wise`` and ``table_column_wise``, sharded one after the
other in the same processes. Per kind, rank r writes ``OUT_DIR/<kind>/rank<r>.pt``: per table its layout, the
Gram and row counts of the whole table and of a row range, and looked-up rows, beside every row of every table
as TorchRec's own sharded lookup returns it. Run by tests/sharding/test_torchrec_sharding.py.

The ranks are forked from this process once it has imported torch, TorchRec and the package (a spawned rank would
import them again, seconds each); nothing here has run an operator or started a thread before the fork."""

import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchrec
from ddp_common import end_rank  # noqa: E402
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from lightning_recanalysis.parallel import sharding

TABLES = {"t0": 1000, "t1": 1007, "t2": 1014}
WIDTH = 16
IDS = [0, 3, 999, 500, 3]


def worker(rank: int, world: int, init: str, out: str, kinds: list[str]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        for kind in kinds:
            shard_and_read(rank, world, Path(out) / kind, kind)
        end_rank()  # exit 0 now: a gloo group torn down at exit can abort a finished rank
    finally:
        dist.destroy_process_group()


def shard_and_read(rank: int, world: int, out: Path, kind: str) -> None:
    torch.manual_seed(0)
    configs = [torchrec.EmbeddingBagConfig(name=name, embedding_dim=WIDTH, num_embeddings=rows,
                                           feature_names=[f"f_{name}"]) for name, rows in TABLES.items()]
    ebc = torchrec.EmbeddingBagCollection(tables=configs, device=torch.device("cpu"))
    constraints = {name: ParameterConstraints(sharding_types=[kind], min_partition=4) for name in TABLES}
    sharder = EmbeddingBagCollectionSharder()
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device="cpu"),
                                       constraints=constraints)
    plan = planner.collective_plan(ebc, [sharder], dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(ebc, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
                                   device=torch.device("cpu"), plan=plan, sharders=[sharder])
    # The oracle: every row of every table as TorchRec's own sharded lookup returns it (a bag of one id per
    # row), independent of how this project reads the shards.
    batch = max(TABLES.values())
    lengths = torch.cat([(torch.arange(batch) < rows).long() for rows in TABLES.values()])
    values = torch.cat([torch.arange(rows) for rows in TABLES.values()])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=[f"f_{n}" for n in TABLES], values=values, lengths=lengths)
    with torch.no_grad():
        looked_up = dmp(kjt).wait().to_dict()
    oracle = {f"embedding_bags.{n}.weight": looked_up[f"f_{n}"][:rows].clone() for n, rows in TABLES.items()}
    results = {"oracle": oracle}
    for key, weight in dmp.state_dict().items():
        layout = sharding.layout_of(weight)
        results[key] = {
            "type": type(weight).__name__,
            "kind": layout.kind,
            "local_shards": len(weight.local_shards()),
            "whole": sharding.sharded_gram(weight).gram,
            "range": sharding.sharded_gram(weight, rows=(10, 900), columns=(2, 14)).gram,
            "rows": torch.tensor(sharding.sharded_gram(weight, rows=(10, 900)).rows),
            "lookup": sharding.lookup_rows(weight, IDS),
        }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    out_dir, kinds = Path(sys.argv[1]), sys.argv[2].split(",")
    init = os.path.join(tempfile.mkdtemp(), "init")
    mp.start_processes(worker, args=(2, init, str(out_dir), kinds), nprocs=2, join=True, start_method="fork")
