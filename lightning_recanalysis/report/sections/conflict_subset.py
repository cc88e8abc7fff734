"""The conflict-subset part of the ``entanglement/`` report section and of ``compare``: the authors' figure per
view, the shares and agreements in a table, and a finding in words.

A record's ``conflict`` part is written by :class:`~lightning_recanalysis.callbacks.entanglement.
EntanglementMonitor` when it has single-task references (see its docstring for the layout of ``views``).
"""

from __future__ import annotations


from ...figures.conflict_subset import conflict_subset_image
from ...records import EntanglementRecord
from ...findings.entanglement import entanglement_findings, view_reproduction
from ..model import ReportFigure, ReportTable, Section, format_value

__all__ = ["add_conflict_subsets"]


def add_conflict_subsets(section: Section, last: EntanglementRecord, figures: bool = True) -> None:
    """Add the conflict-subset table, figures, findings and numbers of the last record to ``section``.

    Example:
        >>> from lightning_recanalysis.records import EntanglementRecord
        >>> from lightning_recanalysis.toy import toy_conflict_subsets
        >>> section = Section("entanglement", "Interest entanglement")
        >>> record = EntanglementRecord(stage="validation", epoch=1,
        ...                             conflict=toy_conflict_subsets({"emb[a]": (0.75, 0.25, 0.25, 0.5)}))
        >>> add_conflict_subsets(section, record, figures=False)
        >>> section.tables[0].rows[0]  # view, mode, pairs, top, middle, bottom, agreement with a and b
        ['emb[a]', 'a_far_b_near', 20, '0.75', '0.00', '0.25', '0.50', '-0.50']
        >>> print(section.findings[0].text)
        task chunk `emb[a]` reproduces its own task's single-task geometry on the conflict pairs: agreement +0.38 with
        a (all: a +0.38, b -0.38); it puts 75% of the a far b near pairs in its top 40%.
    """
    part = last.conflict
    if not part:
        return
    if part["pairs"] < 2 or not part["views"]:
        section.notes.append(f"conflict subsets: only {part['pairs']} pairs selected, nothing to show")
        return
    agreement = view_reproduction(part)
    tasks = part["tasks"]
    rows = []
    for view, view_part in part["views"].items():
        for mode, data in view_part["modes"].items():
            s = data["shares"]
            rows.append([view, mode, part["modes"][mode]["pairs"], format_value(s["top"], 2),
                         format_value(s["middle"], 2), format_value(s["bottom"], 2)]
                        + [format_value(data["agreement"].get(t), 2) for t in tasks])
    low, high = part["low"], part["high"]
    selected = f"{part['pairs']} of {part['validation_pairs']} validation pairs"
    if part["frequent_only"]:
        selected += " (frequent users and items)"
    section.tables.append(ReportTable(
        f"Conflict subsets (far above the references' {high:g}th percentile, near at or below their {low:g}th; "
        f"{selected}, epoch {last.epoch}): where each view puts them",
        ["view", "mode", "pairs", f"top {100 - high:g}%", "middle", f"bottom {low:g}%"]
        + [f"agreement with {t}" for t in tasks], rows))
    section.tables.append(ReportTable(
        "How far each view reproduces each single-task geometry on the conflict pairs (mean agreement over the "
        "modes: 1 = as that task's single-task model, 0 = chance; Spearman's rho with the reference's distances)",
        ["view"] + [f"agreement with {t}" for t in tasks] + [f"rho with {t}" for t in tasks],
        [[view] + [format_value(agreement[view].get(t), 2) for t in tasks]
         + [format_value(part["views"][view]["rank_correlation"].get(t), 2) for t in tasks]
         for view in part["views"]]))
    section.findings += entanglement_findings([last], None)
    section.numbers["conflict"] = {
        "selected_pairs": part["pairs"], "validation_pairs": part["validation_pairs"],
        "percentiles": {"high": high, "low": low}, "frequent_only": part["frequent_only"],
        "references": part["references"], "modes": part["modes"], "agreement": agreement,
        "views": {view: {"shares": {m: d["shares"] for m, d in vp["modes"].items()},
                         "agreement": {m: d["agreement"] for m, d in vp["modes"].items()},
                         "rank_correlation": vp["rank_correlation"], "percentiles": [vp["low"], vp["high"]]}
                  for view, vp in part["views"].items()},
    }
    if not figures:
        return
    for view, view_part in part["views"].items():
        safe = view.replace("[", "_").replace("]", "").replace("/", "_")
        section.figures.append(ReportFigure(
            f"entanglement_{safe}_conflict_subsets", f"{view}: the conflict subsets in this view",
            conflict_subset_image(view, view_part, low_q=low, high_q=high),
            f"The authors' figure: this view's user-item distances of the {selected} in {part['bins']} equal-width "
            "bins, the conflict pairs of each mode (dark) stacked under the rest (light), bins coloured by the "
            f"view's own percentiles (blue: bottom {low:g}%, red: top {100 - high:g}%)."))
