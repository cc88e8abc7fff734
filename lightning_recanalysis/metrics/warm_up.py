"""Load every compiled counting loop before timing anything (benchmarks): numba loads a function's machine code on
its first call."""

from __future__ import annotations

import time

import numpy as np
import torch

from . import compiled_counts
from .behavior_target import BehaviorTargetCounts
from .position_counter import PositionCodeCounter

__all__ = ["warm_up"]


def warm_up() -> float:
    """Load (or compile, on first use after installation) every compiled loop, by counting a tiny batch with
    each; returns the seconds it took. numba loads a function's machine code on its first call; a benchmark
    calls this so that its timings hold only the counting.

    Example:
        >>> warm_up() >= 0.0
        True
    """
    start = time.perf_counter()
    if not compiled_counts.available():
        return 0.0
    target, behavior, label = np.array([3, 1]), np.array([[2, 5], [1, 1]]), np.array([1, 0])
    counter = PositionCodeCounter(dense=False)
    for _ in range(3):  # runs of equal length, then a longer one below a shorter: both merge directions
        counter.add_batch(target, behavior, label, None, 2)
    counter.add_batch(target, behavior, label, np.array([[0, 1], [2, 1]]), 2)
    for mask in ([[False, True], [True, True]], [[True, False], [True, True]]):  # left-padded, with a gap
        counter.add_batch(target, behavior, label, None, 2, valid=np.array(mask))
    counter.lookup(counter.stored()[0])
    counter.same_category(2)
    # The dense array's loop: a counter this small never takes the array (its carries' buffer alone is over the
    # bound), so the loop is called on a 6 x 2 x 2 x 6 array directly, by column and by cell.
    cells, carries = np.zeros(6 * 2 * 2 * 6, np.uint8), np.empty(4, np.int64)
    for positions in (np.zeros((0, 0), np.int64), np.array([[0, 1], [2, 1]])):
        compiled_counts.loops().dense_count(target, behavior, label, positions, cells, 2, 6, carries, 0, 0)
    one = np.zeros(1, np.int64)
    compiled_counts.merge_runs(one, one, one, one)
    for code_dtype in (np.int32, np.int64):
        work = [np.empty(4, code_dtype) for _ in range(2)]
        compiled_counts.position_runs(target, behavior, label, np.zeros((0, 0), np.int64), 2, 3, 6, *work, 49, 25, 1)
    wide = BehaviorTargetCounts()  # ids beyond the 8-byte counter: the 16-byte keys' path
    wide.update(torch.tensor([1 << 16]), torch.tensor([[1 << 15]]), torch.tensor([1]))
    wide.flush()
    return time.perf_counter() - start
