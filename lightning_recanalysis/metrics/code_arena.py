"""Sorted runs of 4-byte (position, code) keys and 4-byte counts in one growing *arena*, kept as a binary counter.

The counts of :class:`~.position_counter.PositionCodeCounter` are sorted runs of (position, code)
(:mod:`.compact_codes`), in one arena that grows a few times only. An entry is one uint64, ``(code << 32) |
count``: a merge moves one word an entry and orders two entries by their high halves, without a branch (on this
project's machine a merge of two arrays, codes and counts, ran at less than half that speed). ``codes`` and
``counts`` are uint32 views of the two halves, for the readers. Every merge writes into memory the counter already
holds (memory a process touches for the first time costs a page fault per page, more than the merge that writes
it). A run is a stretch of the arena, with one segment per position. Runs are kept as a binary counter:

1. a batch is counted into a run in the work arrays (:func:`~._numba_kernels.bucket_codes`: bucketed by position,
   each bucket sorted, then :func:`~._numba_kernels.run_lengths`: equal codes counted);
2. it becomes the top run: merged with the run below, from where it lies, if that one is no longer
   (:func:`~._numba_runs.merge_backward`), else copied on top;
3. while the run below the top is no longer than the top, the two merge in place: the shorter is copied aside (a
   reused buffer) and merged with the other forward (:func:`~._numba_runs.merge_forward`) or backward;
4. runs that arrive shorter and shorter, which rule 3 never merges, are merged top down while the runs hold more
   than twice the longest or number more than :data:`MAX_RUNS`, since runs repeat keys;
5. before the arena writes memory it has never written, the gaps that backward merges leave are closed by moves.

So each key is copied O(log(state / run)) times, in sequential passes. Lookups search each run where it lies;
an export merges every run first.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch

from . import compiled_counts

__all__ = ["MAX_RUNS", "Arena", "ArenaRuns", "Run", "empty_uint32", "empty_uint64", "pack"]

#: The most runs the arena holds between two batches (a binary counter needs about log2(state / run) of them).
MAX_RUNS = 12


def empty_uint32(size: int) -> np.ndarray:
    """An uninitialised uint32 array, allocated by torch. numpy advises huge pages for large arrays, whose first
    touch costs several times that of ordinary pages, and the arena's growth touches every byte it copies."""
    return torch.empty(size, dtype=torch.int32).numpy().view(np.uint32)


def empty_uint64(size: int) -> np.ndarray:
    """An uninitialised uint64 array, allocated by torch (see :func:`empty_uint32`)."""
    return torch.empty(size, dtype=torch.int64).numpy().view(np.uint64)


