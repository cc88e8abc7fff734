"""Gradient conflict between the tasks of a multi-task model, measured on the shared embeddings.

A multi-task model (Shared-Bottom, MMoE, PLE) feeds one embedding table to every task. At a training step each
task's loss L_t has a gradient g_t with respect to the shared embedding rows; the tasks agree when their
gradients point the same way and *conflict* when they point in opposite directions:

    cos(g_s, g_t) = <g_s, g_t> / (||g_s|| ||g_t||)        (all entries of the gradients flattened)

Negative cosine = the tasks pull the shared embedding in opposite directions. This is the live, per-step
counterpart of the "interest entanglement" that Pan et al. ("Ad Recommendation in a Collapsed and Entangled
World", KDD 2024) and Su et al. (STEM, AAAI 2024) show offline; the cosine itself is the measure of PCGrad
(Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020). See ``METHODS.md`` section 3.

Everything is computed from the T x T *Gram matrix* of the gradients, G_st = <g_s, g_t>, accumulated in float64.
Grams add up over disjoint blocks of coordinates, so one pass over the looked-up rows gives the Gram of every
field (a range of rows) and every column chunk, and the whole table's Gram is their sum.

Gradients are taken with respect to the *looked-up rows* (the embedding layer's output), then summed per unique
id (:func:`embedding_row_gradients`). That sum is exactly the table's parameter gradient on those rows (rows not
looked up have zero gradient), and it exists even when the optimizer never materialises the table's gradient or
keeps it sparse.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

__all__ = ["gradient_cosine", "cosine_from_gram", "embedding_row_gradients", "field_gradient_gram"]


def cosine_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Cosines ``G_st / sqrt(G_ss G_tt)`` from a ``[..., T, T]`` Gram matrix of T gradients, in float64.

    A gradient whose squared norm ``G_tt`` is zero (or not finite) has no direction: every cosine involving it,
    its own diagonal entry included, is NaN ("undefined"). Defined entries are clamped to ``[-1, 1]`` against
    rounding; defined diagonal entries are exactly 1.
    """
    gram = gram.to(torch.float64)
    sq_norms = torch.diagonal(gram, dim1=-2, dim2=-1)
    defined = torch.isfinite(sq_norms) & (sq_norms > 0)
    safe = torch.where(defined, sq_norms, torch.ones_like(sq_norms))
    # One square root of the product (not a product of two roots): exact answers stay exact, e.g. -4/sqrt(2*8).
    cosine = (gram / (safe[..., :, None] * safe[..., None, :]).sqrt()).clamp(-1.0, 1.0)
    eye = torch.eye(gram.shape[-1], dtype=torch.bool, device=gram.device)
    cosine = torch.where(eye, torch.ones_like(cosine), cosine)
    both = defined[..., :, None] & defined[..., None, :]
    return torch.where(both, cosine, torch.full_like(cosine, float("nan")))


