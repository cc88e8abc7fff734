"""The findings: the sentences an analysis puts at the top of the report when a number crosses its threshold.

One module per analysis, below the callbacks and the report, so that a monitor's live TensorBoard Text tab and
the end-of-run report say the same thing from the same code (``callbacks`` and ``report`` both import this
layer; it imports only ``records``, ``functional`` and numpy).
"""

from .collapse import collapse_findings, interaction_correlations
from .thresholds import ReportThresholds

__all__ = ["ReportThresholds", "collapse_findings", "interaction_correlations"]
