"""The dense array of :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts`: (target, behaviour, position,
label) counts while the whole space is small, counted with ``bincount``."""

from __future__ import annotations

import torch

from .sparse_keys import bincount, decode_keys, encode_keys  # noqa: F401 (decode_keys: the doctest)

__all__ = ["count_dense", "dense_keys", "grown_size"]

# Beyond this many cells (512 KB) the dense array leaves the cache, and batches of at least this many rows are
# counted one position at a time (see count_dense).
DENSE_IN_CACHE_CELLS = 1 << 16
ROWS_PER_POSITION_PASS = 1 << 12


def grown_size(size: int, needed: int) -> int:
    """A dense dimension that holds ``needed``: unchanged if it does, else at least half as large again (so that
    a vocabulary revealed id by id re-lays the array out only a few times), in multiples of 8.

    Example:
        >>> grown_size(16, 10), grown_size(16, 17), grown_size(16, 40)
        (16, 24, 40)
    """
    if needed <= size:
        return size
    return -(-max(needed, size + size // 2) // 8) * 8


def count_dense(dense: torch.Tensor, shape: tuple[int, int, int], target: torch.Tensor, behavior: torch.Tensor,
                y: torch.Tensor, valid: torch.Tensor | None, cell_positions: torch.Tensor, by_column: bool) -> None:
    """Add a batch's counts to the flat int64 array ``dense``, laid out [position, target, behaviour, label] with
    ``shape`` = (positions + 1, targets, behaviours), in place.

    ``cell_positions`` is each cell's position p (0 for padding, counted at p = 0 and ignored later);
    ``by_column`` says that a column holds one position (left padding or none), ``valid`` then marks real cells.

    Example:
        >>> dense = torch.zeros(3 * 2 * 4 * 2, dtype=torch.int64)
        >>> behavior = torch.tensor([[1, 3]])
        >>> count_dense(dense, (3, 2, 4), torch.tensor([1]), behavior, torch.tensor([1]), None,
        ...             torch.tensor([[2, 1]]), True)
        >>> torch.nonzero(dense.view(3, 2, 4, 2)).tolist()  # (p, t, b, y)
        [[1, 1, 3, 1], [2, 1, 1, 1]]
    """
    n_positions, n_targets, n_behaviors = shape
    block = n_targets * n_behaviors * 2  # the cells of one position
    table = dense.view(n_positions, block)
    row = target * (n_behaviors * 2) + y  # code within a position's block: (t V + b) 2 + y
    batch, length = behavior.shape
    if by_column and dense.numel() > DENSE_IN_CACHE_CELLS and batch >= ROWS_PER_POSITION_PASS:
        # One bincount per position over its own block, small enough to stay in cache, where one bincount
        # over the whole array would scatter its increments over every position's block: about 1.5 times
        # faster once the array outgrows the cache. A column holds one position (p = L - column); padding
        # goes to a spare cell past the block.
        # The transposed copy is the largest memory pass here: made from the narrowest integer type that
        # holds the ids (int16 for up to 32,767 categories), it moves a quarter of the bytes of int64, and the
        # codes (below 2^22, the dense array's size) are int32. About 1.4x faster overall than all-int64.
        narrow = torch.int16 if n_behaviors <= 1 << 15 else torch.int32
        columns = behavior.to(narrow).t().contiguous()
        row = row.to(torch.int32)
        real = None if valid is None else valid.t()
        for j in range(length):
            codes = torch.add(row, columns[j], alpha=2)
            if real is not None:
                codes = torch.where(real[j], codes, torch.full_like(codes, block))
            table[length - j] += bincount(codes, block + 1)[:block].to(table.device)
        return
    codes = torch.add(cell_positions * block + row[:, None], behavior, alpha=2).reshape(-1)
    dense += bincount(codes, dense.numel()).to(dense.device)


def dense_keys(dense: torch.Tensor, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense array's non-zero cells at real positions (p >= 1) as sorted stored keys, with their counts.

    Example:
        >>> dense = torch.zeros(3, 2, 4, 2, dtype=torch.int64)
        >>> dense[2, 1, 3, 0] = 5  # p = 2, target 1, behaviour 3, label 0
        >>> keys, counts = dense_keys(dense.view(-1), (3, 2, 4))
        >>> [int(part) for part in decode_keys(keys)], counts
        ([1, 3, 2, 0], tensor([5]))
    """
    # Laid out [position, target, behaviour, label] as the stored keys order, its non-zero cells come out sorted.
    cells = dense.view(*shape, 2)[1:]
    where = torch.nonzero(cells)  # [K, 4] (p - 1, t, b, y), lexicographic
    counts = cells[where[:, 0], where[:, 1], where[:, 2], where[:, 3]]
    return encode_keys(where[:, 1], where[:, 2], where[:, 0] + 1, where[:, 3]), counts
