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

from .spectrum import information_abundance, row_normalized_gram, singular_values_from_gram

__all__ = ["cross_layer_block", "interaction_information_abundance"]


def cross_layer_block(cross_weight: torch.Tensor, source: int, partner: int, width: int) -> torch.Tensor:
    """The K x K block of a DCNv2 cross weight that maps field ``source`` into field ``partner``'s slot."""
    return cross_weight[partner * width : (partner + 1) * width, source * width : (source + 1) * width]


def interaction_information_abundance(
    field_tables: Sequence[torch.Tensor], cross_weight: torch.Tensor
) -> torch.Tensor:
    """``[N, N]`` float64 matrix, entry (i, j) = IA of field i's sub-embedding as seen by field j.

    Args:
        field_tables: the N per-field tables E_i, each ``[D_i, K]`` (views of one concatenated table are fine).
        cross_weight: the first cross layer's full weight, ``[N K, N K]`` (``nn.Linear(N K, N K).weight``).

    Rows index the source field i, columns the partner field j, in the order given. Each P_ij is streamed in
    row chunks (see :func:`row_normalized_gram`), never materialised whole.
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
        for j in range(n):
            block_t = cross_layer_block(w, i, j, width).T
            block_t = block_t.to(torch.float64 if table.dtype == torch.float64 else torch.float32)
            gram = row_normalized_gram(table, transform=lambda chunk, b=block_t: chunk @ b).gram
            out[i, j] = information_abundance(singular_values_from_gram(gram, min(table.shape[0], width))).cpu()
    return out
