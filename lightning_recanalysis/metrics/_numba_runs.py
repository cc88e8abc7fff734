"""The numba loops over sorted runs of keys and counts, behind :mod:`.compiled_counts` (loaded through
:mod:`._numba_kernels`, on first use).

A run holds sorted unique keys with their counts. Two runs merge in one linear pass, like the merge step of a
merge sort, equal keys summed: O(n_a + n_b), with sequential reads and writes only.

* :func:`merge_runs`: two runs of int64 stored keys (:mod:`.sparse_keys` layout) into a new pair of arrays;
* :func:`merge_forward`, :func:`merge_backward`, :func:`move_left`: runs of 4-byte (position, code) keys with
  4-byte counts, one uint64 entry each, merged in place in :class:`~.position_counter.PositionCodeCounter`'s
  arena, one segment per position, with one of the two runs copied aside;
* :func:`compact_lookup`, :func:`compact_same_category`, :func:`compact_to_stored`: reading such a run: a binary
  search per key wanted, the counts whose behaviour is the target's own, the run as stored int64 keys.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .sparse_keys import COMPACT_TARGET_SHIFT, MAX_COMPACT_BEHAVIORS

__all__ = ["compact_lookup", "compact_same_category", "compact_to_stored", "merge_backward", "merge_forward",
           "merge_runs", "move_left"]

# ---- 4-byte (position, code) runs in one arena: see position_counter.PositionCodeCounter ----------------------
# A compact code is (target << 16) | (behaviour << 1) | label, as uint32 (sparse_keys); a run is a stretch of the
# arena sorted by (position, code), with one segment per position p = 1..P at offsets[p - 1] to offsets[p] from
# its start.
_COMPACT_BEHAVIOR_MASK = MAX_COMPACT_BEHAVIORS - 1


_LOW = np.uint64(0xFFFFFFFF)
_HIGH_HALF = np.uint64(0xFFFFFFFF00000000)


@njit(cache=True, nogil=True)
def _merged_entry(x, y, take_x, take_y):  # pragma: no cover - compiled
    """The entry a merge writes from heads ``x`` and ``y``: the one taken, or (equal codes) ``x`` plus ``y``'s count.
    Selects, not branches: which run leads is a coin flip a branch predictor cannot learn."""
    return ((x if take_x else np.uint64(0)) + (y if take_y else np.uint64(0))
            - ((y & _HIGH_HALF) if (take_x and take_y) else np.uint64(0)))


@njit(cache=True, nogil=True)
def merge_forward(a_packed, a_offsets, packed, b_start, b_offsets, out_start,
                  out_offsets):  # pragma: no cover - compiled
    """Merge run A (held apart, in ``a_packed``) with run B (in the arena from ``b_start``) into the arena from
    ``out_start`` <= ``b_start``, equal codes summed; returns the merged length. Entries are ``(code << 32) |
    count`` (uint64); a count sum cannot reach the code bits while the counter's total stays below 2^32.

    Writing forward never overtakes B's next read: after i entries of A and j of B, the write index is at most
    ``out_start + i + j`` and B's read index is ``b_start + j``, with ``b_start - out_start`` at least A's length.
    Each run holds a code once, so a code in both is met as equal heads, taken from both at once.
    """
    w = out_start
    for s in range(a_offsets.size - 1):
        out_offsets[s] = w - out_start
        i, i_end = a_offsets[s], a_offsets[s + 1]
        j, j_end = b_start + b_offsets[s], b_start + b_offsets[s + 1]
        while i < i_end and j < j_end:
            x, y = a_packed[i], packed[j]
            take_x = (x >> np.uint64(32)) <= (y >> np.uint64(32))
            take_y = (y >> np.uint64(32)) <= (x >> np.uint64(32))
            packed[w] = _merged_entry(x, y, take_x, take_y)
            i += take_x
            j += take_y
            w += 1
        while i < i_end:
            packed[w] = a_packed[i]
            i += 1
            w += 1
        while j < j_end:
            packed[w] = packed[j]
            j += 1
            w += 1
    out_offsets[a_offsets.size - 1] = w - out_start
    return w - out_start


@njit(cache=True, nogil=True)
def merge_backward(packed, a_start, a_offsets, b_packed, b_offsets, out_end,
                   out_offsets):  # pragma: no cover - compiled
    """Merge run A (in the arena from ``a_start``) with run B (held apart) into the arena, ending at ``out_end`` >=
    the end of A, written from the last entry down; returns the merged run's start.

    Writing backward never overtakes A's next read: with i entries of A and j of B left, the write index is at
    least ``out_end - (i + j)`` and A's read index is ``a_start + i - 1``, with ``out_end - a_start`` at least
    A's length plus B's. The loop of :func:`merge_forward`, from the largest code down.
    """
    n_segments = a_offsets.size - 1
    w = out_end
    ends = np.empty(n_segments, np.int64)
    for s in range(n_segments - 1, -1, -1):
        ends[s] = w
        i, i_stop = a_start + a_offsets[s + 1], a_start + a_offsets[s]
        j, j_stop = b_offsets[s + 1], b_offsets[s]
        while i > i_stop and j > j_stop:
            x, y = packed[i - 1], b_packed[j - 1]
            take_x = (x >> np.uint64(32)) >= (y >> np.uint64(32))
            take_y = (y >> np.uint64(32)) >= (x >> np.uint64(32))
            w -= 1
            packed[w] = _merged_entry(x, y, take_x, take_y)
            i -= take_x
            j -= take_y
        while j > j_stop:
            w -= 1
            j -= 1
            packed[w] = b_packed[j]
        if w == i:  # B's segment is used up and the rest of A's already lies where it belongs
            w = i_stop
            continue
        while i > i_stop:
            w -= 1
            i -= 1
            packed[w] = packed[i]
    out_offsets[0] = 0
    for s in range(n_segments):
        out_offsets[s + 1] = ends[s] - w
    return w


@njit(cache=True, nogil=True)
def move_left(packed, source, target, n):  # pragma: no cover - compiled
    """Move ``n`` entries from ``source`` down to ``target`` <= ``source`` (overlap allowed)."""
    for k in range(n):
        packed[target + k] = packed[source + k]


@njit(cache=True, nogil=True)
def compact_lookup(codes, counts, start, offsets, positions, wanted):  # pragma: no cover - compiled
    """The count of every (position, code) wanted (0 where absent): a binary search in the position's segment."""
    found = np.zeros(wanted.size, np.int64)
    n_segments = offsets.size - 1
    for k in range(wanted.size):
        p = positions[k]
        if p < 1 or p > n_segments:
            continue
        lo, hi = start + offsets[p - 1], start + offsets[p]
        code = wanted[k]
        while lo < hi:
            mid = (lo + hi) >> 1
            if np.int64(codes[mid]) < code:
                lo = mid + 1
            else:
                hi = mid
        if lo < start + offsets[p] and np.int64(codes[lo]) == code:
            found[k] = counts[lo]
    return found


