"""End-of-run reports: ``report.html``, ``report.md`` + PNG figures, ``summary.json``; and run comparisons.

Build from live monitors (:class:`~lightning_recanalysis.AnalysisReport` does it at the end of fit) or from a
run's event files (``python -m lightning_recanalysis report RUN_DIR``): both read the same records.
"""

from __future__ import annotations

from pathlib import Path

from .compare import compare_runs
from .model import ReportFigure, ReportTable, ReportThresholds, Section
from .render import SUMMARY_VERSION, build_sections, summary_schema, write_report
from .run_data import RunData, find_runs, read_run, run_from_callbacks

__all__ = [
    "ReportThresholds", "ReportFigure", "ReportTable", "Section", "RunData", "SUMMARY_VERSION",
    "build_report", "build_sections", "compare_runs", "find_runs", "read_run", "run_from_callbacks",
    "summary_schema", "write_report",
]


def build_report(run: RunData, out_dir: str | Path, thresholds: ReportThresholds | None = None) -> dict[str, Path]:
    """Write the report of one run into ``out_dir``; returns the paths written."""
    sections = build_sections(run, thresholds)
    notes = list(run.notes)
    if not run.records:
        notes.append("no analysis records found: was a lightning_recanalysis monitor attached, with a TensorBoardLogger?")
    return write_report(sections, out_dir, title=f"Analysis report: {run.name}",
                        run={"name": run.name, "path": run.path}, notes=notes)
