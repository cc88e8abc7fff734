"""The CPU counting of :class:`~lightning_recanalysis.metrics.FieldPairCounts`, in numpy and torch's ``bincount``.

Two steps per flush of waiting rows: every id becomes its field's bucket with one gather in a dense id -> bucket
table (:func:`padded_lookup`, :func:`lookup_buckets`), then every (field, bucket, label) and every (pair, bucket
of i, bucket of j, label) is counted (:func:`count_buckets`). Both add exactly what a dictionary would count.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["padded_lookup", "lookup_buckets", "count_buckets"]


def padded_lookup(table: np.ndarray, offsets: np.ndarray, spans: np.ndarray,
                  other: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dense lookup with one ``other`` entry after each field's entries, so that ids clamped to their field's
    span land on it: ``(padded table, each field's offset in it, spans)``.

    ``table[offsets[f] + id]`` is field f's bucket of ``id`` for ``id < spans[f]``; every larger id is "other".

    Example:
        >>> table = np.array([1, 0, 0], dtype=np.int16)  # field 0: id 0 -> bucket 1, id 1 -> 0; field 1: id 0 -> 0
        >>> padded_lookup(table, np.array([0, 2]), np.array([2, 1]), other=2)
        (array([1, 0, 2, 0, 2], dtype=int16), array([0, 3]), array([2, 1]))
    """
    n = offsets.size
    # Field f's entries move f places up (one "other" entry after each earlier field).
    padded = np.full(table.size + n, other, dtype=table.dtype)
    shifted = offsets + np.arange(n)
    for f in range(n):
        padded[shifted[f] : shifted[f] + spans[f]] = table[offsets[f] : offsets[f] + spans[f]]
    return padded, shifted.astype(np.int64), spans.astype(np.int64)


def lookup_buckets(ids: np.ndarray, lookup: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """``[N, B]`` int32 buckets of ``[B, N]`` non-negative ids: one gather for all fields (see
    :func:`padded_lookup`).

    Example:
        >>> lookup = padded_lookup(np.array([1, 0, 0], dtype=np.int16), np.array([0, 2]), np.array([2, 1]), other=2)
        >>> lookup_buckets(np.array([[0, 0], [1, 5], [9, 0]]), lookup)  # [B=3, N=2] ids -> [N, B] buckets
        array([[1, 0, 2],
               [0, 2, 0]], dtype=int32)
    """
    table, offsets, spans = lookup
    # Ids past a field's largest kept id are clamped to its span, whose entry (one past the ids) is "other".
    index = np.minimum(ids, spans)
    index += offsets
    # The [N, B] transpose is made by the int32 copy (of the gathered int16 buckets, the narrowest array).
    return table[index].T.astype(np.int32, order="C")


def count_buckets(buckets: np.ndarray, label: np.ndarray, field_counts: torch.Tensor, pair_counts: torch.Tensor,
                  block_rows: int) -> None:
    """Add the counts of ``[N, B]`` int32 ``buckets`` and ``[B]`` 0/1 ``label`` to the CPU states in place:
    ``field_counts`` ``[N, k, 2]`` and ``pair_counts`` ``[N (N - 1) / 2, k, k, 2]`` (pairs i < j, row-major).

    One ``bincount`` per field i over the codes of all its pairs (i, j > i). Field i's pairs occupy consecutive
    slices of ``pair_counts``, so the code of (pair (i, j), a, b, y) relative to field i's first pair is
    ``(j - i - 1) k^2 2 + (a k + b) 2 + y``: one add of field i's row (the a part) to the rows of its partners (b,
    y and the pair's slice), then one ``bincount`` into a block of at most (N - 1) x 16 KiB that stays in cache.
    The codes are laid out pair by pair, so each run of increments stays inside one pair's 16 KiB table. Rows
    are taken in blocks of ``block_rows``, enough that a block's codes outnumber the cells it adds to the state
    (and the per-call overhead vanishes), few enough that the codes stay a few MB. torch's ``bincount`` reads the
    int32 codes as they are, where numpy's converts them to int64 first.

    Example:
        >>> fields, pairs = torch.zeros(2, 3, 2, dtype=torch.int64), torch.zeros(1, 3, 3, 2, dtype=torch.int64)
        >>> buckets = np.array([[0, 2], [1, 1]], dtype=np.int32)  # [N = 2, B = 2]
        >>> count_buckets(buckets, np.array([1, 0]), fields, pairs, block_rows=1024)
        >>> torch.nonzero(pairs[0]).tolist()  # (a, b, y): (0, 1, 1) and (2, 1, 0)
        [[0, 1, 1], [2, 1, 0]]
    """
    n, batch = buckets.shape
    k = field_counts.shape[1]
    cells = k * k * 2
    y = label.astype(np.int32)
    # Code of (a, y) in a field's table is 2 a + y; of (a, b, y) in a pair's table (a k + b) 2 + y.
    right = buckets * 2 + y
    # Every field's (a, y) codes offset to its own table: one bincount for all fields.
    right += (np.arange(n, dtype=np.int32) * (2 * k))[:, None]
    field_counts.view(-1).add_(torch.bincount(torch.from_numpy(right).view(-1), minlength=n * 2 * k))
    if n < 2:
        return
    # Partner j's (b, y) code with its pair slot j (cells apart); field i subtracts the slot of (i, i + 1).
    right += (np.arange(n, dtype=np.int32) * (cells - 2 * k))[:, None]
    left = buckets * (2 * k)
    flat = pair_counts.view(-1)
    step = min(batch, block_rows)
    buffer = np.empty((n - 1) * step, dtype=np.int32)
    first_pair = 0
    for i in range(n - 1):
        partners = n - 1 - i
        block = flat[first_pair * cells : (first_pair + partners) * cells]
        left[i] -= (i + 1) * cells
        for start in range(0, batch, step):
            rows = min(step, batch - start)
            codes = buffer[: partners * rows].reshape(partners, rows)
            np.add(right[i + 1 :, start : start + rows], left[i, start : start + rows], out=codes)
            block.add_(torch.bincount(torch.from_numpy(codes).view(-1), minlength=partners * cells))
        first_pair += partners
