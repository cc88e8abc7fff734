"""Compiled loops (numba) for exact sparse counting on CPU: bucketing and sorting a batch's codes, merging sorted runs.

Counting (target, behaviour, position, label) at real vocabulary sizes is sparse: most of the 10^8 to 10^10
possible keys never occur, and at 10,000 categories about half the behaviours of a batch are keys that batch has
not seen twice. Vectorised numpy or torch must then sort the codes with a general-purpose comparison or radix sort
(tens of ns a code) and merge each batch's keys into the state with a binary search per key
(a cache miss each). Two compiled loops replace them:

* :func:`position_runs`: a batch's cells bucketed by position p (one counting pass), each bucket radix-sorted on
  its (target, behaviour, label) bits (2 or 3 passes of at most 11 bits, in cache), then run-length counted. The
  keys come out sorted in the stored key order (position first, see :mod:`.sparse_keys`), with no global sort.
* :func:`merge_runs`: two sorted runs of unique keys merged in one linear pass, equal keys summed.

A counter then keeps its keys as a few sorted runs of halving size (a binary counter: a new run merges into the
last while that one is no larger), so each key is copied O(log(state / batch)) times in sequential passes
instead of being looked up at random. Where ids fit 4-byte codes, :class:`~.position_counter.PositionCodeCounter`
does the same with 8 bytes a key, runs merged in place in one arena: its cells bucketed by position
(``bucket_sizes``, ``bucket_codes``), each bucket sorted by numpy's vectorised sort (faster here than the radix
sort), equal codes counted (``run_lengths``), all in :mod:`._numba_kernels`, and merged by ``merge_forward`` and
``merge_backward`` of :mod:`._numba_runs`.

numba is a declared dependency, imported on first use only (a run that never reaches sparse counting does not pay
its import); without it, or with ``LIGHTNING_RECANALYSIS_NO_NUMBA=1``, the metric counts with numpy and torch
alone (:func:`available` is then false), with the same counts, more slowly.
``python -m benchmarks.bench_counting`` measures both against a Python dictionary;
``python -m benchmarks.bench_counting_floor`` the 8-byte counter against a one-shot ``np.unique``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np

__all__ = ["available", "loops", "merge_runs", "position_runs"]

_DISABLE = "LIGHTNING_RECANALYSIS_NO_NUMBA"
_kernels: ModuleType | None = None
_tried = False


def available() -> bool:
    """Whether the compiled loops can be used: numba imports (on the first call) and
    ``LIGHTNING_RECANALYSIS_NO_NUMBA`` is not set.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    global _kernels, _tried
    if not _tried:
        _tried = True
        if os.environ.get(_DISABLE, "") in ("", "0"):
            try:  # imported here, not at the top: numba's import costs 0.4 s that most runs never need
                _kernels = importlib.import_module(f"{__package__}._numba_kernels")
            except ImportError:
                _kernels = None
    return _kernels is not None


def loops() -> ModuleType:
    """The module of compiled loops (:mod:`._numba_kernels`); raises ``RuntimeError`` where :func:`available` is
    false."""
    if not available():
        raise RuntimeError(f"numba is not installed (or {_DISABLE} is set): the counting metrics use numpy instead")
    return _kernels


def position_runs(target: np.ndarray, behavior: np.ndarray, label: np.ndarray, positions: np.ndarray,
                  n_positions: int, behavior_bits: int, code_bits: int, codes: np.ndarray, scratch: np.ndarray,
                  position_shift: int, target_shift: int, behavior_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique stored keys of a batch's (target, behaviour, position, label) cells, and their counts.

    Args:
        target, label: ``[B]`` int64.
        behavior: ``[B, L]`` int64, C-contiguous.
        positions: ``[B, L]`` int64 position of every cell (0: padding, not counted), or a ``[0, 0]`` array when
            column j holds position L - j.
        n_positions: the largest position that can occur.
        behavior_bits: bits of the largest behaviour id; a cell's code is ``(t << (bits + 1)) | (b << 1) | y``.
        code_bits: bits of the largest code.
        codes, scratch: two work arrays of at least B * L elements, int32 when the codes fit (half the bytes to
            sort) or int64.
        position_shift, target_shift, behavior_shift: the stored key layout (label in bit 0).

    Returns ``(keys, counts)``, int64, keys sorted and unique.

    Example:
        >>> from lightning_recanalysis.metrics.sparse_keys import decode_keys
        >>> import torch
        >>> work = [np.empty(4, np.int32) for _ in range(2)]
        >>> keys, counts = position_runs(np.array([3, 3]), np.array([[1, 2], [5, 2]]), np.array([1, 1]),
        ...                              np.zeros((0, 0), np.int64), 2, 3, 6, *work, 49, 25, 1)
        >>> [part.tolist() for part in decode_keys(torch.from_numpy(keys))], counts.tolist()  # (t, b, p, y)
        ([[3, 3, 3], [2, 1, 5], [1, 2, 2], [1, 1, 1]], [2, 1, 1])
    """
    return loops().position_runs(target, behavior, label, positions, n_positions, behavior_bits, code_bits, codes,
                                 scratch, position_shift, target_shift, behavior_shift)


def merge_runs(keys_a: np.ndarray, counts_a: np.ndarray, keys_b: np.ndarray,
               counts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge two sorted runs of unique non-negative int64 keys into one, summing the counts of a key in both:
    one linear pass.

    Example:
        >>> keys, counts = merge_runs(np.array([1, 4]), np.array([2, 1]), np.array([4, 9]), np.array([5, 1]))
        >>> keys.tolist(), counts.tolist()
        ([1, 4, 9], [2, 6, 1])
    """
    return loops().merge_runs(keys_a, counts_a, keys_b, counts_b)
