"""Both multi-task monitors in two CPU processes under Lightning's DDP: the same logged keys and values on both
ranks (statistics pooled over ranks), and only rank 0 writes event files. The runs are tests/scripts/conflict_ddp.py's,
in the ``ddp`` and ``single`` scenario groups (tests/scripts/scenario_groups.py)."""

import json

import pytest


@pytest.mark.slow
@pytest.mark.scenario_groups("ddp", "single")
def test_two_process_ddp_pools_over_ranks_and_only_rank0_writes(group_runs):
    run = group_runs("ddp")
    assert run.returncode == 0, run.stderr[-3000:]
    tmp_path = run.out / "conflict"
    rank0 = json.loads((tmp_path / "history_rank0.json").read_text())
    rank1 = json.loads((tmp_path / "history_rank1.json").read_text())
    for name in ("GradientConflictMonitor", "EntanglementMonitor"):
        assert len(rank0[name]) == 1 and rank0[name][0]["world_size"] == 2
        assert rank0[name][0]["metrics"].keys() == rank1[name][0]["metrics"].keys()
        assert rank0[name] == rank1[name]  # pooled over ranks: every rank holds the same numbers
    conflict = rank0["GradientConflictMonitor"][0]
    # 1600 training rows, 800 per rank, batches of 64: 13 batches per rank, probed at 0, 2, ..., 12 on each rank.
    assert rank0["train_batches_per_rank"] == 13
    assert conflict["measured_steps"] == 2 * 7
    assert "conflict/embedding/creative/click_vs_purchase/cosine_mean" in conflict["metrics"]
    # Every validation pair of both ranks' shards (400 rows, 200 per rank).
    assert rank0["EntanglementMonitor"][0]["metrics"]["entanglement/pairs"] == 400
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) == 1
    # The conflict subsets depend on the references and the data alone: with the training frequencies summed
    # over ranks, two processes select the same pairs and find the same subsets as one process.
    run = group_runs("single")
    assert run.returncode == 0, run.stderr[-3000:]
    single = run.out / "conflict"
    one = json.loads((single / "history_rank0.json").read_text())["EntanglementMonitor"][0]["conflict"]
    two = rank0["EntanglementMonitor"][0]["conflict"]
    assert two["validation_pairs"] == one["validation_pairs"] == 400
    assert 0 < two["pairs"] == one["pairs"] < 400  # frequent users and items only
    assert two["modes"] == one["modes"] and all(m["pairs"] > 0 for m in one["modes"].values())
