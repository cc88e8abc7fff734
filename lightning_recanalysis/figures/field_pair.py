"""Figures of the field-pair correlation analysis (``correlation/field_pair/``): the N x N maps and the
top-pairs tables :class:`~lightning_recanalysis.FieldPairCorrelationMonitor` logs live and the report shows.

The record: ``{"fields", "epoch", "samples", "mutual_information", "interaction_information", "learned",
"learned_source", "agreement", "agreement_interaction", "bias_correction"}``, matrices N x N in field order.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .heatmap import heatmap_image

__all__ = ["field_pair_image", "top_pairs_markdown"]


def _pairs_ranked(matrix: np.ndarray) -> list[tuple[int, int]]:
    """Pairs i < j, largest value first (ties by position, so the order is reproducible)."""
    n = matrix.shape[0]
    i, j = np.triu_indices(n, 1)
    order = np.lexsort((j, i, -matrix[i, j]))
    return [(int(i[k]), int(j[k])) for k in order]


def top_pairs_markdown(record: Mapping[str, Any], top_k: int) -> str:
    """Markdown tables of the strongest pairs in the data and in the model (``top_k`` rows each).

    Example:
        >>> from lightning_recanalysis.figures import top_pairs_markdown
        >>> record = {"fields": ["a", "b", "c"], "samples": 1000, "learned": None,
        ...           "mutual_information": [[0, 0.3, 0.1], [0.3, 0, 0.2], [0.1, 0.2, 0]],
        ...           "interaction_information": [[0, 0.05, 0.0], [0.05, 0, 0.01], [0.0, 0.01, 0]]}
        >>> print(top_pairs_markdown(record, top_k=2).splitlines()[-2:])
        ['| 1 | a x b | 0.3 | 0.05 |  |  |', '| 2 | b x c | 0.2 | 0.01 |  |  |']
    """
    names = record["fields"]
    mi = np.asarray(record["mutual_information"], dtype=np.float64)
    ii = np.asarray(record["interaction_information"], dtype=np.float64)
    learned = None if record["learned"] is None else np.asarray(record["learned"], dtype=np.float64)
    by_mi = _pairs_ranked(mi)
    learned_rank = {} if learned is None else {p: r + 1 for r, p in enumerate(_pairs_ranked(learned))}
    unit = "bits" + (", Miller-Madow corrected" if record.get("bias_correction") == "miller_madow" else "")
    lines = [f"**Top pairs in the data** ({record['samples']:,} samples; {unit}; {len(by_mi)} pairs)", "",
             "| rank | pair | MI((F_i, F_j); Y) | interaction information | learned strength | learned rank |",
             "|---|---|---|---|---|---|"]
    for r, (i, j) in enumerate(by_mi[:top_k], 1):
        s = "" if learned is None else f"{learned[i, j]:.4g}"
        lr = "" if learned is None else str(learned_rank[(i, j)])
        lines.append(f"| {r} | {names[i]} x {names[j]} | {mi[i, j]:.4g} | {ii[i, j]:.4g} | {s} | {lr} |")
    if learned is not None:
        mi_rank = {p: r + 1 for r, p in enumerate(by_mi)}
        lines += ["", f"**Top pairs in the model** ({record['learned_source']}; agreement with MI: "
                      f"{_fmt(record['agreement'])}, with interaction information: "
                      f"{_fmt(record['agreement_interaction'])})", "",
                  "| rank | pair | learned strength | MI rank |", "|---|---|---|---|"]
        for r, (i, j) in enumerate(_pairs_ranked(learned)[:top_k], 1):
            lines.append(f"| {r} | {names[i]} x {names[j]} | {learned[i, j]:.4g} | {mi_rank[(i, j)]} |")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def field_pair_image(record: Mapping[str, Any], which: str) -> np.ndarray:
    """N x N heatmap (RGB array) of one of the record's matrices, fields in the configured order on both axes.

    ``which`` is ``"mutual_information"``, ``"interaction_information"`` (diagonal blank, a diverging scale
    symmetric about 0) or ``"learned"``. Drawn with Pillow, like every live image (cheap enough to log each epoch).

    Example:
        >>> from lightning_recanalysis.figures import field_pair_image
        >>> record = {"fields": ["a", "b"], "epoch": 0, "samples": 100,
        ...           "interaction_information": [[0.0, -0.1], [-0.1, 0.0]]}
        >>> field_pair_image(record, "interaction_information").dtype
        dtype('uint8')
    """
    names = record["fields"]
    data = np.asarray(record[which], dtype=np.float64)
    when = f"epoch {record['epoch']}"
    kwargs: dict[str, Any] = {"vmin": 0.0, "vmax": None, "cmap": "viridis"}
    if which == "mutual_information":
        title = f"MI((F_i, F_j); Y), diagonal MI(F_i; Y), {record['samples']:,} samples, {when}"
        label = "bits"
    elif which == "interaction_information":
        data = data.copy()
        np.fill_diagonal(data, np.nan)
        bound = float(np.nanmax(np.abs(data))) if data.size > 1 and np.isfinite(data).any() else 0.0
        bound = bound if bound > 0 else 1e-12
        title = f"interaction information MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y), {when}"
        label = "bits (+ synergy, - redundancy)"
        kwargs = {"vmin": -bound, "vmax": bound, "cmap": "RdBu_r"}
    else:
        title = f"learned pair strength ({record['learned_source']}), {when}"
        if record.get("agreement") is not None:
            title += f"; rank corr. with MI {record['agreement']:.2f}"
        label = "strength"
        kwargs = {"vmin": None, "vmax": None, "cmap": "magma"}
    if which == "mutual_information" and record.get("bias_correction") == "miller_madow":
        label += ", Miller-Madow corrected"
    return heatmap_image(data, title=title, row_labels=names, col_labels=names, xlabel="field j", ylabel="field i",
                         colorbar_label=label, annotate=len(names) <= 12 and which != "interaction_information",
                         fmt="{:.3f}", **kwargs)
