"""Spectra against the float64 numpy SVD oracle, and collapse measures on tables built with a known answer."""

import numpy as np
import pytest
import torch

from helpers import numpy_information_abundance, numpy_row_normalized_singular_values
from lightning_recanalysis.functional import (
    RowNormalizedGram,
    effective_rank,
    information_abundance,
    normalized_spectrum,
    row_normalized_gram,
    singular_values,
    stable_rank,
)


def _conditioned(rows, cols, condition, seed):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -np.log10(condition), cols, dtype=torch.float64)
    return ((u * s) @ v.T).float()


def _tables():
    g = torch.Generator().manual_seed(7)
    yield "gaussian 40000x32", torch.randn(40_000, 32, generator=g)
    yield "planted rank 3", torch.randn(30_000, 3, generator=g) @ torch.randn(3, 24, generator=g)
    yield "fewer rows than columns", torch.randn(9, 32, generator=g)
    yield "condition 1e6", _conditioned(20_000, 16, 1e6, 3)
    yield "heavy-tailed rows", torch.randn(25_000, 16, generator=g) * torch.rand(25_000, 1, generator=g) ** 6
    # Rows whose dominant direction changes half-way, so a basis learned on early chunks is wrong later.
    first = torch.randn(20_000, 16, generator=g) * torch.tensor([1.0] * 2 + [1e-3] * 14)
    second = torch.randn(20_000, 16, generator=g) * torch.tensor([1e-3] * 14 + [1.0] * 2)
    yield "direction changes mid-table", torch.cat([first, second])


@pytest.mark.parametrize("name,table", list(_tables()), ids=[n for n, _ in _tables()])
def test_singular_values_match_float64_numpy(name, table):
    oracle = numpy_row_normalized_singular_values(table)
    sv = singular_values(table)
    assert sv.dtype == torch.float64
    assert sv.shape == (min(table.shape),)
    assert np.max(np.abs(sv.numpy() - oracle)) <= 3e-5 * oracle[0]
    ours, ref = sv.numpy(), oracle
    assert float(information_abundance(sv)) == pytest.approx(ref.sum() / ref.max(), rel=3e-5)
    p = ref / ref.sum()
    p = p[p > 0]
    assert float(effective_rank(sv)) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=3e-5)
    assert float(stable_rank(sv)) == pytest.approx((ref**2).sum() / ref.max() ** 2, rel=3e-5)
    assert ours[0] == pytest.approx(ref[0], rel=1e-6)


