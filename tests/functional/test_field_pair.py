"""Field-pair mutual information and learned pair strength against independent oracles: torchmetrics'
mutual_info_score, a hand float64 formula, closed-form XOR and independence cases, a loop over cross_layer_block."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.clustering import mutual_info_score

from lightning_recanalysis.functional import (
    cross_layer_block,
    cross_layer_pair_strength,
    field_label_mutual_information,
    field_pair_matrices,
    interaction_information,
    mutual_information,
    pair_label_mutual_information,
    table_mutual_information,
)


def _hand_mi(table: np.ndarray) -> float:
    """MI in nats of a 2-D count table, straight from the definition, float64, skipping empty cells."""
    p = table / table.sum()
    px, py = p.sum(1), p.sum(0)
    total = 0.0
    for a in range(p.shape[0]):
        for b in range(p.shape[1]):
            if p[a, b] > 0:
                total += p[a, b] * math.log(p[a, b] / (px[a] * py[b]))
    return total


def _table(x: torch.Tensor, y: torch.Tensor, a: int, b: int) -> torch.Tensor:
    counts = torch.zeros(a, b, dtype=torch.int64)
    counts.index_put_((x, y), torch.ones_like(x), accumulate=True)
    return counts


def test_table_mi_equals_torchmetrics_and_the_hand_formula():
    g = torch.Generator().manual_seed(0)
    for a, b, n in ((2, 2, 50), (7, 3, 400), (32, 2, 1000), (5, 11, 2000)):
        x = torch.randint(0, a, (n,), generator=g)
        # A label that depends on x, so MI is well away from 0.
        y = torch.where(torch.rand(n, generator=g) < 0.6, x % b, torch.randint(0, b, (n,), generator=g))
        counts = _table(x, y, a, b)
        ours = float(table_mutual_information(counts, base=math.e))
        # torchmetrics sums in float32: agree to its precision; the float64 hand formula to ours.
        assert ours == pytest.approx(float(mutual_info_score(x, y)), rel=2e-4, abs=1e-6)
        assert ours == pytest.approx(_hand_mi(counts.double().numpy()), rel=1e-12, abs=1e-15)
        assert float(table_mutual_information(counts)) == pytest.approx(ours / math.log(2), rel=1e-12)


def test_pair_mi_is_the_mi_of_the_pair_as_one_variable_in_torchmetrics():
    g = torch.Generator().manual_seed(1)
    n = 3000
    fi, fj = torch.randint(0, 4, (n,), generator=g), torch.randint(0, 6, (n,), generator=g)
    y = ((fi + fj) % 3 == 0).long() ^ (torch.rand(n, generator=g) < 0.1).long()
    counts = torch.zeros(4, 6, 2, dtype=torch.int64)
    counts.index_put_((fi, fj, y), torch.ones(n, dtype=torch.int64), accumulate=True)
    pair = float(pair_label_mutual_information(counts, base=math.e))
    assert pair == pytest.approx(float(mutual_info_score(fi * 6 + fj, y)), rel=2e-4)
    single = float(field_label_mutual_information(counts.sum(1), base=math.e))
    assert single == pytest.approx(float(mutual_info_score(fi, y)), rel=2e-4, abs=1e-6)


def test_two_by_two_agrees_with_the_sibling_correlation_mi():
    counts = torch.tensor([[[30, 5], [10, 55]], [[1, 0], [0, 1]], [[0, 0], [0, 0]]])
    assert torch.allclose(table_mutual_information(counts), mutual_information(counts), rtol=1e-12, atol=0)


def test_empty_and_single_valued_tables_give_zero_not_nan():
    assert float(table_mutual_information(torch.zeros(4, 2))) == 0.0
    single_value = torch.zeros(5, 2)
    single_value[3] = torch.tensor([40.0, 17.0])  # the field took one value: no information, not NaN
    constant_label = torch.zeros(5, 2)
    constant_label[:, 1] = torch.tensor([3.0, 0, 9, 2, 1])
    for table in (single_value, constant_label):
        for correction in ("none", "miller_madow"):
            value = table_mutual_information(table, bias_correction=correction)
            assert float(value) == 0.0 and not torch.isnan(value)
    # A pair one of whose fields is single-valued: the pair MI is the other field's, its interaction 0.
    counts = torch.zeros(3, 4, 2)
    counts[:, 2, :] = torch.tensor([[5.0, 1.0], [2.0, 8.0], [4.0, 4.0]])
    assert float(interaction_information(counts)) == pytest.approx(0.0, abs=1e-15)
    assert float(pair_label_mutual_information(counts)) == pytest.approx(
        float(table_mutual_information(counts.sum(1))), rel=1e-12)


def test_interaction_information_of_xor_is_one_bit_and_of_independent_fields_near_zero():
    # Exact XOR table, equal counts: MI((F_i, F_j); Y) = 1 bit, each field alone 0 bits.
    xor = torch.zeros(2, 2, 2)
    for a in range(2):
        for b in range(2):
            xor[a, b, a ^ b] = 25
    assert float(interaction_information(xor)) == pytest.approx(1.0, abs=1e-12)
    assert float(pair_label_mutual_information(xor)) == pytest.approx(1.0, abs=1e-12)
    assert float(table_mutual_information(xor.sum(1))) == pytest.approx(0.0, abs=1e-12)
    # Sampled: an XOR-planted pair against three independent fields, each of whose pairs adds nothing.
    g = torch.Generator().manual_seed(2)
    n = 20000
    f = torch.randint(0, 2, (n, 5), generator=g)
    f[:, 2:] = torch.randint(0, 8, (n, 3), generator=g)
    y = f[:, 0] ^ f[:, 1]
    flip = torch.rand(n, generator=g) < 0.1  # 10% label noise: the pair then tells 1 - H(flip rate) bits
    y = torch.where(flip, 1 - y, y)
    planted = 1 - _h2(float(flip.double().mean()))
    for (i, j), expected in (((0, 1), planted), ((2, 3), 0.0), ((0, 2), 0.0), ((3, 4), 0.0)):
        counts = torch.zeros(8, 8, 2)
        counts.index_put_((f[:, i], f[:, j], y), torch.ones(n), accumulate=True)
        value = float(interaction_information(counts, bias_correction="miller_madow"))
        assert value == pytest.approx(expected, abs=0.003), (i, j)


def _h2(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_miller_madow_removes_the_plug_in_bias_of_independent_fields():
    # Independent 16-value field and label: the plug-in MI is about (16 - 1)(2 - 1) / (2 N ln 2) bits, Miller's
    # first-order bias; the corrected estimate averages to 0 over repetitions.
    g = torch.Generator().manual_seed(3)
    n, reps = 2000, 200
    plug, corrected = [], []
    for _ in range(reps):
        x, y = torch.randint(0, 16, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
        table = _table(x, y, 16, 2)
        plug.append(float(table_mutual_information(table)))
        corrected.append(float(table_mutual_information(table, bias_correction="miller_madow")))
    bias = 15 / (2 * n * math.log(2))
    assert np.mean(plug) == pytest.approx(bias, rel=0.2)
    assert abs(np.mean(corrected)) < 0.15 * bias


def test_field_pair_matrices_are_symmetric_with_the_single_field_mi_on_the_diagonal():
    g = torch.Generator().manual_seed(4)
    n, a = 500, 3
    f = torch.randint(0, a, (n, 3), generator=g)
    y = (f[:, 0] == f[:, 2]).long()
    first, second = torch.triu_indices(3, 3, 1)
    pair_counts = torch.zeros(3, a, a, 2)
    for p, (i, j) in enumerate(zip(first.tolist(), second.tolist())):
        pair_counts[p].index_put_((f[:, i], f[:, j], y), torch.ones(n), accumulate=True)
    field_counts = torch.zeros(3, a, 2)
    for i in range(3):
        field_counts[i].index_put_((f[:, i], y), torch.ones(n), accumulate=True)
    out = field_pair_matrices(pair_counts, field_counts, first, second, base=math.e)
    mi, ii = out["mutual_information"], out["interaction_information"]
    assert torch.equal(mi, mi.T) and torch.equal(ii, ii.T)
    for i in range(3):
        assert float(mi[i, i]) == pytest.approx(_hand_mi(field_counts[i].double().numpy()), rel=1e-12, abs=1e-15)
        assert float(ii[i, i]) == 0.0
    assert float(mi[0, 2]) == pytest.approx(float(mutual_info_score(f[:, 0] * a + f[:, 2], y)), rel=1e-4)
    assert int(torch.argmax(ii[0])) == 2  # the planted pair


def test_cross_layer_pair_strength_is_the_norm_of_each_block():
    g = torch.Generator().manual_seed(5)
    n, k, offset = 4, 3, 2
    w = torch.randn(offset + n * k + 1, offset + n * k + 1, generator=g)
    inner = w[offset : offset + n * k, offset : offset + n * k]
    directed = cross_layer_pair_strength(w, n, k, offset=offset, symmetric=False)
    sym = cross_layer_pair_strength(w, n, k, offset=offset)
    for i in range(n):
        for j in range(n):
            block = cross_layer_block(inner, source=i, partner=j, width=k).double()
            assert float(directed[i, j]) == pytest.approx(float(torch.linalg.norm(block)), rel=1e-12)
            back = cross_layer_block(inner, source=j, partner=i, width=k).double()
            mean = (float(torch.linalg.norm(block)) + float(torch.linalg.norm(back))) / 2
            assert float(sym[i, j]) == pytest.approx(mean, rel=1e-12)
    # A block planted large stands out: field 1 into field 3's slot.
    w2 = torch.zeros(n * k, n * k)
    w2[3 * k : 4 * k, 1 * k : 2 * k] = 5.0
    strength = cross_layer_pair_strength(w2, n, k)
    assert float(strength[1, 3]) == float(strength[3, 1]) == pytest.approx(5.0 * k / 2)
    with pytest.raises(ValueError, match="cannot hold 5 fields of width 3"):
        cross_layer_pair_strength(w2, 5, k)
