"""Read DTensor tables of every placement on WORLD CPU processes (gloo) and save what each rank computed:
``python sharding_ddp.py OUT_DIR WORLD``. Run by tests/sharding/test_sharding.py, which compares with float64
oracles. The ranks are forked from this process once it has imported torch and the package (a spawned rank would
import them again, seconds each); nothing here has run an operator before the fork."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch import nn
from torch.distributed.tensor.placement_types import _StridedShard

from lightning_recanalysis import EmbeddingSpectrumMonitor
from lightning_recanalysis.parallel import sharding
from ddp_common import end_rank  # noqa: E402

ROWS, WIDTH = 2001, 12
IDS = [0, 5, 1000, 1001, 2000, 5]


def table() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    low_rank = torch.randn(ROWS, 3, generator=g) @ torch.randn(3, WIDTH, generator=g)
    return low_rank + 1e-3 * torch.randn(ROWS, WIDTH, generator=g)


def kernel() -> torch.Tensor:
    return torch.randn(WIDTH, 5, generator=torch.Generator().manual_seed(3))


def layouts(world: int):
    if world == 2:
        yield "shard0", (2,), [Shard(0)]
        yield "shard1", (2,), [Shard(1)]
        yield "replicate", (2,), [Replicate()]
    else:
        yield "shard0_shard1", (2, 2), [Shard(0), Shard(1)]
        yield "replicate_shard0", (2, 2), [Replicate(), Shard(0)]
        yield "shard0_shard0", (2, 2), [Shard(0), Shard(0)]
        yield "shard1_replicate", (2, 2), [Shard(1), Replicate()]
        # Lightning's recipe for FSDP2 beside tensor parallelism: a table sharded on one dimension of the 2 x 2
        # mesh (each data-parallel pair holds its own copy), read over that dimension's group.
        yield "dp_submesh_shard0", (2, 2), [Shard(0)], "data_parallel"
        yield "tp_submesh_shard1", (2, 2), [Shard(1)], "tensor_parallel"


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        full, w = table(), kernel()
        results = {}
        for name, mesh_shape, placements, *dim in layouts(world):
            names = ("data_parallel", "tensor_parallel")[:len(mesh_shape)]
            mesh = init_device_mesh("cpu", mesh_shape, mesh_dim_names=names)
            mesh = mesh[dim[0]] if dim else mesh
            dt = distribute_tensor(full, mesh, placements)
            results[name] = {
                "whole": sharding.sharded_gram(dt).gram,
                "rows": sharding.sharded_gram(dt, rows=(100, 1500)).gram,
                "columns": sharding.sharded_gram(dt, rows=(990, 1010), columns=(3, 11)).gram,
                "transform": sharding.sharded_gram(dt, rows=(0, 1200), transform=lambda c: c @ w).gram,
                "counts": torch.tensor([sharding.sharded_gram(dt, rows=(100, 1500)).rows]),
                "lookup": sharding.lookup_rows(dt, IDS),
                "full": sharding.full_tensor(dt),
                "kind": sharding.layout_of(dt).kind,
            }
        # A failure on one rank is raised on every rank at the same collective, and the next read still pairs up.
        mesh = init_device_mesh("cpu", (world,))
        for placement in (Shard(0), Shard(1)):
            dt = distribute_tensor(full, mesh, [placement])
            original = sharding.local_blocks
            if rank == 1:
                sharding.local_blocks = lambda t: (_ for _ in ()).throw(MemoryError("planted on rank 1"))
            try:
                sharding.sharded_gram(dt)
                results[f"failure_{placement}"] = "no error"
            except Exception as err:
                results[f"failure_{placement}"] = type(err).__name__
            finally:
                sharding.local_blocks = original
            results[f"after_failure_{placement}"] = sharding.sharded_gram(dt).gram
        # An id outside the table is an error on every rank, not a row of zeros; the next read pairs up again.
        for placement in (Shard(0), Shard(1)):
            dt = distribute_tensor(full, mesh, [placement])
            try:
                sharding.lookup_rows(dt, [0, ROWS])
                results[f"outside_{placement}"] = "no error"
            except Exception as err:
                results[f"outside_{placement}"] = f"{type(err).__name__}: {err}"
            results[f"after_outside_{placement}"] = sharding.lookup_rows(dt, IDS)
        # Layouts that cannot be read exactly are refused, with the placement named.
        for name, placement in (("partial", Partial()), ("strided", _StridedShard(0, split_factor=2))):
            odd = DTensor.from_local(full[:10].clone(), mesh, [placement], run_check=False)
            try:
                sharding.check_readable(odd, "model.table.weight")
                results[f"refused_{name}"] = "accepted"
            except ValueError as err:
                results[f"refused_{name}"] = str(err)
        # The monitor refuses such a table before the first step, naming it and its placement.
        model = nn.Module()
        model.table = nn.Embedding(10, 4)
        monitor = EmbeddingSpectrumMonitor(cross_layer=None)
        monitor.setup(None, model, "fit")
        model.table.weight = nn.Parameter(DTensor.from_local(torch.zeros(10, 4), mesh,
                                                             [_StridedShard(0, split_factor=2)], run_check=False))
        try:
            monitor._read_weights_as_sharded(model)
            results["monitor_refusal"] = "accepted"
        except ValueError as err:
            results["monitor_refusal"] = str(err)
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
        end_rank()  # exit 0 now: a gloo group torn down at exit can abort a finished rank
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    out_dir, world = Path(sys.argv[1]), int(sys.argv[2])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(worker, args=(world, str(out_dir / "init"), str(out_dir)), nprocs=world, join=True,
                       start_method="fork")
