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

**The dense array.** Once the keys held would take at least as much memory as one uint8 cell for every (target,
label, position, behaviour) of the ids seen so far (the cells' bytes at most :data:`DENSE_BYTES_PER_KEY` per
distinct key, twice the 8 bytes a key of the runs), the counter moves its counts into such an array and counts each
behaviour with one increment (:func:`~._numba_kernels.dense_count`): no sort, no merge. A cell that passes 255
wraps to 0 and records one *carry* of 256, so counts stay exact; carries are folded into one (cell, carries) pair
per key past 255, and the bound counts those pairs (16 bytes each) and the carries' buffer beside the cells. At
1,000 categories and 50 positions the array is 100 MB, taken once the counter holds 6.25 million keys; at 10,000
categories it would be 10 GB and is never taken. A batch with an id or a position beyond the array's lays it out
again, larger (by half again where the bound allows, so that a vocabulary revealed id by id re-lays it out a few
times only), or, where even the array it needs would break the bound, moves the counts back into runs.

A counter that meets an id or a total beyond these bounds hands its counts over as int64 keys
(:meth:`stored`) and :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` goes on with the 16-byte keys.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch

from . import compiled_counts
from .dense_counts import grown_size
from .sparse_keys import (
    BEHAVIOR_SHIFT,
    CATEGORY_BITS,
    COMPACT_TARGET_SHIFT,
    MAX_COMPACT_BEHAVIORS,
    MAX_COMPACT_TARGETS,
    POSITION_SHIFT,
    TARGET_SHIFT,
)

__all__ = ["DENSE_BYTES_PER_KEY", "MAX_COMPACT_BEHAVIORS", "MAX_COMPACT_TARGETS", "MAX_COMPACT_TOTAL",
           "PositionCodeCounter"]

#: Counts are uint32: while fewer behaviours than this have been counted, no count can overflow.
MAX_COMPACT_TOTAL = (1 << 32) - 1
_CATEGORY_MASK = (1 << CATEGORY_BITS) - 1
#: The dense array is taken once its bytes (one per cell) are at most this many per distinct key held.
DENSE_BYTES_PER_KEY = 16


def _code(target, behavior, label):
    """The compact code of one position's key: ``(target << 16) | (behaviour << 1) | label``."""
    return (target << COMPACT_TARGET_SHIFT) | (behavior << 1) | label


def _code_parts(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, behaviour, label) of compact codes, as int64: the inverse of :func:`_code`."""
    codes = codes.astype(np.int64, copy=False)
    return codes >> COMPACT_TARGET_SHIFT, (codes >> 1) & (MAX_COMPACT_BEHAVIORS - 1), codes & 1


def _uint32(size: int) -> np.ndarray:
    """An uninitialised uint32 array, allocated by torch. numpy advises huge pages for large arrays; on this
    project's VM the first touch of such memory cost 8.5 ns per 8 bytes against 2.5 for ordinary pages, and the
    arena's growth touches every byte it copies."""
    return torch.empty(size, dtype=torch.int32).numpy().view(np.uint32)


def _uint8_zeros(size: int) -> np.ndarray:
    """A zeroed uint8 array, allocated and zeroed by torch: numpy's huge-page advice would make each first touch of
    the dense array's pages, at random as counting reaches them, cost about three times more (see ``_uint32``)."""
    return torch.zeros(size, dtype=torch.uint8).numpy()


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

    def __init__(self, dense: bool = True) -> None:
        """``dense=False`` keeps the counts in runs whatever they hold (see the module's docstring)."""
        self._arena = _Arena()
        self._runs: list[_Run] = []
        self._positions = 0
        self.total = 0  # behaviours counted: bounds every count
        self._aside = (np.empty(0, np.uint32), np.empty(0, np.uint32))  # the shorter run of a merge
        self._work = (np.empty(0, np.uint32), np.empty(0, np.uint32))  # a batch's codes while they are sorted
        self._max_ids = (-1, -1)  # the largest target and behaviour ids counted
        # The dense array: uint8 [targets, 2, positions, behaviours], its shape, and the carries (flat cells, each
        # worth 256) in a buffer; None while the counts are runs.
        self._dense: np.ndarray | None = None
        self._dense_shape = (0, 0, 0)
        self._dense_keys = 0  # distinct keys the dense array held when last counted: a lower bound of its keys
        self._carries = np.empty(0, np.int64)  # carries as counted: a buffer of cells, each entry worth 256
        self._n_carries = 0
        self._carried = (np.zeros(0, np.int64), np.zeros(0, np.int64))  # folded: sorted cells, carries each
        self._dense_off = not dense
        self._pushed = 0  # codes ever added as runs: they bound how many distinct keys can have appeared
        self._dense_check_at = 0  # codes pushed before the next look at whether the dense array would do

    def __getstate__(self) -> dict:
        """Pickled (or deep-copied) as its runs' codes and counts (memory maps do not pickle); the dense array's
        counts as one run."""
        state = {"positions": self._positions, "total": self.total, "max_ids": self._max_ids,
                 "dense_off": self._dense_off}
        if self._dense is not None:
            codes, counts, offsets = self._dense_run()
            state["runs"] = [(codes, counts, offsets)]
            return state
        arena = self._arena
        state["runs"] = [(arena.codes[run.start:run.end].copy(), arena.counts[run.start:run.end].copy(), run.offsets)
                         for run in self._runs]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__init__(dense=not state.get("dense_off", False))
        self._positions, self.total = state["positions"], state["total"]
        for codes, counts, offsets in state["runs"]:
            self._push_apart(codes, counts, offsets)
        if "max_ids" in state:
            self._max_ids = state["max_ids"]
        else:  # a state saved before the counter kept its largest ids: read them off its codes
            for codes, _, _ in state["runs"]:
                if codes.size:
                    target, behavior, _ = _code_parts(codes)
                    self._max_ids = (max(self._max_ids[0], int(target.max())),
                                     max(self._max_ids[1], int(behavior.max())))

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
        """Codes held in all runs (a key held in two runs counted twice), or the dense array's cells."""
        if self._dense is not None:
            return self._dense.size
        return sum(run.length for run in self._runs)

    @property
    def is_dense(self) -> bool:
        """Whether the counts are in the dense array (see the module's docstring)."""
        return self._dense is not None

    def nbytes(self) -> int:
        """Bytes held: the arena's written part (its pages untouched by any write take no memory) and the buffer
        for merges (both kept, so that later merges reuse them); or the dense array and its carries."""
        if self._dense is not None:
            return self._dense_nbytes()
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
        self._max_ids = (max(self._max_ids[0], t_max), max(self._max_ids[1], b_max))
        if self._dense is not None:
            if self._dense_holds(t_max, b_max, n_positions) or self._dense_grown(t_max, b_max, n_positions):
                self._dense_count(target, behavior, label, positions)
                return
            self._leave_dense()
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
        self._consider_dense()

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
        targets, behaviors = (keys >> TARGET_SHIFT) & _CATEGORY_MASK, (keys >> BEHAVIOR_SHIFT) & _CATEGORY_MASK
        t_max, b_max = int(targets.max()), int(behaviors.max())
        self._max_ids = (max(self._max_ids[0], t_max), max(self._max_ids[1], b_max))
        if self._dense is not None:
            n_positions = int(positions[-1])
            if self._dense_holds(t_max, b_max, n_positions) or self._dense_grown(t_max, b_max, n_positions):
                self._dense_add(self._dense_cells(targets, keys & 1, positions, behaviors), counts.astype(np.int64))
                self.total += int(counts.sum())
                return
            self._leave_dense()
        self._grow_positions(int(positions[-1]))
        codes = _code(targets, behaviors, keys & 1)
        offsets = np.searchsorted(positions, np.arange(1, self._positions + 2)).astype(np.int64)
        self._push_apart(codes.astype(np.uint32), counts.astype(np.uint32), offsets)
        self.total += int(counts.sum())
        self._consider_dense()

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
        if self._dense is not None:
            codes, counts, offsets = self._dense_run()
            return compiled_counts._loops().compact_to_stored(codes, counts, 0, offsets, POSITION_SHIFT,
                                                              TARGET_SHIFT, BEHAVIOR_SHIFT)
        run = self._single_run()
        if run is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return compiled_counts._loops().compact_to_stored(self._arena.codes, self._arena.counts, run.start,
                                                          run.offsets, POSITION_SHIFT, TARGET_SHIFT, BEHAVIOR_SHIFT)

    def lookup(self, wanted: np.ndarray) -> np.ndarray:
        """The int64 count of every stored key in ``wanted`` (1-D int64), 0 for a key never counted."""
        if self._dense is not None:
            return self._dense_lookup(wanted)
        run = self._single_run()
        if run is None or wanted.size == 0:
            return np.zeros(wanted.size, np.int64)
        target = (wanted >> TARGET_SHIFT) & _CATEGORY_MASK
        behavior = (wanted >> BEHAVIOR_SHIFT) & _CATEGORY_MASK
        # A target or behaviour beyond the compact range was never counted here: code -1 matches nothing.
        fits = (target < MAX_COMPACT_TARGETS) & (behavior < MAX_COMPACT_BEHAVIORS)
        codes = np.where(fits, _code(target, behavior, wanted & 1), -1)
        return compiled_counts._loops().compact_lookup(self._arena.codes, self._arena.counts, run.start,
                                                       run.offsets, wanted >> POSITION_SHIFT, codes)

    def same_category(self, n_positions: int) -> np.ndarray:
        """``[n_positions, 2]`` int64: counts with the behaviour's category equal to the target's, per position
        and label."""
        if self._dense is not None:
            return self._dense_same_category(n_positions)
        run = self._single_run()
        if run is None:
            return np.zeros((n_positions, 2), np.int64)
        return compiled_counts._loops().compact_same_category(self._arena.codes, self._arena.counts, run.start,
                                                              run.offsets, n_positions)

    def behaviors_of(self, target: int) -> np.ndarray:
        """Sorted behaviour categories counted (at any position) with this target category."""
        if self._dense is not None:
            return self._dense_behaviors_of(target)
        run = self._single_run()
        if run is None or not 0 <= target < MAX_COMPACT_TARGETS:
            return np.zeros(0, np.int64)
        parts = []
        low, high = target << COMPACT_TARGET_SHIFT, (target + 1) << COMPACT_TARGET_SHIFT
        for p in range(self._positions):  # a target's codes are one stretch of each position's segment
            segment = self._arena.codes[run.start + run.offsets[p]:run.start + run.offsets[p + 1]]
            first, last = np.searchsorted(segment, [low, high])
            parts.append(_code_parts(segment[first:last])[1])
        return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    # ---- the dense array ----------------------------------------------------------------------------------------
    def _consider_dense(self) -> None:
        """Move the counts into the dense array once its cells take at most ``DENSE_BYTES_PER_KEY`` bytes a distinct
        key held. The runs' length bounds the distinct keys from above: they are merged (to count them exactly)
        only when that bound allows it; after a look that found too few, only once enough codes have been pushed
        since to make up the difference (and a quarter of the keys held at least, so that a counter just short
        of it does not merge at every batch)."""
        if self._dense_off or self._dense is not None or not self._runs or self._pushed < self._dense_check_at:
            return
        n_targets, n_behaviors = self._max_ids[0] + 1, self._max_ids[1] + 1
        cells = n_targets * 2 * self._positions * n_behaviors
        needed = -(-cells // DENSE_BYTES_PER_KEY)
        if self.distinct_upper_bound < needed:
            return
        run = self._single_run()
        distinct = run.length
        # the keys already past 255 will each hold a (cell, carries) pair beside the array
        carried = int(np.count_nonzero(self._arena.counts[run.start:run.end] > 255))
        if self._dense_bytes(cells, carried) > DENSE_BYTES_PER_KEY * distinct:
            self._dense_check_at = self._pushed + max(needed - distinct, distinct // 4)
            return
        self._go_dense((n_targets, self._positions, n_behaviors))

    @staticmethod
    def _buffer_size(cells: int) -> int:
        """Entries of the carries' buffer for an array of ``cells``: about 1/64 of it, 256 to 65,536."""
        return max(256, min(1 << 16, cells >> 6))

    @classmethod
    def _dense_bytes(cls, cells: int, carried: int) -> int:
        """Bytes of a dense array of ``cells`` with ``carried`` cells past 255: the array, the carries' buffer
        and 16 bytes a folded (cell, carries) pair."""
        return cells + 8 * cls._buffer_size(cells) + 16 * carried

    def _go_dense(self, shape: tuple[int, int, int]) -> None:
        """The counts of the (merged) run into a new dense array of ``shape`` (targets, positions, behaviours);
        the arena and the merge buffers are let go."""
        run = self._single_run()
        n_targets, n_positions, n_behaviors = shape
        self._dense_keys = run.length
        self._dense = _uint8_zeros(n_targets * 2 * n_positions * n_behaviors)
        self._dense_shape = shape
        self._carries, self._n_carries = np.empty(self._buffer_size(self._dense.size), np.int64), 0
        self._carried = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        codes, counts = self._arena.codes, self._arena.counts
        for p in range(1, n_positions + 1):  # a segment at a time: the cells' int64 indices stay small
            first, last = run.start + run.offsets[p - 1], run.start + run.offsets[p]
            target, behavior, label = _code_parts(codes[first:last])
            self._dense_add(self._dense_cells(target, label, p, behavior), counts[first:last].astype(np.int64))
        self._arena, self._runs = _Arena(), []
        self._aside = self._work = (np.empty(0, np.uint32), np.empty(0, np.uint32))

    def _leave_dense(self) -> None:
        """Back to runs: the dense array's counts become one run. (The array is taken again once the keys reach
        the bound for the larger ids.)"""
        codes, counts, offsets = self._dense_run()
        self._dense, self._dense_shape = None, (0, 0, 0)
        self._carries, self._n_carries = np.empty(0, np.int64), 0
        self._carried = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self._push_apart(codes, counts, offsets)

    def _dense_nbytes(self) -> int:
        """The dense array, the carries' buffer and the folded carries."""
        return self._dense.nbytes + self._carries.nbytes + self._carried[0].nbytes + self._carried[1].nbytes

    def _dense_distinct(self) -> int:
        """Distinct keys the dense array holds: its non-zero cells, and those that wrapped to exactly 0."""
        carried = self._folded()[0]
        self._dense_keys = int(np.count_nonzero(self._dense)) + int((self._dense[carried] == 0).sum())
        return self._dense_keys

    def _dense_within_bound(self, cells: int) -> bool:
        """Whether a dense array of ``cells``, with the keys past 255 held now, stays within the bound. The keys
        are counted again (a pass over the whole array) only where the count kept from before cannot tell: keys
        are never lost, so that count is a lower bound."""
        needed = self._dense_bytes(cells, self._folded()[0].size)
        if needed <= DENSE_BYTES_PER_KEY * self._dense_keys:
            return True
        return needed <= DENSE_BYTES_PER_KEY * self._dense_distinct()

    def _dense_grown(self, t_max: int, b_max: int, n_positions: int) -> bool:
        """Lay the dense array out again for these ids and positions, if an array that holds them stays within
        the bound (by half again on a grown side where it allows); returns whether it did."""
        old = self._dense_shape
        needed = (max(old[0], t_max + 1), max(old[1], n_positions), max(old[2], b_max + 1))
        roomy = (grown_size(old[0], needed[0]), needed[1], grown_size(old[2], needed[2]))
        for shape in (roomy, needed):
            if self._dense_within_bound(shape[0] * 2 * shape[1] * shape[2]):
                self._relayout(shape)
                return True
        return False

    def _relayout(self, shape: tuple[int, int, int]) -> None:
        """Copy the counts into a larger dense array of ``shape``; each carry moves to its cell's new index."""
        n_targets, n_positions, n_behaviors = self._dense_shape
        cells, multiples = self._folded()
        t, y, p, b = self._cell_parts(cells)
        grown = _uint8_zeros(shape[0] * 2 * shape[1] * shape[2])
        grown.reshape(shape[0], 2, shape[1], shape[2])[:n_targets, :, :n_positions, :n_behaviors] = (
            self._dense.reshape(n_targets, 2, n_positions, n_behaviors))
        self._dense, self._dense_shape = grown, shape
        self._carries = np.empty(self._buffer_size(grown.size), np.int64)  # empty: folded above
        self._positions = max(self._positions, shape[1])  # the runs it may go back to have these positions too
        moved = self._dense_cells(t, y, p, b)  # the layout keeps their order: (target, label, position, behaviour)
        self._carried = (moved, multiples)

    def _dense_holds(self, t_max: int, b_max: int, n_positions: int) -> bool:
        """Whether the dense array has cells for these ids and positions."""
        n_targets, held_positions, n_behaviors = self._dense_shape
        return t_max < n_targets and b_max < n_behaviors and n_positions <= held_positions

    def _dense_cells(self, target, label, position, behavior) -> np.ndarray:
        """Flat cells of the dense array, laid out [target, label, position - 1, behaviour]."""
        _, n_positions, n_behaviors = self._dense_shape
        return ((target * 2 + label) * n_positions + (position - 1)) * n_behaviors + behavior

    def _cell_parts(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(target, label, position, behaviour) of flat cells: the inverse of :meth:`_dense_cells`."""
        _, n_positions, n_behaviors = self._dense_shape
        rows, behavior = np.divmod(cells, n_behaviors)
        rows, position = np.divmod(rows, n_positions)
        target, label = np.divmod(rows, 2)
        return target, label, position + 1, behavior

    def _make_room(self, carries: int) -> None:
        """Room for ``carries`` more in the carries' buffer (a row's cells): by folding what it holds."""
        if self._n_carries + carries <= self._carries.size:
            return
        self._fold()
        if carries > self._carries.size:  # a row longer than the buffer
            self._carries = np.empty(carries, np.int64)

    def _fold(self) -> None:
        """Fold the carries' buffer into the sorted (cell, carries) pairs: one pair per cell that ever passed 255,
        however often, so that carries take memory by the keys, not by the behaviours counted."""
        if self._n_carries == 0:
            return
        cells, times = np.unique(self._carries[:self._n_carries], return_counts=True)
        self._n_carries = 0
        self._add_carried(cells, times.astype(np.int64))

    def _add_carried(self, cells: np.ndarray, times: np.ndarray) -> None:
        """Add ``times`` carries at distinct ``cells`` to the folded pairs."""
        held_cells, held_times = self._carried
        if held_cells.size:
            cells, where = np.unique(np.concatenate([held_cells, cells]), return_inverse=True)
            summed = np.zeros(cells.size, np.int64)
            np.add.at(summed, where, np.concatenate([held_times, times]))
            times = summed
        else:
            order = np.argsort(cells)
            cells, times = cells[order], times[order]
        self._carried = (cells, times)

    def _folded(self) -> tuple[np.ndarray, np.ndarray]:
        """The carries, folded: sorted cells and how many carries (of 256) each holds."""
        self._fold()
        return self._carried

    def _carried_at(self, cells: np.ndarray) -> np.ndarray:
        """256 times the carries of each of ``cells`` (int64; 0 for a cell that never passed 255)."""
        held, times = self._folded()
        extra = np.zeros(cells.size, np.int64)
        if held.size:
            where = np.minimum(np.searchsorted(held, cells), held.size - 1)
            hit = held[where] == cells
            extra[hit] = 256 * times[where[hit]]
        return extra

    def _dense_add(self, cells: np.ndarray, counts: np.ndarray) -> None:
        """Add int64 ``counts`` at distinct flat ``cells``: each cell keeps the low byte, its carries the rest."""
        value = self._dense[cells] + counts
        self._dense[cells] = value & 255
        over = value >> 8
        past = over > 0
        if past.any():
            self._add_carried(cells[past], over[past])

    def _dense_count(self, target, behavior, label, positions) -> None:
        """Count a batch into the dense array, making room in the carries' buffer whenever the kernel stops."""
        by_cell = np.zeros((0, 0), np.int64) if positions is None else positions
        _, n_positions, n_behaviors = self._dense_shape
        row = 0
        while row < target.shape[0]:
            self._make_room(behavior.shape[1])
            row, self._n_carries, counted = compiled_counts._loops().dense_count(
                target, behavior, label, by_cell, self._dense, n_positions, n_behaviors, self._carries,
                self._n_carries, row)
            self.total += int(counted)
        if self._n_carries > self._carries.size // 2:
            self._fold()
            if not self._dense_within_bound(self._dense.size):  # many keys past 255 in a sparse array
                self._leave_dense()

    def _dense_run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dense array's counts as one run: uint32 codes sorted within each position, counts, offsets."""
        n_targets, n_positions, n_behaviors = self._dense_shape
        carried = self._folded()[0]
        carried_t, carried_y, carried_p, carried_b = self._cell_parts(carried)
        cells = self._dense.reshape(n_targets, 2, n_positions, n_behaviors)
        parts_codes, parts_counts, offsets = [], [], [0]
        for p in range(1, n_positions + 1):
            # [targets, behaviours, labels]: non-zero cells in (target, behaviour, label) order, the codes' order
            t, b, y = np.nonzero(cells[:, :, p - 1, :].transpose(0, 2, 1))
            codes = _code(t, b, y)
            here = carried_p == p
            if here.any():  # cells that wrapped to exactly 0 hold their whole count in carries
                codes = np.union1d(codes, _code(carried_t[here], carried_b[here], carried_y[here]))
            t, b, y = _code_parts(codes)
            flat = self._dense_cells(t, y, p, b)
            parts_codes.append(codes.astype(np.uint32))
            parts_counts.append((self._dense[flat] + self._carried_at(flat)).astype(np.uint32))
            offsets.append(offsets[-1] + codes.size)
        return (np.concatenate(parts_codes), np.concatenate(parts_counts), np.asarray(offsets, np.int64))

    def _dense_lookup(self, wanted: np.ndarray) -> np.ndarray:
        n_targets, n_positions, n_behaviors = self._dense_shape
        target = (wanted >> TARGET_SHIFT) & _CATEGORY_MASK
        behavior = (wanted >> BEHAVIOR_SHIFT) & _CATEGORY_MASK
        position = wanted >> POSITION_SHIFT
        inside = (target < n_targets) & (behavior < n_behaviors) & (position >= 1) & (position <= n_positions)
        found = np.zeros(wanted.size, np.int64)
        cells = self._dense_cells(target[inside], wanted[inside] & 1, position[inside], behavior[inside])
        found[inside] = self._dense[cells] + self._carried_at(cells)
        return found

    def _dense_same_category(self, n_positions: int) -> np.ndarray:
        held_targets, held_positions, n_behaviors = self._dense_shape
        x1 = np.zeros((n_positions, 2), np.int64)
        both = min(held_targets, n_behaviors)
        shown = min(n_positions, held_positions)
        if both == 0 or shown == 0:
            return x1
        cells = self._dense.reshape(held_targets, 2, held_positions, n_behaviors)
        ids = np.arange(both)
        own = cells[ids, :, :shown, ids].astype(np.int64)  # [target, label, position]
        x1[:shown] = own.sum(axis=0).T
        carried, times = self._folded()
        t, y, p, b = self._cell_parts(carried)
        keep = (t == b) & (p <= shown)
        np.add.at(x1, (p[keep] - 1, y[keep]), 256 * times[keep])
        return x1

    def _dense_behaviors_of(self, target: int) -> np.ndarray:
        held_targets, held_positions, n_behaviors = self._dense_shape
        if not 0 <= target < held_targets:
            return np.zeros(0, np.int64)
        block = self._dense.reshape(held_targets, 2, held_positions, n_behaviors)[target]
        present = block.any(axis=(0, 1))
        t, _, _, b = self._cell_parts(self._folded()[0])
        present[b[t == target]] = True
        return np.flatnonzero(present).astype(np.int64)

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
        self._pushed += length
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
