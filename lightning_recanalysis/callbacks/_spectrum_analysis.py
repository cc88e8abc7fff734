"""What :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` computes from the tables it found: the per-field
spectra of a view, and the interaction matrix through the cross layer. The formulas are in
:mod:`lightning_recanalysis.functional.spectrum` and :mod:`lightning_recanalysis.functional.interaction`; this
module reads the model's layout (views, fields, a cross kernel and its input slots) into them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .. import sharding
from ..cross import CrossKernel, CrossLayout
from ..field_sets import AnalysisUnit, FieldSet
from ..functional.interaction import interaction_information_abundance, partner_grams
from ..functional.spectrum import (RowNormalizedGram, effective_rank, information_abundance, normalized_spectrum,
                                   singular_values_from_gram, stable_rank)
from ..tables import TableView

__all__ = ["interaction_matrix", "view_spectra"]


def view_spectra(view: AnalysisUnit, gram_of: Callable[[Any], RowNormalizedGram]) -> dict[str, Any]:
    """Every field's spectrum numbers of one view, from its row-normalised Gram (``gram_of(field)``).

    Returns the view's entry of :attr:`~lightning_recanalysis.records.SpectrumRecord.views`.

    Example:
        >>> import torch
        >>> from lightning_recanalysis.functional.spectrum import row_normalized_gram
        >>> from lightning_recanalysis.tables import discover_tables
        >>> from lightning_recanalysis.field_sets import analysis_units
        >>> model = torch.nn.Module()
        >>> model.item = torch.nn.Embedding(20, 4)
        >>> with torch.no_grad():
        ...     _ = model.item.weight.copy_(torch.randn(20, 1).expand(20, 4))  # rank 1: fully collapsed
        >>> view = analysis_units(discover_tables(model))[0]
        >>> spectra = view_spectra(view, lambda fld: row_normalized_gram(view.field_weight(fld)))
        >>> round(spectra["fields"]["item"]["information_abundance"], 3)
        1.0
    """
    fields: dict[str, Any] = {}
    excluded = 0
    for fld in view.fields:
        gram = gram_of(fld)
        excluded += gram.excluded_rows
        rows = gram.rows + gram.excluded_rows
        sv = singular_values_from_gram(gram.gram, min(rows, view.width))
        fields[fld.name] = {
            "cardinality": rows,
            "information_abundance": float(information_abundance(sv)),
            "effective_rank": float(effective_rank(sv)),
            "stable_rank": float(stable_rank(sv)),
            "normalized_spectrum": normalized_spectrum(sv, view.width).tolist(),
            "excluded_rows": gram.excluded_rows,
        }
    if isinstance(view, FieldSet):
        return {"width": view.width, "table": view.name, "group": "all", "tables": view.table_names,
                "fields": fields, "excluded_rows": excluded}
    assert isinstance(view, TableView)
    return {"width": view.width, "table": view.table.name, "group": view.group.name,
            "fields": fields, "excluded_rows": excluded}


def interaction_matrix(layout: CrossLayout, kernel: CrossKernel, units: Sequence[AnalysisUnit]) -> dict[str, Any]:
    """The interaction matrix over the fields of the unit with most fields in the cross input, in input order:
    the kernel restricted to those fields' columns (dense columns and other fields left out), so entry (i, j)
    is the IA of E_i W_ij^T with W_ij the block that maps field i's columns into field j's.

    Returns :attr:`~lightning_recanalysis.records.SpectrumRecord.interaction`."""
    slots = layout.unit_slots()
    unit = next(u for u in units if u.name == slots[0].unit)
    by_name = {f.name: f for f in unit.fields}
    columns = torch.cat([torch.arange(s.start, s.stop) for s in slots])
    weight = kernel.matrix()
    columns = columns.to(weight.device)
    block = weight[columns][:, columns]
    sources = [unit.field_source(by_name[s.field]) for s in slots]
    if any(sharding.is_sharded(parameter) for parameter, _, _ in sources):
        matrix = _sharded_interaction(sources, block, unit.width)
    else:
        matrix = interaction_information_abundance([unit.field_weight(by_name[s.field]) for s in slots], block)
    out = {"view": unit.name, "layer": kernel.name, "fields": [s.name for s in slots], "matrix": matrix.tolist()}
    if any(s.name != s.field for s in slots):
        out["source_fields"] = [s.field for s in slots]
    if not kernel.form.startswith("nn.Linear"):
        out["kernel"] = kernel.form
    return out


def _sharded_interaction(sources, weight: torch.Tensor, width: int) -> torch.Tensor:
    """The interaction matrix of fields whose tables are sharded (``DTensor`` or ``ShardedTensor``): each source
    field's N partner Grams are a sum over its rows (:func:`~lightning_recanalysis.sharding.row_sum`), so no rank
    holds a table; ``sources`` are the fields' ``(weight, rows, columns)`` in input order."""
    n = len(sources)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i, (parameter, rows, columns) in enumerate(sources):
        w_i = weight[:, i * width : (i + 1) * width].T.to(torch.float64)
        grams = sharding.row_sum(parameter,
                                 lambda block, w_i=w_i: partner_grams(block, w_i.to(block.device), n, width),
                                 rows=rows, columns=columns)
        sv = torch.linalg.eigvalsh(grams).clamp_min(0.0).sqrt().flip(-1)[:, : min(rows[1] - rows[0], width)]
        out[i] = information_abundance(sv).cpu()
    return out
