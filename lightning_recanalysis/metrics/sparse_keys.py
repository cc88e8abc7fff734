"""Sparse counters of int64 keys: the key layout of (target, behaviour, position, label), counting codes, merging.

A sparse counter holds sorted unique int64 keys with their int64 counts; memory grows with the distinct keys
seen, not with the key space. Used by :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts`.
"""

from __future__ import annotations

import numpy as np
import torch

from . import compiled_counts

__all__ = ["encode_keys", "decode_keys", "bincount", "unique_counts", "unique_counts_numpy", "sum_equal_keys",
           "add_sorted_counts", "merged_counts", "lookup_counts", "MAX_CATEGORIES", "MAX_POSITIONS",
           "POSITION_SHIFT", "TARGET_SHIFT", "BEHAVIOR_SHIFT", "COMPACT_TARGET_SHIFT", "MAX_COMPACT_TARGETS",
           "MAX_COMPACT_BEHAVIORS"]

# Bit layout of a stored key: position (12 bits) | target (24 bits) | behaviour (24 bits) | label (1 bit).
# 61 bits in all, so keys stay positive in int64. Position comes first, so that keys sort in (position, target,
# behaviour, label) order: a batch's column (or bucket) of one position is sorted on its own and the sorted buckets
# follow one another, with no sort of the whole batch (see :mod:`.compiled_counts`).
CATEGORY_BITS = 24
POSITION_BITS = 12
MAX_CATEGORIES = 1 << CATEGORY_BITS
MAX_POSITIONS = (1 << POSITION_BITS) - 1
BEHAVIOR_SHIFT = 1
TARGET_SHIFT = 1 + CATEGORY_BITS
POSITION_SHIFT = 1 + 2 * CATEGORY_BITS
# The 8-byte counter's code of one position (:mod:`.position_counter`): (target << 16) | (behaviour << 1) | label,
# uint32, for target ids below 2^16 and behaviour ids below 2^15.
COMPACT_TARGET_SHIFT = 16
MAX_COMPACT_TARGETS = 1 << 16
MAX_COMPACT_BEHAVIORS = 1 << 15
# Below this range, or below the number of codes, codes are counted with bincount rather than by sorting.
_BINCOUNT_MIN_RANGE = 1 << 16


def encode_keys(target: torch.Tensor, behavior: torch.Tensor, position: torch.Tensor,
                label: torch.Tensor) -> torch.Tensor:
    """The int64 key of each (target, behaviour, position, label) (broadcast), see the bit layout above.

    Example:
        >>> key = encode_keys(torch.tensor(3), torch.tensor(5), torch.tensor(2), torch.tensor(1))
        >>> [int(part) for part in decode_keys(key)]
        [3, 5, 2, 1]
    """
    key = (position.to(torch.int64) << POSITION_SHIFT) | (target.to(torch.int64) << TARGET_SHIFT)
    return key | (behavior.to(torch.int64) << BEHAVIOR_SHIFT) | label.to(torch.int64)


