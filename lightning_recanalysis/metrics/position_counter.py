"""Sparse (target, behaviour, position, label) counts in 8 bytes a key: 4-byte codes and counts, per position.

The sparse counter of :mod:`.sparse_keys` stores an int64 key and an int64 count per distinct key (16 bytes). At
real vocabulary sizes (up to 65,536 target and 32,768 behaviour categories), one position's (target, behaviour,
label) fits 32 bits:

    code = (target << 16) | (behaviour << 1) | label        (uint32)

and the position need not be stored at all: keys are grouped by position, with one offset per position. A count
fits 32 bits while fewer than 2^32 behaviours have been counted. So :class:`PositionCodeCounter` holds 8 bytes a
key, half as many to move in every merge and half the memory (plus a buffer for merges, kept for the next one,
of up to half the keys it holds).

**Layout.** The counts are sorted runs of (position, code), in one *arena* (two uint32 arrays, codes and counts)
that grows a few times only: every merge writes into memory the counter already holds. (On this project's 2-core
VM, memory a process touches for the first time costs 2.5 to 13 ns per 8 bytes, more than the merge that writes
it; memory written before costs 0.25 ns.) A run is a stretch of the arena, with one segment per position. Runs are
kept as a binary counter:

1. a batch is counted into a run in two work arrays (:func:`~._numba_kernels.compact_run`: bucketed by position,
   each bucket radix-sorted, equal codes counted);
2. it becomes the top run: merged with the run below, from where it lies, if that one is no longer
   (:func:`~._numba_kernels.merge_backward`), else copied on top;
3. while the run below the top is no longer than the top, the two merge in place: the shorter is copied aside (a
   reused buffer) and merged with the other forward (:func:`~._numba_kernels.merge_forward`) or backward;
4. before the arena grows, every run is merged into one, since runs repeat keys.

So each key is copied O(log(state / run)) times, in sequential passes. A query merges every run first.

A counter that meets an id or a total beyond these bounds hands its counts over as int64 keys
(:meth:`stored`) and :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` goes on with the 16-byte keys.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch

from . import compiled_counts
from .sparse_keys import (
    BEHAVIOR_SHIFT,
    CATEGORY_BITS,
    COMPACT_TARGET_SHIFT,
    MAX_COMPACT_BEHAVIORS,
    MAX_COMPACT_TARGETS,
    POSITION_SHIFT,
    TARGET_SHIFT,
)

__all__ = ["MAX_COMPACT_BEHAVIORS", "MAX_COMPACT_TARGETS", "MAX_COMPACT_TOTAL", "PositionCodeCounter"]

#: Counts are uint32: while fewer behaviours than this have been counted, no count can overflow.
MAX_COMPACT_TOTAL = (1 << 32) - 1
_CATEGORY_MASK = (1 << CATEGORY_BITS) - 1


def _uint32(size: int) -> np.ndarray:
    """An uninitialised uint32 array, allocated by torch. numpy advises huge pages for large arrays; on this
    project's VM the first touch of such memory cost 8.5 ns per 8 bytes against 2.5 for ordinary pages, and the
    arena's growth touches every byte it copies."""
    return torch.empty(size, dtype=torch.int32).numpy().view(np.uint32)


