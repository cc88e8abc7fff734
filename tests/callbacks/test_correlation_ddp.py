"""Two CPU processes under Lightning's DDP: the counts of both ranks are summed, so the ground truth equals one
process's over the same data; both ranks keep the same history; only rank 0 writes files."""

import json
from pathlib import Path

import pytest

from ddp_helpers import SCRIPTS, run_ddp_script

SCRIPT = SCRIPTS / "correlation_ddp.py"


def _run(out: Path, devices: int) -> list:
    out.mkdir()
    proc = run_ddp_script(SCRIPT, out, devices, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("history_rank*.json"))]


@pytest.mark.slow
def test_two_process_ddp_counts_equal_one_process(tmp_path):
    rank0, rank1 = _run(tmp_path / "ddp", 2)
    (single,) = _run(tmp_path / "single", 1)
    assert rank0 == rank1  # every rank gathered the same counts and read the same (replicated) weights
    assert [(r["epoch"], r["step"]) for r in rank0] == [(0, 8), (1, 16)]  # 1024 rows per rank, batches of 128
    assert [(r["epoch"], r["step"]) for r in single] == [(0, 16), (1, 32)]
    for ddp, one in zip(rank0, single):
        # The data are the same 2048 rows, split between the ranks: the summed counts are one process's.
        assert ddp["samples"] == one["samples"] == 2048
        assert ddp["same_category_mi"] == one["same_category_mi"]
        for a, b in zip(ddp["targets"], one["targets"]):
            for key in ("target_category", "samples", "behavior_categories", "ground_truth_mi", "ground_truth"):
                assert a[key] == b[key], key
    # Only rank 0 wrote event files.
    assert len(list((tmp_path / "ddp" / "tb").rglob("events.out.tfevents.*"))) == 1
