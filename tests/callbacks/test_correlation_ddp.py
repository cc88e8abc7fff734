"""Two CPU processes under Lightning's DDP: the counts of both ranks are summed, so the ground truth equals one
process's over the same data; both ranks keep the same history; only rank 0 writes files. The runs are
tests/scripts/correlation_ddp.py's, in the ``ddp`` and ``single`` scenario groups (tests/scripts/scenario_groups.py)."""

import json

import pytest


def _run(group_runs, group: str) -> list:
    run = group_runs(group)
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted((run.out / "correlation").glob("history_rank*.json"))]


@pytest.mark.slow
@pytest.mark.scenario_groups("ddp", "single")
def test_two_process_ddp_counts_equal_one_process(group_runs):
    rank0, rank1 = _run(group_runs, "ddp")
    (single,) = _run(group_runs, "single")
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
    assert len(list((group_runs("ddp").out / "correlation" / "tb").rglob("events.out.tfevents.*"))) == 1
