"""The pieces a report is made of, independent of how it is rendered (HTML, markdown, JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

# Re-exported: the report's sections read them from here; the findings layer owns them.
from ..findings.finding import Finding
from ..findings.formatting import format_value
from ..findings.thresholds import ReportThresholds
from ..records import Record

R = TypeVar("R", bound=Record)

__all__ = ["ReportThresholds", "ReportFigure", "ReportTable", "Section", "format_value", "records_of_stage"]


@dataclass
class ReportFigure:
    """A figure: ``name`` is its PNG file stem; ``figure`` a matplotlib Figure or an ``[H, W, 3]`` uint8 image
    drawn with :mod:`lightning_recanalysis.figures` (encoded to PNG once, then dropped).

    Example:
        >>> import numpy as np
        >>> fig = ReportFigure("collapse_t_spectrum", "t: normalised singular values", np.zeros((4, 6, 3), np.uint8))
        >>> fig.name, fig.figure.shape, fig.png is None
        ('collapse_t_spectrum', (4, 6, 3), True)
    """

    name: str
    title: str
    figure: Any
    caption: str = ""
    png: bytes | None = None


@dataclass
class ReportTable:
    """A table: its title (markdown inline: ``**bold**``, ```code```), column headers and rows of cells.

    Example:
        >>> ReportTable("IA per field", ["field", "IA"], [["user", "3.20"]]).rows[0]
        ['user', '3.20']
    """

    title: str
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    """One analysis' part of the report; ``numbers`` goes to summary.json under ``analyses.<namespace>``.

    ``findings`` are :class:`~lightning_recanalysis.findings.Finding` objects (a plain sentence is shown as a
    ``fine`` note); ``coverage`` is what the monitor stated at fit start it would analyse.

    Example:
        >>> section = Section("collapse", "Dimensional collapse of embedding tables")
        >>> section.findings.append("1 of 2 fields of `t` are collapsed ...")
        >>> section.namespace, len(section.findings), section.numbers
        ('collapse', 1, {})
    """

    namespace: str
    title: str
    findings: list[Finding | str] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    coverage: list[dict[str, Any]] = field(default_factory=list)


def records_of_stage(records: Sequence[R], stage: str, section: Section, missing: str) -> list[R]:
    """The records of one stage; when there are none, ``missing`` becomes a note of the section.

    Example:
        >>> from lightning_recanalysis.records import Record
        >>> section = Section("correlation", "Target-behaviour correlation")
        >>> records_of_stage([Record(stage="init")], "epoch", section, "no correlation analysis was recorded")
        []
        >>> section.notes
        ['no correlation analysis was recorded']
    """
    found = [r for r in records if r.stage == stage]
    if not found:
        section.notes.append(missing)
    return found
