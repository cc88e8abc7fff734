"""Run one function of a test module in N gloo processes: ``python spawn_ranks.py MODULE_FILE FUNCTION N OUT_DIR``.

This process imports the module from its file (with what it imports: torch, the package), then forks the N
processes, which so find it imported (a spawned process would import it again, seconds each); each joins one gloo
process group of N processes (initialised through a file in OUT_DIR), calls ``FUNCTION(rank, world, out_dir)``
and leaves the group. Started by ``tests/ddp_helpers.py``'s ``run_ranks``, which ends the whole process group if
it has not ended in time.
"""

import importlib.util
import sys
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_common import end_rank  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]


def load_function(module_file: str, name: str):
    """``name`` of the module at ``module_file``, imported with the tests folder and the repository on the path
    (as pytest imports it: ``from helpers import ...`` and the demo package resolve)."""
    for folder in (str(TESTS.parent), str(TESTS)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"ranks_{Path(module_file).stem}", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def rank_main(rank: int, function, world: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/gloo_init", rank=rank, world_size=world)
    try:
        function(rank, world, Path(out_dir))
        end_rank()  # exit 0 now: a gloo group torn down at exit can abort a finished rank
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    module_file, name, world, out_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    mp.start_processes(rank_main, args=(load_function(module_file, name), world, out_dir), nprocs=world, join=True,
                       start_method="fork")
