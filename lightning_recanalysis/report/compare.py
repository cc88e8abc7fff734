"""``compare``: several runs side by side, by analysis, view and field (e.g. the concatenated DCNv2 against the
per-feature DCNv2, single- vs multi-embedding IA per field, MMoE against STEM).

First the runs' validation metrics (every scalar the logger holds under ``val``), then one section per analysis
present in at least two runs. Each analysis' views are matched across the runs by name, else by their field names
(:mod:`.compare_views`; the mapping is stated), and each number gets one column per run and a difference column
per run after the first: IA and effective rank per field (``collapse/``), the learned pair strength and its
agreement with the data (``correlation/field_pair/``), each target's agreement (``correlation/``), the mean
gradient cosine and negative fraction per field and task pair (``conflict/``, :mod:`.compare_conflict`), each
task's AUROC by subset and the conflict subsets (``entanglement/``). Every scalar the runs share by tag closes each
section. Figures of matched views stand side by side, each titled with its run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..figures.bars import grouped_bar_figure
from ..figures.field_pair import field_pair_image
from ..figures.pillow import side_by_side
from ..records import Record
from .compare_conflict import add_conflict_comparison, add_gradient_conflict_comparison
from .compare_views import (difference_headers, difference_note, field_rows, mapping_notes, match_views, run_labels,
                            value_cells)
from .model import ReportFigure, ReportTable, ReportThresholds, Section
from .render import section_order, write_report
from .run_data import RunData

__all__ = ["compare_runs", "validation_metrics"]

TITLES = {"collapse": "Dimensional collapse", "correlation": "Target-behaviour correlation",
          "correlation/field_pair": "Field-pair correlation", "conflict": "Gradient conflict",
          "entanglement": "Interest entanglement"}


def _last(run: RunData, namespace: str, stages: tuple[str, ...]) -> Record | None:
    found = [r for r in run.records.get(namespace, []) if r.stage in stages]
    return found[-1] if found else None


def validation_metrics(run: RunData) -> dict[str, float]:
    """The last value of every scalar the run's logger holds under ``val`` (``val/loss``, ``val/auroc_click``,
    ``val_loss``), by tag.

    Example:
        >>> run = RunData("r", "r", scalars={"val/auroc": [(10, 0.7), (20, 0.75)], "train/loss": [(20, 1.0)]})
        >>> validation_metrics(run)
        {'val/auroc': 0.75}
    """
    return {tag: series[-1][1] for tag, series in sorted(run.scalars.items())
            if series and (tag.split("/")[0] in ("val", "validation") or tag.startswith(("val_", "val-")))}


def _validation_section(runs: list[RunData], labels: dict[str, str]) -> Section | None:
    metrics = {r.name: validation_metrics(r) for r in runs}
    tags = sorted({t for m in metrics.values() for t in m})
    if not tags:
        return None
    section = Section("validation", "Validation metrics")
    names = [r.name for r in runs]
    section.notes.append(difference_note([labels[n] for n in names]))
    section.tables.append(ReportTable(
        "The last value of every metric logged under `val`, run by run",
        ["metric"] + [labels[n] for n in names] + difference_headers([labels[n] for n in names]),
        [[tag] + value_cells([metrics[n].get(tag) for n in names], 4) for tag in tags]))
    section.numbers = {"last": {tag: {n: metrics[n].get(tag) for n in names} for tag in tags}}
    return section


def _collapse(section: Section, runs: list[RunData], labels: dict[str, str]) -> None:
    last = {r.name: rec for r in runs if (rec := _last(r, "collapse", ("epoch",)) or _last(r, "collapse", ("init",)))}
    if len(last) < 2:
        return
    names = list(last)
    matches = match_views({n: {v: list(view.fields) for v, view in last[n].views.items()} for n in names})
    section.notes += mapping_notes(matches, labels, "collapse")
    numbers = []
    for match in matches:
        def number(which):
            return lambda run, view, f: (None if f not in last[run].views[view].fields
                                         else getattr(last[run].views[view].fields[f], which))

        def cardinality(f):
            return next(last[r].views[v].fields[f].cardinality for r, v in match.views.items()
                        if f in last[r].views[v].fields)

        heads = ["field", "cardinality"] + [labels[n] for n in names] + difference_headers([labels[n] for n in names])
        where = match.title(labels) + (f", {match.how}" if match.how else "")
        for which, what in (("information_abundance", "information abundance"), ("effective_rank", "effective rank")):
            rows = field_rows(match, names, number(which), key=cardinality, extra=lambda f: [cardinality(f)])
            if rows:
                section.tables.append(ReportTable(f"{what.capitalize()} per field, last epoch: {where}", heads, rows))
        numbers.append({"views": match.views, "how": match.how, "fields": {
            f: {n: {"information_abundance": number("information_abundance")(n, match.views[n], f),
                    "effective_rank": number("effective_rank")(n, match.views[n], f)}
                for n in match.views} for f in match.fields}})
        fields = sorted(match.fields, key=cardinality)
        if len(match.views) > 1:
            groups = {labels[n]: [np.nan if (v := number("information_abundance")(n, match.views[n], f)) is None
                                  else v for f in fields] for n in match.views}
            section.figures.append(ReportFigure(
                f"compare_{_safe(next(iter(match.views.values())))}_ia", f"{match.title(labels)}: IA per field by run",
                grouped_bar_figure(groups, [f"{f} ({cardinality(f)})" for f in fields],
                                   title="information abundance per field, run by run", xlabel="field (cardinality)",
                                   ylabel="IA (last epoch)", inches_per_category=0.2 * len(groups)),
                "Last-epoch information abundance of each field, one bar per run, fields by cardinality."))
    section.numbers["views"] = numbers
    interactions = {n: rec.interaction for n, rec in last.items() if rec.interaction is not None}
    if len(interactions) > 1:
        inames = list(interactions)
        means = {n: dict(zip(i.fields, (float(np.mean(row)) for row in i.matrix))) for n, i in interactions.items()}
        fields = list(dict.fromkeys(f for n in inames for f in interactions[n].fields))
        section.tables.append(ReportTable(
            "Interaction collapse: mean IA of each field's sub-embeddings through the cross layer, by field name",
            ["field"] + [labels[n] for n in inames] + difference_headers([labels[n] for n in inames]),
            [[f] + value_cells([means[n].get(f) for n in inames]) for f in fields]))


def _field_pair(section: Section, runs: list[RunData], labels: dict[str, str]) -> None:
    last = {r.name: rec for r in runs if (rec := _last(r, "correlation/field_pair", ("epoch",))) and rec.samples}
    if len(last) < 2:
        return
    names = list(last)
    heads = [labels[n] for n in names] + difference_headers([labels[n] for n in names])
    rows = [[what] + value_cells([getattr(last[n], key) for n in names])
            for what, key in (("learned strength vs pair MI (Spearman)", "agreement"),
                              ("learned strength vs interaction information (Spearman)", "agreement_interaction"))]
    section.tables.append(ReportTable("Agreement of the learned pair strength with the data, last epoch",
                                      ["measure"] + heads, [r for r in rows if set(r[1:]) != {"-"}]))
    first = last[names[0]]
    index = {n: {f: i for i, f in enumerate(last[n].fields)} for n in names}
    ii = np.asarray(first.interaction_information, dtype=float)
    pairs = sorted(((i, j) for i in range(len(first.fields)) for j in range(i + 1, len(first.fields))),
                   key=lambda p: -ii[p])[:10]

    def strength(n, a, b):
        learned = last[n].learned
        if learned is None or a not in index[n] or b not in index[n]:
            return None
        return float(learned[index[n][a]][index[n][b]])

    rows = [[f"{first.fields[i]} x {first.fields[j]}", f"{ii[i, j]:+.4f}"]
            + value_cells([strength(n, first.fields[i], first.fields[j]) for n in names]) for i, j in pairs]
    if any(set(r[2:]) != {"-"} for r in rows):
        section.tables.append(ReportTable(
            f"Learned pair strength of the data's ten strongest pairs (interaction information of {labels[names[0]]}), "
            "fields matched by name", ["pair", "interaction information"] + heads, rows))
    learned = [n for n in names if last[n].learned is not None]
    if len(learned) > 1:
        section.figures.append(ReportFigure(
            "compare_field_pair_learned", "Learned pair strength, run by run",
            side_by_side([field_pair_image(last[n], "learned") for n in learned], titles=[labels[n] for n in learned]),
            "Each run's cross-layer pair strength, fields in each run's configured order."))
    section.numbers["agreement"] = {n: {"agreement": last[n].agreement,
                                        "agreement_interaction": last[n].agreement_interaction} for n in names}


def _correlation(section: Section, runs: list[RunData], labels: dict[str, str]) -> None:
    last = {r.name: rec for r in runs if (rec := _last(r, "correlation", ("epoch",)))}
    if len(last) < 2:
        return
    names = list(last)
    by_name = {n: {t.name: t.agreement for t in last[n].targets} for n in names}
    targets = list(dict.fromkeys(t for n in names for t in by_name[n]))
    rows = [["mean over targets"] + value_cells([last[n].agreement for n in names])]
    rows += [[f"target {t}"] + value_cells([by_name[n].get(t) for n in names]) for t in targets]
    section.tables.append(ReportTable(
        "Agreement of the learned map with the data (Spearman over cells), last epoch, targets matched by name",
        ["target"] + [labels[n] for n in names] + difference_headers([labels[n] for n in names]),
        [r for r in rows if set(r[1:]) != {"-"}]))
    section.numbers["agreement"] = {n: {"mean": last[n].agreement, "targets": by_name[n]} for n in names}


def _auroc(section: Section, runs: list[RunData], labels: dict[str, str]) -> None:
    last = {r.name: rec for r in runs if (rec := _last(r, "entanglement", ("validation",)))}
    if len(last) < 2:
        return
    names = list(last)
    keys = list(dict.fromkeys((t, s) for n in names for t, by in last[n].auroc.items() for s in by))
    rows = [[task, subset] + value_cells([last[n].auroc.get(task, {}).get(subset) for n in names])
            for task, subset in sorted(keys, key=lambda k: (k[0], k[1] != "all", k[1]))]
    if rows:
        section.tables.append(ReportTable(
            "Each task's AUROC by sample subset, last validation",
            ["task", "subset"] + [labels[n] for n in names] + difference_headers([labels[n] for n in names]), rows))


def _shared_scalars(section: Section, namespace: str, have: list[RunData], labels: dict[str, str]) -> None:
    tags = sorted(set.intersection(*[{t for t in r.scalars if t.startswith(namespace + "/") and r.scalars[t]}
                                     for r in have]))
    section.numbers["final_scalars"] = {t: {r.name: r.scalars[t][-1][1] for r in have} for t in tags}
    if tags:
        section.tables.append(ReportTable(
            f"Every `{namespace}/` scalar the runs share by tag, last value",
            ["tag"] + [labels[r.name] for r in have] + difference_headers([labels[r.name] for r in have]),
            [[t] + value_cells([r.scalars[t][-1][1] for r in have], 4) for t in tags]))


def _safe(name: str) -> str:
    return name.replace("[", "_").replace("]", "").replace("/", "_").replace("~", "_")


BY_NAMESPACE = {"collapse": _collapse, "correlation/field_pair": _field_pair, "correlation": _correlation,
                "conflict": add_gradient_conflict_comparison}


def compare_runs(runs: list[RunData], out_dir: str | Path,
                 thresholds: ReportThresholds | None = None) -> dict[str, Path]:
    """Write ``compare.html``, ``compare.md``, ``figures/`` and ``compare.json`` for two or more runs; returns
    the paths written, by kind. Runs with the same name are told apart by their paths.

    Example:
        >>> import json, tempfile
        >>> from lightning_recanalysis.report import RunData, compare_runs
        >>> a = RunData("mmoe", "runs/mmoe", scalars={"conflict/mean_cosine": [(0, 0.1), (10, -0.2)],
        ...                                           "val/auroc": [(10, 0.70)]}, records={"conflict": []})
        >>> b = RunData("stem", "runs/stem", scalars={"conflict/mean_cosine": [(10, 0.05)], "val/auroc": [(10, 0.75)]},
        ...             records={"conflict": []})
        >>> summary = json.loads(compare_runs([a, b], tempfile.mkdtemp())["summary"].read_text())
        >>> summary["analyses"]["conflict"]["numbers"]
        {'final_scalars': {'conflict/mean_cosine': {'mmoe': -0.2, 'stem': 0.05}}}
        >>> summary["analyses"]["validation"]["tables"][0]["rows"]
        [['val/auroc', '0.7000', '0.7500', '+0.0500']]
    """
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(runs)}")
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # same leaf names: tell the runs apart by their paths
        for r in runs:
            r.name = r.path
    labels = dict(zip([r.name for r in runs], run_labels([r.name for r in runs])))
    sections = [s for s in [_validation_section(runs, labels)] if s is not None]
    for ns in sorted({ns for r in runs for ns in r.records}, key=section_order):
        have = [r for r in runs if ns in r.records]
        section = Section(ns, f"{TITLES.get(ns, ns)}: {', '.join(labels[r.name] for r in have)}")
        if len(have) < 2:
            section.notes.append(f"only {labels[have[0].name]} has this analysis")
        elif ns in BY_NAMESPACE:
            BY_NAMESPACE[ns](section, have, labels)
        if ns == "entanglement" and len(have) > 1:
            _auroc(section, have, labels)
            add_conflict_comparison(section, have, labels)
        _shared_scalars(section, ns, have, labels)
        if section.tables and len(have) > 1:
            section.notes.append(difference_note([labels[r.name] for r in have]))
        sections.append(section)
    notes = [n for r in runs for n in (f"{r.name}: {x}" for x in r.notes)]
    return write_report(sections, out_dir, title="Run comparison: " + " vs ".join(labels[r.name] for r in runs),
                        run={"name": " vs ".join(r.name for r in runs), "path": str(out_dir),
                             "runs": [{"name": r.name, "path": r.path} for r in runs]},
                        notes=notes, stem="compare", summary_name="compare.json")
