"""The dense array of :class:`~.position_counter.PositionCodeCounter`: one uint8 cell per (target, label,
position, behaviour), with carries of 256.

Once the keys held would take at least as much memory as one uint8 cell for every (target, label, position,
behaviour) of the ids seen so far (the cells' bytes at most :data:`DENSE_BYTES_PER_KEY` per distinct key, twice the
8 bytes a key of the runs), the counter moves its counts into such an array and counts each behaviour with one
increment (:func:`~._numba_kernels.dense_count`): no sort, no merge, O(1) a behaviour. A cell that passes 255
wraps to 0 and records one *carry* of 256, so counts stay exact; carries are folded into one (cell, carries) pair
per key past 255, and the bound counts those pairs (16 bytes each) and the carries' buffer beside the cells. At
1,000 categories and 50 positions the array is 100 MB, taken once the counter holds 6.25 million keys; at 10,000
categories it would be 10 GB and is never taken. A batch with an id or a position beyond the array's lays it out
again, larger (by half again where the bound allows, so that a vocabulary revealed id by id re-lays it out a few
times only), or, where even the array it needs would break the bound, moves the counts back into runs.
"""

from __future__ import annotations

import numpy as np
import torch

from . import compiled_counts
from .code_arena import Arena, pack
from .compact_codes import CATEGORY_MASK, compact_code, compact_code_parts
from .dense_counts import grown_size
from .sparse_keys import BEHAVIOR_SHIFT, POSITION_SHIFT, TARGET_SHIFT

__all__ = ["DENSE_BYTES_PER_KEY", "DenseArray"]

#: The dense array is taken once its bytes (one per cell) are at most this many per distinct key held.
DENSE_BYTES_PER_KEY = 16


def _uint8_zeros(size: int) -> np.ndarray:
    """A zeroed uint8 array, allocated and zeroed by torch: numpy's huge-page advice would make each first touch of
    the dense array's pages, at random as counting reaches them, cost more (see
    :func:`~.code_arena.empty_uint32`)."""
    return torch.zeros(size, dtype=torch.uint8).numpy()


class DenseArray:
    """The dense array's part of :class:`~.position_counter.PositionCodeCounter` (a mixin: the counter holds the
    state, ``_dense``, ``_dense_shape``, ``_dense_keys``, ``_carries``, ``_n_carries`` and ``_carried``, and the
    runs it leaves or goes back to)."""

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
            target, behavior, label = compact_code_parts(codes[first:last])
            self._dense_add(self._dense_cells(target, label, p, behavior), counts[first:last].astype(np.int64))
        self._arena, self._runs = Arena(), []
        self._aside = np.empty(0, np.uint64)
        self._work = (np.empty(0, np.uint32), np.empty(0, np.uint64))

    def _leave_dense(self) -> None:
        """Back to runs: the dense array's counts become one run. (The array is taken again once the keys reach
        the bound for the larger ids.)"""
        codes, counts, offsets = self._dense_run()
        self._dense, self._dense_shape = None, (0, 0, 0)
        self._carries, self._n_carries = np.empty(0, np.int64), 0
        self._carried = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self._push_apart(pack(codes, counts), offsets)

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
            row, self._n_carries, counted = compiled_counts.loops().dense_count(
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
            codes = compact_code(t, b, y)
            here = carried_p == p
            if here.any():  # cells that wrapped to exactly 0 hold their whole count in carries
                codes = np.union1d(codes, compact_code(carried_t[here], carried_b[here], carried_y[here]))
            t, b, y = compact_code_parts(codes)
            flat = self._dense_cells(t, y, p, b)
            parts_codes.append(codes.astype(np.uint32))
            parts_counts.append((self._dense[flat] + self._carried_at(flat)).astype(np.uint32))
            offsets.append(offsets[-1] + codes.size)
        return (np.concatenate(parts_codes), np.concatenate(parts_counts), np.asarray(offsets, np.int64))

    def _dense_lookup(self, wanted: np.ndarray) -> np.ndarray:
        n_targets, n_positions, n_behaviors = self._dense_shape
        target = (wanted >> TARGET_SHIFT) & CATEGORY_MASK
        behavior = (wanted >> BEHAVIOR_SHIFT) & CATEGORY_MASK
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
