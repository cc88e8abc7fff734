"""One run's report, from its records to the files: the sections of :mod:`.render` written into a directory."""

from __future__ import annotations

from pathlib import Path

from .model import ReportThresholds, Section
from .render import build_sections, write_report
from .run_data import RunData

__all__ = ["build_report", "write_run_report"]


def build_report(run: RunData, out_dir: str | Path, thresholds: ReportThresholds | None = None) -> dict[str, Path]:
    """Write the report of one run into ``out_dir`` (``report.html``, ``report.md``, ``figures/``,
    ``summary.json``); returns the paths written, by kind. A run without records still gets a report, with a
    note saying what to attach.

    Example:
        >>> import json, tempfile
        >>> from lightning_recanalysis.report import RunData, build_report
        >>> paths = build_report(RunData(name="empty", path="runs/empty"), tempfile.mkdtemp())
        >>> sorted(paths)
        ['html', 'markdown', 'summary']
        >>> json.loads(paths["summary"].read_text())["notes"][0][:26]
        'no analysis records found:'
    """
    return write_run_report(run, build_sections(run, thresholds), out_dir, thresholds)


def write_run_report(run: RunData, sections: list[Section], out_dir: str | Path,
                     thresholds: ReportThresholds | None = None) -> dict[str, Path]:
    """Write one run's report from its built sections (:func:`build_report` without building them)."""
    notes = list(run.notes)
    if not run.records:
        notes.append("no analysis records found: was a lightning_recanalysis monitor attached, with a TensorBoardLogger?")
    return write_report(sections, out_dir, title=f"Analysis report: {run.name}",
                        run={"name": run.name, "path": run.path}, notes=notes,
                        top_findings=(thresholds or ReportThresholds()).top_findings)
