"""The findings: what an analysis claims of a model, against the baseline a healthy model sets, with its
uncertainty and what to do (:class:`Finding`).

One module per analysis (``collapse``, ``correlation``, ``field_pair``, ``conflict``, ``entanglement``), below the
callbacks and the report, so that a monitor's live ``<namespace>/findings`` Text tab and the end-of-run report say
the same thing from the same code and the same :class:`ReportThresholds` (``callbacks`` and ``report`` both import
this layer; it imports only ``records``, ``functional`` and numpy). Each module's ``*_findings(records,
thresholds)`` takes the analysis' typed records (:mod:`lightning_recanalysis.records`) and returns its findings;
each module's docstring states its rules and why. :mod:`.uncertainty` holds the intervals and tests behind them.
"""

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".collapse": ("collapse_findings", "field_collapse", "interaction_correlations"),
    ".conflict": ("conflict_findings", "pooled_cosines"),
    ".correlation": ("correlation_findings", "data_signal"),
    ".entanglement": ("entanglement_findings", "view_reproduction"),
    ".field_pair": ("field_pair_findings",),
    ".finding": ("VERDICTS", "Finding", "findings_markdown", "ranked"),
    ".formatting": ("format_value",),
    ".thresholds": ("ReportThresholds",),
    ".uncertainty": ("g_test_p", "mean_interval", "sign_test", "spearman_interval", "t_quantile"),
})
