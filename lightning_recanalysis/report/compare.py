"""``compare``: several runs side by side (e.g. single- vs multi-embedding IA per field, MMoE vs STEM conflict).

For every analysis present in at least two runs: the final value of every scalar the runs share, one column
per run, for ``collapse/`` a grouped bar chart of IA per field, and for ``entanglement/`` the conflict subsets
run by run and view by view (:mod:`.compare_conflict`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures.bars import grouped_bar_figure
from ..records import SpectrumRecord
from .compare_conflict import add_conflict_comparison
from .model import ReportFigure, ReportTable, ReportThresholds, Section
from .render import section_order, write_report
from .run_data import RunData


def _collapse_records(run: RunData) -> list[SpectrumRecord]:
    return list(run.records.get("collapse", []))


def _ia_per_field_figure(view: str, runs: list[RunData]) -> np.ndarray | None:
    values: dict[str, dict[str, float]] = {}
    for run in runs:
        records = [r for r in _collapse_records(run) if r.stage == "epoch"]
        if records and view in records[-1].views:
            values[run.name] = {n: f["information_abundance"] for n, f in records[-1].views[view]["fields"].items()}
    if len(values) < 2:
        return None
    fields = sorted({f for v in values.values() for f in v})
    return grouped_bar_figure(
        {name: [per_field.get(f, np.nan) for f in fields] for name, per_field in values.items()},
        fields,
        title=f"{view}: IA per field, run by run",
        xlabel="field",
        ylabel="information abundance (last epoch)",
        inches_per_category=0.2 * len(values),
    )


def compare_runs(runs: list[RunData], out_dir: str | Path, thresholds: ReportThresholds | None = None) -> dict[str, Path]:
    """Write ``compare.html``, ``compare.md``, ``figures/`` and ``compare.json`` for two or more runs; returns
    the paths written, by kind. Runs with the same name are told apart by their paths.

    Example:
        >>> import json, tempfile
        >>> from lightning_recanalysis.report import RunData, compare_runs
        >>> a = RunData("mmoe", "runs/mmoe", scalars={"conflict/mean_cosine": [(0, 0.1), (10, -0.2)]}, records={"conflict": []})
        >>> b = RunData("stem", "runs/stem", scalars={"conflict/mean_cosine": [(10, 0.05)]}, records={"conflict": []})
        >>> paths = compare_runs([a, b], tempfile.mkdtemp())
        >>> json.loads(paths["summary"].read_text())["analyses"]["conflict"]["numbers"]
        {'final_scalars': {'conflict/mean_cosine': {'mmoe': -0.2, 'stem': 0.05}}}
    """
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(runs)}")
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # same leaf names: tell the runs apart by their paths
        for r in runs:
            r.name = r.path
    namespaces = sorted({ns for r in runs for ns in r.records}, key=section_order)
    sections = []
    for ns in namespaces:
        have = [r for r in runs if ns in r.records]
        section = Section(ns, f"{ns}: {', '.join(r.name for r in have)}")
        if len(have) < 2:
            section.notes.append(f"only {have[0].name} has this analysis")
        tags = sorted(set.intersection(*[{t for t in r.scalars if t.startswith(ns + "/")} for r in have]))
        rows = [[t] + [f"{r.scalars[t][-1][1]:.4g}" for r in have] for t in tags]
        section.numbers = {"final_scalars": {t: {r.name: r.scalars[t][-1][1] for r in have} for t in tags}}
        section.tables.append(ReportTable(f"`{ns}/` scalars shared by the runs, last value", ["tag"] + [r.name for r in have], rows))
        if ns == "collapse":
            views = sorted({v for r in have for rec in _collapse_records(r)[-1:] for v in rec.views})
            for view in views:
                fig = _ia_per_field_figure(view, have)
                if fig is not None:
                    safe = view.replace("[", "_").replace("]", "").replace("/", "_")
                    section.figures.append(ReportFigure(f"compare_{safe}_ia", f"{view}: IA per field by run", fig,
                                                        "Last-epoch information abundance of each field, one bar per run."))
        if ns == "entanglement":
            add_conflict_comparison(section, have)
        sections.append(section)
    notes = [n for r in runs for n in (f"{r.name}: {x}" for x in r.notes)]
    return write_report(sections, out_dir, title="Run comparison: " + " vs ".join(r.name for r in runs),
                        run={"name": " vs ".join(r.name for r in runs), "path": str(out_dir),
                             "runs": [{"name": r.name, "path": r.path} for r in runs]},
                        notes=notes, stem="compare", summary_name="compare.json")
