"""The numba loops over sorted runs of keys and counts, behind :mod:`.compiled_counts` (loaded through
:mod:`._numba_kernels`, on first use).

A run holds sorted unique keys with their counts. Two runs merge in one linear pass, like the merge step of a
merge sort, equal keys summed: O(n_a + n_b), with sequential reads and writes only.

* :func:`merge_runs`: two runs of int64 stored keys (:mod:`.sparse_keys` layout) into a new pair of arrays;
* :func:`merge_forward`, :func:`merge_backward`, :func:`move_left`: runs of 4-byte (position, code) keys merged
  in place in :class:`~.position_counter.PositionCodeCounter`'s arena, one segment per position, with one of
  the two runs copied aside;
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


@njit(cache=True, nogil=True)
def merge_forward(a_codes, a_counts, a_offsets, codes, counts, b_start, b_offsets, out_start,
                  out_offsets):  # pragma: no cover - compiled
    """Merge run A (held apart, in ``a_codes``/``a_counts``) with run B (in the arena from ``b_start``) into the
    arena from ``out_start`` <= ``b_start``, equal codes summed; returns the merged length.

    Writing forward never overtakes B's next read: after i codes of A and j of B, the write index is at most
    ``out_start + i + j`` and B's read index is ``b_start + j``, with ``b_start - out_start`` at least A's length.
    Each run holds a code once, so a code in both is met as equal heads, taken from both at once.
    """
    w = out_start
    for s in range(a_offsets.size - 1):
        out_offsets[s] = w - out_start
        i, i_end = a_offsets[s], a_offsets[s + 1]
        j, j_end = b_start + b_offsets[s], b_start + b_offsets[s + 1]
        while i < i_end and j < j_end:
            a, b = np.int64(a_codes[i]), np.int64(codes[j])
            if a < b:
                codes[w], counts[w] = a_codes[i], a_counts[i]
                i += 1
            elif b < a:
                codes[w], counts[w] = codes[j], counts[j]
                j += 1
            else:
                codes[w], counts[w] = codes[j], np.int64(a_counts[i]) + np.int64(counts[j])
                i += 1
                j += 1
            w += 1
        while i < i_end:
            codes[w], counts[w] = a_codes[i], a_counts[i]
            i += 1
            w += 1
        while j < j_end:
            codes[w], counts[w] = codes[j], counts[j]
            j += 1
            w += 1
    out_offsets[a_offsets.size - 1] = w - out_start
    return w - out_start


@njit(cache=True, nogil=True)
def merge_backward(codes, counts, a_start, a_offsets, b_codes, b_counts, b_offsets, out_end,
                   out_offsets):  # pragma: no cover - compiled
    """Merge run A (in the arena from ``a_start``) with run B (held apart) into the arena, ending at ``out_end`` >=
    the end of A, written from the last code down; returns the merged run's start.

    Writing backward never overtakes A's next read: with i codes of A and j of B left, the write index is at
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
            a, b = np.int64(codes[i - 1]), np.int64(b_codes[j - 1])
            w -= 1
            if a > b:
                codes[w], counts[w] = codes[i - 1], counts[i - 1]
                i -= 1
            elif b > a:
                codes[w], counts[w] = b_codes[j - 1], b_counts[j - 1]
                j -= 1
            else:
                codes[w], counts[w] = codes[i - 1], np.int64(counts[i - 1]) + np.int64(b_counts[j - 1])
                i -= 1
                j -= 1
        while j > j_stop:
            w -= 1
            j -= 1
            codes[w], counts[w] = b_codes[j], b_counts[j]
        if w == i:  # B's segment is used up and the rest of A's already lies where it belongs
            w = i_stop
            continue
        while i > i_stop:
            w -= 1
            i -= 1
            codes[w], counts[w] = codes[i], counts[i]
    out_offsets[0] = 0
    for s in range(n_segments):
        out_offsets[s + 1] = ends[s] - w
    return w


@njit(cache=True, nogil=True)
def move_left(codes, counts, source, target, n):  # pragma: no cover - compiled
    """Move ``n`` codes and counts from ``source`` down to ``target`` <= ``source`` (overlap allowed)."""
    for k in range(n):
        codes[target + k] = codes[source + k]
        counts[target + k] = counts[source + k]


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
