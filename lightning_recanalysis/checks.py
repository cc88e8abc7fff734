"""Argument checks shared by the constructors, each with the one message that says what to pass instead.

A leaf module: it imports nothing from the package, so every layer may use it.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["check_non_negative_int", "check_positive_int", "short_list"]


def _is_int(value: Any) -> bool:
    # bool is an int to Python, but ``every_n_epochs=True`` is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is an integer >= 1 (or ``None`` where ``allow_none``), else raise ``ValueError``.

    Example:
        >>> check_positive_int("every_n_epochs", 2)
        2
        >>> check_positive_int("count_epochs", None, allow_none=True) is None
        True
        >>> check_positive_int("top_k", 0)
        Traceback (most recent call last):
        ...
        ValueError: top_k must be a positive integer, got 0
    """
    if value is None and allow_none:
        return value
    if not _is_int(value) or value < 1:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{suffix}, got {value!r}")
    return value


def check_non_negative_int(name: str, value: Any) -> Any:
    """Return ``value`` if it is an integer >= 0, else raise ``ValueError``.

    Example:
        >>> check_non_negative_int("cross_offset", 0)
        0
        >>> check_non_negative_int("cross_offset", -1)
        Traceback (most recent call last):
        ...
        ValueError: cross_offset must be a non-negative integer, got -1
    """
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def short_list(names: Sequence[str], limit: int = 6) -> str:
    """Names for a message: all of them up to ``limit``, else the first ``limit - 1``, an ellipsis and the last.

    Example:
        >>> short_list(["C1", "C2", "C3"])
        'C1, C2, C3'
        >>> short_list([f"C{i}" for i in range(1, 27)])
        'C1, C2, C3, C4, C5, ..., C26'
    """
    names = list(names)
    return ", ".join(names) if len(names) <= limit else ", ".join(names[: limit - 1]) + f", ..., {names[-1]}"
