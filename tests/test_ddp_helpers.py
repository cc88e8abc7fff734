"""The one runner for tests that start processes: a rank that hangs or fails fails the test, with every rank ended,
and no test starts processes any other way."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from ddp_helpers import run_ranks

TESTS = Path(__file__).resolve().parent

# Files that start a process without being a multi-process test: a fresh interpreter that imports the package, the
# TensorBoard server the report is checked against, the docs build, and the demos and Chromium of the browser test.
# Each has its own timeout.
SINGLE_PROCESS_STARTS = {"test_imports.py", "report/test_report.py", "docs/test_build.py", "browser/test_reports.py"}
STARTS = re.compile(r"\bsubprocess\b|\bmp\.spawn\b|start_processes|torchrun|\bmultiprocessing\b")


def rank_0_waits_for_rank_1_forever(rank: int, world: int, out_dir: Path) -> None:
    (out_dir / f"pid{rank}").write_text(str(os.getpid()))
    if rank == 0:
        dist.barrier()  # rank 1 never arrives: gloo's own timeout is 30 minutes
    else:
        time.sleep(3600)


def rank_1_raises(rank: int, world: int, out_dir: Path) -> None:
    if rank == 1:
        raise ValueError("planted on rank 1")


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped by init has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow
def test_a_hanging_rank_fails_the_test_and_every_rank_is_ended(tmp_path):
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="did not end within 20 s"):
        run_ranks(rank_0_waits_for_rank_1_forever, 2, tmp_path, timeout=20)
    assert time.monotonic() - started < 60
    pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)]
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.slow
def test_a_failing_rank_fails_the_test_with_its_error(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="planted on rank 1"):
        run_ranks(rank_1_raises, 2, tmp_path, timeout=120)


def test_no_test_starts_processes_except_through_the_runner():
    """Scripts under tests/scripts/ are started by the runner; every other start of a process is listed here."""
    starters = []
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(TESTS).as_posix()
        if relative.startswith("scripts/") or relative in {"ddp_helpers.py", "test_ddp_helpers.py"}:
            continue
        if STARTS.search(path.read_text()) and relative not in SINGLE_PROCESS_STARTS:
            starters.append(relative)
    assert starters == [], f"start processes through tests/ddp_helpers.py (run_ranks, run_ddp_script): {starters}"