class _Arena:
    """The counter's codes and counts: two uint32 arrays that grow without copying what they hold.

    Where the system offers it (Linux), each array is a private anonymous memory map, grown in place by
    ``mmap.resize`` (``mremap``: the pages move, nothing is copied). Elsewhere a larger array is allocated and the
    old one copied over. Either way a page takes memory only once written: ``high_water`` (the most codes ever
    written) is what the arena uses, whatever its capacity.
    """

    _GRAIN = 1 << 16  # codes: capacities are multiples of 256 KB

    def __init__(self) -> None:
        self.capacity = 0
        self.high_water = 0
        self.codes = self.counts = np.empty(0, np.uint32)
        self._maps: list | None = None
        self._can_map = hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS")

    def reserve(self, size: int, used: int) -> None:
        """Hold at least ``size`` codes (about to be written), keeping the first ``used``; when it must grow, by
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
                self._maps = None
        codes, counts = _uint32(capacity), _uint32(capacity)
        codes[:used], counts[:used] = self.codes[:used], self.counts[:used]
        self.codes, self.counts, self.capacity = codes, counts, capacity

    def _remap(self, capacity: int) -> None:
        nbytes = 4 * capacity
        if self._maps is None:
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
            maps = [mmap.mmap(-1, nbytes, flags=flags) for _ in range(2)]
            if self.capacity:  # a copying arena turned into maps: carry its codes over
                for new, old in zip(maps, (self.codes, self.counts)):
                    np.frombuffer(new, np.uint32)[:self.capacity] = old
            self._maps = maps
        else:
            self.codes = self.counts = None  # views must be gone before a map can move
            try:
                for held in self._maps:
                    held.resize(nbytes)
            finally:  # views of what each map holds now (after a failure, the old capacity at least)
                self.codes, self.counts = (np.frombuffer(m, np.uint32) for m in self._maps)
                self.capacity = min(self.codes.size, self.counts.size)
        self.codes, self.counts = (np.frombuffer(m, np.uint32) for m in self._maps)
        self.capacity = capacity


class _Run:
    """A sorted run in the arena: codes ``[start, start + length)``, position p's segment at ``offsets[p - 1]`` to
    ``offsets[p]`` from ``start``."""

    __slots__ = ("length", "offsets", "start")

    def __init__(self, start: int, length: int, offsets: np.ndarray) -> None:
        self.start, self.length, self.offsets = start, length, offsets

    @property
    def end(self) -> int:
        return self.start + self.length


class PositionCodeCounter:
    """Exact counts of (position, target, behaviour, label) in 8 bytes a distinct key (numba needed).

    Example:
        >>> counter = PositionCodeCounter()
        >>> behavior = np.array([[4, 2], [4, 2]])
        >>> counter.add_batch(np.array([1, 1]), behavior, np.array([0, 1]), None, 2)  # column j: position 2 - j
        >>> counter.same_category(2).tolist()  # behaviour 1 (the target's own) nowhere
        [[0, 0], [0, 0]]
        >>> from lightning_recanalysis.metrics.sparse_keys import encode_keys
        >>> import torch
        >>> wanted = encode_keys(torch.tensor(1), torch.tensor([4, 2]), torch.tensor([2, 1]), torch.tensor(1))
        >>> counter.lookup(wanted.numpy()).tolist()  # (t=1, b=4, p=2, y=1) and (t=1, b=2, p=1, y=1)
        [1, 1]
    """

    def __init__(self) -> None:
        self._arena = _Arena()
        self._runs: list[_Run] = []
        self._positions = 0
        self.total = 0  # behaviours counted: bounds every count
        self._aside = (np.empty(0, np.uint32), np.empty(0, np.uint32))  # the shorter run of a merge
        self._work = (np.empty(0, np.uint32), np.empty(0, np.uint32))  # a batch's codes while they are sorted

    def __getstate__(self) -> dict:
        """Pickled (or deep-copied) as its runs' codes and counts: memory maps do not pickle."""
        arena = self._arena
        return {"runs": [(arena.codes[run.start:run.end].copy(), arena.counts[run.start:run.end].copy(), run.offsets)
                         for run in self._runs], "positions": self._positions, "total": self.total}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self._positions, self.total = state["positions"], state["total"]
        for codes, counts, offsets in state["runs"]:
            self._push_apart(codes, counts, offsets)

    # ---- what it can hold ---------------------------------------------------------------------------------
    @staticmethod
    def fits(max_target: int, max_behavior: int) -> bool:
        """Whether ids up to these fit a compact code."""
        return max_target < MAX_COMPACT_TARGETS and max_behavior < MAX_COMPACT_BEHAVIORS

    def has_room(self, behaviours: int) -> bool:
        """Whether ``behaviours`` more can be counted without a count overflowing 32 bits."""
        return self.total + behaviours <= MAX_COMPACT_TOTAL

    @property
    def distinct_upper_bound(self) -> int:
        """Codes held in all runs (a key held in two runs counted twice)."""
        return sum(run.length for run in self._runs)

    def nbytes(self) -> int:
        """Bytes held: the arena's written part (its pages untouched by any write take no memory) and the buffer
        for merges (both kept, so that later merges reuse them)."""
        return 8 * self._arena.high_water + self._aside[0].nbytes + self._aside[1].nbytes

    def work_nbytes(self) -> int:
        """Bytes of the work buffers a batch's codes are sorted in (as large as the largest batch counted)."""
        return self._work[0].nbytes + self._work[1].nbytes

    # ---- counting ---------------------------------------------------------------------------------------------
    def add_batch(self, target: np.ndarray, behavior: np.ndarray, label: np.ndarray, positions: np.ndarray | None,
                  n_positions: int, checked_max: tuple[int, int] | None = None) -> None:
        """Count a batch: ``target``, ``label`` ``[B]``, ``behavior`` ``[B, L]`` (C-contiguous integers),
        ``positions`` ``[B, L]`` int64 per cell (0: padding, not counted) or ``None`` for column j at position
        L - j; ``n_positions`` at least the largest position. ``checked_max``: the largest target and behaviour
        ids, from a caller that has checked ids, labels, positions and the total itself
        (:class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` does); the checks are then skipped.

        Raises:
            ValueError: an id beyond :meth:`fits` or negative, a label not 0 or 1, a position outside
                ``[0, n_positions]``, or a total beyond :meth:`has_room`.
        """
        if behavior.size == 0:
            return
        if checked_max is None:
            t_max, b_max = int(target.max()), int(behavior.max())
            self._check(target, behavior, label, positions, n_positions, t_max, b_max)
        else:
            t_max, b_max = checked_max
        b_bits = max(1, b_max.bit_length())
        code_bits = max(1, t_max.bit_length()) + b_bits + 1
        self._grow_positions(n_positions)
        if self._work[0].size < behavior.size:
            self._work = (_uint32(behavior.size), _uint32(behavior.size))
        offsets = np.empty(self._positions + 1, np.int64)
        by_cell = np.zeros((0, 0), np.int64) if positions is None else positions
        length, swapped, counted = compiled_counts._loops().compact_run(
            target, behavior, label, by_cell, self._positions, b_bits, code_bits, *self._work, offsets)
        codes, counts = self._work[::-1] if swapped else self._work
        self._push_apart(codes[:length], counts[:length], offsets)
        self.total += int(counted)

    def _check(self, target, behavior, label, positions, n_positions, t_max, b_max) -> None:
        if min(int(target.min()), int(behavior.min())) < 0 or not self.fits(t_max, b_max):
            raise ValueError(f"PositionCodeCounter: ids must lie in [0, {MAX_COMPACT_TARGETS}) for targets and "
                             f"[0, {MAX_COMPACT_BEHAVIORS}) for behaviours, got up to {t_max} and {b_max}")
        if label.size and (int(label.min()) < 0 or int(label.max()) > 1):
            raise ValueError("PositionCodeCounter: labels must be 0 or 1")
        if positions is not None and positions.size and (int(positions.min()) < 0
                                                         or int(positions.max()) > n_positions):
            raise ValueError(f"PositionCodeCounter: positions must lie in [0, n_positions={n_positions}]")
        if positions is None and behavior.shape[1] > n_positions:
            raise ValueError(f"PositionCodeCounter: {behavior.shape[1]} columns need n_positions >= that, "
                             f"got {n_positions}")
        if not self.has_room(behavior.size):
            raise ValueError(f"PositionCodeCounter: counts are 32-bit; at most {MAX_COMPACT_TOTAL} behaviours")

    def add_sorted(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add sorted unique stored int64 keys (:mod:`.sparse_keys`, ids that fit) with their int64 counts."""
        if keys.size == 0:
            return
        positions = keys >> POSITION_SHIFT
        self._grow_positions(int(positions[-1]))
        codes = ((((keys >> TARGET_SHIFT) & _CATEGORY_MASK) << COMPACT_TARGET_SHIFT)
                 | (((keys >> BEHAVIOR_SHIFT) & _CATEGORY_MASK) << 1) | (keys & 1))
        offsets = np.searchsorted(positions, np.arange(1, self._positions + 2)).astype(np.int64)
        self._push_apart(codes.astype(np.uint32), counts.astype(np.uint32), offsets)
        self.total += int(counts.sum())

    def merged(self) -> None:
        """Merge every run into one, at the start of the arena."""
        while len(self._runs) > 1:
            self._merge_top()
        if self._runs and self._runs[0].start:
            run = self._runs[0]
            compiled_counts._loops().move_left(self._arena.codes, self._arena.counts, run.start, 0, run.length)
            run.start = 0

    # ---- reading ---------------------------------------------------------------------------------------------
    def _single_run(self) -> _Run | None:
        """Every run merged into one, which the queries read; None before anything was counted."""
        self.merged()
        return self._runs[0] if self._runs else None

    def stored(self) -> tuple[np.ndarray, np.ndarray]:
        """All counts as sorted unique stored int64 keys (:mod:`.sparse_keys`) and int64 counts (merges first)."""
        run = self._single_run()
        if run is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return compiled_counts._loops().compact_to_stored(self._arena.codes, self._arena.counts, run.start,
                                                          run.offsets, POSITION_SHIFT, TARGET_SHIFT, BEHAVIOR_SHIFT)

    def lookup(self, wanted: np.ndarray) -> np.ndarray:
        """The int64 count of every stored key in ``wanted`` (1-D int64), 0 for a key never counted."""
        run = self._single_run()
        if run is None or wanted.size == 0:
            return np.zeros(wanted.size, np.int64)
        target = (wanted >> TARGET_SHIFT) & _CATEGORY_MASK
        behavior = (wanted >> BEHAVIOR_SHIFT) & _CATEGORY_MASK
        # A target or behaviour beyond the compact range was never counted here: code -1 matches nothing.
        fits = (target < MAX_COMPACT_TARGETS) & (behavior < MAX_COMPACT_BEHAVIORS)
        codes = np.where(fits, (target << COMPACT_TARGET_SHIFT) | (behavior << 1) | (wanted & 1), -1)
        return compiled_counts._loops().compact_lookup(self._arena.codes, self._arena.counts, run.start,
                                                       run.offsets, wanted >> POSITION_SHIFT, codes)

    def same_category(self, n_positions: int) -> np.ndarray:
        """``[n_positions, 2]`` int64: counts with the behaviour's category equal to the target's, per position
        and label."""
        run = self._single_run()
        if run is None:
            return np.zeros((n_positions, 2), np.int64)
        return compiled_counts._loops().compact_same_category(self._arena.codes, self._arena.counts, run.start,
                                                              run.offsets, n_positions)

    def behaviors_of(self, target: int) -> np.ndarray:
        """Sorted behaviour categories counted (at any position) with this target category."""
        run = self._single_run()
        if run is None or not 0 <= target < MAX_COMPACT_TARGETS:
            return np.zeros(0, np.int64)
        parts = []
        low, high = target << COMPACT_TARGET_SHIFT, (target + 1) << COMPACT_TARGET_SHIFT
        for p in range(self._positions):  # a target's codes are one stretch of each position's segment
            segment = self._arena.codes[run.start + run.offsets[p]:run.start + run.offsets[p + 1]]
            first, last = np.searchsorted(segment, [low, high])
            parts.append((segment[first:last] >> 1) & (MAX_COMPACT_BEHAVIORS - 1))
        return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    # ---- the arena ---------------------------------------------------------------------------------------------
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
        """Make the arena hold at least ``size`` codes, runs where they are."""
        self._arena.reserve(size, self._top())

    def _push_apart(self, codes: np.ndarray, counts: np.ndarray, offsets: np.ndarray) -> None:
        """Add a run held outside the arena (a batch's, in the work arrays) as the new top run; merge while the
        run below is no longer (a binary counter). Its first merge reads it where it is, with no copy."""
        length = codes.size
        if length == 0:
            return
        if self._top() + length > self._arena.capacity and len(self._runs) > 1:
            # Before the arena grows, merge what it holds: runs repeat keys (at 1,000 categories, a third of
            # what they hold), and the arena would grow to hold the repeats.
            self.merged()
        top = self._top()
        self._reserve(top + length)
        arena = self._arena
        if self._runs and self._runs[-1].length <= length:
            below = self._runs[-1]
            merged_offsets = np.empty(self._positions + 1, np.int64)
            start = compiled_counts._loops().merge_backward(arena.codes, arena.counts, below.start, below.offsets,
                                                            codes, counts, offsets, top + length, merged_offsets)
            self._runs[-1] = _Run(start, top + length - start, merged_offsets)
        else:
            arena.codes[top:top + length] = codes
            arena.counts[top:top + length] = counts
            self._runs.append(_Run(top, length, offsets))
        while len(self._runs) > 1 and self._runs[-2].length <= self._runs[-1].length:
            self._merge_top()

    def _merge_top(self) -> None:
        """Merge the two top runs in place; the shorter one waits aside."""
        below, above = self._runs[-2], self._runs[-1]
        loops = compiled_counts._loops()
        shorter = min(below.length, above.length)
        if self._aside[0].size < shorter:
            self._aside = (_uint32(shorter), _uint32(shorter))
        aside_codes, aside_counts = self._aside[0][:shorter], self._aside[1][:shorter]
        offsets = np.empty(self._positions + 1, np.int64)
        codes, counts = self._arena.codes, self._arena.counts
        if below.length <= above.length:  # forward, from the start of the lower run
            aside_codes[:] = codes[below.start:below.end]
            aside_counts[:] = counts[below.start:below.end]
            length = loops.merge_forward(aside_codes, aside_counts, below.offsets, codes, counts, above.start,
                                         above.offsets, below.start, offsets)
            merged = _Run(below.start, length, offsets)
        else:  # backward, from the end of the upper run
            aside_codes[:] = codes[above.start:above.end]
            aside_counts[:] = counts[above.start:above.end]
            start = loops.merge_backward(codes, counts, below.start, below.offsets, aside_codes, aside_counts,
                                         above.offsets, above.end, offsets)
            merged = _Run(start, above.end - start, offsets)
        self._runs[-2:] = [merged]
