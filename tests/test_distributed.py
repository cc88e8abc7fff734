"""The one rank-summing path: a sum over every process or a subgroup, and nothing at all in one process."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from ddp_helpers import run_ddp_script
from lightning_recanalysis.parallel.distributed import data_parallel_group, sum_over_ranks

SCRIPT = Path(__file__).parent / "scripts" / "sum_over_ranks.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_returns_the_tensor_itself():
    t = torch.tensor([1.0, 2.0])
    assert sum_over_ranks(t) is t
    assert data_parallel_group(None) is None


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory) -> list[dict]:
    """What each of three gloo processes got (one run serves every test here)."""
    out = tmp_path_factory.mktemp("sum_over_ranks")
    result = run_ddp_script(SCRIPT, out, 3, _free_port(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(3)]


def test_three_processes_each_get_the_sum_and_a_subgroup_its_own(three_ranks):
    ranks = three_ranks
    for r, got in enumerate(ranks):
        assert got["total"] == [3.0, 0.0 + 1.0 + 2.0, 1.0 + 10.0 + 100.0]  # hand-added
        assert got["mine_unchanged"] == [1.0, float(r), 10.0 ** r]  # the input is not reduced in place
    assert ranks[0]["pair"] == ranks[1]["pair"] == [2.0, 1.0, 11.0] and ranks[2]["pair"] is None


def test_agreements_are_the_same_on_every_process(three_ranks):
    """Rank r's flags are [True, r != 1, r != 2, False]: a flag holds everywhere only in column 0 (over ranks 0-2)
    and in columns 0 and 2 over ranks 0-1. first_found takes the lowest rank's find (rank 1's; rank 0 has none),
    else the lowest rank's problem."""
    ranks = three_ranks
    for got in ranks:
        assert got["all_true"] == [True, False, False, False]
        assert got["found"] == ["layout-1", "None"]
        assert got["problem"] == [None, "ValueError('none on 1')"]
    assert ranks[0]["all_true_pair"] == ranks[1]["all_true_pair"] == [True, False, True, False]
    assert ranks[2]["all_true_pair"] is None
