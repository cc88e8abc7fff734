"""One builder per analysis namespace: records in, a :class:`~lightning_recanalysis.report.model.Section` out.

A namespace without a builder still gets a section listing its final scalars, so a new monitor shows up in the
report before it has figures of its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..model import ReportThresholds, Section

Builder = Callable[[list[dict[str, Any]], ReportThresholds], Section]

#: Namespace -> (module of this package, builder function). A builder's module is imported when a run has its
#: namespace, so a report of a multi-task run never loads the correlation figures.
BUILDERS: dict[str, tuple[str, str]] = {
    "collapse": (".collapse", "collapse_section"),
    "correlation": (".correlation", "correlation_section"),
    "conflict": (".conflict", "conflict_section"),
    "entanglement": (".conflict", "entanglement_section"),
    "correlation/field_pair": (".field_pair", "field_pair_section"),
}

#: Order of the sections in the report.
ORDER = ["collapse", "correlation", "correlation/field_pair", "conflict", "entanglement"]


def builder_for(namespace: str) -> Builder | None:
    """The section builder of an analysis namespace, or None when it has none.

    Example:
        >>> builder_for("collapse").__name__, builder_for("mine")
        ('collapse_section', None)
    """
    if namespace not in BUILDERS:
        return None
    module, name = BUILDERS[namespace]
    return getattr(importlib.import_module(module, __name__), name)


__all__ = ["BUILDERS", "ORDER", "Builder", "builder_for"]
