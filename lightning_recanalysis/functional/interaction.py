"""Interaction collapse through a DCNv2 cross layer (Guo et al., ICML 2024, "interaction-collapse law").

DCNv2's first cross layer computes ``x_1 = x_0 * (W x_0 + b) + x_0`` on the concatenated field embeddings
``x_0 = [e_1, ..., e_N]`` (each of width K). The K x K block ``W[jK:(j+1)K, iK:(i+1)K]`` maps field i's
embedding into field j's slot, so field i's *sub-embedding as seen by field j* is the table

    P_ij = E_i W_ij^T        (D_i x K),  W_ij = W[jK:(j+1)K, iK:(i+1)K]

and the interaction matrix holds ``IA(row-normalised P_ij)`` for every (source i, partner j). The paper's
finding: with i fixed, IA rises with the partner's own IA: low-IA fields drag down the fields they meet.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .spectrum import ROW_NORM_EPS, information_abundance, row_normalized_gram, singular_values_from_gram

__all__ = ["cross_layer_block", "interaction_information_abundance", "partner_grams"]

# Fields with at most this many rows get all N partners in one float64 pass (see partner_grams); larger
# ones are streamed pair by pair through row_normalized_gram (float32 pass, narrow second pass where needed).
_BATCHED_MAX_ROWS = 1 << 16
# Values of the [N, rows, K] float64 block formed per step of the batched pass: 32 MiB on a GPU (few, large
# launches); 2 MiB on a CPU, where a block that stays in cache made the pass 2 to 2.8 times faster than 32 MiB
# blocks (10,000 and 65,536 rows, 8 fields of 16, side by side).
_BATCHED_STEP_VALUES = 1 << 22
_BATCHED_STEP_VALUES_CPU = 1 << 18


def cross_layer_block(cross_weight: torch.Tensor, source: int, partner: int, width: int) -> torch.Tensor:
    """The K x K block of a DCNv2 cross weight that maps field ``source`` into field ``partner``'s slot.

    Example:
        >>> weight = torch.arange(16.0).view(4, 4)  # 2 fields of width 2
        >>> cross_layer_block(weight, source=0, partner=1, width=2)
        tensor([[ 8.,  9.],
                [12., 13.]])
    """
    return cross_weight[partner * width : (partner + 1) * width, source * width : (source + 1) * width]


def interaction_information_abundance(
    field_tables: Sequence[torch.Tensor], cross_weight: torch.Tensor
) -> torch.Tensor:
    """``[N, N]`` float64 matrix, entry (i, j) = IA of field i's sub-embedding as seen by field j.

    Args:
        field_tables: the N per-field tables E_i, each ``[D_i, K]`` (views of one concatenated table are fine).
        cross_weight: the first cross layer's full weight, ``[N K, N K]`` (``nn.Linear(N K, N K).weight``).

    Rows index the source field i, columns the partner field j, in the order given. A field of at most 2^16
    rows is projected onto all N partners at once, in float64 (N Grams from one product per row slice: the
    per-pair calls would cost N times the launches and, on a GPU, N times the synchronisations). A larger
    field's P_ij are streamed in row chunks, pair by pair (see :func:`row_normalized_gram`); no P_ij is ever
    materialised whole.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> tables = [torch.randn(50, 4, generator=g), torch.randn(30, 4, generator=g)]
        >>> weight = torch.eye(8)  # each field keeps its own embedding; field 0 reaches field 1's slot on one axis:
        >>> weight[4:, :4] = torch.diag(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        >>> interaction_information_abundance(tables, weight).round(decimals=2)
        tensor([[3.4800, 1.0000],
                [0.0000, 3.6000]], dtype=torch.float64)
    """
    n = len(field_tables)
    if n == 0:
        raise ValueError("interaction_information_abundance needs at least one field table")
    width = field_tables[0].shape[1]
    if any(t.shape[1] != width for t in field_tables):
        raise ValueError(f"all field tables must share one width, got {[t.shape[1] for t in field_tables]}")
    if tuple(cross_weight.shape) != (n * width, n * width):
        raise ValueError(
            f"cross weight of shape {tuple(cross_weight.shape)} does not match {n} fields of width {width}: "
            f"expected ({n * width}, {n * width})"
        )
    out = torch.zeros(n, n, dtype=torch.float64)
    w = cross_weight.detach()
    for i, table in enumerate(field_tables):
        if table.shape[0] <= _BATCHED_MAX_ROWS:
            # Columns j*K..(j+1)*K of the product are P_ij: the blocks W_ij^T side by side.
            w_i = w[:, i * width : (i + 1) * width].T.to(torch.float64)  # [K, N K]
            grams = partner_grams(table, w_i, n, width)
            sv = torch.linalg.eigvalsh(grams).clamp_min(0.0).sqrt().flip(-1)[:, : min(table.shape[0], width)]
            out[i] = information_abundance(sv).cpu()
            continue
        for j in range(n):
            block_t = cross_layer_block(w, i, j, width).T
            block_t = block_t.to(torch.float64 if table.dtype == torch.float64 else torch.float32)
            gram = row_normalized_gram(table, transform=lambda chunk, b=block_t: chunk @ b).gram
            out[i, j] = information_abundance(singular_values_from_gram(gram, min(table.shape[0], width))).cpu()
    return out


def partner_grams(table: torch.Tensor, w_i: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """``[N, K, K]`` float64 Grams of the row-normalised P_i1 ... P_iN (rows of P_ij that are zero or not
    finite are left out, as :func:`row_normalized_gram` leaves them out).

    ``w_i = W[:, iK:(i+1)K]^T`` (``[K, N K]``, float64): the blocks W_ij^T side by side. A sum over the rows of
    ``table``, so the Grams of a table split by rows are the sums of its parts'.

    Example:
        >>> import torch
        >>> from lightning_recanalysis.functional.interaction import partner_grams
        >>> grams = partner_grams(torch.eye(2, dtype=torch.float64), torch.eye(2, 4, dtype=torch.float64), 2, 2)
        >>> [round(v, 6) for v in grams[0].diagonal().tolist()], grams[1].abs().sum().item()
        ([1.0, 1.0], 0.0)
    """
    grams = torch.zeros(n, width, width, dtype=torch.float64, device=table.device)
    # [N, K, K]: partner j's block W_ij^T. One batched product gives every P_ij in the [N, rows, K] layout, so
    # the Grams are one batched product too (an einsum over the [rows, N, K] layout copied it first: 1.7 to 2
    # times slower on the DCNv2 demo's largest field, side by side).
    blocks = w_i.view(width, n, width).permute(1, 0, 2)
    values = _BATCHED_STEP_VALUES if table.is_cuda else _BATCHED_STEP_VALUES_CPU
    step = max(1, values // (n * width))
    for start in range(0, table.shape[0], step):
        sub = torch.matmul(table[start : start + step].detach().to(torch.float64), blocks)  # [N, rows, K]
        norms = torch.linalg.vector_norm(sub, dim=2, keepdim=True)
        valid = torch.isfinite(norms) & (norms > 0)
        sub = torch.where(valid, sub / (norms + ROW_NORM_EPS), 0.0)
        grams += torch.bmm(sub.transpose(1, 2), sub)
    return grams
