"""Sparse (target, behaviour, position, label) counts in 8 bytes a key: 4-byte codes and counts, per position.

The sparse counter of :mod:`.sparse_keys` stores an int64 key and an int64 count per distinct key (16 bytes). At
real vocabulary sizes (up to 65,536 target and 32,768 behaviour categories), one position's (target, behaviour,
label) fits 32 bits:

    code = (target << 16) | (behaviour << 1) | label        (uint32)

and the position need not be stored at all: keys are grouped by position, with one offset per position. A count
fits 32 bits while fewer than 2^32 behaviours have been counted. So :class:`PositionCodeCounter` holds 8 bytes a
key, half as many to move in every merge and half the memory (plus a buffer for merges, kept for the next one,
of up to half the keys it holds).

**Layout** (:mod:`.code_arena`). The counts are sorted runs of (position, code) (:mod:`.compact_codes`), in one
*arena* that grows a few times only, kept as a binary counter: a batch is counted into a run (bucketed by position,
each bucket sorted, equal codes counted; one uint64 entry (code << 32) | count a key), and a run merges in place into
the one below while that one is no longer. So each key is copied O(log(state / run)) times, in sequential passes.
Lookups search each run and sum; an export (:meth:`stored`, a pickle) merges every run first.

**The dense array** (:mod:`.position_dense`). Once the keys held would take at least as much memory as one uint8
cell for every (target, label, position, behaviour) of the ids seen so far (the cells' bytes at most
:data:`DENSE_BYTES_PER_KEY` per distinct key), the counter moves its counts into such an array and counts each
behaviour with one increment: no sort, no merge. A cell that passes 255 wraps to 0 and records one *carry* of 256,
so counts stay exact. A batch with an id or a position beyond the array's lays it out again, larger, or, where
even the array it needs would break the bound, moves the counts back into runs.

A counter that meets an id or a total beyond these bounds hands its counts over as int64 keys
(:meth:`stored`) and :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` goes on with the 16-byte keys.
"""

from __future__ import annotations

import numpy as np
import torch

