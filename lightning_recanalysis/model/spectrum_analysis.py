"""What :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor` computes from the tables it found: the per-field
spectra of a view, and the interaction matrix through the cross layer. The formulas are in
:mod:`lightning_recanalysis.functional.spectrum` and :mod:`lightning_recanalysis.functional.interaction`; this
module reads the model's layout (views, fields, a cross kernel and its input slots) into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..parallel import sharding
from .cross.kernels import CrossKernel, CrossLayout
from .field_sets import AnalysisUnit, FieldSet
from ..functional.interaction import interaction_information_abundance
from ..functional.spectrum import (RowNormalizedGram, effective_rank, information_abundance, normalized_spectrum,
                                   singular_values_from_gram, stable_rank)
from ..parallel.sharded_interaction import interaction_from_partner_grams, sharded_partner_grams
from ..records import FieldSpectrum, Interaction, SpectrumView
from .tables import TableView

__all__ = ["InteractionReads", "interaction_matrix", "interaction_reads", "view_spectra"]


@dataclass
class InteractionReads:
    """What :func:`interaction_reads` read: the unit, its cross-input slots, the kernel's block over their columns,
    and the summed partner Grams of sharded sources (``None`` for plain tables)."""

    unit: AnalysisUnit
    slots: list
    block: torch.Tensor
    partner_grams: list | None


def view_spectra(view: AnalysisUnit, gram_of: Callable[[Any], RowNormalizedGram]) -> SpectrumView:
    """Every field's spectrum numbers of one view, from its row-normalised Gram (``gram_of(field)``).

    Returns the view's entry of :attr:`~lightning_recanalysis.records.SpectrumRecord.views`.

    Example:
        >>> import torch
        >>> from lightning_recanalysis.functional.spectrum import row_normalized_gram
        >>> from lightning_recanalysis.model.tables import discover_tables
        >>> from lightning_recanalysis.model.field_sets import analysis_units
        >>> model = torch.nn.Module()
        >>> model.item = torch.nn.Embedding(20, 4)
        >>> with torch.no_grad():
        ...     _ = model.item.weight.copy_(torch.randn(20, 1).expand(20, 4))  # rank 1: fully collapsed
        >>> view = analysis_units(discover_tables(model))[0]
        >>> spectra = view_spectra(view, lambda fld: row_normalized_gram(view.field_weight(fld)))
        >>> round(spectra.fields["item"].information_abundance, 3)
        1.0
    """
    fields: dict[str, FieldSpectrum] = {}
    excluded = 0
    for fld in view.fields:
        gram = gram_of(fld)
        excluded += gram.excluded_rows
        rows = gram.rows + gram.excluded_rows
        sv = singular_values_from_gram(gram.gram, min(rows, view.width))
        fields[fld.name] = FieldSpectrum(
            cardinality=rows,
            information_abundance=float(information_abundance(sv)),
            effective_rank=float(effective_rank(sv)),
            stable_rank=float(stable_rank(sv)),
            normalized_spectrum=normalized_spectrum(sv, view.width).tolist(),
            excluded_rows=gram.excluded_rows,
        )
    if isinstance(view, FieldSet):
        return SpectrumView(width=view.width, table=view.name, group="all", tables=view.table_names,
                            fields=fields, excluded_rows=excluded)
    assert isinstance(view, TableView)
    return SpectrumView(width=view.width, table=view.table.name, group=view.group.name, fields=fields,
                        excluded_rows=excluded)


def interaction_reads(layout: CrossLayout, kernel: CrossKernel, units: Sequence[AnalysisUnit]) -> InteractionReads:
    """Everything the interaction matrix reads of the weights, every collective of it included: the unit with most
    fields in the cross input, its slots in input order, the kernel restricted to those fields' columns (dense
    columns and other fields left out), and, when a source table is sharded (``DTensor`` or ``ShardedTensor``),
    each field's partner Grams summed over the ranks (:func:`~lightning_recanalysis.parallel.sharded_interaction.
    sharded_partner_grams`, so no rank holds a table). Plain tables are read later, locally, by
    :func:`interaction_matrix`. A monitor makes every such read before any local computation, so that a local
    failure on one rank cannot leave another rank waiting in a read."""
    slots = layout.unit_slots()
    unit = next(u for u in units if u.name == slots[0].unit)
    by_name = {f.name: f for f in unit.fields}
    columns = torch.cat([torch.arange(s.start, s.stop) for s in slots])
    weight = kernel.matrix()
    columns = columns.to(weight.device)
    block = weight[columns][:, columns]
    sources = [unit.field_source(by_name[s.field]) for s in slots]
    grams = None
    if any(sharding.is_sharded(parameter) for parameter, _, _ in sources):
        grams = sharded_partner_grams(sources, block, unit.width)
    return InteractionReads(unit=unit, slots=list(slots), block=block, partner_grams=grams)


def interaction_matrix(reads: InteractionReads, kernel: CrossKernel) -> Interaction:
    """The interaction matrix from :func:`interaction_reads`: entry (i, j) is the IA of E_i W_ij^T with W_ij the
    block of the kernel that maps field i's columns into field j's.

    Returns :attr:`~lightning_recanalysis.records.SpectrumRecord.interaction`."""
    unit, slots = reads.unit, reads.slots
    if reads.partner_grams is not None:
        matrix = interaction_from_partner_grams(reads.partner_grams, unit.width)
    else:
        by_name = {f.name: f for f in unit.fields}
        matrix = interaction_information_abundance([unit.field_weight(by_name[s.field]) for s in slots],
                                                   reads.block)
    return Interaction(view=unit.name, layer=kernel.name, fields=[s.name for s in slots], matrix=matrix.tolist(),
                       source_fields=[s.field for s in slots] if any(s.name != s.field for s in slots) else None,
                       kernel=None if kernel.form.startswith("nn.Linear") else kernel.form)
