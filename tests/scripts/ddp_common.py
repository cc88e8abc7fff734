"""What the DDP test scripts share: waiting for the ranks Lightning started, so that the test sees their exit codes."""

import json
from pathlib import Path

import torch.distributed as dist


def wait_for_other_ranks(trainer, out: Path, timeout: float = 120.0) -> None:
    """On rank 0 of a multi-process run: wait for the processes Lightning's launcher started (ranks 1..N-1) and
    write their exit codes to ``out/other_ranks_exit_codes.json``.

    Pass the first Trainer of the script: only its launcher started processes (later Trainers find them
    running). Without this, rank 0 could end before another rank has written its results, and a rank that
    crashed after rank 0's last collective would go unnoticed.
    """
    # Every rank leaves its process group explicitly: a gloo group torn down by the interpreter's exit can abort
    # the process (SIGABRT) after its work is done, which the test would read as a crashed rank.
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    launcher = trainer.strategy.launcher
    if trainer.global_rank != 0 or launcher is None or not getattr(launcher, "procs", None):
        return
    codes = [proc.wait(timeout=timeout) for proc in launcher.procs]
    (out / "other_ranks_exit_codes.json").write_text(json.dumps(codes))
