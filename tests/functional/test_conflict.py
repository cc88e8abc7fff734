"""gradient_cosine and the per-row / per-field gradient helpers against independent oracles (numpy float64, autograd)."""

import numpy as np
import pytest
import torch
from torch import nn

from lightning_recanalysis.functional import (
    cosine_from_gram,
    embedding_row_gradients,
    field_gradient_gram,
    gradient_cosine,
    looked_up_row_gradients,
)


def numpy_cosine_matrix(grads) -> np.ndarray:
    flat = [np.asarray(g, dtype=np.float64).ravel() for g in grads]
    return np.array([[a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for b in flat] for a in flat])


@pytest.mark.parametrize("shape", [(7,), (50, 16), (3, 5, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_cosine_matches_numpy_float64(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    base = torch.randn(shape, generator=g)
    grads = {
        "ctr": base.to(dtype),
        "cvr": (0.9 * base + 0.1 * torch.randn(shape, generator=g)).to(dtype),  # nearly parallel
        "like": (-base + 2 * torch.randn(shape, generator=g)).to(dtype),
    }
    got = gradient_cosine(grads)
    assert got.dtype == torch.float64 and got.shape == (3, 3)
    np.testing.assert_allclose(got.numpy(), numpy_cosine_matrix([v.numpy() for v in grads.values()]), atol=1e-6)


def test_gradient_cosine_known_answers_and_order():
    e = torch.eye(4)
    got = gradient_cosine({"a": e[0] + e[1], "b": e[2], "c": -2 * (e[0] + e[1])})
    expected = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(got, expected)


def test_zero_gradient_gives_nan_for_every_pair_it_is_in():
    got = gradient_cosine({"a": torch.ones(3), "b": torch.zeros(3), "c": torch.tensor([1.0, -1.0, 0.0])})
    assert torch.isnan(got[1]).all() and torch.isnan(got[:, 1]).all()
    assert got[0, 0] == 1 and got[0, 2] == 0 and got[2, 2] == 1
    assert torch.isnan(gradient_cosine({"a": torch.tensor([float("nan"), 1.0]), "b": torch.ones(2)})[0, 1])


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="two tasks"):
        gradient_cosine({"a": torch.ones(3)})
    with pytest.raises(ValueError, match="same shape"):
        gradient_cosine({"a": torch.ones(3), "b": torch.ones(4)})


def test_cosine_from_gram_batched():
    grams = torch.stack([torch.tensor([[4.0, -2.0], [-2.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])])
    got = cosine_from_gram(grams)
    assert got[0, 0, 1] == -1.0
    assert torch.isnan(got[1, 0, 1]) and got[1, 0, 0] == 1 and torch.isnan(got[1, 1, 1])


@pytest.mark.parametrize("padding_idx", [None, 3])
def test_row_gradients_equal_the_tables_parameter_gradient(padding_idx):
    """Oracle: autograd's gradient of the embedding weight itself (what .backward() accumulates)."""
    torch.manual_seed(0)
    table = nn.Embedding(20, 5, padding_idx=padding_idx)
    ids = torch.tensor([[1, 3, 3], [7, 1, 19], [3, 3, 0]])
    out = table(ids)
    mix = torch.randn(2, *out.shape)
    losses = [(out * mix[t]).sum() for t in range(2)]
    output_grads = torch.stack([torch.autograd.grad(loss, out, retain_graph=True)[0] for loss in losses])
    rows, summed = embedding_row_gradients(ids, output_grads, padding_idx=padding_idx)
    for t, loss in enumerate(losses):
        (dense,) = torch.autograd.grad(loss, table.weight, retain_graph=True)
        expected_rows = torch.nonzero(dense.abs().sum(1)).squeeze(1)
        assert torch.equal(rows[rows != (padding_idx if padding_idx is not None else -1)], expected_rows)
        np.testing.assert_allclose(summed[t][torch.isin(rows, expected_rows)].numpy(),
                                   dense[expected_rows].double().numpy(), rtol=1e-6, atol=1e-7)
    assert padding_idx is None or padding_idx not in rows.tolist()


def test_field_gradient_gram_matches_dense_slices():
    g = torch.Generator().manual_seed(1)
    dense = torch.zeros(2, 12, 6, dtype=torch.float64)
    rows = torch.tensor([0, 2, 5, 6, 9, 11])
    dense[:, rows] = torch.randn(2, 6, 6, generator=g, dtype=torch.float64)
    starts = [0, 5, 9]  # fields: rows 0-4, 5-8, 9-11
    gram = field_gradient_gram(rows, dense[:, rows], starts, columns=slice(2, 6))
    for f, (lo, hi) in enumerate([(0, 5), (5, 9), (9, 12)]):
        a, b = dense[0, lo:hi, 2:6].numpy().ravel(), dense[1, lo:hi, 2:6].numpy().ravel()
        np.testing.assert_allclose(gram[f].numpy(), [[a @ a, a @ b], [b @ a, b @ b]], rtol=1e-12)


@pytest.mark.parametrize("mode, two_d, weighted", [("sum", False, True), ("mean", False, False), ("mean", True, False),
                                                   ("sum", True, False)])
def test_embedding_bag_rows_equal_the_tables_gradient(mode, two_d, weighted):
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(10, 3, mode=mode, padding_idx=9)
    if two_d:
        ids, offsets = torch.tensor([[1, 2, 9], [2, 2, 5]]), None
    else:
        ids, offsets = torch.tensor([1, 2, 9, 2, 2, 5, 7]), torch.tensor([0, 3, 6])
    weights = torch.rand(ids.shape) if weighted else None
    out = bag(ids, offsets, per_sample_weights=weights)
    loss = (out * torch.randn(out.shape)).sum()
    (out_grad,) = torch.autograd.grad(loss, out, retain_graph=True)
    (dense,) = torch.autograd.grad(loss, bag.weight)
    flat_ids, grads = looked_up_row_gradients(bag, ids, out_grad[None], offsets=offsets,
                                              per_sample_weights=weights)
    rows, summed = embedding_row_gradients(flat_ids, grads)
    np.testing.assert_allclose(summed[0].numpy(), dense[rows].double().numpy(), rtol=1e-6, atol=1e-7)
    assert set(rows.tolist()) == set(torch.nonzero(dense.abs().sum(1)).squeeze(1).tolist())
