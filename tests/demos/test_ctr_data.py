"""The DCNv2 demo's data: the Criteo sample loader on the real file, and the synthetic generator's plant."""

import math

import pytest
import torch

from demo_models.data.ctr import PLANTED_PAIRS, criteo_sample, synthetic_ctr


def test_criteo_sample_loader(data_root):
    path = data_root / "criteo-sample" / "train.txt"
    if not path.exists():
        pytest.skip(f"{path} is absent: set RECANALYSIS_DATA to the folder holding criteo-sample/")
    data = criteo_sample(path)
    assert data.features.shape == (1000, 39)
    assert len(data.field_dims) == 39 and data.field_names[0] == "I1" and data.field_names[-1] == "C26"
    assert int(data.label.sum()) == 205  # CTR 20.5% per SOURCES.md
    assert all((data.features[:, i] < d).all() for i, d in enumerate(data.field_dims))
    # Categorical cardinalities 2 to 696 in the file; +1 for the "missing" id 0.
    cat_dims = data.field_dims[13:]
    assert max(cat_dims) <= 697 and min(cat_dims) >= 2


def _mi_bits(x: torch.Tensor, y: torch.Tensor) -> float:
    """Plug-in mutual information (bits) between an integer feature and a binary label, float64."""
    joint = torch.zeros(int(x.max()) + 1, 2, dtype=torch.float64)
    joint.index_put_((x, y.long()), torch.ones(len(x), dtype=torch.float64), accumulate=True)
    p = joint / joint.sum()
    px, py = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
    mask = p > 0
    return float((p[mask] * (p[mask] / (px @ py)[mask]).log2()).sum())


def test_synthetic_label_depends_on_the_planted_pairs_only():
    data = synthetic_ctr(n_samples=60_000, seed=0)
    x, y = data.features, data.label
    assert data.field_dims == sorted(data.field_dims) and data.field_dims[0] <= 4 and data.field_dims[-1] >= 10_000
    # A planted pair, bucketed coarsely, carries information jointly; a noise pair carries none beyond chance.
    def pair_mi(i, j, buckets=6):
        return _mi_bits((x[:, i] % buckets) * buckets + (x[:, j] % buckets), y)

    i, j = PLANTED_PAIRS[0]
    planted = pair_mi(i, j)
    noise = pair_mi(*data.noise_fields[:2])
    # Chance level of plug-in MI: (cells - 1) / (2 n ln 2) bits for 36 x 2 cells.
    chance = 35 / (2 * len(y) * math.log(2))
    assert planted > 5 * chance
    assert noise < 4 * chance
