"""How :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` counts the batches waiting: when, and into
which store.

Batches wait until enough behaviours have gathered (``_FLUSH_BEHAVIORS``, more as the state grows, since
adding a chunk costs in proportion to the state), and are then counted in a few vectorised passes over one
integer code per behaviour, into one of three stores:

* while target x behaviour x (positions + 1) x 2 stays at most :data:`DENSE_MAX_CELLS`, a dense int64 array,
  counted with ``bincount`` (:mod:`.dense_counts`); a batch that would make it larger turns it into sparse keys
  for good;
* on CPU with numba, while ids fit 4-byte codes and the total 32-bit counts, the 8-byte counter of
  :mod:`.position_counter` (cells bucketed by position, each bucket sorted by numpy, runs merged);
* otherwise sorted int64 keys with int64 counts (:mod:`.sparse_keys`): a compiled radix sort per position
  (:func:`~.compiled_counts.position_runs`), or, without numba, a sort of codes whose (position, target,
  behaviour, label) digits order them like the stored keys (``torch.unique`` on CUDA), then run boundaries.
"""

from __future__ import annotations

import numpy as np
import torch

from ..functional.correlation import target_relative_positions
from . import compiled_counts
from .dense_counts import count_dense, dense_keys, grown_size
from .position_counter import PositionCodeCounter
from .sparse_keys import (
    BEHAVIOR_SHIFT,
    POSITION_SHIFT,
    TARGET_SHIFT,
    decode_keys,
    unique_counts,
    unique_counts_numpy,
)

__all__ = ["DENSE_MAX_CELLS", "BehaviorCounting"]

#: The dense array is used while target x behaviour x (positions + 1) x 2 stays at most this many cells.
DENSE_MAX_CELLS = 1 << 22
# Batches are counted together once enough behaviours wait: at least _FLUSH_BEHAVIORS, since a vectorised pass
# over 10^5 behaviours costs little more than one over 10^4; and at least twice the state (dense cells or sparse
# keys), since adding a chunk's counts to the state costs in proportion to the state, not to the chunk. At most
# _FLUSH_MAX_BEHAVIORS, so that what waits stays a few tens of MB.
_FLUSH_BEHAVIORS = 1 << 17
_FLUSH_MAX_BEHAVIORS = 1 << 22
# The 8-byte counter's flushes: 2^21 behaviours (see _flush_at).
_FLUSH_COMPILED_MAX_BEHAVIORS = 1 << 21
# Tells compiled_counts.position_runs that column j holds position L - j.
_BY_COLUMN = np.zeros((0, 0), dtype=np.int64)


def _held(key_list) -> int:
    """Keys held by a sparse counter's list state (0 while synced states are tensors, not lists)."""
    return sum(k.numel() for k in key_list) if isinstance(key_list, list) else 0


