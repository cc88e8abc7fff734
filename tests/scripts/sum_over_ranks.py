"""Sum a tensor over N gloo processes with lightning_recanalysis.parallel.distributed.sum_over_ranks and write each
rank's result, with the agreements built on it (agreement.all_true, first_found): ``python sum_over_ranks.py OUT_DIR
N PORT``. Run by tests/test_distributed.py. The ranks are forked from this process once it has imported torch and
the package (a spawned rank would import them again)."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_recanalysis.parallel.agreement import all_true, first_found
from lightning_recanalysis.parallel.distributed import sum_over_ranks
from ddp_common import end_rank  # noqa: E402


def rank_main(rank: int, world: int, port: int, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mine = torch.tensor([1.0, float(rank), 10.0 ** rank], dtype=torch.float64)
        total = sum_over_ranks(mine)
        pairs = dist.new_group([0, 1])  # a subgroup: ranks 0 and 1 only
        sub = sum_over_ranks(mine, pairs) if rank < 2 else None
        flags = [True, rank != 1, rank != 2, False]
        flags_pair = all_true(flags, group=pairs) if rank < 2 else None
        found = first_found(f"layout-{rank}" if rank > 0 else None, ValueError(f"none on {rank}"))
        problem = first_found(None, ValueError(f"none on {rank}") if rank > 0 else None)
        (out / f"rank{rank}.json").write_text(json.dumps({
            "total": total.tolist(), "mine_unchanged": mine.tolist(), "pair": None if sub is None else sub.tolist(),
            "all_true": all_true(flags), "all_true_pair": flags_pair, "found": [found[0], repr(found[1])],
            "problem": [problem[0], repr(problem[1])]}))
        end_rank()  # exit 0 now: a gloo group torn down at exit can abort a finished rank
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    out, world, port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    mp.start_processes(rank_main, args=(world, port, out), nprocs=world, join=True, start_method="fork")
