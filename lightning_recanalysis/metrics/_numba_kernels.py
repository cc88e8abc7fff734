"""The numba loops behind :mod:`.compiled_counts` (imported by it on first use; see there for what they do and why).

``cache=True`` keeps the machine code beside this module (or in numba's user cache when that is not writable):
compiled once per installation, loaded in about 0.3 s by later processes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Largest radix digit: 2^11 buckets of int64 offsets (16 KB) stay in the L1 cache.
_DIGIT_BITS = 11


@njit(cache=True, nogil=True)
def _passes(bits):  # pragma: no cover - compiled
    return max(1, (bits + _DIGIT_BITS - 1) // _DIGIT_BITS)


@njit(cache=True, nogil=True)
def _radix_sort(values, scratch, bits):  # pragma: no cover - compiled; tested through position_runs
    """Sort non-negative ``values`` (< 2^bits) with an LSD radix sort; returns whichever of ``values`` and
    ``scratch`` holds the result (``scratch`` after an odd number of passes)."""
    n = values.size
    passes = _passes(bits)
    digit = max(1, (bits + passes - 1) // passes)
    buckets = 1 << digit
    mask = buckets - 1
    offsets = np.zeros((passes, buckets), np.int64)
    for i in range(n):  # every pass's histogram in one read
        v = values[i]
        for k in range(passes):
            offsets[k, (v >> (k * digit)) & mask] += 1
    for k in range(passes):
        total = 0
        for d in range(buckets):
            c = offsets[k, d]
            offsets[k, d] = total
            total += c
    src, dst = values, scratch
    for k in range(passes):
        shift = k * digit
        at = offsets[k]
        for i in range(n):
            v = src[i]
            d = (v >> shift) & mask
            dst[at[d]] = v
            at[d] += 1
        src, dst = dst, src
    return src


@njit(cache=True, nogil=True)
def position_runs(target, behavior, label, positions, n_positions, behavior_bits, code_bits, codes, scratch,
                  position_shift, target_shift, behavior_shift):  # pragma: no cover - compiled
    """Sorted unique stored keys of a batch's cells and their counts (arguments: ``compiled_counts.position_runs``)."""
    batch, length = behavior.shape
    by_column = positions.shape[0] == 0
    sizes = np.zeros(n_positions + 2, np.int64)
    if by_column:
        for p in range(1, length + 1):
            sizes[p + 1] = batch
    else:
        for i in range(batch):
            for j in range(length):
                sizes[positions[i, j] + 1] += 1
    for p in range(1, n_positions + 2):  # start of each position's bucket (bucket 0: padding)
        sizes[p] += sizes[p - 1]
    at = sizes[:-1].copy()
    c_shift = behavior_bits + 1
    for i in range(batch):  # row by row: reads the batch once, writes one stream per position
        head = (target[i] << c_shift) | label[i]
        for j in range(length):
            p = length - j if by_column else positions[i, j]
            codes[at[p]] = head | (behavior[i, j] << 1)
            at[p] += 1
    # Sort every position's bucket, then count the distinct codes, so that the output is allocated at its exact
    # size: fresh memory costs a page fault per 4 KB, several times the cost of writing it.
    in_scratch = np.zeros(n_positions + 1, np.bool_)
    distinct = 0
    for p in range(1, n_positions + 1):
        start, stop = sizes[p], sizes[p + 1]
        if stop == start:
            continue
        ordered = _radix_sort(codes[start:stop], scratch[start:stop], code_bits)
        in_scratch[p] = _passes(code_bits) % 2 == 1
        distinct += 1
        for i in range(1, stop - start):
            distinct += ordered[i] != ordered[i - 1]
    keys = np.empty(distinct, np.int64)
    counts = np.empty(distinct, np.int64)
    n_out = 0
    behavior_mask = (np.int64(1) << behavior_bits) - 1
    for p in range(1, n_positions + 1):
        start, stop = sizes[p], sizes[p + 1]
        if stop == start:
            continue
        ordered = scratch[start:stop] if in_scratch[p] else codes[start:stop]
        stored_p = np.int64(p) << position_shift
        run_start = 0
        for i in range(1, stop - start + 1):  # a run ends before a new code, or at the bucket's end
            if i < stop - start and ordered[i] == ordered[run_start]:
                continue
            code = np.int64(ordered[run_start])
            keys[n_out] = (stored_p | ((code >> c_shift) << target_shift)
                           | (((code >> 1) & behavior_mask) << behavior_shift) | (code & 1))
            counts[n_out] = i - run_start
            n_out += 1
            run_start = i
    return keys, counts


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
