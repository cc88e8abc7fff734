"""Weights sharded as DTensors (FSDP2, tensor parallelism) are read exactly: the Gram of any row and column range,
with or without a transform, looked-up rows and small whole tensors equal the unsharded table's on every rank,
for row, column, replicated and two-dimensional placements; unreadable placements are refused by name; a failure
on one rank is raised on all of them at the same collective."""

import sys

import numpy as np
import pytest
import torch

from ddp_helpers import SCRIPTS, run_ddp_script
from lightning_recanalysis.parallel import sharding

sys.path.insert(0, str(SCRIPTS))
from sharding_ddp import IDS, kernel, table  # noqa: E402

SCRIPT = SCRIPTS / "sharding_ddp.py"


def _numpy_singular_values(rows: np.ndarray) -> np.ndarray:
    """The float64 oracle: singular values of the row-normalised rows (norm + 1e-8, not centred)."""
    normalised = rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-8)
    return np.linalg.svd(normalised, compute_uv=False)


def _singular_values(gram: torch.Tensor) -> np.ndarray:
    eig = np.linalg.eigvalsh(gram.double().numpy())
    return np.sqrt(np.clip(eig, 0, None))[::-1]


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_every_placement_reads_as_the_unsharded_table(tmp_path, world):
    proc = run_ddp_script(SCRIPT, tmp_path, world, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full, w = table().double().numpy(), kernel().double().numpy()
    oracles = {
        "whole": full, "rows": full[100:1500], "columns": full[990:1010, 3:11], "transform": full[:1200] @ w,
    }
    expected_kinds = {"shard0": "rows", "shard1": "columns", "replicate": "rows", "shard0_shard1": "columns",
                      "replicate_shard0": "rows", "shard0_shard0": "rows", "shard1_replicate": "columns",
                      "dp_submesh_shard0": "rows", "tp_submesh_shard1": "columns"}
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    layouts = [name for name in ranks[0] if isinstance(ranks[0][name], dict)]
    assert len(layouts) in (3, 6)
    for results in ranks:
        for name in layouts:
            got = results[name]
            assert got["kind"] == expected_kinds[name]
            for what, rows in oracles.items():
                sv, oracle = _singular_values(got[what]), _numpy_singular_values(rows)
                k = min(rows.shape)
                # The project's bar: every singular value within 3e-5 s_1 of float64.
                assert np.allclose(sv[:k], oracle[:k], rtol=0, atol=3e-5 * oracle[0]), (name, what)
            assert int(got["counts"]) == 1400
            assert torch.equal(got["lookup"], table()[IDS])
            assert torch.equal(got["full"], table())
        # Every rank holds the same numbers.
        for name in layouts:
            for what in oracles:
                assert torch.allclose(results[name][what], ranks[0][name][what], rtol=1e-12, atol=0)
        # Refused layouts name the weight and the placement and say what to do.
        assert "model.table.weight" in results["refused_partial"] and "Partial" in results["refused_partial"]
        assert "_StridedShard" in results["refused_strided"] or "StridedShard" in results["refused_strided"]
        assert "`table`" in results["monitor_refusal"] and "_StridedShard" in results["monitor_refusal"]
    # Ids outside the table: an IndexError on every rank, naming the ids; the next lookup is exact.
    for results in ranks:
        for placement in ("S(0)", "S(1)"):
            assert results[f"outside_{placement}"].startswith("IndexError") and str(2001) in results[f"outside_{placement}"]
            assert torch.equal(results[f"after_outside_{placement}"], table()[IDS])
    # The planted failure on rank 1: its own error there, a ShardedReadError on every other rank, and the next
    # read pairs up again and is exact.
    for rank, results in enumerate(ranks):
        for placement in ("S(0)", "S(1)"):
            assert results[f"failure_{placement}"] == ("MemoryError" if rank == 1 else "ShardedReadError")
            sv = _singular_values(results[f"after_failure_{placement}"])
            assert np.allclose(sv, _numpy_singular_values(full), rtol=0, atol=3e-5 * sv[0])


def test_plain_tensors_need_no_process_group():
    t = table()
    assert torch.equal(sharding.sharded_gram(t, rows=(3, 900), columns=(1, 7)).gram,
                       sharding.sharded_gram(t[3:900, 1:7]).gram)
    assert torch.equal(sharding.lookup_rows(t, [4, 2]), t[[4, 2]])
    assert sharding.layout_of(t).kind == "local"
    assert not sharding.is_sharded(t)
