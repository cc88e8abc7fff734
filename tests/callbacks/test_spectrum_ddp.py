"""Two CPU processes under Lightning's DDP: same history on both ranks, equal to one process where the weights are
equal, and only rank 0 writes files. The runs are tests/scripts/spectrum_ddp.py's, in the ``ddp`` and ``single``
scenario groups (tests/scripts/scenario_groups.py)."""

import json

import pytest
import torch

from helpers import numpy_information_abundance, numpy_row_normalized_singular_values


def _run(group_runs, group: str):
    run = group_runs(group)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.out / "spectrum"


@pytest.mark.slow
@pytest.mark.scenario_groups("ddp", "single")
def test_two_process_ddp_equals_single_process(group_runs):
    ddp, single = _run(group_runs, "ddp"), _run(group_runs, "single")
    rank0 = json.loads((ddp / "history_rank0.json").read_text())
    rank1 = json.loads((ddp / "history_rank1.json").read_text())
    assert rank0 == rank1  # every rank computed the same thing
    one = json.loads((single / "history_rank0.json").read_text())
    # Same seed, same initial weights: the fit-start baseline is identical to the single-process run's.
    assert rank0[0] == one[0]
    assert [(r["stage"], r["epoch"], r["step"]) for r in rank0] == [("init", 0, 0), ("epoch", 0, 8), ("epoch", 1, 16)]
    # After training the replicated weights are what the monitor measured.
    weights = torch.load(ddp / "weights.pt", weights_only=True)
    ia = numpy_information_abundance(numpy_row_normalized_singular_values(weights["final"][7:]))
    assert rank0[-1]["views"]["embedding"]["fields"]["item"]["information_abundance"] == pytest.approx(ia, rel=1e-5)
    # Only rank 0 wrote event files.
    event_files = list((ddp / "tb").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1
