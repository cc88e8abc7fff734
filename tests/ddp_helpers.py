"""The one way the tests start several processes, so that a hang fails the test instead of blocking the suite.

:func:`run_ddp_script` runs a script of ``tests/scripts/`` (which starts its ranks itself: Lightning's launcher,
``torch.multiprocessing``) and kills the whole process group after ``timeout``; :func:`run_ranks` runs a function of
a test module in N gloo processes through it. No test starts processes any other way.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent / "scripts"


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


def run_ranks(function, world: int, out_dir: Path, *, timeout: float) -> None:
    """Call ``function(rank, world, out_dir)`` in ``world`` processes that share one gloo process group, through
    :func:`run_ddp_script` (``tests/scripts/spawn_ranks.py``); fail the test, with the ranks' stderr, if any of
    them fails or they have not all ended within ``timeout`` seconds. ``function`` must be a module-level
    function of a test file: each process imports that file anew and writes what the test checks into
    ``out_dir``."""
    module_file = inspect.getsourcefile(function)
    proc = run_ddp_script(SCRIPTS / "spawn_ranks.py", module_file, function.__name__, world, out_dir, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{function.__name__} on {world} processes exited with {proc.returncode}:\n{proc.stderr[-3000:]}")


def other_ranks_exit_codes(out: Path) -> list[int]:
    """Exit codes of ranks 1..N-1, as rank 0 saw them end (tests/scripts/ddp_common.py)."""
    return json.loads((out / "other_ranks_exit_codes.json").read_text())


def canonical(value) -> str:
    """JSON with sorted keys: compares records exactly, NaN included (NaN != NaN, but "NaN" == "NaN")."""
    return json.dumps(value, sort_keys=True)
