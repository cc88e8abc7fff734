"""Report section for ``collapse/``: IA per field learned vs initial, spectra, interaction collapse.

The findings sentences come from :mod:`lightning_recanalysis.findings.collapse` (the monitor's live Text tab says
the same); this module adds the numbers, tables and figures.
"""

from __future__ import annotations

from typing import Any, Mapping

from ...figures.collapse import ia_bar_figure, ia_over_time_image, interaction_image, spectrum_heatmap_image
from ...findings.collapse import (baseline_and_last, collapse_findings, information_abundance_ceiling,
                                  interaction_correlations)
from ...records import SpectrumRecord
from ..model import ReportFigure, ReportTable, ReportThresholds, Section, format_value

__all__ = ["collapse_section"]


def _when(record: SpectrumRecord) -> str:
    return "initial weights" if record.stage == "init" else f"epoch {record.epoch}"


def _field_numbers(view_name: str, name: str, fld: Mapping[str, Any], width: int, ia0: float | None,
                   records: list[SpectrumRecord]) -> dict[str, Any]:
    return {
        "cardinality": fld["cardinality"],
        "information_abundance": fld["information_abundance"],
        "information_abundance_initial": ia0,
        "effective_rank": fld["effective_rank"],
        "stable_rank": fld["stable_rank"],
        "ceiling": information_abundance_ceiling(fld["cardinality"], width),
        "normalized_spectrum": fld["normalized_spectrum"],
        "history": [[r.step, r.views[view_name]["fields"][name]["information_abundance"]]
                    for r in records if view_name in r.views and name in r.views[view_name]["fields"]],
    }


def _ia_over_time(view_name: str, per_field: dict[str, dict[str, Any]]) -> Any:
    """The two most and two least collapsed fields over training, as IA / min(cardinality, K): on that scale the
    lowest line is the most collapsed field, whatever its cardinality, so the legend and the lines agree."""
    ratio = {n: per_field[n]["information_abundance"] / per_field[n]["ceiling"] for n in per_field}
    ordered = sorted(ratio, key=ratio.get)
    chosen = list(dict.fromkeys(ordered[:2] + ordered[-2:]))
    chosen.sort(key=ratio.get, reverse=True)  # the legend top down, as the lines end
    series = {}
    for n in chosen:
        which = "most collapsed" if n in ordered[:2] else "least collapsed"
        label = f"{n} ({per_field[n]['cardinality']}): {ratio[n]:.0%} of max, {which}"
        ceiling = per_field[n]["ceiling"]
        series[label] = ([s for s, _ in per_field[n]["history"]], [v / ceiling for _, v in per_field[n]["history"]])
    return ia_over_time_image(view_name, series, of_ceiling=True)


