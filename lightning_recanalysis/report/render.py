"""Write a report: ``report.html`` (one self-contained file, figures embedded), ``report.md`` with the figures as
PNG files in ``figures/`` beside it, and ``summary.json`` (schema: ``summary.schema.json`` in this package)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Iterable


from .._version import __version__
from ..figures.pillow import png_bytes
from ..records import Part
from ..findings.finding import Finding, ranked
from .model import ReportTable, ReportThresholds, Section
from .run_data import RunData
from .sections import ORDER, builder_for

__all__ = ["build_sections", "section_order", "write_report", "SUMMARY_SCHEMA_ID", "SUMMARY_VERSION", "summary_schema"]

SUMMARY_SCHEMA_ID = "lightning_recanalysis/summary"
#: Bump on any change of summary.json's layout; readers check it.
SUMMARY_VERSION = 2


def summary_schema() -> dict[str, Any]:
    """The JSON Schema that every summary.json validates against.

    Example:
        >>> schema = summary_schema()
        >>> schema["properties"]["schema"]["const"], "analyses" in schema["required"]
        ('lightning_recanalysis/summary', True)
    """
    return json.loads((Path(__file__).parent / "summary.schema.json").read_text())


def section_order(namespace: str) -> tuple[int, str]:
    return (ORDER.index(namespace) if namespace in ORDER else len(ORDER), namespace)


def build_sections(run: RunData, thresholds: ReportThresholds | None = None) -> list[Section]:
    """One section per analysis found in the run, in the report's order (:data:`~.sections.ORDER`). A
    namespace without a builder gets a table of its final scalars; a builder's failure becomes a note.

    Example:
        >>> from lightning_recanalysis.report import RunData
        >>> run = RunData("r", "runs/r", records={"correlation": [], "mine": [{"stage": "epoch"}]},
        ...               scalars={"mine/score": [(0, 0.5), (10, 0.75)]})
        >>> [(s.namespace, s.notes) for s in build_sections(run)]
        [('correlation', ['no correlation analysis was recorded']), ('mine', [])]
        >>> build_sections(run)[1].tables[0].rows
        [['mine/score', 2, '0.75']]
    """
    thresholds = thresholds or ReportThresholds()
    sections = []
    for namespace in sorted(run.records, key=section_order):
        builder = builder_for(namespace)
        try:
            section = builder(run.records[namespace], thresholds) if builder else _scalars_section(namespace, run)
        except Exception as err:  # one analysis' bad record must not cost the whole report
            section = Section(namespace, namespace)
            section.notes.append(f"this section could not be built ({type(err).__name__}: {err})")
        # What the monitor stated at fit start it would analyse (the last fit's, for a resumed run).
        covered = [r for r in run.records[namespace] if r.stage == "coverage"]
        section.coverage = list(covered[-1].extra.get("coverage", [])) if covered else []
        sections.append(section)
    return sections


def _scalars_section(namespace: str, run: RunData) -> Section:
    section = Section(namespace, namespace)
    rows = [[tag, len(series), f"{series[-1][1]:.4g}"] for tag, series in sorted(run.scalars.items())
            if tag.startswith(namespace + "/") and series]
    section.tables.append(ReportTable(f"`{namespace}/` scalars, last value", ["tag", "points", "last"], rows))
    return section


def _jsonable(value: Any) -> Any:
    if isinstance(value, Part):  # a typed part of a record: its published form
        return _jsonable(value.to_dict())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def as_finding(section: Section, finding: Finding | str) -> Finding:
    """A section's finding as a :class:`~lightning_recanalysis.findings.Finding` (a plain sentence, from a section
    of one's own, becomes a ``fine`` note of its analysis)."""
    if isinstance(finding, Finding):
        return finding
    return Finding(section.namespace, "note", "fine", section.namespace, str(finding))


#: Findings shown at the top of a report by default (``ReportThresholds.top_findings``); the rest, and every
#: ``fine`` one, follow under "More findings".
TOP_FINDINGS = 5

COVERAGE_HEADERS = ["monitor", "analysis", "runs", "how, or why not"]


def coverage_rows(sections: Iterable[Section]) -> list[list[Any]]:
    """The coverage of every section's monitor: (namespace, analysis, runs, why not)."""
    return [[s.namespace, c["analysis"], "yes" if c["runs"] else "no", c.get("why", "")]
            for s in sections for c in s.coverage]


def _finding_html(finding: Finding) -> str:
    label = {"problem": "<b class='problem'>Problem</b>", "inconclusive": "<b>Inconclusive</b>", "fine": "Fine"}
    advice = f"<br><i>What to do:</i> {_md_inline_to_html(finding.advice)}" if finding.advice else ""
    return f"<li>{label[finding.verdict]}: {_md_inline_to_html(finding.text)}{advice}</li>"


