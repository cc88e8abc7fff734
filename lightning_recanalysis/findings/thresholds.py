"""When a number becomes a finding: one set of thresholds for the live Text tabs and the report."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReportThresholds"]


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

    Example:
        >>> from lightning_recanalysis.findings import ReportThresholds
        >>> ReportThresholds(collapsed_fraction=0.1).collapsed_fraction, ReportThresholds().collapsed_vs_init
        (0.1, 0.7)
    """

    collapsed_fraction: float = 0.25
    collapsed_vs_init: float = 0.7
    negative_cosine: float = 0.0
    min_agreement: float = 0.5
    max_findings_per_section: int = 6
