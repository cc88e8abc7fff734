"""The numba loops that count one batch, behind :mod:`.compiled_counts` (imported by it on first use; see there for
what they do and why).

A batch's cells are bucketed by position p (one counting pass), each bucket sorted on its (target, behaviour,
label) code by an LSD radix sort (passes of at most 11 bits, so that a pass's buckets stay in the L1 cache) and
run-length counted: O(B L) work for B rows of L cells, with no comparison sort and no global sort.

* :func:`position_runs`: the batch's sorted unique stored int64 keys (:mod:`.sparse_keys` layout) and counts;
* :func:`real_rows`, :func:`bucket_sizes`, :func:`bucket_codes` and :func:`run_lengths`: batches as one run of
  (code, count) entries, one segment per position, for :class:`~.position_counter.PositionCodeCounter`: the cells
  bucketed by position, each bucket sorted by ``np.sort`` in between (outside numba: numpy's vectorised sort,
  several times faster here than a scalar radix sort), and equal codes counted;
* :func:`dense_count`: one increment per cell of a uint8 array, with carries of 256 (the counter's dense array).

The loops over sorted runs (merging them, looking keys up in them) are in :mod:`._numba_runs`; this module
exports them too, so that :mod:`.compiled_counts` loads every loop from here.

``cache=True`` keeps the machine code beside this module (or in numba's user cache when that is not writable):
compiled once per installation, loaded from there by later processes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._numba_runs import (
    compact_lookup,
    compact_same_category,
    compact_to_stored,
    merge_backward,
    merge_forward,
    merge_runs,
    move_left,
)
from .sparse_keys import COMPACT_TARGET_SHIFT

__all__ = ["bucket_codes", "bucket_sizes", "real_rows", "compact_lookup", "compact_same_category", "compact_to_stored",
           "dense_count", "merge_backward", "merge_forward", "merge_runs", "move_left", "position_runs", "run_lengths"]

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


# ---- 4-byte (position, code) runs: see position_counter.PositionCodeCounter -----------------------------------
# A compact code is (target << 16) | (behaviour << 1) | label, as uint32 (sparse_keys); a run is sorted by
# (position, code), with one segment per position p = 1..P at offsets[p - 1] to offsets[p] from its start.


@njit(cache=True, nogil=True)
def real_rows(valid, batch, length):  # pragma: no cover - compiled
    """Each row's real cells n_i (``valid``: ``[B, L]`` uint8, or ``[0, 0]``: all real) and whether they are its
    last n_i columns (left padding, or none): read once, for :func:`bucket_sizes` and :func:`bucket_codes`."""
    n_real = np.full(batch, length, np.int64)
    contiguous = np.ones(batch, np.bool_)
    if valid.shape[0] > 0:
        for i in range(batch):
            n = 0
            gap = 0
            previous = 0
            for j in range(length):
                v = np.int64(valid[i, j] != 0)
                n += v
                gap |= previous & (1 - v)  # a real cell before a padding one: not left-padded
                previous = v
            n_real[i] = n
            contiguous[i] = gap == 0
    return n_real, contiguous


@njit(cache=True, nogil=True)
def bucket_sizes(n_real, positions, batch, length, sizes):  # pragma: no cover - compiled
    """Add a batch's real cells at each position p to ``sizes[p]`` (int64, at least the largest position + 1);
    returns the real cells. Positions as in :func:`bucket_codes`; ``n_real``: each row's real cells
    (:func:`real_rows`; unread with ``positions``).

    Every row holds exactly one real cell at each position 1..n_i (n_i: its real cells), so without
    ``positions`` the sizes follow from the rows' counts alone.
    """
    if positions.shape[0] > 0:
        counted = 0
        for i in range(batch):
            for j in range(length):
                p = positions[i, j]
                sizes[p] += p > 0
                counted += p > 0
        return counted
    rows_at_least = np.zeros(length + 2, np.int64)
    for i in range(batch):
        rows_at_least[n_real[i]] += 1
    counted = 0
    for n in range(length, 0, -1):
        rows_at_least[n] += rows_at_least[n + 1]
        sizes[n] += rows_at_least[n]
        counted += rows_at_least[n]
    return counted


@njit(cache=True, nogil=True)
def bucket_codes(target, behavior, label, valid, positions, n_real, contiguous, codes,
                 at):  # pragma: no cover - compiled
    """Write every real cell's compact code ``(t << 16) | (b << 1) | y`` into its position's bucket of ``codes``
    (uint32): position p's next code goes to ``codes[at[p]]``, and ``at[p]`` moves on (buckets laid out from
    :func:`bucket_sizes`, so that several batches fill them one after another).

    A cell's position comes from ``positions`` (``[B, L]`` int64, 0 for padding) when it has rows; otherwise from
    ``valid`` (``[B, L]`` uint8, 1 for a real behaviour): p = the real cells from this one to the row's end; with
    neither (both ``[0, 0]``) column j holds position L - j. ``n_real`` and ``contiguous``: :func:`real_rows` of
    ``valid`` (unread with ``positions``). A row whose real cells are its last n_i columns (left
    padding, or none: the usual layout) is written over those columns only, row by row: each cell to its own
    bucket, so the padding costs nothing and no column of the batch is read with a stride.
    """
    batch, length = behavior.shape
    by_cell = positions.shape[0] > 0
    for i in range(batch):
        head = (np.uint32(target[i]) << np.uint32(COMPACT_TARGET_SHIFT)) | np.uint32(label[i])
        if by_cell:
            for j in range(length):
                p = positions[i, j]
                if p > 0:
                    codes[at[p]] = head | (np.uint32(behavior[i, j]) << np.uint32(1))
                    at[p] += 1
        elif contiguous[i]:
            for j in range(length - n_real[i], length):
                p = length - j
                codes[at[p]] = head | (np.uint32(behavior[i, j]) << np.uint32(1))
                at[p] += 1
        else:
            p = 0
            for j in range(length - 1, -1, -1):
                if valid[i, j] != 0:
                    p += 1
                    codes[at[p]] = head | (np.uint32(behavior[i, j]) << np.uint32(1))
                    at[p] += 1


@njit(cache=True, nogil=True)
def run_lengths(codes, packed, starts, n_positions, out_offsets):  # pragma: no cover - compiled
    """Count the equal codes of each sorted bucket (:func:`bucket_codes`, then sorted) into one run of entries
    ``(code << 32) | count`` in ``packed`` (uint64, as long as ``codes``), position after position, with the run's
    ``out_offsets`` (n_positions + 1). Returns the run's length.

    One pass without a branch per code (whether the next code differs is a coin flip to a branch predictor):
    every code rewrites the entry of its run with the count so far, and a new code moves to the next entry.
    """
    n_out = 0
    for p in range(1, n_positions + 1):
        out_offsets[p - 1] = n_out
        start, stop = starts[p], starts[p + 1]
        if stop == start:
            continue
        k = n_out
        previous = codes[start]
        run_start = start
        for i in range(start, stop):
            code = codes[i]
            differs = code != previous
            k += differs
            run_start = i if differs else run_start
            packed[k] = (np.uint64(code) << np.uint64(32)) | np.uint64(i + 1 - run_start)
            previous = code
        n_out = k + 1
    out_offsets[n_positions] = n_out
    return n_out


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