def _md_inline_to_html(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _table_md(table: ReportTable) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.headers) + " |",
             "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _table_html(table: ReportTable) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{_md_inline_to_html(str(c))}</td>" for c in row) + "</tr>" for row in table.rows)
    return (f"<p class='table-title'>{_md_inline_to_html(table.title)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #e6550d; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.findings { background: #fff7ec; border-left: 4px solid #e6550d; padding: .6em 1.2em; }
.findings li, details li { margin: .35em 0; }
b.problem { color: #b3300b; }
details { margin: .8em 0; } details summary { cursor: pointer; font-weight: 600; }
.notes { background: #f3f3f3; border-left: 4px solid #999; padding: .4em 1.2em; font-size: .9em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; font-size: .85em; margin-bottom: 1.2em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child { text-align: left; }
.table-title { font-weight: bold; margin-bottom: .3em; } code { background: #f3f3f3; padding: 0 .2em; }
"""


def write_report(sections: list[Section], out_dir: str | Path, *, title: str, run: dict[str, Any],
                 notes: Iterable[str] = (), stem: str = "report", summary_name: str = "summary.json",
                 top_findings: int = TOP_FINDINGS) -> dict[str, Path]:
    """Render sections into ``out_dir``: ``<stem>.html`` (figures embedded), ``<stem>.md`` with ``figures/*.png``
    and ``summary_name`` (JSON, schema :func:`summary_schema`); returns the paths written (``html``,
    ``markdown``, ``summary``). Non-finite numbers become ``null`` in the JSON.

    Example:
        >>> import json, tempfile
        >>> from lightning_recanalysis.report import Section
        >>> section = Section("mine", "My analysis", findings=["**user** is collapsed."], numbers={"r": float("nan")})
        >>> paths = write_report([section], tempfile.mkdtemp(), title="Analysis report: r", run={"name": "r"})
        >>> summary = json.loads(paths["summary"].read_text())
        >>> [(f["analysis"], f["verdict"], f["text"]) for f in summary["findings"]], summary["analyses"]["mine"]["numbers"]
        ([('mine', 'fine', '**user** is collapsed.')], {'r': None})
        >>> "<strong>user</strong>" in paths["html"].read_text()
        True
    """
    out = Path(out_dir)
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    notes = list(notes)
    for section in sections:
        for fig in section.figures:
            if fig.png is None:
                # Encoded once: the same bytes go to figures/ for report.md and, base64, into report.html.
                fig.png = png_bytes(fig.figure)
                fig.figure = None  # encoded: free the pixels
            (figures_dir / f"{fig.name}.png").write_bytes(fig.png)
    created = time.strftime("%Y-%m-%d %H:%M:%S")
    findings = ranked(as_finding(s, f) for s in sections for f in s.findings)
    top = [f for f in findings if f.verdict != "fine"][:top_findings]
    rest = [f for f in findings if f not in top]
    coverage = coverage_rows(sections)

    md = [f"# {title}", "", f"Run `{run.get('path', '')}`; written {created} by lightning_recanalysis {__version__}.", ""]
    md += ["## Findings", ""] + ([f.markdown() for f in top] or ["- No problem found."]) + [""]
    if rest:
        md += ["### More findings", ""] + [f.markdown() for f in rest] + [""]
    if coverage:
        md += ["## Coverage", "", _table_md(ReportTable("What each monitor analysed, and what it could not",
                                                        COVERAGE_HEADERS, coverage)), ""]
    for note in notes:
        md += [f"> Note: {note}", ""]
    for section in sections:
        md += [f"## {section.title}", ""]
        for n in section.notes:
            md += [f"> Note: {n}", ""]
        for fig in section.figures:
            md += [f"![{fig.title}](figures/{fig.name}.png)", "", f"*{fig.caption}*" if fig.caption else "", ""]
        for table in section.tables:
            md += [_table_md(table), ""]
    md_path = out / f"{stem}.md"
    md_path.write_text("\n".join(md))

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>Run <code>{html.escape(str(run.get('path', '')))}</code>; written {created} by "
             f"lightning_recanalysis {__version__}.</p><h2>Findings</h2><div class='findings'><ul>"]
    parts += [_finding_html(f) for f in top] or ["<li>No problem found.</li>"]
    parts.append("</ul></div>")
    if rest:
        parts.append("<details><summary>More findings (" + str(len(rest)) + ")</summary><ul>"
                     + "".join(_finding_html(f) for f in rest) + "</ul></details>")
    if coverage:
        parts.append("<h2 id='coverage'>Coverage</h2>" + _table_html(ReportTable(
            "What each monitor analysed, and what it could not", COVERAGE_HEADERS, coverage)))
    if notes:
        parts.append("<div class='notes'>" + "".join(f"<p>Note: {html.escape(n)}</p>" for n in notes) + "</div>")
    for section in sections:
        parts.append(f"<h2 id='{html.escape(section.namespace)}'>{html.escape(section.title)}</h2>")
        if section.notes:
            parts.append("<div class='notes'>" + "".join(f"<p>Note: {html.escape(n)}</p>" for n in section.notes) + "</div>")
        for fig in section.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(fig.title)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}</figcaption></figure>")
        parts += [_table_html(t) for t in section.tables]
    parts.append("</body></html>")
    html_path = out / f"{stem}.html"
    html_path.write_text("".join(parts))

    summary = {
        "schema": SUMMARY_SCHEMA_ID,
        "version": SUMMARY_VERSION,
        "generated_by": f"lightning_recanalysis {__version__}",
        "created": created,
        "run": run,
        "findings": [f.to_dict() for f in findings],
        "coverage": [dict(zip(("monitor", "analysis", "runs", "why"), row)) for row in coverage],
        "notes": notes,
        "analyses": {
            s.namespace: {
                "title": s.title,
                "findings": [as_finding(s, f).to_dict() for f in s.findings],
                "notes": s.notes,
                "figures": [{"file": f"figures/{f.name}.png", "title": f.title, "caption": f.caption} for f in s.figures],
                "tables": [{"title": t.title, "headers": t.headers, "rows": t.rows} for t in s.tables],
                "numbers": s.numbers,
            }
            for s in sections
        },
    }
    summary_path = out / summary_name
    summary_path.write_text(json.dumps(_jsonable(summary), indent=1))
    return {"html": html_path, "markdown": md_path, "summary": summary_path}

