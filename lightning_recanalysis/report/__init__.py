"""End-of-run reports: ``report.html``, ``report.md`` + PNG figures, ``summary.json``; and run comparisons.

Build from live monitors (:class:`AnalysisReport` does it at the end of fit) or from a run's event files
(``python -m lightning_recanalysis report RUN_DIR``): both read the same records. The top layer of the package:
it reads the monitors' records and the findings layer, and nothing below imports it.
"""

from __future__ import annotations

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".build": ("build_report",),
    ".callback": ("AnalysisReport",),
    ".compare": ("compare_runs",),
    ".model": ("ReportFigure", "ReportTable", "ReportThresholds", "Section"),
    ".render": ("SUMMARY_VERSION", "build_sections", "summary_schema", "write_report"),
    ".run_data": ("RunData", "find_runs", "read_run", "run_from_callbacks"),
})
