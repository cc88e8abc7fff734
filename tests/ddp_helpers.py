"""The one way the tests start several processes, so that a hang fails the test instead of blocking the suite.

:func:`run_ddp_script` runs a script of ``tests/scripts/`` (which starts its ranks itself: Lightning's launcher,
``torch.multiprocessing``) and kills the whole process group after ``timeout``; :func:`run_ranks` runs a function of
a test module in N gloo processes through it. :class:`GroupRuns` runs the scenario groups of
``tests/scripts/scenario_groups.py`` (the scenarios of one engine in the same processes, started once) in the
background, each once per test session, with the same limit and kill; tests read them through the ``group_runs``
fixture (tests/conftest.py). No test starts processes any other way.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from scenario_groups import GROUPS  # noqa: E402  (names and limits only: groups.py imports torch, not the scenarios)

#: What a distributed launch leaves in the environment: a child that inherited them would join a fixed rendezvous
#: (MASTER_PORT) instead of choosing a free port, and two scripts running at once (pytest-xdist, GroupRuns) would
#: collide.
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "RANK", "GROUP_RANK", "WORLD_SIZE",
                    "LOCAL_WORLD_SIZE")


def script_env() -> dict[str, str]:
    """The environment of every script: this process's, less :data:`LAUNCH_VARIABLES`, with one intra-op thread."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return env


def run_ddp_script(script: Path, *args, timeout: float) -> subprocess.CompletedProcess:
    """Run ``script`` with ``args`` in a process group of its own; fail if it has not ended within ``timeout``.

    Lightning's launcher starts the other ranks as children of the script, in the same process group, so a hang
    is ended by killing the whole group: no rank is left behind waiting in a collective.
    """
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=script_env(), start_new_session=True)
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
    function of a test file: the script imports that file anew, then forks the processes, each of which writes
    what the test checks into ``out_dir``."""
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


@dataclass
class GroupResult:
    """How a scenario group ended: its output folder (one subfolder per scenario label), exit status and output."""

    out: Path
    returncode: int
    stdout: str
    stderr: str


class GroupRuns:
    """The scenario groups of ``tests/scripts/scenario_groups.py`` that a test session needs, each run once, in the
    background, at most ``parallel`` at a time, into ``root`` (one folder for the whole session: under
    pytest-xdist, the workers' common base folder).

    One process of the session runs them: the first whose :meth:`claim` finds them unclaimed (the only process of a
    plain run; under pytest-xdist, one of the workers). It starts them in the order claimed (a group a test waits for
    goes first) and kills a group's whole process group at the group's limit, as :func:`run_ddp_script` does. As
    each group ends, ``<root>/<group>.json`` says how (exit status, killed or not), beside its ``.stdout`` and
    ``.stderr``; :meth:`result`, in any process, waits for that file and fails the test if the group was killed.
    """

    def __init__(self, root: Path, parallel: int = 2) -> None:
        self.root, self.parallel = Path(root), parallel
        self.owner: bool | None = None  # whether this process runs the groups (None: not claimed yet)
        self._queued: list[str] = []
        self._running: dict[str, tuple[subprocess.Popen, float]] = {}
        self._ended: set[str] = set()
        self._changed = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def _claim(self) -> Path:
        return self.root / "claim.json"

    def claim(self, names) -> None:
        """Run ``names`` here, in the background, unless another process of the session has claimed them."""
        if self.owner is not None:
            return
        unknown = [name for name in names if name not in GROUPS]
        if unknown:
            raise KeyError(f"no scenario group {unknown} in tests/scripts/scenario_groups.py: {sorted(GROUPS)}")
        draft = self.root / f"claim.{os.getpid()}.json"
        draft.write_text(json.dumps({"pid": os.getpid(), "groups": list(names)}))
        try:
            os.link(draft, self._claim)  # atomic: fails where another process has linked its claim first
            self.owner = True
        except FileExistsError:
            self.owner = False
        draft.unlink()
        if self.owner:
            with self._changed:
                self._queued = list(names)
            self._thread = threading.Thread(target=self._schedule, name="scenario-groups", daemon=True)
            self._thread.start()

    def result(self, name: str) -> GroupResult:
        """Wait for group ``name`` to end; fail the test if it was killed at its limit."""
        status = self.root / f"{name}.json"
        claim = json.loads(self._claim.read_text())
        if name not in claim["groups"]:
            pytest.fail(f"scenario group {name!r} is not among those this session runs ({claim['groups']}): "
                        "does the test name it in its scenario_groups mark?")
        if self.owner:
            with self._changed:
                if name in self._queued:  # a test waits for it: it goes next
                    self._queued.remove(name)
                    self._queued.insert(0, name)
                    self._changed.notify_all()
                while name not in self._ended:
                    self._changed.wait()
        else:
            while not status.exists():
                if not _alive(claim["pid"]):
                    pytest.fail(f"process {claim['pid']}, which ran the scenario groups, ended before {name} did")
                time.sleep(0.2)
        ended = json.loads(status.read_text())
        stdout, stderr = ((self.root / f"{name}.{kind}").read_text(errors="replace") for kind in ("stdout", "stderr"))
        result = GroupResult(self.root / name, ended["returncode"], stdout, stderr)
        if ended["killed"]:
            pytest.fail(f"scenario group {name} did not end within {GROUPS[name][0]} s: a rank hangs?\n"
                        f"{result.stderr[-3000:]}")
        return result

    def close(self, wait: bool) -> None:
        """End of this process's session: let the groups run to their end (``wait``: other processes may still
        read them), else kill every group still running and start no other."""
        if not self.owner:
            return
        with self._changed:
            if wait:
                while self._queued or self._running:
                    self._changed.wait()
            self._closed = True
            self._queued.clear()
            for proc, _ in self._running.values():
                _kill_group(proc)
            self._changed.notify_all()
        self._thread.join(timeout=30)

    def _schedule(self) -> None:
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                for name, (proc, deadline) in list(self._running.items()):
                    killed = proc.poll() is None and now > deadline
                    if killed:
                        _kill_group(proc)
                    if proc.poll() is not None:
                        del self._running[name]
                        draft = self.root / f"{name}.json.draft"
                        draft.write_text(json.dumps({"returncode": proc.returncode, "killed": killed}))
                        draft.replace(self.root / f"{name}.json")  # whole, for the processes that poll for it
                        self._ended.add(name)
                        self._changed.notify_all()
                while self._queued and len(self._running) < self.parallel:
                    name = self._queued.pop(0)
                    self._running[name] = (self._launch(name), time.monotonic() + GROUPS[name][0])
                self._changed.wait(timeout=0.2)

    def _launch(self, name: str) -> subprocess.Popen:
        out = self.root / name
        out.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{name}.stdout", "w") as stdout, open(self.root / f"{name}.stderr", "w") as stderr:
            return subprocess.Popen([sys.executable, str(SCRIPTS / "scenario_groups.py"), name, str(out)],
                                    stdout=stdout, stderr=stderr, env=script_env(), start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s whole process group (it leads a session of its own: the ranks it started are in it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
