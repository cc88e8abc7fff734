"""How a number reads in a finding or a report table."""

from __future__ import annotations

import math

__all__ = ["format_value"]


def format_value(value, digits: int = 2) -> str:
    """A table cell: the number to ``digits`` decimals, or "-" where there is none (None, NaN, infinity).

    Example:
        >>> format_value(0.12345), format_value(float("nan")), format_value(None), format_value(3, digits=1)
        ('0.12', '-', '-', '3.0')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"
