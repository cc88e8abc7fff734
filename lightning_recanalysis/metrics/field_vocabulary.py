"""The bucketing of :class:`~lightning_recanalysis.metrics.FieldPairCounts`: each field's kept (most frequent)
values, and the bucket of every id.

Bucket k < V of field f is its k-th kept value; bucket V holds every other value. Ids are looked up in a dense
id -> bucket table over 0..(largest kept id) of each field while the table stays small, else by binary search
in each field's sorted kept ids.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["PAD", "choose_vocabulary", "value_frequencies", "VocabularyTables", "vocabulary_tables",
           "lookup_buckets_torch"]

#: Padding of the per-field sorted vocabularies; ids must stay below it.
PAD = torch.iinfo(torch.int64).max
# Buckets are looked up in a dense table over ids 0..(largest kept id) of each field when all fields together
# need at most this many entries (8 MiB of int16); beyond it (e.g. hashed ids), by binary search. The table is one
# gather per batch; torch.searchsorted is 3 to 10 times slower and degrades badly with two threads on a busy CPU.
LOOKUP_LIMIT = 1 << 22


def value_frequencies(features: torch.Tensor) -> torch.Tensor:
    """``[K, 3]`` rows (field, value, count) of the values each column of ``[B, N]`` ``features`` holds.

    Example:
        >>> value_frequencies(torch.tensor([[5, 1], [5, 2], [7, 2]])).tolist()
        [[0, 5, 2], [0, 7, 1], [1, 1, 1], [1, 2, 2]]
    """
    rows = []
    for f in range(features.shape[1]):
        values, counts = torch.unique(features[:, f], return_counts=True)
        rows.append(torch.stack([torch.full_like(values, f), values, counts], 1))
    return torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64, device=features.device)


def choose_vocabulary(frequencies: torch.Tensor, num_fields: int, num_values: int) -> list[list[int]]:
    """Each field's ``num_values`` most frequent values, most frequent first, from (field, value, count) rows
    (rows of one value may repeat, e.g. one per process: their counts are summed). Ties go to the smaller id, so
    every process that sees the same rows chooses the same.

    Example:
        >>> rows = torch.tensor([[0, 5, 2], [0, 7, 1], [0, 7, 2], [0, 3, 2], [1, 2, 4]])
        >>> choose_vocabulary(rows, num_fields=2, num_values=2)
        [[7, 3], [2]]
    """
    vocabulary = []
    for f in range(num_fields):
        mine = frequencies[frequencies[:, 0] == f]
        values, inverse = torch.unique(mine[:, 1], return_inverse=True)  # ascending
        counts = torch.zeros_like(values).index_add_(0, inverse, mine[:, 2])
        # Most frequent first; a stable sort of ascending ids breaks ties to the smaller id on every process.
        order = torch.argsort(-counts, stable=True)[:num_values]
        vocabulary.append(values[order].tolist())
    return vocabulary


class VocabularyTables:
    """What the bucket lookup reads: ``sorted_values`` / ``sorted_buckets`` ``[N, V]`` (each field's kept ids
    ascending, :data:`PAD` after, and their buckets) and ``lookup`` (dense table, per-field offsets, per-field
    spans) or ``None`` where the table would be too large.

    Example:
        >>> tables = vocabulary_tables([[9, 4], [1]], num_values=2)
        >>> tables.sorted_values[0].tolist(), tables.sorted_buckets[0].tolist()
        ([4, 9], [1, 0])
    """

    def __init__(self, sorted_values: torch.Tensor, sorted_buckets: torch.Tensor,
                 lookup: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> None:
        self.sorted_values, self.sorted_buckets, self.lookup = sorted_values, sorted_buckets, lookup


def vocabulary_tables(kept: Sequence[Sequence[int]], num_values: int,
                      device: torch.device | str = "cpu") -> VocabularyTables:
    """The lookup tables of checked kept values (distinct non-negative ids, at most ``num_values`` per field).

    Example:
        >>> tables = vocabulary_tables([[9, 4], [1]], num_values=2)
        >>> lookup_buckets_torch(torch.tensor([[4, 1], [9, 0], [3, 8]]), tables, num_values=2).tolist()
        [[1, 0], [0, 2], [2, 2]]
    """
    num_fields = len(kept)
    sorted_values = torch.full((num_fields, num_values), PAD, dtype=torch.int64)
    sorted_buckets = torch.full((num_fields, num_values), num_values, dtype=torch.int64)
    for f, values in enumerate(kept):
        if values:
            ids = torch.tensor(values, dtype=torch.int64)
            order = torch.argsort(ids)
            sorted_values[f, : len(values)] = ids[order]
            sorted_buckets[f, : len(values)] = order
    # Dense lookup over 0..max kept id per field (at least one entry, "other", for an empty vocabulary).
    spans = [max(values, default=-1) + 1 or 1 for values in kept]
    lookup = None
    if sum(spans) <= LOOKUP_LIMIT and num_values < 2**15:
        offsets = [0]
        for span in spans[:-1]:
            offsets.append(offsets[-1] + span)
        table = torch.full((sum(spans),), num_values, dtype=torch.int16)
        for f, values in enumerate(kept):
            if values:
                table[offsets[f] + torch.tensor(values)] = torch.arange(len(values), dtype=torch.int16)
        lookup = (table.to(device), torch.tensor(offsets, device=device), torch.tensor(spans, device=device))
    return VocabularyTables(sorted_values.to(device), sorted_buckets.to(device), lookup)


def lookup_buckets_torch(features: torch.Tensor, tables: VocabularyTables, num_values: int) -> torch.Tensor:
    """``[B, N]`` bucket of every id of ``[B, N]`` ``features`` with torch's kernels (any device); the CPU path
    of the metric uses :func:`~lightning_recanalysis.metrics.field_pair_cpu.lookup_buckets` instead.

    Example:
        >>> tables = vocabulary_tables([[3], [0, 2]], num_values=2)
        >>> lookup_buckets_torch(torch.tensor([[3, 2], [1, 0]]), tables, num_values=2).tolist()
        [[0, 1], [2, 0]]
    """
    if tables.lookup is not None:
        table, offsets, spans = (t.to(features.device) for t in tables.lookup)
        x = features.to(torch.int64)
        inside = x < spans
        # Ids past the field's largest kept id are "other"; clamp them to a valid index first.
        index = torch.minimum(x, spans - 1) + offsets
        found = table.index_select(0, index.reshape(-1)).view(x.shape).to(torch.int64)
        return torch.where(inside, found, num_values)
    sorted_values = tables.sorted_values.to(features.device)
    sorted_buckets = tables.sorted_buckets.to(features.device)
    x = features.to(torch.int64).T.contiguous()  # [N, B]: one sorted row of kept ids per field
    at = torch.searchsorted(sorted_values, x).clamp_max(num_values - 1)
    hit = torch.gather(sorted_values, 1, at) == x
    return torch.where(hit, torch.gather(sorted_buckets, 1, at), num_values).T
