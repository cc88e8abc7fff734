"""TorchRec's DistributedModelParallel on 2 CPU processes (gloo): the ShardedTensor tables of its state, sharded
table-wise, column-wise and table-column-wise, are read exactly: spectra of whole tables and of row and column
ranges, and looked-up rows, equal those of the table that TorchRec's own sharded lookup returns.

tests/scripts/torchrec_sharding.py shards the three ways one after the other in the same two processes (one run
for the module); the Lightning runs are the ``torchrec_*`` scenarios of the ``model_parallel`` scenario group
(tests/scripts/scenario_groups.py)."""

import json

import numpy as np
import pytest
import torch

from ddp_helpers import SCRIPTS, other_ranks_exit_codes, run_ddp_script

pytest.importorskip("torchrec")

SCRIPT = SCRIPTS / "torchrec_sharding.py"
KINDS = ("table_wise", "column_wise", "table_column_wise")


def _numpy_singular_values(rows: np.ndarray) -> np.ndarray:
    normalised = rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-8)
    return np.linalg.svd(normalised, compute_uv=False)


def _singular_values(gram: torch.Tensor) -> np.ndarray:
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram.double().numpy()), 0, None))[::-1]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The folder of the one run that shards the collection every way of KINDS (``<folder>/<kind>/rank<r>.pt``)."""
    out = tmp_path_factory.mktemp("torchrec_sharding")
    return out, run_ddp_script(SCRIPT, out, ",".join(KINDS), timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("kind,layout,shards", [("table_wise", "rows", 1), ("column_wise", "columns", 4),
                                                ("table_column_wise", "columns", 4)])
def test_sharded_tables_read_as_the_unsharded_ones(sharded, kind, layout, shards):
    """``shards``: how many pieces each table is cut into over both ranks (the planner's choice at this size)."""
    out, proc = sharded
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(out / kind / f"rank{r}.pt", weights_only=False) for r in range(2)]
    oracle = ranks[0].pop("oracle")
    assert torch.equal(torch.cat(list(oracle.values())), torch.cat(list(ranks[1].pop("oracle").values())))
    assert sorted(ranks[0]) == sorted(oracle) and len(oracle) == 3
    for results in ranks:
        for key, got in results.items():
            table = oracle[key].double().numpy()
            assert got["type"] == "ShardedTensor" and got["kind"] == layout
            for gram, rows in ((got["whole"], table), (got["range"], table[10:900, 2:14])):
                sv, expected = _singular_values(gram), _numpy_singular_values(rows)
                assert np.allclose(sv, expected, rtol=0, atol=3e-5 * expected[0]), (kind, key)
            assert int(got["rows"]) == 890
            assert torch.equal(got["lookup"], oracle[key][[0, 3, 999, 500, 3]])
    for key in oracle:  # every rank holds the same numbers
        assert sum(results[key]["local_shards"] for results in ranks) == shards
        assert torch.equal(ranks[0][key]["whole"], ranks[1][key]["whole"])


@pytest.mark.slow
@pytest.mark.scenario_groups("model_parallel")
@pytest.mark.parametrize("kind", ["table_wise", "column_wise"])
def test_a_lightning_module_hosting_distributed_model_parallel(group_runs, kind):
    """configure_model hands the collection to DistributedModelParallel under ModelParallelStrategy: the monitor
    finds the tables at setup (named by their features), reads their shards at every analysis, and logs the
    spectra of the tables that TorchRec's own lookups return at that moment; both ranks log the same."""
    run = group_runs("model_parallel")
    assert run.returncode == 0, run.stderr[-3000:]
    assert other_ranks_exit_codes(run.out) == [0]
    tmp_path = run.out / f"torchrec_{kind}"
    histories = [json.loads((tmp_path / f"history_rank{r}.json").read_text()) for r in range(2)]
    assert histories[0] == histories[1]
    tables = torch.load(tmp_path / "tables.pt", weights_only=True)
    assert [r["stage"] for r in histories[0]] == ["init", "epoch", "epoch"]
    assert not torch.equal(tables[0]["user"], tables[-1]["user"])  # the tables trained
    for record, snapshot in zip(histories[0], tables, strict=True):
        (view,) = record["views"].values()
        assert sorted(view["fields"]) == ["item", "user"]
        for feature, table in snapshot.items():
            sv = _numpy_singular_values(table.double().numpy())
            logged = view["fields"][feature]
            assert logged["information_abundance"] == pytest.approx(sv.sum() / sv[0], rel=1e-6)
            assert np.allclose(logged["normalized_spectrum"], sv / sv[0], rtol=0, atol=3e-5)
