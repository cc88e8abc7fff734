"""Row-sharded tables: two CPU processes each hold half the rows; the all-reduced Gram gives the whole table's
spectrum, equal to the unsharded result (functional and monitor)."""

import numpy as np
import pytest
import torch
from torch import nn

from ddp_helpers import run_ranks
from lightning_recanalysis import EmbeddingSpectrumMonitor
from lightning_recanalysis.functional import singular_values
from lightning_recanalysis.parallel import sharded_singular_values

ROWS, WIDTH = 6001, 12


def _table() -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.randn(ROWS, 3, generator=g) @ torch.randn(3, WIDTH, generator=g) + 0.05 * torch.randn(ROWS, WIDTH, generator=g)


def rank_with_half_the_rows(rank: int, world: int, out_dir) -> None:
    """One rank of the sharded run (in a gloo group of ``world`` processes, started by ``run_ranks``)."""
    full = _table()
    shard = full.tensor_split(world)[rank]  # uneven halves: 3001 and 3000 rows
    sv = sharded_singular_values(shard)
    model = nn.Module()
    model.table = nn.Embedding(shard.shape[0], WIDTH)
    with torch.no_grad():
        model.table.weight.copy_(shard)
    monitor = EmbeddingSpectrumMonitor(row_sharded=["table"], cross_layer=None, strict=True)
    monitor.setup(None, model, "fit")
    record = monitor.analyse()["views"]["table"]["fields"]["table"]
    torch.save({"sv": sv, "ia": record["information_abundance"], "rows": record["cardinality"]},
               out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_ranks_with_half_the_rows_each_equal_the_unsharded_table(tmp_path):
    run_ranks(rank_with_half_the_rows, 2, tmp_path, timeout=240)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    whole = singular_values(_table())
    for result in results:
        assert result["rows"] == ROWS
        # Equal up to float32 rounding of the rows (the chunks fall differently): far inside the 3e-5 bar.
        assert np.allclose(result["sv"].numpy(), whole.numpy(), rtol=0, atol=1e-6 * float(whole[0]))
        ia = float(whole.sum() / whole[0])
        assert result["ia"] == pytest.approx(ia, rel=1e-6)


def test_without_a_process_group_the_sharded_call_is_the_plain_one():
    table = _table()
    assert torch.equal(sharded_singular_values(table), singular_values(table))


def test_fields_of_a_sharded_table_are_refused_at_setup():
    model = nn.Module()
    model.table = nn.Embedding(10, 4)
    monitor = EmbeddingSpectrumMonitor(row_sharded=["table"], field_dims=[4, 6])
    with pytest.raises(ValueError, match="row_sharded"):
        monitor.setup(None, model, "fit")
