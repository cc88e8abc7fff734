"""The counting of :class:`~lightning_recanalysis.metrics.FieldPairCounts` with torch's kernels (its GPU path; the
CPU path is :mod:`.field_pair_cpu`). Both add exactly what a dictionary would count."""

from __future__ import annotations

import torch

__all__ = ["code_parts", "count_buckets_torch"]


def code_parts(num_fields: int, num_buckets: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Per-field ``[N, 1]`` int32 code offsets (field table, left and right half of a pair's code) and the
    pairs' field indices (i < j, row-major), on ``device``: what :func:`count_buckets_torch` adds to buckets.

    Example:
        >>> field_base, left_base, right_base, first, second = code_parts(3, 2)
        >>> first.tolist(), second.tolist()
        ([0, 0, 1], [1, 2, 2])
    """
    n, k = num_fields, num_buckets
    cells = k * k * 2
    f = torch.arange(n, dtype=torch.int64)
    g = (f * n - f * (f + 1) // 2 - f - 1) * cells
    pairs = torch.triu_indices(n, n, 1)
    return tuple(t.to(device) for t in (
        (f * k * 2).to(torch.int32)[:, None], g.to(torch.int32)[:, None],
        (f * cells).to(torch.int32)[:, None], pairs[0], pairs[1]))


def count_buckets_torch(buckets: torch.Tensor, label: torch.Tensor, field_counts: torch.Tensor,
                        pair_counts: torch.Tensor, parts: tuple[torch.Tensor, ...]) -> None:
    """Add every (field, bucket, label) to ``field_counts`` ``[N, K, 2]`` and every (pair, bucket of i, bucket of
    j, label) to ``pair_counts`` ``[P, K, K, 2]``, in place, from ``[N, B]`` int32 ``buckets`` and ``[B]`` int32
    labels; ``parts`` from :func:`code_parts` on the counts' device.

    Example:
        >>> fields, pairs = torch.zeros(2, 3, 2, dtype=torch.int64), torch.zeros(1, 3, 3, 2, dtype=torch.int64)
        >>> buckets = torch.tensor([[0, 2], [1, 1]], dtype=torch.int32)  # [N = 2, B = 2]
        >>> count_buckets_torch(buckets, torch.tensor([1, 0], dtype=torch.int32), fields, pairs, code_parts(2, 3))
        >>> torch.nonzero(pairs[0]).tolist()  # (a, b, y): (0, 1, 1) and (2, 1, 0)
        [[0, 1, 1], [2, 1, 0]]
    """
    field_base, left_base, right_base, first, second = parts
    ones = torch.ones(1, dtype=torch.int64, device=buckets.device)
    k = field_counts.shape[1]
    codes = (buckets * 2 + label + field_base).reshape(-1)
    _add_counts(field_counts, codes, ones)
    if field_counts.shape[0] < 2:
        return
    # Code of (pair p = (i, j), a, b, y) = ((p k + a) k + b) 2 + y. For row-major i < j pairs
    # p = g(i) + j with g(i) = i N - i (i + 1) / 2 - i - 1, so the code splits into a part of field i's
    # column and a part of field j's: two row gathers and one add, no per-pair arithmetic. Pair-major
    # layout keeps each pair's increments inside its own 16 KB slice of the counts (cache-friendly).
    left = buckets * (k * 2) + left_base
    right = buckets * 2 + label + right_base
    codes = (left.index_select(0, first) + right.index_select(0, second)).reshape(-1)
    _add_counts(pair_counts, codes, ones)


def _add_counts(counts: torch.Tensor, codes: torch.Tensor, one: torch.Tensor) -> None:
    """``counts.view(-1)[code] += 1`` for every code (codes may repeat), with ``index_add_`` (deterministic on
    a GPU, unlike a scatter-based bincount under ``torch.use_deterministic_algorithms``). The CPU path counts
    with numpy's ``bincount`` instead (see :func:`~lightning_recanalysis.metrics.field_pair_cpu.count_buckets`)."""
    counts.view(-1).index_add_(0, codes, one.expand(codes.numel()))