from ..functional.correlation import target_relative_positions
from . import compiled_counts
from .code_arena import Arena, ArenaRuns, Run, empty_uint32, empty_uint64, pack
from .compact_codes import CATEGORY_MASK, compact_code, compact_code_parts
from .position_dense import DENSE_BYTES_PER_KEY, DenseArray
from .sparse_keys import (
    BEHAVIOR_SHIFT,
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


def _as_uint8_mask(valid: np.ndarray) -> np.ndarray:
    """A mask as the compiled loops read it, one byte a cell: a bool or uint8 mask as it is, any other (an int
    mask, whose view as bytes would be several bytes a cell) compared with 0."""
    return valid.view(np.uint8) if valid.dtype in (np.bool_, np.uint8) else (valid != 0).view(np.uint8)


class PositionCodeCounter(DenseArray, ArenaRuns):
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
        self._arena = Arena()
        self._runs: list[Run] = []
        self._positions = 0
        self.total = 0  # behaviours counted: bounds every count
        self._aside = np.empty(0, np.uint64)  # the shorter run of a merge, as entries (code << 32) | count
        # a batch's codes while they are sorted (uint32), and its run of entries (uint64)
        self._work = (np.empty(0, np.uint32), np.empty(0, np.uint64))
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
            self._push_apart(pack(codes, counts), offsets)
        if "max_ids" in state:
            self._max_ids = state["max_ids"]
        else:  # a state saved before the counter kept its largest ids: read them off its codes
            for codes, _, _ in state["runs"]:
                if codes.size:
                    target, behavior, _ = compact_code_parts(codes)
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
        return self._held()

    @property
    def is_dense(self) -> bool:
        """Whether the counts are in the dense array (see the module's docstring)."""
        return self._dense is not None

    def nbytes(self) -> int:
        """Bytes held: the arena's written part (its pages untouched by any write take no memory) and the buffer
        for merges (both kept, so that later merges reuse them); or the dense array and its carries."""
        if self._dense is not None:
            return self._dense_nbytes()
        return 8 * self._arena.high_water + self._aside.nbytes

    def work_nbytes(self) -> int:
        """Bytes of the work buffers a batch's codes are sorted in (as large as the largest batch counted)."""
        return self._work[0].nbytes + self._work[1].nbytes

    # ---- counting ---------------------------------------------------------------------------------------------
    def add_batch(self, target: np.ndarray, behavior: np.ndarray, label: np.ndarray, positions: np.ndarray | None,
                  n_positions: int, checked_max: tuple[int, int] | None = None,
                  valid: np.ndarray | None = None) -> None:
        """Count a batch: ``target``, ``label`` ``[B]``, ``behavior`` ``[B, L]`` (C-contiguous integers),
        ``positions`` ``[B, L]`` int64 per cell (0: padding, not counted) or ``None``: then ``valid`` (``[B, L]``
        bool or uint8, true for a real behaviour; position p = the real cells from this one to the row's end) or,
        without it, column j at position L - j. ``n_positions``: at least the largest position. ``checked_max``:
        the largest target and behaviour ids, from a caller that has checked ids, labels, positions and the total
        itself (:class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` does); the checks are then skipped.

        Raises:
            ValueError: an id beyond :meth:`fits` or negative, a label not 0 or 1, a position outside
                ``[0, n_positions]``, a ``valid`` mask of another shape, or a total beyond :meth:`has_room`.
        """
        if behavior.size == 0:
            return
        if valid is not None and valid.shape != behavior.shape:
            raise ValueError(f"PositionCodeCounter: valid has shape {tuple(valid.shape)}, behavior "
                             f"{tuple(behavior.shape)}; they must match")
        if checked_max is None:
            t_max, b_max = int(target.max()), int(behavior.max())
            self._check(target, behavior, label, positions, n_positions, t_max, b_max)
            checked_max = (t_max, b_max)
        self.add_batches([(target, behavior, label, valid if positions is None else None, positions)], n_positions,
                         checked_max)

    def add_batches(self, batches: list[tuple], n_positions: int, checked_max: tuple[int, int]) -> None:
        """Count several batches as one: each ``(target, behavior, label, valid, positions)`` as in
        :meth:`add_batch` (``valid``, ``positions`` or both ``None``), already checked, with the largest ids of all
        of them; their cells go into one set of buckets, sorted once, and become one run (no concatenation of the
        batches first)."""
        t_max, b_max = checked_max
        none = np.zeros((0, 0), np.int64)
        batches = [(target, behavior, label, none.view(np.uint8) if valid is None else _as_uint8_mask(valid),
                    none if positions is None else positions)
                   for target, behavior, label, valid, positions in batches if behavior.size]
        # Positions read off the columns or the mask run up to L: the one check of it, for every path in.
        for _, behavior, _, _, positions in batches:
            if not positions.size and behavior.shape[1] > n_positions:
                raise ValueError(f"PositionCodeCounter: {behavior.shape[1]} columns need n_positions >= that, "
                                 f"got {n_positions}")
        if not batches:
            return
        self._max_ids = (max(self._max_ids[0], t_max), max(self._max_ids[1], b_max))
        if self._dense is not None:
            if self._dense_holds(t_max, b_max, n_positions) or self._dense_grown(t_max, b_max, n_positions):
                while batches and self._dense is not None:  # it may leave the array part-way (its carries)
                    target, behavior, label, valid, positions = batches.pop(0)
                    if not positions.size:
                        positions = None if not valid.size else (
                            target_relative_positions(torch.from_numpy(valid)).numpy())
                    self._dense_count(target, behavior, label, positions)
                if not batches:
                    return
            else:
                self._leave_dense()
        self._grow_positions(n_positions)
        loops = compiled_counts.loops()
        # Each row's real cells, from the mask, read once for the buckets' sizes and their codes.
        rows = [loops.real_rows(valid, 0 if positions.size else behavior.shape[0], behavior.shape[1])
                for _, behavior, _, valid, positions in batches]
        starts = np.zeros(self._positions + 2, np.int64)  # sizes first, at index p + 1; then bucket starts
        counted = sum(loops.bucket_sizes(n_real, positions, behavior.shape[0], behavior.shape[1], starts[1:])
                      for (_, behavior, _, _, positions), (n_real, _) in zip(batches, rows))
        np.cumsum(starts, out=starts)
        if self._work[0].size < counted:
            self._work = (empty_uint32(counted), empty_uint64(counted))
        codes, entries = self._work
        at = starts.copy()
        for (target, behavior, label, valid, positions), (n_real, contiguous) in zip(batches, rows):
            loops.bucket_codes(target, behavior, label, valid, positions, n_real, contiguous, codes, at)
        for p in range(1, self._positions + 1):  # numpy's vectorised sort, bucket by bucket, in place
            if starts[p + 1] - starts[p] > 1:
                codes[starts[p]:starts[p + 1]].sort()
        offsets = np.empty(self._positions + 1, np.int64)
        length = loops.run_lengths(codes, entries, starts, self._positions, offsets)
        self._push_apart(entries[:length], offsets)
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
        if not self.has_room(behavior.size):
            raise ValueError(f"PositionCodeCounter: counts are 32-bit; at most {MAX_COMPACT_TOTAL} behaviours")

    def add_sorted(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add sorted unique stored int64 keys (:mod:`.sparse_keys`, ids that fit) with their int64 counts."""
        if keys.size == 0:
            return
        positions = keys >> POSITION_SHIFT
        targets, behaviors = (keys >> TARGET_SHIFT) & CATEGORY_MASK, (keys >> BEHAVIOR_SHIFT) & CATEGORY_MASK
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
        codes = compact_code(targets, behaviors, keys & 1)
        offsets = np.searchsorted(positions, np.arange(1, self._positions + 2)).astype(np.int64)
        self._push_apart(pack(codes, counts), offsets)
        self.total += int(counts.sum())
        self._consider_dense()

    # ---- reading ---------------------------------------------------------------------------------------------
    def stored(self) -> tuple[np.ndarray, np.ndarray]:
        """All counts as sorted unique stored int64 keys (:mod:`.sparse_keys`) and int64 counts (merges first)."""
        if self._dense is not None:
            codes, counts, offsets = self._dense_run()
            return compiled_counts.loops().compact_to_stored(codes, counts, 0, offsets, POSITION_SHIFT,
                                                             TARGET_SHIFT, BEHAVIOR_SHIFT)
        run = self._single_run()
        if run is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return compiled_counts.loops().compact_to_stored(self._arena.codes, self._arena.counts, run.start,
                                                         run.offsets, POSITION_SHIFT, TARGET_SHIFT, BEHAVIOR_SHIFT)

    def lookup(self, wanted: np.ndarray) -> np.ndarray:
        """The int64 count of every stored key in ``wanted`` (1-D int64), 0 for a key never counted."""
        if self._dense is not None:
            return self._dense_lookup(wanted)
        if not self._runs or wanted.size == 0:
            return np.zeros(wanted.size, np.int64)
        target = (wanted >> TARGET_SHIFT) & CATEGORY_MASK
        behavior = (wanted >> BEHAVIOR_SHIFT) & CATEGORY_MASK
        # A target or behaviour beyond the compact range was never counted here: code -1 matches nothing.
        fits = (target < MAX_COMPACT_TARGETS) & (behavior < MAX_COMPACT_BEHAVIORS)
        codes = np.where(fits, compact_code(target, behavior, wanted & 1), -1)
        # Each run is searched where it lies and the counts summed: a query merges nothing (the runs merge as
        # counting goes on), so that a query between two batches costs by the keys it asks for, not the state.
        found = np.zeros(wanted.size, np.int64)
        for run in self._runs:
            found += compiled_counts.loops().compact_lookup(self._arena.codes, self._arena.counts, run.start,
                                                            run.offsets, wanted >> POSITION_SHIFT, codes)
        return found

    def same_category(self, n_positions: int) -> np.ndarray:
        """``[n_positions, 2]`` int64: counts with the behaviour's category equal to the target's, per position
        and label (summed over the runs, as :meth:`lookup`)."""
        if self._dense is not None:
            return self._dense_same_category(n_positions)
        x1 = np.zeros((n_positions, 2), np.int64)
        for run in self._runs:
            x1 += compiled_counts.loops().compact_same_category(self._arena.codes, self._arena.counts, run.start,
                                                                run.offsets, n_positions)
        return x1

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
            parts.append(compact_code_parts(segment[first:last])[1])
        return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
