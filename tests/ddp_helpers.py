"""Running a two-process DDP test script so that a hang fails the test instead of blocking the suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def run_ddp_script(script: Path, *args, timeout: float) -> subprocess.CompletedProcess:
    """Run ``script`` with ``args`` in a process group of its own; fail if it has not ended within ``timeout``.

    Lightning's launcher starts the other ranks as children of the script, in the same process group, so a hang
    is ended by killing the whole group: no rank is left behind waiting in a collective.
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script.name} {' '.join(map(str, args))} did not end within {timeout} s: a rank hangs?\n"
                    f"{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def other_ranks_exit_codes(out: Path) -> list[int]:
    """Exit codes of ranks 1..N-1, as rank 0 saw them end (tests/scripts/ddp_common.py)."""
    return json.loads((out / "other_ranks_exit_codes.json").read_text())


def canonical(value) -> str:
    """JSON with sorted keys: compares records exactly, NaN included (NaN != NaN, but "NaN" == "NaN")."""
    return json.dumps(value, sort_keys=True)
