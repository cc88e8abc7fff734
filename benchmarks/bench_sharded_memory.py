"""Extra peak memory per rank of the spectrum of a table sharded over two CPU processes (gloo).

Each rank makes its own shard of a ROWS x COLS float32 table (never the whole table) and wraps it as a DTensor,
``Shard(0)`` (FSDP2's rows) or ``Shard(1)`` (tensor parallelism's columns); then
:func:`lightning_recanalysis.parallel.sharding.sharded_gram` reads the whole table. Extra peak memory is the growth of the
rank's resident high-water mark during that call (after a first call on a 32,768-row shard has loaded the kernels and touched the BLAS workspace that products of a chunk's size use),
as a share of the bytes of the rank's shard. The time is printed beside it, with the time of one float32 Gram
of the rank's own shard (the floor of a row-sharded pass).

    python -m benchmarks.bench_sharded_memory [--rows 2000000] [--cols 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ._common import machine, peak_rss_bytes, table


def _worker(rank: int, world: int, init: str, rows: int, cols: int, placement: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Shard

        from lightning_recanalysis.parallel import sharding

        mesh = init_device_mesh("cpu", (world,))
        dim = 0 if placement == "Shard(0)" else 1
        g = torch.Generator().manual_seed(rank)
        local_shape = (rows // world, cols) if dim == 0 else (rows, cols // world)
        local = torch.randn(*local_shape, generator=g)
        small = DTensor.from_local(local[:32768].clone(), mesh, [Shard(dim)])
        sharding.sharded_gram(small)  # load the kernels and the collectives' code before measuring
        weight = DTensor.from_local(local, mesh, [Shard(dim)])
        extras, seconds = [], []
        for _ in range(2):  # the first analysis of the run, then one more (nothing is left to load)
            gc.collect()
            dist.barrier()
            before = peak_rss_bytes()
            start = time.perf_counter()
            sharding.sharded_gram(weight)
            seconds.append(time.perf_counter() - start)
            extras.append(max(0, peak_rss_bytes() - before))
        start = time.perf_counter()
        local.T @ local
        floor = time.perf_counter() - start
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({"extra": extras[0], "extra_again": extras[1], "shard": local.numel() * local.element_size(),
                       "seconds": seconds[1], "floor": floor}, f)
    finally:
        dist.destroy_process_group()


def measure(rows: int, cols: int, placement: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(2, os.path.join(tmp, "init"), rows, cols, placement, tmp), nprocs=2,
                           join=True, start_method="spawn")
        return [json.load(open(os.path.join(tmp, f"rank{r}.json"))) for r in range(2)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--cols", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"# {args.rows:,} x {args.cols} float32 table over 2 processes; {machine()}; one torch thread per rank")
    out = []
    for placement in ("Shard(0)", "Shard(1)"):
        runs = [r for _ in range(args.repeats) for r in measure(args.rows, args.cols, placement)]
        shares = sorted(r["extra"] / r["shard"] for r in runs)
        again = sorted(r["extra_again"] / r["shard"] for r in runs)
        ratio = sorted(r["seconds"] / r["floor"] for r in runs)
        out.append([placement, f"{runs[0]['shard'] / 2**20:.0f}",
                    f"{statistics.median(r['extra'] for r in runs) / 2**20:.1f}",
                    f"{shares[0]:.1%} / {statistics.median(shares):.1%} / {shares[-1]:.1%}",
                    f"{again[0]:.1%} / {statistics.median(again):.1%} / {again[-1]:.1%}",
                    f"{statistics.median(r['seconds'] for r in runs):.3f}",
                    f"{ratio[0]:.1f} / {statistics.median(ratio):.1f} / {ratio[-1]:.1f}"])
    print(table(["placement", "shard MiB", "extra peak MiB (median)", "extra / shard, first call (min/med/max)",
                 "second call",
                 "seconds", "time / own-shard float32 Gram (min / median / max)"], out))


if __name__ == "__main__":
    main()
