"""The findings: the sentences an analysis puts at the top of the report when a number crosses its threshold.

One module per analysis (``collapse``, ``correlation``, ``field_pair``), below the callbacks and the report, so
that a monitor's live TensorBoard Text tab and the end-of-run report say the same thing from the same code
(``callbacks`` and ``report`` both import this layer; it imports only ``records``, ``functional`` and numpy).
Each module's ``*_findings(records, thresholds)`` takes the analysis' typed records
(:mod:`lightning_recanalysis.records`) and returns its sentences, most important first.
"""

from .collapse import collapse_findings, interaction_correlations
from .correlation import correlation_findings
from .field_pair import field_pair_findings
from .numbers import format_value
from .thresholds import ReportThresholds

__all__ = ["ReportThresholds", "collapse_findings", "correlation_findings", "field_pair_findings", "format_value",
           "interaction_correlations"]