def collapse_section(records: list[SpectrumRecord], thresholds: ReportThresholds, figures: bool = True) -> Section:
    """The collapse section from the monitor's records (:class:`~lightning_recanalysis.records.SpectrumRecord`):
    per view a table of IA per field (at init, now, as a fraction of min(cardinality, K)), the IA bar
    chart against initialisation, the spectrum heatmap, IA over training; with a cross layer the interaction
    matrix and the Pearson r of its row and column means with the fields' own IA. ``figures=False`` leaves the
    figures out.

    Example:
        >>> from lightning_recanalysis.report.model import ReportThresholds
        >>> from lightning_recanalysis.records import SpectrumRecord
        >>> def record(stage, epoch, ia):
        ...     fld = {"cardinality": 50, "information_abundance": ia, "effective_rank": ia, "stable_rank": 1.0,
        ...            "normalized_spectrum": [1.0, 0.5]}
        ...     view = {"width": 8, "fields": {"user": fld}, "excluded_rows": 0}
        ...     return SpectrumRecord.from_dict({"stage": stage, "epoch": epoch, "step": 10 * epoch, "views": {"emb": view}})
        >>> section = collapse_section([record("init", 0, 6.0), record("epoch", 1, 3.0)], ReportThresholds(),
        ...                            figures=False)
        >>> section.tables[0].rows
        [['user', 50, '6.00', '3.00', '38%', '0.50', '3.00', '1.00']]
        >>> section.numbers["views"]["emb"]["fields"]["user"]["history"]
        [[0, 6.0], [10, 3.0]]
        >>> len(section.findings)
        1
    """
    section = Section("collapse", "Dimensional collapse of embedding tables")
    typed = list(records)
    initial, last = baseline_and_last(typed)
    if last is None:
        section.notes.append("no collapse analysis was recorded")
        return section
    if initial is None:
        section.notes.append("no fit-start baseline was recorded, so IA is not compared with initialisation")
    numbers: dict[str, Any] = {"last_epoch": last.epoch if last.stage == "epoch" else None, "views": {}}
    has_epochs = last.stage == "epoch"
    for view_name, view in last.views.items():
        init_view = initial.views.get(view_name) if initial else None
        width = view["width"]
        rows, per_field = [], {}
        for name, fld in view["fields"].items():
            ia = fld["information_abundance"]
            ia0 = init_view["fields"][name]["information_abundance"] if init_view and name in init_view["fields"] else None
            per_field[name] = _field_numbers(view_name, name, fld, width, ia0, typed)
            rows.append([name, fld["cardinality"], format_value(ia0), format_value(ia),
                         f"{ia / per_field[name]['ceiling']:.0%}", format_value(ia / ia0) if ia0 else "-",
                         format_value(fld["effective_rank"]), format_value(fld["stable_rank"])])
        rows.sort(key=lambda r: view["fields"][r[0]]["cardinality"])
        numbers["views"][view_name] = {"width": width, "fields": per_field, "excluded_rows": view["excluded_rows"]}
        section.tables.append(ReportTable(
            f"`{view_name}`: information abundance per field ({_when(last)})",
            ["field", "cardinality", "IA at init", "IA now", "IA / max", "now / init", "effective rank", "stable rank"],
            rows))
        if not figures:
            continue
        safe = view_name.replace("/", "_").replace("[", "_").replace("]", "")
        if init_view is not None:
            section.figures.append(ReportFigure(
                f"collapse_{safe}_ia_vs_init", f"{view_name}: IA per field, learned vs initialisation",
                ia_bar_figure(view_name, view, init_view, _when(last)),
                "Bars: information abundance (sum of s/s_1) per field, sorted by cardinality; the dashed line is the "
                "width K. Learned tables use fewer dimensions than random ones of the same shape (Guo et al., Fig. 2)."))
        section.figures.append(ReportFigure(
            f"collapse_{safe}_spectrum", f"{view_name}: normalised singular values, {_when(last)}",
            spectrum_heatmap_image(view_name, view, _when(last)),
            "Rows: fields sorted by cardinality; columns: singular-value index; colour: s_k / s_1 from 0 to 1. "
            "A row that goes dark after a few columns is a field that uses only those directions."))
        if has_epochs and view["fields"]:
            section.figures.append(ReportFigure(
                f"collapse_{safe}_ia_over_time", f"{view_name}: IA over training, the most and least collapsed fields",
                _ia_over_time(view_name, per_field),
                "IA as a share of the most it can reach, min(cardinality, K), so fields of any cardinality share "
                "one scale: the lowest line is the most collapsed field. Step 0 is the initial weights; the legend "
                "gives each field's cardinality and its share at the last epoch."))
    interaction = last.interaction
    if interaction is not None:
        view_fields = last.views[interaction["view"]]["fields"]
        rows_r, cols_r = interaction_correlations(interaction, view_fields)
        numbers["interaction"] = {**interaction, "row_mean_vs_source_ia_pearson": rows_r,
                                  "column_mean_vs_partner_ia_pearson": cols_r}
        if figures:
            section.figures.append(ReportFigure(
                "collapse_interaction",
                f"{interaction['view']}: interaction collapse through {interaction['layer']}, fields in the cross "
                "layer's order", interaction_image(interaction, view_fields, _when(last), order="field"),
                "Entry (i, j): IA of field i's sub-embedding E_i W_ij^T as partner j sees it through the first cross "
                "layer (colour scale: IA). Both axes in the cross layer's field order, the order of the field-pair "
                "maps, so the two lay one over the other."))
            section.figures.append(ReportFigure(
                "collapse_interaction_by_ia",
                f"{interaction['view']}: interaction collapse through {interaction['layer']}, fields by own IA",
                interaction_image(interaction, view_fields, _when(last), order="ia"),
                "The same matrix with both axes sorted by the fields' own IA, lowest first. The interaction-collapse "
                "law: low-IA fields drag down the fields they interact with (dark rows and columns at the top left)."))
    section.findings = collapse_findings(typed, thresholds)
    section.numbers = numbers
    return section
