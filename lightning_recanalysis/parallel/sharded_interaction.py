"""The interaction matrix of fields whose tables are sharded, read in two steps: every collective first, then
the spectra, locally.

Entry (i, j) of the interaction matrix is the IA of ``E_i W_ij^T`` (METHODS.md), whose singular values come
from the K x K *partner Gram* ``W_ij E_hat_i^T E_hat_i W_ij^T``, a sum over field i's rows: for a sharded table
each rank sums its own rows and one all-reduce per field adds them (:func:`~lightning_recanalysis.parallel.sharding.
row_sum`), so no rank holds a table. :func:`sharded_partner_grams` makes only those reads (every rank the same
collectives, in the same order); :func:`interaction_from_partner_grams` takes the spectra afterwards, so that a
failure of the local part on one rank cannot leave another waiting in a read.
"""

from __future__ import annotations

import torch

from . import sharding
from ..functional.interaction import partner_grams
from ..functional.spectrum import information_abundance

__all__ = ["sharded_partner_grams", "interaction_from_partner_grams"]


def sharded_partner_grams(sources, weight: torch.Tensor, width: int) -> list[tuple[torch.Tensor, int]]:
    """Each field's N partner Grams ``[N, K, K]`` and its number of rows, for fields whose tables are sharded
    (``DTensor`` or ``ShardedTensor``): a sum over the field's rows (:func:`~lightning_recanalysis.parallel.sharding.row_sum`),
    so no rank holds a table; ``sources`` are the fields' ``(weight, rows, columns)`` in input order. Only reads
    (every rank makes the same collectives); the spectra are taken afterwards.

    Example:
        >>> from lightning_recanalysis.functional.interaction import interaction_information_abundance
        >>> g = torch.Generator().manual_seed(0)
        >>> table = torch.randn(80, 4, generator=g)  # two fields in one table: rows 0-49 and 50-79
        >>> weight = torch.eye(8)
        >>> weight[4:, :4] = torch.diag(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        >>> grams = sharded_partner_grams([(table, (0, 50), (0, 4)), (table, (50, 80), (0, 4))], weight, 4)
        >>> [(tuple(gram.shape), rows) for gram, rows in grams]
        [((2, 4, 4), 50), ((2, 4, 4), 30)]
        >>> matrix = interaction_from_partner_grams(grams, 4)  # the same as from the tables whole:
        >>> whole = interaction_information_abundance([table[:50], table[50:]], weight)
        >>> torch.allclose(matrix, whole.double(), atol=1e-5)
        True
    """
    n = len(sources)
    grams = []
    for i, (parameter, rows, columns) in enumerate(sources):
        w_i = weight[:, i * width : (i + 1) * width].T.to(torch.float64)
        grams.append((sharding.row_sum(parameter,
                                       lambda block, w_i=w_i: partner_grams(block, w_i.to(block.device), n, width),
                                       rows=rows, columns=columns), rows[1] - rows[0]))
    return grams


def interaction_from_partner_grams(grams: list[tuple[torch.Tensor, int]], width: int) -> torch.Tensor:
    """The interaction matrix (IA of each field's sub-embeddings) from the partner Grams, locally.

    Example:
        >>> isotropic = torch.eye(2, dtype=torch.float64).expand(2, 2, 2)  # singular values 1, 1: IA = 2
        >>> interaction_from_partner_grams([(isotropic, 10), (isotropic, 10)], 2).tolist()
        [[2.0, 2.0], [2.0, 2.0]]
    """
    n = len(grams)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i, (partner, rows) in enumerate(grams):
        sv = torch.linalg.eigvalsh(partner).clamp_min(0.0).sqrt().flip(-1)[:, : min(rows, width)]
        out[i] = information_abundance(sv).cpu()
    return out
