"""The findings: the sentences an analysis puts at the top of the report when a number crosses its threshold.

One module per analysis (``collapse``, ``correlation``, ``field_pair``), below the callbacks and the report, so
that a monitor's live TensorBoard Text tab and the end-of-run report say the same thing from the same code
(``callbacks`` and ``report`` both import this layer; it imports only ``records``, ``functional`` and numpy).
Each module's ``*_findings(records, thresholds)`` takes the analysis' typed records
(:mod:`lightning_recanalysis.records`) and returns its sentences, most important first.
"""

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".collapse": ("collapse_findings", "interaction_correlations"),
    ".correlation": ("correlation_findings",),
    ".field_pair": ("field_pair_findings",),
    ".formatting": ("format_value",),
    ".thresholds": ("ReportThresholds",),
})
