"""When a number becomes a finding: one set of thresholds for the live Text tabs and the report.

Given once, to :class:`~lightning_recanalysis.AnalysisReport` (``thresholds=``): every monitor of the same
``Trainer`` reads its findings against the same object, so the live Text tab and the report say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReportThresholds"]


@dataclass
class ReportThresholds:
    """The rules' settings (see each ``findings`` module for the rule and its reasoning).

    Attributes:
        unused_dimension: a direction of a field's embedding is unused when its singular value is below this
            fraction of the largest (its variance below the square of it: 0.25% at 0.05).
        collapsed_fraction: a field is collapsed when at least this fraction of the dimensions its shape allows,
            min(cardinality, K), are unused (and at least two).
        collapsed_vs_init: a field whose IA fell below this fraction of its IA at initialisation while it kept its
            dimensions is reported (as fine: a spectrum that concentrated as it learned).
        interaction_min_r: interaction collapse needs the partner-side Pearson r between the interaction matrix's
            column means and the fields' own IA at least this high ...
        interaction_min_rise: ... and this much higher than at initialisation.
        conflict_min_probes: the fewest pooled probes a conflict may be claimed on.
        conflict_min_cosine: the smallest mean negative cosine that counts as a conflict (a minimum size: at
            -0.1 the two gradients are within 6 degrees of orthogonal, and a step of one task moves the other's loss
            by at most a tenth of what a step of its own would, for gradients of similar size).
        conflict_window: the last analysed epochs whose probes are pooled.
        alpha: the family-wise error rate of the tests behind a claim (Bonferroni over what is tested).
        min_agreement: a model's learned correlation disagrees with the data when the upper end of the interval of
            the rank correlation between the learned and the ground-truth map is below this.
        top_findings: the most pressing findings (problems, then inconclusive ones) shown at the top of a report;
            the rest follow under "More findings".

    Example:
        >>> from lightning_recanalysis.findings import ReportThresholds
        >>> ReportThresholds(conflict_min_probes=16).conflict_min_probes, ReportThresholds().unused_dimension
        (16, 0.05)
    """

    unused_dimension: float = 0.05
    collapsed_fraction: float = 0.25
    collapsed_vs_init: float = 0.7
    interaction_min_r: float = 0.5
    interaction_min_rise: float = 0.3
    conflict_min_probes: int = 8
    conflict_min_cosine: float = 0.1
    conflict_window: int = 4
    alpha: float = 0.05
    min_agreement: float = 0.5
    top_findings: int = 5
