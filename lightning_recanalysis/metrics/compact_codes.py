"""The 4-byte code of one position's (target, behaviour, label), as :class:`~.position_counter.PositionCodeCounter`
holds it.

At real vocabulary sizes (target ids below 2^16, behaviour ids below 2^15), one position's key packs into 32 bits:

    code = (target << 16) | (behaviour << 1) | label        (uint32)

Codes sort like the stored int64 keys of :mod:`.sparse_keys` within a position (target, then behaviour, then
label), so a run of codes per position becomes stored keys with shifts alone, order kept.
"""

from __future__ import annotations

import numpy as np

from .sparse_keys import CATEGORY_BITS, COMPACT_TARGET_SHIFT, MAX_COMPACT_BEHAVIORS

__all__ = ["CATEGORY_MASK", "compact_code", "compact_code_parts"]

#: The bits of one category id in a stored int64 key (:mod:`.sparse_keys`).
CATEGORY_MASK = (1 << CATEGORY_BITS) - 1


def compact_code(target, behavior, label):
    """The compact code of one position's key: ``(target << 16) | (behaviour << 1) | label``."""
    return (target << COMPACT_TARGET_SHIFT) | (behavior << 1) | label


def compact_code_parts(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, behaviour, label) of compact codes, as int64: the inverse of :func:`compact_code`."""
    codes = codes.astype(np.int64, copy=False)
    return codes >> COMPACT_TARGET_SHIFT, (codes >> 1) & (MAX_COMPACT_BEHAVIORS - 1), codes & 1

