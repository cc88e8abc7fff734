"""Report section for ``collapse/``: IA per field learned vs initial, spectra, interaction collapse."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...figures.collapse import ia_bar_figure, ia_over_time_image, interaction_image, spectrum_heatmap_image
from ..model import ReportFigure, ReportTable, ReportThresholds, Section, format_value


def _when(record: dict[str, Any]) -> str:
    return "initial weights" if record["stage"] == "init" else f"epoch {record['epoch']}"


def collapse_section(records: list[dict[str, Any]], thresholds: ReportThresholds, figures: bool = True) -> Section:
    section = Section("collapse", "Dimensional collapse of embedding tables")
    epochs = [r for r in records if r["stage"] == "epoch"]
    initial = next((r for r in records if r["stage"] == "init"), None)
    last = epochs[-1] if epochs else initial
    if last is None:
        section.notes.append("no collapse analysis was recorded")
        return section
    if initial is None:
        section.notes.append("no fit-start baseline was recorded, so IA is not compared with initialisation")
    numbers: dict[str, Any] = {"last_epoch": last["epoch"] if last["stage"] == "epoch" else None, "views": {}}
    findings: list[tuple[float, str]] = []
    for view_name, view in last["views"].items():
        init_view = initial["views"].get(view_name) if initial else None
        width = view["width"]
        rows, per_field, collapsed = [], {}, []
        for name, fld in view["fields"].items():
            ceiling = min(fld["cardinality"], width)
            ia = fld["information_abundance"]
            ia0 = init_view["fields"][name]["information_abundance"] if init_view and name in init_view["fields"] else None
            per_field[name] = {
                "cardinality": fld["cardinality"],
                "information_abundance": ia,
                "information_abundance_initial": ia0,
                "effective_rank": fld["effective_rank"],
                "stable_rank": fld["stable_rank"],
                "ceiling": ceiling,
                "normalized_spectrum": fld["normalized_spectrum"],
                "history": [[r["step"], r["views"][view_name]["fields"][name]["information_abundance"]]
                            for r in records if view_name in r["views"] and name in r["views"][view_name]["fields"]],
            }
            rows.append([name, fld["cardinality"], format_value(ia0), format_value(ia), f"{ia / ceiling:.0%}",
                         format_value(ia / ia0) if ia0 else "-", format_value(fld["effective_rank"]),
                         format_value(fld["stable_rank"])])
            fraction = ia / ceiling if ceiling else 1.0
            drop = ia / ia0 if ia0 else 1.0
            if ceiling > 1 and (fraction < thresholds.collapsed_fraction or drop < thresholds.collapsed_vs_init):
                since = f", {drop:.0%} of its {ia0:.2f} at init" if ia0 else ""
                collapsed.append((min(fraction, drop), f"**{name}** ({ia:.2f} of {ceiling}{since})"))
        if collapsed:
            collapsed.sort()
            shown = [text for _, text in collapsed[: thresholds.max_findings_per_section]]
            more = f" and {len(collapsed) - len(shown)} more" if len(collapsed) > len(shown) else ""
            findings.append((collapsed[0][0], f"{len(collapsed)} of {len(view['fields'])} fields of `{view_name}` are "
                             f"collapsed (IA below {thresholds.collapsed_fraction:.0%} of min(cardinality, K) or below "
                             f"{thresholds.collapsed_vs_init:.0%} of its value at initialisation), most collapsed first: "
                             + ", ".join(shown) + more + "."))
        rows.sort(key=lambda r: view["fields"][r[0]]["cardinality"])
        numbers["views"][view_name] = {"width": width, "fields": per_field, "excluded_rows": view["excluded_rows"]}
        section.tables.append(ReportTable(
            f"`{view_name}`: information abundance per field ({_when(last)})",
            ["field", "cardinality", "IA at init", "IA now", "IA / max", "now / init", "effective rank", "stable rank"],
            rows))
        safe = view_name.replace("/", "_").replace("[", "_").replace("]", "")
        if init_view is not None and figures:
            section.figures.append(ReportFigure(
                f"collapse_{safe}_ia_vs_init", f"{view_name}: IA per field, learned vs initialisation",
                ia_bar_figure(view_name, view, init_view, _when(last)),
                "Bars: information abundance (sum of s/s_1) per field, sorted by cardinality; the dashed line is the "
                "width K. Learned tables use fewer dimensions than random ones of the same shape (Guo et al., Fig. 2)."))
        if figures:
            section.figures.append(ReportFigure(
            f"collapse_{safe}_spectrum", f"{view_name}: normalised singular values, {_when(last)}",
            spectrum_heatmap_image(view_name, view, _when(last)),
            "Rows: fields sorted by cardinality; columns: singular-value index; colour: s_k / s_1 from 0 to 1. "
            "A row that goes dark after a few columns is a field that uses only those directions."))
        if figures and len(epochs) >= 1 and len(view["fields"]) >= 1:
            ratio = {n: per_field[n]["information_abundance"] / per_field[n]["ceiling"] for n in per_field}
            ordered = sorted(ratio, key=ratio.get)
            chosen = list(dict.fromkeys(ordered[:2] + ordered[-2:]))
            series = {f"{n} (most collapsed)" if n in ordered[:2] else f"{n} (least collapsed)":
                      ([s for s, _ in per_field[n]["history"]], [v for _, v in per_field[n]["history"]]) for n in chosen}
            section.figures.append(ReportFigure(
                f"collapse_{safe}_ia_over_time", f"{view_name}: IA over training, most and least collapsed fields",
                ia_over_time_image(view_name, series),
                "Step 0 is the initial weights. Most/least collapsed by IA as a fraction of min(cardinality, K)."))
    interaction = last.get("interaction")
    if interaction is not None:
        view_fields = last["views"][interaction["view"]]["fields"]
        matrix = np.asarray(interaction["matrix"], dtype=float)
        sources = interaction.get("source_fields", interaction["fields"])
        own = np.array([view_fields[n]["information_abundance"] for n in sources])
        rows_r = _pearson(matrix.mean(axis=1), own)
        cols_r = _pearson(matrix.mean(axis=0), own)
        numbers["interaction"] = {**interaction, "row_mean_vs_source_ia_pearson": rows_r,
                                  "column_mean_vs_partner_ia_pearson": cols_r}
        if figures:
            section.figures.append(ReportFigure(
            "collapse_interaction", f"{interaction['view']}: interaction collapse through {interaction['layer']}",
            interaction_image(interaction, view_fields, _when(last)),
            "Entry (i, j): IA of field i's sub-embedding E_i W_ij^T as partner j sees it through the first cross "
            "layer; both axes sorted by the fields' own IA (colour scale: IA). The interaction-collapse law: "
            "low-IA fields drag down the fields they interact with."))
        low = [interaction["fields"][i] for i in np.argsort(own)[:2]]
        kernel = f" (kernel: {interaction['kernel']})" if interaction.get("kernel") else ""
        findings.append((0.5, f"Interaction collapse in `{interaction['view']}`: the IA of a field's sub-embeddings "
                         f"tracks the source field's own IA (Pearson r = {rows_r:.2f} over rows) and the partner's "
                         f"(r = {cols_r:.2f} over columns); the lowest-IA fields are {', '.join(low)}{kernel}."))
    findings.sort(key=lambda f: f[0])
    section.findings = [text for _, text in findings[: thresholds.max_findings_per_section]]
    section.numbers = numbers
    return section


def collapse_findings(records: list[dict[str, Any]], thresholds: ReportThresholds) -> list[str]:
    """The findings sentences alone, without building figures (for the live Text tab)."""
    section = collapse_section(records, thresholds, figures=False)
    return section.findings



def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