@njit(cache=True, nogil=True)
def compact_same_category(codes, counts, start, offsets, n_positions):  # pragma: no cover - compiled
    """``[n_positions, 2]`` sums of the counts whose behaviour equals the target, by position and label."""
    x1 = np.zeros((n_positions, 2), np.int64)
    for p in range(1, min(n_positions, offsets.size - 1) + 1):
        for k in range(start + offsets[p - 1], start + offsets[p]):
            code = np.int64(codes[k])
            if (code >> COMPACT_TARGET_SHIFT) == ((code >> 1) & _COMPACT_BEHAVIOR_MASK):
                x1[p - 1, code & 1] += counts[k]
    return x1


@njit(cache=True, nogil=True)
def compact_to_stored(codes, counts, start, offsets, position_shift, target_shift,
                      behavior_shift):  # pragma: no cover - compiled
    """The run's stored int64 keys (:mod:`.sparse_keys` layout) and int64 counts, in the same (sorted) order."""
    n = offsets[offsets.size - 1]
    keys = np.empty(n, np.int64)
    wide = np.empty(n, np.int64)
    for p in range(1, offsets.size):
        stored_p = np.int64(p) << position_shift
        for k in range(offsets[p - 1], offsets[p]):
            code = np.int64(codes[start + k])
            keys[k] = (stored_p | ((code >> COMPACT_TARGET_SHIFT) << target_shift)
                       | (((code >> 1) & _COMPACT_BEHAVIOR_MASK) << behavior_shift) | (code & 1))
            wide[k] = counts[start + k]
    return keys, wide


@njit(cache=True, nogil=True)
def _append_rest(src_keys, src_counts, start, keys, counts, m, last):  # pragma: no cover - compiled
    """Append ``src[start:]`` after ``keys[:m]``, folding a key equal to ``last`` into it; returns the new length."""
    for i in range(start, src_keys.size):
        k, c = src_keys[i], src_counts[i]
        if k == last:
            counts[m - 1] += c
        else:
            keys[m], counts[m] = k, c
            m += 1
            last = k
    return m


@njit(cache=True, nogil=True)
def merge_runs(keys_a, counts_a, keys_b, counts_b):  # pragma: no cover - compiled
    """Merge two sorted runs of unique int64 keys into one, summing the counts of a key in both.

    The loop takes the smaller head with selects rather than branches (which of two runs leads is a coin flip a
    branch predictor cannot learn), then folds a key equal to the one just written into it.
    """
    n_a, n_b = keys_a.size, keys_b.size
    keys = np.empty(n_a + n_b, np.int64)
    counts = np.empty(n_a + n_b, np.int64)
    i = j = m = 0
    last = np.int64(-1)  # stored keys are non-negative
    while i < n_a and j < n_b:
        a, b = keys_a[i], keys_b[j]
        take_a = a <= b
        k = a if take_a else b
        c = counts_a[i] if take_a else counts_b[j]
        i += take_a
        j += 1 - take_a
        same = k == last
        m -= same
        counts[m] = c + (counts[m] if same else 0)
        keys[m] = k
        m += 1
        last = k
    # One run is used up; the rest of the other follows (its first key may still equal the last one written).
    m = _append_rest(keys_a, counts_a, i, keys, counts, m, last)
    m = _append_rest(keys_b, counts_b, j, keys, counts, m, last)
    # Views of the first m elements: the pages past them were never written, so the system never backs them with
    # memory (a copy to the exact size would cost a second pass and fresh pages).
    return keys[:m], counts[:m]
