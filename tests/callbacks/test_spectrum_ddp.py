"""Two CPU processes under Lightning's DDP: same history on both ranks, equal to one process where the weights are
equal, and only rank 0 writes files."""

import json
from pathlib import Path

import pytest
import torch

from ddp_helpers import SCRIPTS, run_ddp_script
from helpers import numpy_information_abundance, numpy_row_normalized_singular_values

SCRIPT = SCRIPTS / "spectrum_ddp.py"


def _run(out: Path, devices: int) -> None:
    proc = run_ddp_script(SCRIPT, out, devices, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir()
    single.mkdir()
    _run(ddp, 2)
    _run(single, 1)
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
