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

import numpy as np
import torch
from torch import nn

__all__ = ["gradient_cosine", "cosine_from_gram", "embedding_row_gradients", "field_gradient_gram",
           "looked_up_row_gradients", "view_gram", "view_grams", "cosine_sums"]


def cosine_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Cosines ``G_st / sqrt(G_ss G_tt)`` from a ``[..., T, T]`` Gram matrix of T gradients, in float64.

    A gradient whose squared norm ``G_tt`` is zero (or not finite) has no direction: every cosine involving it,
    its own diagonal entry included, is NaN ("undefined"). Defined entries are clamped to ``[-1, 1]`` against
    rounding; defined diagonal entries are exactly 1.

    Example:
        >>> gram = torch.tensor([[4.0, -2.0, 0.0], [-2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
        >>> cosine_from_gram(gram)
        tensor([[ 1., -1., nan],
                [-1.,  1., nan],
                [nan, nan, nan]], dtype=torch.float64)
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

    Example:
        >>> gradient_cosine({'click': torch.tensor([1.0, 0.0]), 'buy': torch.tensor([-1.0, 1.0])}).round(decimals=4)
        tensor([[ 1.0000, -0.7071],
                [-0.7071,  1.0000]], dtype=torch.float64)
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

    Example:
        >>> rows, grads = embedding_row_gradients(torch.tensor([3, 1, 3]), torch.tensor([[1.0], [2.0], [4.0]]))
        >>> rows.tolist(), grads.tolist()
        ([1, 3], [[2.0], [5.0]])
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
    if flat_ids.device.type == "cpu":
        # numpy's sort is vectorised (AVX-512 where the CPU has it): 3.5 times faster than torch.unique on 12,288
        # int64 keys, side by side.
        rows_np, inverse_np = np.unique(flat_ids.numpy(), return_inverse=True)
        rows, inverse = torch.from_numpy(rows_np), torch.from_numpy(inverse_np.reshape(-1))
    else:
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
    probes: torch.Tensor | None = None,
    num_probes: int | None = None,
) -> torch.Tensor:
    """Per-field Gram matrices of T tasks' row gradients: entry ``[f, s, t] = <g_s, g_t>`` over field f's rows.

    Args:
        rows: ``[U]`` row ids (as returned by :func:`embedding_row_gradients`).
        row_grads: ``[T, U, K]`` gradients of those rows, one slice per task.
        field_starts: first row of each field, ascending (the fields of a concatenated table split its rows).
        columns: restrict to a column chunk (a STEM-style task or shared chunk); all columns by default.
        probes: ``[U]``, the probe (step) each row's gradient belongs to: the Grams of many probes in one pass,
            ``[num_probes, F, T, T]`` (a row id may then appear once per probe).
        num_probes: with ``probes``, how many probes (every value of ``probes`` below it).

    Returns:
        ``[F, T, T]`` float64 (``[P, F, T, T]`` with ``probes``). The Gram of the whole table (or chunk) is the
        sum over f; cosines and norms follow with :func:`cosine_from_gram`.

    Example:
        >>> rows = torch.tensor([0, 1, 5])  # fields: rows 0-3, rows 4 and up
        >>> row_grads = torch.tensor([[[1.0], [2.0], [3.0]], [[1.0], [-1.0], [0.5]]])  # [T=2, U=3, K=1]
        >>> field_gradient_gram(rows, row_grads, [0, 4]).tolist()
        [[[5.0, -1.0], [-1.0, 2.0]], [[9.0, 1.5], [1.5, 0.25]]]
    """
    g = row_grads.to(torch.float64)
    if columns is not None:
        g = g[..., columns]
    starts = torch.as_tensor(list(field_starts) if not torch.is_tensor(field_starts) else field_starts,
                             dtype=rows.dtype, device=rows.device)
    field_of_row = torch.searchsorted(starts, rows, right=True) - 1
    # <g_s[u], g_t[u]> for every row u and task pair, then summed over the rows of each field.
    per_row = torch.einsum("suk,tuk->ust", g, g)
    if (probes is None) != (num_probes is None):
        raise ValueError("give both probes and num_probes, or neither")
    if probes is None:
        gram = per_row.new_zeros(starts.numel(), g.shape[0], g.shape[0])
        gram.index_put_((field_of_row,), per_row, accumulate=True)
        return gram
    gram = per_row.new_zeros(int(num_probes), starts.numel(), g.shape[0], g.shape[0])
    gram.index_put_((probes, field_of_row), per_row, accumulate=True)
    return gram


def looked_up_row_gradients(
    module: nn.Embedding | nn.EmbeddingBag,
    ids: torch.Tensor,
    output_grads: torch.Tensor,
    *,
    offsets: torch.Tensor | None = None,
    per_sample_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ids ``[n]`` and the gradient of each looked-up row ``[T, n, K]`` for one call of an embedding module.

    ``nn.Embedding``: the output gradient of each lookup, as is. ``nn.EmbeddingBag`` (``sum``/``mean``): a bag's
    output gradient flows back to each member row, times its per-sample weight (``sum``) or 1/bag size (``mean``).
    Rows at ``padding_idx`` get no gradient, as in the table itself. Rows may repeat: sum them per id with
    :func:`embedding_row_gradients`.

    Args:
        module: the embedding module that was called, with the ``ids`` (and ``offsets``, ``per_sample_weights``)
            it was called with.
        output_grads: ``[T, *output.shape]``, the gradient of each of T tasks' losses with respect to the output.

    Example:
        >>> bag = nn.EmbeddingBag(5, 2, mode="mean")
        >>> ids, grads = looked_up_row_gradients(bag, torch.tensor([[1, 3]]), torch.ones(1, 1, 2))
        >>> ids.tolist(), grads.tolist()  # each member of the 2-row bag gets half of the bag's gradient
        ([1, 3], [[[0.5, 0.5], [0.5, 0.5]]])
    """
    width = output_grads.shape[-1]
    pad = module.padding_idx
    if isinstance(module, nn.Embedding):
        flat_ids = ids.reshape(-1)
        grads = output_grads.reshape(output_grads.shape[0], -1, width)
        keep = None if pad is None else flat_ids != pad
    else:
        if ids.dim() == 2:
            n_bags, length = ids.shape
            flat_ids = ids.reshape(-1)
            bag = torch.arange(n_bags, device=ids.device).repeat_interleave(length)
        else:
            starts = offsets[:-1] if module.include_last_offset else offsets
            n_bags = starts.numel()
            flat_ids = ids
            bag = torch.searchsorted(starts, torch.arange(ids.numel(), device=ids.device), right=True) - 1
        keep = None if pad is None else flat_ids != pad
        scale = torch.ones(flat_ids.shape, dtype=output_grads.dtype, device=ids.device)
        if per_sample_weights is not None:
            scale = scale * per_sample_weights.reshape(-1).to(output_grads.dtype)
        if module.mode == "mean":
            members = bag if keep is None else bag[keep]
            size = torch.bincount(members, minlength=n_bags).clamp_min(1).to(output_grads.dtype)
            scale = scale / size[bag]
        grads = output_grads[:, bag] * scale[None, :, None]
    if keep is not None:
        flat_ids, grads = flat_ids[keep], grads[:, keep]
    return flat_ids, grads


def view_gram(field_grams: Sequence[torch.Tensor | None], present: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """``[F + 1, T, T]``: :func:`view_grams` at one step, from each part's ``[F_k, T', T']`` Grams over the
    ``present`` tasks (indices into the T tasks).

    Example:
        >>> gram = view_gram([torch.ones(1, 2, 2, dtype=torch.float64), None], torch.tensor([0, 2]), 3)
        >>> gram[0].tolist()
        [[1.0, nan, 1.0], [nan, nan, nan], [1.0, nan, 1.0]]
        >>> bool(gram[1].isnan().all()), gram[2, 0, 0].item()
        (True, 1.0)
    """
    mask = torch.zeros(1, num_tasks, dtype=torch.bool)
    mask[0, present] = True
    parts = []
    for part in field_grams:  # each part's present tasks placed among all T (the absent ones made NaN below)
        if part is not None:
            full = part.new_zeros(1, part.shape[0], num_tasks, num_tasks)
            full[0, :, present[:, None], present[None, :]] = part
            part = full
        parts.append(part)
    return view_grams(parts, mask)[0]


def view_grams(field_grams: Sequence[torch.Tensor | None], present: torch.Tensor) -> torch.Tensor:
    """``[P, F + 1, T, T]`` float64 Grams of a view at P probed steps: its F fields, then the whole view (their sum).

    ``field_grams`` holds each part's ``[P, F_k, T, T]`` Grams (a table, or a column chunk of one), NaN at a
    step that did not look the part up, or ``None`` for a part looked up at no step (one field): a field not
    looked up has no gradient to compare, so its Gram is undefined (NaN) and left out of the view's sum.
    ``present`` ``[P, T]`` marks the tasks measured at each step; the others get a NaN row and column
    (undefined, not zero).

    Example:
        >>> part = torch.ones(2, 1, 2, 2, dtype=torch.float64)
        >>> part[1] = float("nan")  # the second step did not look this part up
        >>> gram = view_grams([part, None], torch.tensor([[True, True], [True, False]]))
        >>> gram[0].tolist()  # field 1, field 2 (never looked up), the whole view
        [[[1.0, 1.0], [1.0, 1.0]], [[nan, nan], [nan, nan]], [[1.0, 1.0], [1.0, 1.0]]]
        >>> gram[1, 2].tolist()  # nothing looked up: the sum is 0, its absent task NaN
        [[0.0, nan], [nan, nan]]
    """
    steps, tasks = present.shape
    per_field = torch.cat([part if part is not None else
                           torch.full((steps, 1, tasks, tasks), float("nan"), dtype=torch.float64)
                           for part in field_grams], dim=1)
    gram = torch.cat([per_field, per_field.nansum(1, keepdim=True)], dim=1)
    absent = ~present[:, None, :, None] | ~present[:, None, None, :]
    return gram.masked_fill(absent, float("nan"))


def cosine_sums(grams: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The sums behind the conflict statistics of ``[steps, R, T, T]`` Grams (NaN where undefined), and the
    cosines ``[steps, R, T, T]`` (:func:`cosine_from_gram`).

    Sums over the steps, each ``[R, T, T]`` (or ``[R, T]`` for norms), so that ranks and epochs add them up:
    ``cos_sum`` / ``cos_sq_sum`` / ``cos_n`` / ``neg_n`` sum the defined cosines and their squares, count them and
    count the negative ones;
    ``norm_sum`` / ``norm_n`` sum the gradient norms ``sqrt(G_tt)`` of the tasks present and count them.

    Example:
        >>> grams = torch.tensor([[[[4.0, -2.0], [-2.0, 1.0]]], [[[1.0, 0.5], [0.5, 1.0]]]], dtype=torch.float64)
        >>> sums, cosines = cosine_sums(grams)
        >>> sums["cos_sum"][0, 0, 1].item(), sums["neg_n"][0, 0, 1].item(), sums["norm_sum"][0].tolist()
        (-0.5, 1.0, [3.0, 2.0])
    """
    cosine = cosine_from_gram(grams)
    defined = torch.isfinite(cosine)
    sq_norms = torch.diagonal(grams, dim1=-2, dim2=-1)
    present = torch.isfinite(sq_norms)
    sums = {
        "cos_sum": torch.where(defined, cosine, torch.zeros_like(cosine)).sum(0),
        "cos_sq_sum": torch.where(defined, cosine * cosine, torch.zeros_like(cosine)).sum(0),
        "cos_n": defined.sum(0).to(torch.float64),
        "neg_n": (defined & (cosine < 0)).sum(0).to(torch.float64),
        "norm_sum": torch.where(present, sq_norms.clamp_min(0).sqrt(), torch.zeros_like(sq_norms)).sum(0),
        "norm_n": present.sum(0).to(torch.float64),
    }
    return sums, cosine