def gradient_cosine(gradients: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The T x T matrix of cosines between the tasks' flattened gradients, in the mapping's order.

    Args:
        gradients: task name -> gradient tensor; any shape (an embedding table's ``[rows, K]`` gradient, a
            field's slice of it, a single row), the same shape for every task, any float dtype and device.

    Returns:
        ``[T, T]`` float64 on the gradients' device, entry (s, t) = ``<g_s, g_t> / (||g_s|| ||g_t||)``,
        symmetric, computed from the float64 Gram (:func:`cosine_from_gram`).

    A zero gradient has no direction, so every cosine involving it (its diagonal entry too) is **NaN**, never a
    made-up 0: an "orthogonal" 0 would read as "no conflict". Gradients holding NaN or inf give NaN the same way.
    Callers average with ``nanmean`` and count the undefined entries (as :class:`GradientConflictMonitor` does).
    """
    if len(gradients) < 2:
        raise ValueError(f"gradient_cosine needs the gradients of two tasks or more, got {list(gradients)}")
    shapes = {name: tuple(g.shape) for name, g in gradients.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"every task's gradient must have the same shape, got {shapes}")
    stacked = torch.stack([g.detach().reshape(-1).to(torch.float64) for g in gradients.values()])
    return cosine_from_gram(stacked @ stacked.T)


def embedding_row_gradients(
    ids: torch.Tensor, output_grads: torch.Tensor, *, padding_idx: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the gradients of looked-up embedding vectors per unique row id.

    For ``out = table[ids]`` (``nn.Embedding``), ``dL/dtable[r] = sum_{j: ids_j = r} dL/dout_j``: summing the
    output gradient per unique id gives the table's parameter gradient on exactly the rows that were used.

    Args:
        ids: row ids of any shape (``[B]``, ``[B, F]``, ...).
        output_grads: ``[T, *ids.shape, K]`` (T tasks at once) or ``[*ids.shape, K]`` (one task).
        padding_idx: a row that ``nn.Embedding`` never updates; its gradient is left out, as the table's is.

    Returns:
        ``(rows, grads)``: the sorted unique row ids ``[U]`` and their summed gradients, ``[T, U, K]`` (or
        ``[U, K]``) in float64.
    """
    single = output_grads.dim() == ids.dim() + 1
    grads = output_grads.unsqueeze(0) if single else output_grads
    if tuple(grads.shape[1:-1]) != tuple(ids.shape):
        raise ValueError(f"output gradients of shape {tuple(output_grads.shape)} do not match ids {tuple(ids.shape)}")
    flat_ids = ids.reshape(-1)
    flat_grads = grads.reshape(grads.shape[0], -1, grads.shape[-1]).to(torch.float64)
    if padding_idx is not None:
        keep = flat_ids != padding_idx
        flat_ids, flat_grads = flat_ids[keep], flat_grads[:, keep]
    rows, inverse = torch.unique(flat_ids, return_inverse=True)
    summed = flat_grads.new_zeros(grads.shape[0], rows.numel(), grads.shape[-1])
    # index_put_ with accumulate=True has a deterministic CUDA kernel (index_add_ does not under every setting).
    summed.index_put_((torch.arange(grads.shape[0], device=ids.device)[:, None], inverse[None, :]), flat_grads,
                      accumulate=True)
    return rows, (summed[0] if single else summed)


def field_gradient_gram(
    rows: torch.Tensor,
    row_grads: torch.Tensor,
    field_starts: Sequence[int] | torch.Tensor,
    *,
    columns: slice | None = None,
) -> torch.Tensor:
    """Per-field Gram matrices of T tasks' row gradients: entry ``[f, s, t] = <g_s, g_t>`` over field f's rows.

    Args:
        rows: ``[U]`` row ids (as returned by :func:`embedding_row_gradients`).
        row_grads: ``[T, U, K]`` gradients of those rows, one slice per task.
        field_starts: first row of each field, ascending (the fields of a concatenated table split its rows).
        columns: restrict to a column chunk (a STEM-style task or shared chunk); all columns by default.

    Returns:
        ``[F, T, T]`` float64. The Gram of the whole table (or chunk) is the sum over f; cosines and norms
        follow with :func:`cosine_from_gram`.
    """
    g = row_grads.to(torch.float64)
    if columns is not None:
        g = g[..., columns]
    starts = torch.as_tensor(list(field_starts) if not torch.is_tensor(field_starts) else field_starts,
                             dtype=rows.dtype, device=rows.device)
    field_of_row = torch.searchsorted(starts, rows, right=True) - 1
    # <g_s[u], g_t[u]> for every row u and task pair, then summed over the rows of each field.
    per_row = torch.einsum("suk,tuk->ust", g, g)
    gram = per_row.new_zeros(starts.numel(), g.shape[0], g.shape[0])
    gram.index_put_((field_of_row,), per_row, accumulate=True)
    return gram
