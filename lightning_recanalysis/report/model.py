"""The pieces a report is made of, independent of how it is rendered (HTML, markdown, JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any

__all__ = ["ReportThresholds", "ReportFigure", "ReportTable", "Section", "format_value", "records_of_stage"]


@dataclass
class ReportThresholds:
    """When a number becomes a finding at the top of the report.

    Attributes:
        collapsed_fraction: a field is collapsed when its IA is below this fraction of the most it could reach,
            min(cardinality, width).
        collapsed_vs_init: ... or when its IA fell below this fraction of its IA at initialisation.
        negative_cosine: a task pair conflicts on a field when its mean gradient cosine is below this.
        min_agreement: a model's learned correlation disagrees with the data when the rank correlation between
            the learned and the ground-truth map is below this.
        max_findings_per_section: the most sentences one analysis puts at the top.
    """

    collapsed_fraction: float = 0.25
    collapsed_vs_init: float = 0.7
    negative_cosine: float = 0.0
    min_agreement: float = 0.5
    max_findings_per_section: int = 6


@dataclass
class ReportFigure:
    """A figure: ``name`` is its PNG file stem; ``figure`` a matplotlib Figure or an ``[H, W, 3]`` uint8 image
    drawn with :mod:`lightning_recanalysis.figures` (encoded to PNG once, then dropped)."""

    name: str
    title: str
    figure: Any
    caption: str = ""
    png: bytes | None = None


@dataclass
class ReportTable:
    title: str
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    """One analysis' part of the report; ``numbers`` goes to summary.json under ``analyses.<namespace>``."""

    namespace: str
    title: str
    findings: list[str] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def format_value(value, digits: int = 2) -> str:
    """A table cell: the number to ``digits`` decimals, or "-" where there is none (None, NaN, infinity)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def records_of_stage(records: list[dict[str, Any]], stage: str, section: Section, missing: str) -> list[dict[str, Any]]:
    """The records of one stage; when there are none, ``missing`` becomes a note of the section."""
    found = [r for r in records if r.get("stage") == stage]
    if not found:
        section.notes.append(missing)
    return found
