"""What the DDP test scripts share: waiting for the ranks Lightning started, so that the test sees their exit codes,
and ending a rank whose work is done."""

import json
import os
import sys
from pathlib import Path


def end_rank() -> None:
    """End this process now, its work done and its results written: flush the output and exit 0 without the
    interpreter's teardown. A gloo process group (and TorchRec's threads) torn down at exit can abort a process
    (SIGABRT, "terminate called without an active exception") after everything it was asked to do succeeded,
    which a test would read as a crashed rank. A rank that fails before this point still exits non-zero."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def wait_for_other_ranks(trainer, out: Path, timeout: float = 120.0) -> None:
    """At the end of a multi-process script, on every rank: rank 0 waits for the processes Lightning's launcher
    started (ranks 1..N-1) and writes their exit codes to ``out/other_ranks_exit_codes.json``; then every rank
    ends (:func:`end_rank`).

    Pass the first Trainer of the script: only its launcher started processes (later Trainers find them
    running). Without this, rank 0 could end before another rank has written its results, and a rank that
    crashed after rank 0's last collective would go unnoticed.
    """
    launcher = trainer.strategy.launcher
    if trainer.global_rank == 0 and launcher is not None and getattr(launcher, "procs", None):
        codes = [proc.wait(timeout=timeout) for proc in launcher.procs]
        (out / "other_ranks_exit_codes.json").write_text(json.dumps(codes))
    end_rank()
