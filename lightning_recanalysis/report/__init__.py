"""End-of-run reports: ``report.html``, ``report.md`` + PNG figures, ``summary.json``; and run comparisons.

Build from live monitors (:class:`AnalysisReport` does it at the end of fit) or from a run's event files
(``python -m lightning_recanalysis report RUN_DIR``): both read the same records. The top layer of the package:
it reads the monitors' records and the findings layer, and nothing below imports it.
"""

from __future__ import annotations

from .build import build_report
from .callback import AnalysisReport
from .compare import compare_runs
from .model import ReportFigure, ReportTable, ReportThresholds, Section
from .render import SUMMARY_VERSION, build_sections, summary_schema, write_report
from .run_data import RunData, find_runs, read_run, run_from_callbacks

__all__ = [
    "AnalysisReport", "ReportThresholds", "ReportFigure", "ReportTable", "Section", "RunData", "SUMMARY_VERSION",
    "build_report", "build_sections", "compare_runs", "find_runs", "read_run", "run_from_callbacks",
    "summary_schema", "write_report",
]