def decode_keys(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(target, behaviour, position, label)`` of stored keys, the inverse of :func:`encode_keys`.

    Example:
        >>> keys = encode_keys(torch.tensor([7, 1]), torch.tensor([2, 1]), torch.tensor([3, 1]), torch.tensor([0, 1]))
        >>> [part.tolist() for part in decode_keys(keys)]
        [[7, 1], [2, 1], [3, 1], [0, 1]]
    """
    label = key & 1
    behavior = (key >> BEHAVIOR_SHIFT) & (MAX_CATEGORIES - 1)
    target = (key >> TARGET_SHIFT) & (MAX_CATEGORIES - 1)
    position = key >> POSITION_SHIFT
    return target, behavior, position, label


def bincount(codes: torch.Tensor, size: int) -> torch.Tensor:
    """``torch.bincount``; numpy's on CPU, which is faster there (``benchmarks/bench_counting.py``).

    Example:
        >>> bincount(torch.tensor([0, 2, 2]), 4)
        tensor([1, 0, 2, 0])
    """
    if codes.is_cuda:
        return torch.bincount(codes, minlength=size)
    # int32 codes go in as they are (numpy widens them internally, in cache); anything else as int64.
    codes = codes if codes.dtype in (torch.int32, torch.int64) else codes.to(torch.int64)
    return torch.from_numpy(np.bincount(codes.numpy(), minlength=size))


def unique_counts(codes: torch.Tensor, code_range: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct values of ``codes`` (1-D, values in [0, code_range)) and how often each occurs.

    Example:
        >>> unique_counts(torch.tensor([4, 1, 4, 4]), 8)
        (tensor([1, 4]), tensor([1, 3]))
    """
    if code_range <= max(_BINCOUNT_MIN_RANGE, codes.numel()):
        counts = bincount(codes, code_range)
        values = torch.nonzero(counts).squeeze(1)
        return values, counts[values]
    if codes.is_cuda:
        values, counts = torch.unique(codes, sorted=True, return_counts=True)
        return values.to(torch.int64), counts.to(torch.int64)
    values, counts = unique_counts_numpy(codes.to(torch.int32 if code_range <= 2**31 else torch.int64).numpy())
    return torch.from_numpy(values.astype(np.int64)), torch.from_numpy(counts)


def unique_counts_numpy(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a 1-D integer array and their int64 counts.

    Sorted with ``np.sort`` (vectorised, AVX-512 where the CPU has it): on 2^20 int32 codes 2.7 ns a value
    against 5.7 for ``torch.sort``, and 1.9 against 59 on 2^14 (torch's sort pays a parallel start-up there),
    side by side on this project's AMD EPYC machine.

    Example:
        >>> unique_counts_numpy(np.array([5, 1, 5], dtype=np.int32))
        (array([1, 5], dtype=int32), array([1, 2]))
    """
    ordered = np.sort(codes)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.diff(np.append(starts, ordered.size)).astype(np.int64)



def sum_equal_keys(keys: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique keys and the sum of the counts of each (keys may repeat, in any order).

    Example:
        >>> sum_equal_keys(torch.tensor([7, 2, 7]), torch.tensor([1, 2, 3]))
        (tensor([2, 7]), tensor([2, 4]))
    """
    keys, counts = keys.to(torch.int64), counts.to(torch.int64)
    if keys.is_cuda:
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        summed = torch.zeros(unique.numel(), dtype=torch.int64, device=keys.device).index_add_(0, inverse, counts)
        return unique, summed
    if keys.numel() == 0:
        return keys, counts
    # torch's sort with its permutation: 13.5 ns a key against 19 for np.argsort on 2^20 int64 keys here (the
    # values alone sort faster in numpy, see unique_counts_numpy).
    ordered, order = torch.sort(keys)
    ordered, ordered_counts = ordered.numpy(), counts.numpy()[order.numpy()]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return torch.from_numpy(ordered[starts]), torch.from_numpy(np.add.reduceat(ordered_counts, starts))


def add_sorted_counts(key_list: list[torch.Tensor], count_list: list[torch.Tensor], keys: torch.Tensor,
                      counts: torch.Tensor, compiled: bool = True) -> None:
    """Add sorted unique ``keys`` with ``counts`` (on the counter's device) to a sparse counter, in place.

    The counter is two lists of sorted runs of unique keys and their counts; a key may be in several runs, its
    count is the sum (:func:`merged_counts`). On CPU with numba (:mod:`.compiled_counts`) the runs halve in size
    along the list: a new run is merged, in linear passes, into the last while that one is no larger.
    Otherwise (CUDA, no numba, or ``compiled=False``: a small counter that should not pay numba's import)
    element 0 holds the merged keys, whose counts are increased in place, and later
    elements the keys not yet merged in, merged once they outnumber element 0.

    Example:
        >>> keys, counts = [], []
        >>> add_sorted_counts(keys, counts, torch.tensor([2, 5]), torch.tensor([1, 1]))
        >>> add_sorted_counts(keys, counts, torch.tensor([5, 7]), torch.tensor([3, 1]))
        >>> sum_equal_keys(torch.cat(keys), torch.cat(counts))
        (tensor([2, 5, 7]), tensor([1, 4, 1]))
    """
    if compiled and not keys.is_cuda and compiled_counts.available():
        _add_run(key_list, count_list, keys, counts)
        return
    if not key_list:
        key_list.append(keys.clone())
        count_list.append(counts.clone())
        return
    merged_keys, merged_counts = key_list[0], count_list[0]
    if merged_keys.numel():
        if keys.is_cuda:
            at = torch.searchsorted(merged_keys, keys).clamp_max(merged_keys.numel() - 1)
            hit = merged_keys[at] == keys
            # Keys are unique within a batch, so the hit positions are distinct and a plain += is exact.
            merged_counts[at[hit]] += counts[hit]
            keys, counts = keys[~hit], counts[~hit]
        else:
            # numpy's searchsorted and selection (torch's stall on CPU when its threads compete with
            # training for the cores, and its integer selection ran several times slower); the numpy
            # views share the tensors' memory, so the += lands in the state.
            held, held_counts, new, new_counts = (t.numpy() for t in (merged_keys, merged_counts, keys, counts))
            at = np.minimum(np.searchsorted(held, new), held.size - 1)
            hit = held[at] == new
            held_counts[at[hit]] += new_counts[hit]
            miss = ~hit
            keys, counts = torch.from_numpy(new[miss]), torch.from_numpy(new_counts[miss])
    if keys.numel():
        key_list.append(keys.clone())
        count_list.append(counts.clone())
        pending = sum(k.numel() for k in key_list[1:])
        # Merging sorts everything held; doing it only once the new keys outnumber the merged ones keeps
        # the total work proportional to the keys added (amortised doubling).
        if pending > max(merged_keys.numel(), 4096) or len(key_list) > 64:
            if merged_keys.is_cuda:
                merged = sum_equal_keys(torch.cat(key_list), torch.cat(count_list))
            else:
                # The pending chunks hold only keys that were missing from the merged ones when they came
                # (hits were added in place above), so the two sets are disjoint: sum the pending chunks
                # among themselves, then insert them into the sorted merged keys in one linear pass
                # instead of sorting everything again.
                new_keys, new_counts = sum_equal_keys(torch.cat(key_list[1:]), torch.cat(count_list[1:]))
                held = merged_keys.numpy()
                at = np.searchsorted(held, new_keys.numpy())
                merged = (torch.from_numpy(np.insert(held, at, new_keys.numpy())),
                          torch.from_numpy(np.insert(merged_counts.numpy(), at, new_counts.numpy())))
            key_list[:] = [merged[0]]
            count_list[:] = [merged[1]]


def _add_run(key_list: list[torch.Tensor], count_list: list[torch.Tensor], keys: torch.Tensor,
             counts: torch.Tensor) -> None:
    """The compiled path of :func:`add_sorted_counts`: runs kept as a binary counter of halving sizes, so that
    every key is copied O(log(state / run)) times, in sequential merges, and never looked up at random."""
    run_keys, run_counts = keys.to(torch.int64).numpy(), counts.to(torch.int64).numpy()
    merged = False
    while key_list and key_list[-1].numel() <= run_keys.size:
        run_keys, run_counts = compiled_counts.merge_runs(key_list.pop().numpy(), count_list.pop().numpy(),
                                                          run_keys, run_counts)
        merged = True
    if not merged:  # a run the counter keeps is its own, not the caller's memory
        run_keys, run_counts = run_keys.copy(), run_counts.copy()
    key_list.append(torch.from_numpy(run_keys))
    count_list.append(torch.from_numpy(run_counts))


def merged_counts(key_list: list[torch.Tensor], count_list: list[torch.Tensor],
                  compiled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique keys of a counter's runs (see :func:`add_sorted_counts`) and the sum of each key's counts;
    merged by the compiled loop if ``compiled`` and numba are there, else by one sort.

    Example:
        >>> merged_counts([torch.tensor([1, 4]), torch.tensor([4, 9])], [torch.tensor([2, 1]), torch.tensor([5, 1])])
        (tensor([1, 4, 9]), tensor([2, 6, 1]))
    """
    if len(key_list) == 1:
        return key_list[0], count_list[0]
    if not key_list or key_list[0].is_cuda or not compiled or not compiled_counts.available():
        if not key_list:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
        return sum_equal_keys(torch.cat(key_list), torch.cat(count_list))
    # Smallest first, so that each key is copied as few times as the sizes allow.
    order = sorted(range(len(key_list)), key=lambda k: key_list[k].numel())
    keys, counts = key_list[order[0]].numpy(), count_list[order[0]].numpy()
    for k in order[1:]:  # every run is int64 (see _add_run)
        keys, counts = compiled_counts.merge_runs(keys, counts, key_list[k].numpy(), count_list[k].numpy())
    return torch.from_numpy(keys), torch.from_numpy(counts)


def lookup_counts(keys: torch.Tensor, counts: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """The count of every key of ``wanted`` (any shape) in sorted unique ``keys``; 0 for a key not held.

    Example:
        >>> lookup_counts(torch.tensor([2, 5, 7]), torch.tensor([1, 4, 1]), torch.tensor([[5, 3], [7, 2]]))
        tensor([[4, 0],
                [1, 1]])
    """
    if keys.numel() == 0:
        return torch.zeros(wanted.shape, dtype=torch.int64, device=wanted.device)
    wanted = wanted.to(keys.device)
    at = torch.searchsorted(keys, wanted.reshape(-1)).clamp_max(keys.numel() - 1)
    found = keys[at] == wanted.reshape(-1)
    return torch.where(found, counts[at], torch.zeros_like(counts[at])).view(wanted.shape)