def pack(codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Arena entries ``(code << 32) | count`` (uint64) of uint32 codes and counts."""
    return (codes.astype(np.uint64) << np.uint64(32)) | counts.astype(np.uint64)


class Arena:
    """The counter's entries, ``(code << 32) | count``: one uint64 array that grows without copying what it holds.

    Where the system offers it (Linux), the array is a private anonymous memory map, grown in place by
    ``mmap.resize`` (``mremap``: the pages move, nothing is copied). Elsewhere a larger array is allocated and the
    old one copied over. Either way a page takes memory only once written: ``high_water`` (the most entries ever
    written) is what the arena uses, whatever its capacity. ``codes`` and ``counts`` are uint32 views of the
    entries' halves (strided), for the readers.
    """

    _GRAIN = 1 << 15  # entries: capacities are multiples of 256 KB

    def __init__(self) -> None:
        self.capacity = 0
        self.high_water = 0
        self.packed = np.empty(0, np.uint64)
        self._map = None
        self._can_map = hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS")

    @property
    def codes(self) -> np.ndarray:
        """The entries' codes (the high halves; little-endian)."""
        return self.packed.view(np.uint32)[_HIGH::2]

    @property
    def counts(self) -> np.ndarray:
        """The entries' counts (the low halves)."""
        return self.packed.view(np.uint32)[1 - _HIGH::2]

    def reserve(self, size: int, used: int) -> None:
        """Hold at least ``size`` entries (about to be written), keeping the first ``used``; when it must grow, by
        half again at least, so that it grows a few times only."""
        self.high_water = max(self.high_water, size)
        if size <= self.capacity:
            return
        capacity = -(-max(size, self.capacity + self.capacity // 2) // self._GRAIN) * self._GRAIN
        if self._can_map:
            try:
                self._remap(capacity)
                return
            except (OSError, ValueError, BufferError, SystemError):  # no mremap here: copy instead, from now on
                self._can_map = False
                self._map = None
        packed = empty_uint64(capacity)
        packed[:used] = self.packed[:used]
        self.packed, self.capacity = packed, capacity

    def _remap(self, capacity: int) -> None:
        nbytes = 8 * capacity
        if self._map is None:
            new = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if self.capacity:  # a copying arena turned into a map: carry its entries over
                np.frombuffer(new, np.uint64)[:self.capacity] = self.packed
            self._map = new
        else:
            self.packed = None  # views must be gone before a map can move
            try:
                self._map.resize(nbytes)
            finally:  # a view of what the map holds now (after a failure, the old capacity at least)
                self.packed = np.frombuffer(self._map, np.uint64)
                self.capacity = self.packed.size
        self.packed = np.frombuffer(self._map, np.uint64)
        self.capacity = capacity


# The uint32 index of an entry's code within its two halves: 1 on a little-endian machine.
_HIGH = 1 if np.little_endian else 0


class Run:
    """A sorted run in the arena: codes ``[start, start + length)``, position p's segment at ``offsets[p - 1]`` to
    ``offsets[p]`` from ``start``."""

    __slots__ = ("length", "offsets", "start")

    def __init__(self, start: int, length: int, offsets: np.ndarray) -> None:
        self.start, self.length, self.offsets = start, length, offsets

    @property
    def end(self) -> int:
        return self.start + self.length


class ArenaRuns:
    """The runs of :class:`~.position_counter.PositionCodeCounter` in its arena (a mixin: the counter holds the
    state, ``_arena``, ``_runs``, ``_positions``, ``_aside`` (uint64 entries) and ``_pushed``)."""

    def _compact(self) -> None:
        """Move every run down onto the end of the one below (the first to the arena's start), closing the gaps
        that backward merges leave below their runs (one entry per key the two runs shared)."""
        end = 0
        for run in self._runs:
            if run.start > end:
                compiled_counts.loops().move_left(self._arena.packed, run.start, end, run.length)
                run.start = end
            end = run.end

    def _single_run(self) -> Run | None:
        """Every run merged into one, which the queries read, wherever it lies; None before anything was
        counted."""
        while len(self._runs) > 1:
            self._merge_top()
        return self._runs[0] if self._runs else None

    def _top(self) -> int:
        return self._runs[-1].end if self._runs else 0

    def _grow_positions(self, n_positions: int) -> None:
        """Give every run a segment for positions up to ``n_positions`` (empty for the new ones)."""
        if n_positions <= self._positions:
            return
        for run in self._runs:
            run.offsets = np.concatenate([run.offsets, np.full(n_positions - self._positions, run.offsets[-1])])
        self._positions = n_positions

    def _reserve(self, size: int) -> None:
        """Make the arena hold at least ``size`` entries, runs where they are."""
        self._arena.reserve(size, self._top())

    def _push_apart(self, packed: np.ndarray, offsets: np.ndarray) -> None:
        """Add a run held outside the arena (a batch's, in the work arrays) as the new top run; merge while the
        run below is no longer (a binary counter). Its first merge reads it where it is, with no copy."""
        length = packed.size
        if length == 0:
            return
        self._pushed += length
        if self._top() + length > self._arena.high_water:
            # Before the arena writes memory it has never written (or grows), close the gaps that merges left
            # between its runs: a move, several times cheaper than a merge, and the memory held stays what the
            # runs hold.
            self._compact()
        top = self._top()
        self._reserve(top + length)
        arena = self._arena
        if self._runs and self._runs[-1].length <= length:
            below = self._runs[-1]
            merged_offsets = np.empty(self._positions + 1, np.int64)
            start = compiled_counts.loops().merge_backward(arena.packed, below.start, below.offsets, packed, offsets,
                                                           top + length, merged_offsets)
            self._runs[-1] = Run(start, top + length - start, merged_offsets)
        else:
            arena.packed[top:top + length] = packed
            self._runs.append(Run(top, length, offsets))
        while len(self._runs) > 1 and self._runs[-2].length <= self._runs[-1].length:
            self._merge_top()
        # Runs that arrive shorter and shorter would never meet the rule above (each is shorter than the one below)
        # and pile up: the runs may hold at most twice the longest one, and MAX_RUNS of them, so that memory stays
        # within twice the distinct keys and a lookup, which searches every run, searches a few.
        while len(self._runs) > 1 and (len(self._runs) > MAX_RUNS
                                       or self._held() > 2 * max(run.length for run in self._runs)):
            self._merge_top()

    def _held(self) -> int:
        """Entries in all runs (a key held in two runs counted twice)."""
        return sum(run.length for run in self._runs)

    def _merge_top(self) -> None:
        """Merge the two top runs in place; the shorter one waits aside."""
        below, above = self._runs[-2], self._runs[-1]
        loops = compiled_counts.loops()
        shorter = min(below.length, above.length)
        if self._aside.size < shorter:
            self._aside = empty_uint64(shorter)
        aside = self._aside[:shorter]
        offsets = np.empty(self._positions + 1, np.int64)
        packed = self._arena.packed
        if below.length <= above.length:  # forward, from the start of the lower run
            aside[:] = packed[below.start:below.end]
            length = loops.merge_forward(aside, below.offsets, packed, above.start, above.offsets, below.start,
                                         offsets)
            merged = Run(below.start, length, offsets)
        else:  # backward, from the end of the upper run
            aside[:] = packed[above.start:above.end]
            start = loops.merge_backward(packed, below.start, below.offsets, aside, above.offsets, above.end,
                                         offsets)
            merged = Run(start, above.end - start, offsets)
        self._runs[-2:] = [merged]