class BehaviorCounting:
    """The counting part of :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` (a mixin: the metric holds
    the states and the stores, ``_dense``, ``_compact`` and the batches waiting)."""

    def _flush_at(self) -> int:
        if self._dense is None and self._dense_off and compiled_counts.available() and self.device.type == "cpu":
            # The compiled sparse path sorts a flush's codes with numpy's vectorised sort (about 2 ns a code here),
            # but merges the flush's run into the runs held (about 3 ns an entry, each entry merged again about
            # log2(state / run) times): the fewer and longer the runs, the fewer merges. Flushes of 2^21 behaviours
            # from the first, rather than as many as the keys held from 2^20, counted
            # benchmarks/bench_counting_floor.py 10 to 15% faster at 10,000 categories, its state smaller (1.47
            # rather than 1.55 times 8 bytes a key). What waits is at most 2^21 behaviours (18 MB of int64 ids and
            # mask), and the work arrays 12 bytes a real behaviour of a flush.
            return _FLUSH_COMPILED_MAX_BEHAVIORS
        if self._dense is not None:
            state = self._dense.numel()
        else:
            state = _held(self.triple_keys)
        return min(max(_FLUSH_BEHAVIORS, 2 * state), _FLUSH_MAX_BEHAVIORS)

    def _count_parts(self, parts: list[tuple]) -> None:
        """Count checked batches (each as ``check_batch_values`` returns it, all of one length). On the 8-byte
        counter's path they are counted as they are, without a concatenation (a copy of every cell, into fresh
        memory); otherwise concatenated and counted as one."""
        t_max, b_max = max(p[4] for p in parts), max(p[5] for p in parts)
        target, label = torch.cat([p[0] for p in parts]), torch.cat([p[2] for p in parts])
        length = parts[0][1].shape[1]
        self._count_samples(target, label, length, t_max)
        # The dense int64 array first: a run that never leaves it never pays numba's import (0.4 s).
        dense = self._dense_layout(t_max + 1, b_max + 1, length + 1) is not None
        if not dense and self._count_compact([p[:4] for p in parts], t_max, b_max):
            return
        behavior = torch.cat([p[1] for p in parts])
        valid = None
        if any(p[3] is not None for p in parts):
            valid = torch.cat([p[3] if p[3] is not None else torch.ones_like(p[1], dtype=torch.bool) for p in parts])
        self._count_behaviors(target, behavior, label, valid, t_max, b_max, dense)

    def _count_samples(self, target: torch.Tensor, label: torch.Tensor, length: int, t_max: int) -> None:
        """The (target, label) counter and the longest sequence."""
        self._version += 1
        self.max_length = torch.clamp_min(self.max_length, length)
        self._add("target", *unique_counts(target * 2 + label.to(torch.int64), (t_max + 1) * 2))

    def _count_compact(self, parts: list[tuple], t_max: int, b_max: int) -> bool:
        """Count the behaviours of ``(target, behavior, label, valid)`` parts (the dense int64 array ruled out) into
        the 8-byte counter, if that is where they go (on CPU with numba, ids and total within its bounds); returns
        whether it did. The counter reads the mask itself: a real cell's position is the real cells from it to the
        row's end, found in its bucketing pass (no [B, L] positions array to build here)."""
        length = parts[0][1].shape[1]
        cells = sum(p[1].numel() for p in parts)
        if (parts[0][1].is_cuda or self.device.type != "cpu" or not compiled_counts.available()
                or not self._compact_ready(t_max, b_max, cells)):
            return False
        self._compact.add_batches(
            # Contiguous arrays only: a strided one (a column of a larger tensor) would make numba compile another
            # version of each loop, seconds inside a training step.
            [(target.to(torch.int64).contiguous().numpy(), behavior.to(torch.int64).contiguous().numpy(),
              label.to(torch.int64).contiguous().numpy(), None if valid is None else valid.contiguous().numpy(), None)
             for target, behavior, label, valid in parts], length, (t_max, b_max))
        self._version += 1
        return True

    def _count_behaviors(self, target: torch.Tensor, behavior: torch.Tensor, label: torch.Tensor,
                         valid: torch.Tensor | None, t_max: int, b_max: int, dense: bool) -> None:
        """The (target, behaviour, position, label) counts of a batch the 8-byte counter does not take; ``dense``:
        whether the dense int64 array holds them (``_dense_layout``, already laid out for them)."""
        length = behavior.shape[1]
        y = label.to(torch.int64)
        # Every cell holds a valid id here (check_batch_values zeroed padding that did not), padding included: it gets
        # position p = 0 and is dropped after counting, cheaper than masking it out.
        compiled = not dense and not behavior.is_cuda and compiled_counts.available()
        if compiled:
            arrays = (target.to(torch.int64).contiguous().numpy(), behavior.to(torch.int64).contiguous().numpy(),
                      y.contiguous().numpy())
        positions = torch.arange(length, 0, -1, device=behavior.device)  # p of each column
        # With left padding (or none), a real behaviour's position is simply L - column.
        by_column = valid is None or bool((valid[:, 1:] >= valid[:, :-1]).all())
        if valid is None:
            cell_positions = positions[None, :]
        elif by_column:
            cell_positions = valid * positions
        else:
            cell_positions = target_relative_positions(valid)
        if dense:
            count_dense(self._dense, self._dense_shape, target, behavior, y, valid if by_column else None,
                        cell_positions, by_column)
            return
        # Sparse, ids beyond the 8-byte counter. With numba, a compiled pass buckets the cells by position and
        # radix-sorts each bucket.
        b_bits = max(1, b_max.bit_length())
        if compiled:
            positions = None if valid is None else torch.as_tensor(cell_positions).expand(
                behavior.shape).to(torch.int64).contiguous().numpy()
            code_bits = max(1, t_max.bit_length()) + b_bits + 1
            keys, counts = compiled_counts.position_runs(
                *arrays, _BY_COLUMN if positions is None else positions, length, b_bits, code_bits,
                *(np.empty(behavior.numel(), np.int32 if code_bits <= 31 else np.int64) for _ in range(2)),
                POSITION_SHIFT, TARGET_SHIFT, BEHAVIOR_SHIFT)
            if keys.size:
                self._add("triple", torch.from_numpy(keys), torch.from_numpy(counts))
            return
        # Otherwise a cell's code holds its position, target, behaviour and label in power-of-two digits
        # (p, t, b, y), so that codes order like the stored keys and become keys with shifts.
        t_shift = b_bits + 1
        p_shift = t_shift + max(1, t_max.bit_length())
        code_range = (length + 1) << p_shift
        if behavior.is_cuda:
            codes = torch.add((cell_positions << p_shift) + ((target << t_shift) + y)[:, None], behavior << 1)
            values, counts = unique_counts(codes.reshape(-1), code_range)
        else:
            # The same in numpy, in place and in int32 where the codes fit: torch's integer kernels on CPU ran 4
            # to 10 times slower than numpy's here (shifts, masks, boolean selection of millions of int64).
            dtype = np.int32 if code_range <= 2**31 else np.int64
            codes = behavior.numpy().astype(dtype)
            codes <<= 1
            codes += ((target.numpy().astype(dtype) << t_shift) + y.numpy().astype(dtype))[:, None]
            codes += torch.as_tensor(cell_positions).numpy().astype(dtype) << p_shift
            values, counts = unique_counts_numpy(codes.reshape(-1))
            values = values.astype(np.int64)
        positions = values >> p_shift
        if valid is not None:  # padding cells have p = 0: dropped here, cheaper than masking them before
            real = positions >= 1
            values, positions, counts = values[real], positions[real], counts[real]
        targets = (values >> t_shift) & ((1 << (p_shift - t_shift)) - 1)
        keys = ((positions << POSITION_SHIFT) | (targets << TARGET_SHIFT)
                | (((values >> 1) & ((1 << b_bits) - 1)) << BEHAVIOR_SHIFT) | (values & 1))
        if not behavior.is_cuda:
            keys, counts = torch.from_numpy(keys), torch.from_numpy(counts)
        if keys.numel():
            self._add("triple", keys, counts)

    def _dense_layout(self, n_targets: int, n_behaviors: int, n_positions: int) -> tuple[int, int, int] | None:
        """The dense array's (positions + 1, targets, behaviours), grown to hold this batch; None once sparse."""
        if self._dense_off:
            return None
        old = self._dense_shape
        shape = (max(old[0], n_positions), grown_size(old[1], n_targets), grown_size(old[2], n_behaviors))
        if shape[0] * shape[1] * shape[2] * 2 > DENSE_MAX_CELLS:
            if self._dense is not None:
                keys, counts = dense_keys(self._dense, self._dense_shape)
                if keys.numel():
                    target, behavior, _, _ = decode_keys(keys)
                    if (not keys.is_cuda and self.device.type == "cpu" and compiled_counts.available()
                            and self._compact_ready(int(target.max()), int(behavior.max()), int(counts.sum()))):
                        self._compact.add_sorted(keys.numpy(), counts.numpy())
                    else:
                        self._add("triple", keys, counts)
            self._dense, self._dense_shape, self._dense_off = None, (0, 0, 0), True
            return None
        if shape != old:
            grown = torch.zeros(*shape, 2, dtype=torch.int64, device=self.device)
            if self._dense is not None:
                grown[: old[0], : old[1], : old[2]] = self._dense.view(*old, 2)
            self._dense, self._dense_shape = grown.view(-1), shape
        return shape

    def _compact_ready(self, t_max: int, b_max: int, behaviours: int) -> bool:
        """Whether the next ``behaviours`` (ids up to ``t_max``, ``b_max``) go to the 8-byte counter (made here
        on first use). When they do not fit it, its counts move to the 16-byte keys, for good."""
        if self._compact_off:
            return False
        if self._compact is None and _held(self.triple_keys):
            self._compact_off = True  # counts already held as 16-byte keys stay there
            return False
        if PositionCodeCounter.fits(t_max, b_max) and (self._compact is None or self._compact.has_room(behaviours)):
            if self._compact is None:
                self._compact = PositionCodeCounter()
            return True
        self._leave_compact()
        return False

    def _leave_compact(self) -> None:
        """Move the 8-byte counter's counts to the 16-byte keys, and count there from now on."""
        self._compact_off = True
        if self._compact is None:
            return
        keys, counts = self._compact.stored()
        self._compact = None
        if keys.size:
            self._add("triple", torch.from_numpy(keys), torch.from_numpy(counts))
