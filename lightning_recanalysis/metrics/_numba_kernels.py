"""The numba loops behind :mod:`.compiled_counts` (imported by it on first use; see there for what they do and why).

``cache=True`` keeps the machine code beside this module (or in numba's user cache when that is not writable):
compiled once per installation, loaded in about 0.3 s by later processes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .sparse_keys import COMPACT_TARGET_SHIFT, MAX_COMPACT_BEHAVIORS

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


# Rows bucketed together: a tile's column j is written as one stretch of its position's bucket. Row by row, the L
# buckets of a batch (a fixed stride apart) would be L write streams whose addresses share their cache sets, which
# made bucketing cost twice the radix sort.
_TILE_ROWS = 64


@njit(cache=True, nogil=True)
def _bucket_by_position(target, behavior, label, positions, n_positions, behavior_bits, codes):  # pragma: no cover
    """Write every cell's code ``(t << (behavior_bits + 1)) | (b << 1) | y`` into its position's bucket of ``codes``
    (bucket 0: padding); returns the bucket starts, ``sizes[p]`` to ``sizes[p + 1]`` for position p."""
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
    for p in range(1, n_positions + 2):  # start of each position's bucket
        sizes[p] += sizes[p - 1]
    at = sizes[:-1].copy()
    c_shift = behavior_bits + 1
    heads = np.empty(_TILE_ROWS, np.int64)
    for i0 in range(0, batch, _TILE_ROWS):
        i1 = min(batch, i0 + _TILE_ROWS)
        for i in range(i0, i1):
            heads[i - i0] = (np.int64(target[i]) << c_shift) | label[i]
        for j in range(length):
            if by_column:
                p = length - j
                start = at[p] - i0
                for i in range(i0, i1):
                    codes[start + i] = heads[i - i0] | (np.int64(behavior[i, j]) << 1)
                at[p] += i1 - i0
            else:
                for i in range(i0, i1):
                    p = positions[i, j]
                    codes[at[p]] = heads[i - i0] | (np.int64(behavior[i, j]) << 1)
                    at[p] += 1
    return sizes


@njit(cache=True, nogil=True)
def position_runs(target, behavior, label, positions, n_positions, behavior_bits, code_bits, codes, scratch,
                  position_shift, target_shift, behavior_shift):  # pragma: no cover - compiled
    """Sorted unique stored keys of a batch's cells and their counts (arguments: ``compiled_counts.position_runs``)."""
    sizes = _bucket_by_position(target, behavior, label, positions, n_positions, behavior_bits, codes)
    c_shift = behavior_bits + 1
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


# ---- 4-byte (position, code) runs in one arena: see position_counter.PositionCodeCounter ----------------------
# A compact code is (target << 16) | (behaviour << 1) | label, as uint32 (sparse_keys); a run is a stretch of the
# arena sorted by (position, code), with one segment per position p = 1..P at offsets[p - 1] to offsets[p] from
# its start.
_COMPACT_BEHAVIOR_MASK = MAX_COMPACT_BEHAVIORS - 1


@njit(cache=True, nogil=True)
def compact_run(target, behavior, label, positions, n_positions, behavior_bits, code_bits, codes, scratch,
                out_offsets):  # pragma: no cover - compiled
    """Count a batch into one run of compact codes, positions 1..n_positions, in the two work arrays ``codes`` and
    ``scratch`` (uint32, at least as long as the batch has cells); writes the run's ``out_offsets``
    (n_positions + 1). Returns the run's length, whether its codes ended in ``scratch`` (and its counts in
    ``codes``) rather than the other way round, and the behaviours counted (padding left out).

    The run is written over the sorted codes it is counted from: a bucket's run starts no later than the bucket
    (the runs before it are no longer than their buckets) and is no longer than it, so the write index never
    passes the read index. Counts go to the same indices of the other array, free once the sort is done.
    """
    sizes = _bucket_by_position(target, behavior, label, positions, n_positions, behavior_bits, codes)
    # Every bucket is sorted with the same number of passes, so every sorted bucket is in the same array.
    in_scratch = _passes(code_bits) % 2 == 1
    out_codes, out_counts = (scratch, codes) if in_scratch else (codes, scratch)
    c_shift = behavior_bits + 1
    low = (np.int64(1) << c_shift) - 1
    n_out = 0
    for p in range(1, n_positions + 1):
        out_offsets[p - 1] = n_out
        start, stop = sizes[p], sizes[p + 1]
        if stop == start:
            continue
        ordered = _radix_sort(codes[start:stop], scratch[start:stop], code_bits)
        previous = np.int64(ordered[0])
        run = 1
        for i in range(1, stop - start):
            code = np.int64(ordered[i])
            if code == previous:
                run += 1
                continue
            out_codes[n_out] = ((previous >> c_shift) << COMPACT_TARGET_SHIFT) | (previous & low)
            out_counts[n_out] = run
            n_out += 1
            previous, run = code, 1
        out_codes[n_out] = ((previous >> c_shift) << COMPACT_TARGET_SHIFT) | (previous & low)
        out_counts[n_out] = run
        n_out += 1
    out_offsets[n_positions] = n_out
    return n_out, in_scratch, sizes[n_positions + 1] - sizes[1]


@njit(cache=True, nogil=True)
def merge_forward(a_codes, a_counts, a_offsets, codes, counts, b_start, b_offsets, out_start,
                  out_offsets):  # pragma: no cover - compiled
    """Merge run A (held apart, in ``a_codes``/``a_counts``) with run B (in the arena from ``b_start``) into the
    arena from ``out_start`` <= ``b_start``, equal codes summed; returns the merged length.

    Writing forward never overtakes B's next read: after i codes of A and j of B, the write index is at most
    ``out_start + i + j`` and B's read index is ``b_start + j``, with ``b_start - out_start`` at least A's length.
    Each run holds a code once, so a code in both is met as equal heads, taken from both at once. (Selects in
    place of the branches ran 15% slower here on the counting benchmark's runs.)
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
def dense_count(target, behavior, label, positions, dense, n_positions, n_behaviors, carries, n_carries,
                first_row):  # pragma: no cover - compiled
    """Count rows ``first_row..`` of a batch into the uint8 array ``dense``, laid out [target, label, position - 1,
    behaviour]: one increment per cell (position 0, padding, is skipped). A cell that passes 255 wraps to 0 and
    its flat index goes to ``carries`` (each entry worth 256). Stops at a row whose cells might not fit the
    carries left; returns the next row, the carries held and the behaviours counted."""
    batch, length = behavior.shape
    by_column = positions.shape[0] == 0
    capacity = carries.shape[0]
    counted = 0
    for i in range(first_row, batch):
        if n_carries + length > capacity:
            return i, n_carries, counted
        row = (np.int64(target[i]) * 2 + label[i]) * n_positions
        for j in range(length):
            p = length - j if by_column else positions[i, j]
            if p == 0:
                continue
            cell = (row + p - 1) * n_behaviors + behavior[i, j]
            value = dense[cell]
            if value == 255:
                dense[cell] = 0
                carries[n_carries] = cell
                n_carries += 1
            else:
                dense[cell] = value + 1
            counted += 1
    return batch, n_carries, counted


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
