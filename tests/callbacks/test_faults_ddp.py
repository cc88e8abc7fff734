"""One rank's analysis fails before (or instead of) the collective that pools the ranks, in a two-process CPU DDP
run with ``strict=False``: every rank skips that epoch's analysis together, with a warning, and training goes on.

Before the fix (monitors that caught the exception on the failing rank only): EmbeddingSpectrumMonitor with a
``row_sharded`` table hung (rank 0 waited in the Gram all-reduce for rank 1, gone back to training);
GradientConflictMonitor and FeatureCorrelationMonitor let the exception out, which ended training on both ranks
(rank 0 with gloo's "Connection closed by peer"); FieldPairCorrelationMonitor kept an epoch-0 record on rank 0
that rank 1 lacked. An error in the data that one rank's counts find still stops training, now on every rank
with an error that says so (before: rank 1's ValueError, and on rank 0 gloo's "Connection closed by peer").
The faults and models are in tests/scripts/fault_ddp.py, run last in the ``ddp`` scenario group
(tests/scripts/scenario_groups.py).
"""

import json

import pytest

from ddp_helpers import canonical, other_ranks_exit_codes
from scenario_groups import DDP_FAULTS

#: (stage, epoch) of the records left after two epochs, epoch 0's analysis skipped on both ranks; and the
#: function that raised on rank 1.
EXPECTED = {
    "spectrum": ([("init", 0), ("epoch", 1)], "row_normalized_gram"),
    "conflict": ([("train", 1)], "cosine_sums"),
    "correlation": ([("epoch", 1)], "flush"),
    "field_pair": ([("epoch", 1)], "field_pair_matrices"),
}


@pytest.mark.slow
@pytest.mark.scenario_groups("ddp")
def test_a_failure_on_one_rank_skips_the_analysis_on_every_rank(group_runs):
    # The group runs every scenario of EXPECTED, then bad_label; a hang is killed at its limit and fails the test.
    run = group_runs("ddp")
    assert run.returncode == 0, run.stderr[-3000:]
    assert other_ranks_exit_codes(run.out) == [0]
    tmp_path = run.out / "faults"
    assert DDP_FAULTS.split(",") == [*EXPECTED, "bad_label"]  # what the group ran
    for scenario, (shape, function) in EXPECTED.items():
        rank0, rank1 = (json.loads((tmp_path / f"{scenario}_rank{r}.json").read_text()) for r in (0, 1))
        assert rank0["error"] is rank1["error"] is None, scenario
        # The same history on both ranks, epoch 0 missing from both.
        assert [(r["stage"], r["epoch"]) for r in rank0["history"]] == shape, scenario
        assert canonical(rank0["history"]) == canonical(rank1["history"]), scenario
        # One skipped analysis on each rank, each with one warning saying why.
        assert rank0["failures"] == rank1["failures"] == 1, scenario
        (warned0,), (warned1,) = rank0["warnings"], rank1["warnings"]
        assert "failed and is skipped (on 1 other rank(s); every rank skips it)" in warned0, scenario
        assert f"RuntimeError: injected fault in {function} on rank 1; every rank skips it" in warned1, scenario
        # Training went on in step: the gradient all-reduces paired up, so the replicas stayed equal.
        assert rank0["final_weights_sum"] == rank1["final_weights_sum"], scenario

    # An error in the data on rank 1 alone stops training on both ranks, each saying why, instead of leaving
    # rank 0 to find its peer gone in the counts' sync.
    rank0, rank1 = (json.loads((tmp_path / f"bad_label_rank{r}.json").read_text()) for r in (0, 1))
    assert rank1["error"].startswith("ValueError: FeatureCorrelationMonitor: batch field 'label' (label)")
    assert rank0["error"].startswith("RuntimeError: FeatureCorrelationMonitor: counting the batches for the "
                                     "correlation analysis of epoch 0 stopped on 1 other rank(s) with an error in "
                                     "the data")
    assert rank0["history"] == rank1["history"] == []