def test_float32_gram_would_fail_where_the_rotated_one_passes():
    """The accuracy bar is not trivially met: the plain float32 Gram misses it on a planted rank-3 table."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50_000, 3, generator=g) @ torch.randn(3, 32, generator=g)
    normed = table / (table.norm(dim=1, keepdim=True) + 1e-8)
    naive = torch.linalg.eigvalsh((normed.T @ normed).double()).clamp_min(0).sqrt().flip(0).numpy()
    oracle = numpy_row_normalized_singular_values(table)
    assert np.max(np.abs(naive - oracle)) > 3e-5 * oracle[0]
    assert np.max(np.abs(singular_values(table).numpy() - oracle)) <= 3e-5 * oracle[0]


def test_planted_rank_k_and_isotropic_tables_have_the_rank_they_were_built_with():
    k, width, copies = 5, 16, 200
    basis = torch.linalg.qr(torch.randn(width, width, generator=torch.Generator().manual_seed(1)))[0]
    # Rows are scaled copies of k orthonormal directions, equally often: row-normalised, s_1 = ... = s_k.
    scales = torch.linspace(0.5, 3.0, copies).repeat_interleave(k)[:, None]
    rank_k = basis[:k].repeat(copies, 1) * scales
    sv = singular_values(rank_k)
    assert float(information_abundance(sv)) == pytest.approx(k, rel=1e-6)
    assert float(effective_rank(sv)) == pytest.approx(k, rel=1e-6)
    assert float(stable_rank(sv)) == pytest.approx(k, rel=1e-6)
    assert torch.all(sv[k:] < 1e-6 * sv[0])
    isotropic = basis.repeat(copies, 1)
    sv = singular_values(isotropic)
    assert float(information_abundance(sv)) == pytest.approx(width, rel=1e-6)
    assert float(effective_rank(sv)) == pytest.approx(width, rel=1e-6)
    # Rank one: every row is +-c * v; the signs do not matter to the spectrum.
    v = torch.randn(width, generator=torch.Generator().manual_seed(2))
    signs = torch.tensor([1.0, -2.0, 0.5, -0.1]).repeat(50)[:, None]
    sv = singular_values(signs * v)
    assert float(information_abundance(sv)) == pytest.approx(1.0, abs=1e-5)


def test_non_finite_and_zero_rows_are_excluded_and_counted():
    g = torch.Generator().manual_seed(3)
    table = torch.randn(3000, 8, generator=g)
    clean = table.clone()
    table[10, 2] = float("nan")
    table[20] = float("inf")
    table[30] = 0.0
    result = row_normalized_gram(table)
    assert result.excluded_rows == 3 and result.rows == 2997
    keep = torch.ones(3000, dtype=torch.bool)
    keep[[10, 20, 30]] = False
    oracle = numpy_row_normalized_singular_values(clean[keep])
    assert np.max(np.abs(singular_values(table).numpy() - oracle)) <= 3e-5 * oracle[0]


def test_gram_is_a_sum_over_shards():
    """Gram matrices of row shards add up to the Gram of the whole table (what sharded tables rely on)."""
    table = torch.randn(10_000, 12, generator=torch.Generator().manual_seed(4))
    whole = row_normalized_gram(table)
    parts = row_normalized_gram(table[:3333]) + row_normalized_gram(table[3333:])
    assert isinstance(parts, RowNormalizedGram) and parts.rows == 10_000
    scale = float(whole.gram.abs().max())
    # Float32 products: each entry is exact to float32 rounding of the rows, far below the 3e-5 bar on s.
    assert torch.allclose(whole.gram, parts.gram, rtol=0, atol=1e-7 * scale)
    a = table.double()
    a = a / (a.norm(dim=1, keepdim=True) + 1e-8)
    assert torch.allclose(whole.gram, a.T @ a, rtol=0, atol=1e-7 * scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_float_dtype(dtype):
    table = torch.randn(5000, 16, generator=torch.Generator().manual_seed(5)).to(dtype)
    oracle = numpy_row_normalized_singular_values(table.double())
    sv = singular_values(table)
    assert np.max(np.abs(sv.numpy() - oracle)) <= 3e-5 * oracle[0]


def test_degenerate_inputs_give_zeros_not_nan():
    empty = torch.zeros(0, 8)
    sv = singular_values(empty)
    assert sv.shape == (0,)
    zeros = torch.zeros(10, 8)
    sv = singular_values(zeros)
    assert torch.all(sv == 0)
    for measure in (information_abundance, effective_rank, stable_rank):
        assert float(measure(sv)) == 0.0
    assert torch.all(normalized_spectrum(sv, 8) == 0)
    with pytest.raises(ValueError, match="2-D"):
        singular_values(torch.zeros(3, 4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        singular_values(torch.zeros(3, 4, dtype=torch.long))


def test_normalized_spectrum_pads_to_width():
    sv = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    assert normalized_spectrum(sv, 5).tolist() == [1.0, 0.5, 0.25, 0.0, 0.0]
    assert numpy_information_abundance(np.array([4.0, 2.0, 1.0])) == float(information_abundance(sv)) == 1.75


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tables_give_the_float32_information_abundance(dtype):
    """A table stored in half precision has the IA of the float32 table it was rounded from, to 1e-3."""
    g = torch.Generator().manual_seed(6)
    tables = [torch.randn(30_000, 16, generator=g),
              torch.randn(30_000, 3, generator=g) @ torch.randn(3, 16, generator=g) + 0.01 * torch.randn(30_000, 16, generator=g),
              torch.empty(20_000, 16).uniform_(-0.02, 0.02, generator=g)]
    for table in tables:
        reference = float(information_abundance(singular_values(table)))
        assert float(information_abundance(singular_values(table.to(dtype)))) == pytest.approx(reference, rel=1e-3)


@pytest.mark.parametrize("name,table", list(_tables()), ids=[n for n, _ in _tables()])
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_pass_with_narrow_second_pass_matches_float64_numpy(name, table, threads, monkeypatch):
    """The streamed float32 path (small chunks, worker threads or not), forced on the small test tables."""
    from lightning_recanalysis.functional import spectrum as module

    monkeypatch.setattr(module, "_EXACT_MAX_VALUES", 0)
    monkeypatch.setattr(module, "_CPU_CHUNK_BYTES", 0)  # the smallest chunks (256 rows): many worker tasks
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sv = singular_values(table)
        assert torch.get_num_threads() == threads  # the workers' single-threaded setting is restored
    finally:
        torch.set_num_threads(previous)
    oracle = numpy_row_normalized_singular_values(table)
    assert np.max(np.abs(sv.numpy() - oracle)) <= 3e-5 * oracle[0]


def test_second_pass_covers_exactly_the_directions_float32_cannot_resolve(monkeypatch):
    """A planted rank-3 table: the 29 null directions take the second pass, the 3 planted ones do not; an
    isotropic table is read once."""
    from lightning_recanalysis.functional import spectrum as module

    monkeypatch.setattr(module, "_EXACT_MAX_VALUES", 0)
    widths = []
    original = module._gram_of_rows

    def spy(weight, start, stop, step, work_dtype, transform, normalize_rows, basis):
        widths.append(None if basis is None else basis.shape[1])
        return original(weight, start, stop, step, work_dtype, transform, normalize_rows, basis)

    monkeypatch.setattr(module, "_gram_of_rows", spy)
    g = torch.Generator().manual_seed(8)
    planted = torch.randn(20_000, 3, generator=g) @ torch.randn(3, 32, generator=g)
    sv = singular_values(planted)
    assert set(widths) == {None, 29}
    assert torch.all(sv[3:] < 1e-6 * sv[0])
    widths.clear()
    singular_values(torch.randn(20_000, 32, generator=g))
    assert set(widths) == {None}


def test_sharded_float32_grams_add_up_to_the_whole_spectrum(monkeypatch):
    """Each shard's Gram is corrected on its own; their sum still gives the whole table's spectrum, also when
    the shards hold different directions (each shard's small directions are the whole table's large ones)."""
    from lightning_recanalysis.functional import spectrum as module

    monkeypatch.setattr(module, "_EXACT_MAX_VALUES", 0)
    g = torch.Generator().manual_seed(9)
    first = torch.randn(15_000, 16, generator=g) * torch.tensor([1.0] * 3 + [1e-5] * 13)
    second = torch.randn(15_000, 16, generator=g) * torch.tensor([1e-5] * 13 + [1.0] * 3)
    table = torch.cat([first, second, torch.randn(500, 3, generator=g) @ torch.randn(3, 16, generator=g)])
    parts = row_normalized_gram(table[:15_000]) + row_normalized_gram(table[15_000:])
    sv = torch.linalg.eigvalsh(parts.gram).clamp_min(0).sqrt().flip(0).numpy()
    oracle = numpy_row_normalized_singular_values(table)
    assert np.max(np.abs(sv - oracle)) <= 3e-5 * oracle[0]


def test_an_empty_shard_has_a_k_by_k_zero_gram():
    """A rank that holds no rows of a sharded table still all-reduces a K x K Gram with the others."""
    result = row_normalized_gram(torch.zeros(0, 12))
    assert result.gram.shape == (12, 12) and not result.gram.any()
    assert result.rows == 0 and result.excluded_rows == 0
