"""One builder per analysis namespace: records in, a :class:`~lightning_recanalysis.report.model.Section` out.

A namespace without a builder still gets a section listing its final scalars, so a new monitor shows up in the
report before it has figures of its own.
"""

from __future__ import annotations

from typing import Any, Callable

from ..model import ReportThresholds, Section
from .collapse import collapse_section
from .correlation import correlation_section
from .conflict import conflict_section, entanglement_section
from .field_pair import field_pair_section

Builder = Callable[[list[dict[str, Any]], ReportThresholds], Section]

BUILDERS: dict[str, Builder] = {
    "collapse": collapse_section,
    "correlation": correlation_section,
    "conflict": conflict_section,
    "entanglement": entanglement_section,
    "correlation/field_pair": field_pair_section,
}

#: Order of the sections in the report.
ORDER = ["collapse", "correlation", "correlation/field_pair", "conflict", "entanglement"]

__all__ = ["BUILDERS", "ORDER", "Builder"]
