"""The DCNv2 interaction-IA matrix against a direct float64 computation of each sub-embedding's spectrum."""

import pytest
import torch

from helpers import numpy_information_abundance, numpy_row_normalized_singular_values
from lightning_recanalysis.functional import cross_layer_block, interaction_information_abundance


@pytest.mark.parametrize("batched_max_rows, step_values", [(1 << 16, 1 << 18), (1 << 16, 7 * 18), (0, 1 << 18)],
                         ids=["all-partners-float64", "all-partners-in-slices-of-7-rows", "pair-by-pair-streamed"])
def test_interaction_matrix_matches_direct_computation(monkeypatch, batched_max_rows, step_values):
    # Both ways of computing the matrix (small fields: all partners at once, in row slices; large: pair by pair)
    # must agree with the oracle; the thresholds are moved so that these small fields take each way.
    monkeypatch.setattr("lightning_recanalysis.functional.interaction._BATCHED_MAX_ROWS", batched_max_rows)
    monkeypatch.setattr("lightning_recanalysis.functional.interaction._BATCHED_STEP_VALUES_CPU", step_values)
    g = torch.Generator().manual_seed(0)
    dims, k = [5, 40, 300], 6
    tables = [torch.randn(d, k, generator=g) for d in dims]
    # Make field 0 rank one, so it should drag down what others see of it and what it sees of others.
    tables[0] = torch.randn(dims[0], 1, generator=g) * torch.randn(1, k, generator=g)
    n = len(dims)
    w = torch.randn(n * k, n * k, generator=g)
    matrix = interaction_information_abundance(tables, w)
    assert matrix.shape == (n, n)
    for i in range(n):
        for j in range(n):
            block = w.double().numpy()[j * k : (j + 1) * k, i * k : (i + 1) * k]
            p = tables[i].double().numpy() @ block.T
            oracle = numpy_information_abundance(numpy_row_normalized_singular_values(p))
            assert float(matrix[i, j]) == pytest.approx(oracle, rel=3e-5)
    assert torch.allclose(matrix[0], torch.ones(n, dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize("batched_max_rows", [1 << 16, 0], ids=["all-partners-float64", "pair-by-pair-streamed"])
def test_non_finite_rows_are_left_out(monkeypatch, batched_max_rows):
    monkeypatch.setattr("lightning_recanalysis.functional.interaction._BATCHED_MAX_ROWS", batched_max_rows)
    g = torch.Generator().manual_seed(2)
    clean = [torch.randn(30, 4, generator=g), torch.randn(20, 4, generator=g)]
    w = torch.randn(8, 8, generator=g)
    dirty = [torch.cat([clean[0], torch.full((1, 4), float("nan"))]), torch.cat([torch.zeros(2, 4), clean[1]])]
    assert torch.allclose(interaction_information_abundance(dirty, w), interaction_information_abundance(clean, w),
                          rtol=1e-5)


def test_identity_cross_weight_gives_each_fields_own_ia_on_the_diagonal():
    g = torch.Generator().manual_seed(1)
    tables = [torch.randn(50, 4, generator=g), torch.randn(80, 4, generator=g)]
    matrix = interaction_information_abundance(tables, torch.eye(8))
    for i, t in enumerate(tables):
        own = numpy_information_abundance(numpy_row_normalized_singular_values(t))
        assert float(matrix[i, i]) == pytest.approx(own, rel=1e-5)
    # Off-diagonal blocks of the identity are zero: a zero sub-embedding has no spectrum (IA 0).
    assert float(matrix[0, 1]) == 0.0 and float(matrix[1, 0]) == 0.0


def test_cross_block_indexing_and_shape_errors():
    w = torch.arange(36.0).reshape(6, 6)
    assert torch.equal(cross_layer_block(w, source=0, partner=2, width=2), w[4:6, 0:2])
    with pytest.raises(ValueError, match="expected \\(6, 6\\)"):
        interaction_information_abundance([torch.randn(3, 2)] * 3, torch.randn(5, 5))
    with pytest.raises(ValueError, match="width"):
        interaction_information_abundance([torch.randn(3, 2), torch.randn(3, 3)], torch.randn(5, 5))
