"""The record of ``collapse/``: per view and field the singular-value spectrum numbers, and the interaction matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import Part, Record

__all__ = ["FieldSpectrum", "Interaction", "SpectrumRecord", "SpectrumView", "interaction_tags", "spectrum_tags"]


@dataclass
class FieldSpectrum(Part):
    """One field's spectrum: s_1 >= ... >= s_K the singular values of its row-normalised rows.

    Attributes:
        cardinality: the field's rows (categories), excluded ones included.
        information_abundance: IA = sum(s) / s_1, between 1 and min(cardinality, K).
        effective_rank: exp of the entropy of s / sum(s).
        stable_rank: sum(s^2) / s_1^2.
        normalized_spectrum: s / s_1, padded with zeros to the view's width K.
        excluded_rows: rows left out (non-finite or all zero).
    """

    cardinality: int = 0
    information_abundance: float = 0.0
    effective_rank: float = 0.0
    stable_rank: float = 0.0
    normalized_spectrum: list[float] = field(default_factory=list)
    excluded_rows: int = 0


@dataclass
class SpectrumView(Part):
    """One analysed view: a table (or a column group of it) or a field set of one-table-per-feature tables.

    Attributes:
        width: K, the embedding width.
        table / group: the table's module name and column group (``"all"`` for a field set).
        tables: a field set's tables (None, absent from the dict, for a table).
        fields: by field name.
        excluded_rows: rows left out over all fields.
    """

    width: int = 0
    table: str = ""
    group: str = ""
    tables: list[str] | None = None
    fields: dict[str, FieldSpectrum] = field(default_factory=dict)
    excluded_rows: int = 0

    optional_keys: ClassVar[tuple[str, ...]] = ("tables",)


@dataclass
class Interaction(Part):
    """The interaction matrix through a cross layer: entry (i, j) is the IA of E_i W_ij^T.

    Attributes:
        view: the view whose fields the cross layer reads; layer: the kernel's name.
        fields: the fields in the cross input's order; matrix: ``[N, N]``.
        source_fields: the looked-up field of each slot, where a slot is named otherwise (else None).
        kernel: the kernel's form when it is not an ``nn.Linear`` (else None).
    """

    view: str = ""
    layer: str = ""
    fields: list[str] = field(default_factory=list)
    matrix: list[list[float]] = field(default_factory=list)
    source_fields: list[str] | None = None
    kernel: str | None = None

    optional_keys: ClassVar[tuple[str, ...]] = ("source_fields", "kernel")


@dataclass
class SpectrumRecord(Record):
    """One analysis of :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor`.

    Attributes:
        views: by view name.
        interaction: the interaction matrix, or None without a cross layer (then absent from the dict).

    Example:
        >>> r = SpectrumRecord(stage="init", epoch=0, step=0, views={"emb": SpectrumView(width=4, table="emb",
        ...     group="all", fields={"user": FieldSpectrum(cardinality=10, information_abundance=3.5)})})
        >>> r.views["emb"].fields["user"].information_abundance
        3.5
        >>> SpectrumRecord.from_dict(r.to_dict()) == r  # published and read back
        True
    """

    views: dict[str, SpectrumView] = field(default_factory=dict)
    interaction: Interaction | None = None

    optional_keys: ClassVar[tuple[str, ...]] = ("interaction",)


def spectrum_tags(record: SpectrumRecord, initial: SpectrumRecord | None = None) -> dict[str, float]:
    """The scalars of a spectrum record by TensorBoard tag: per field ``collapse/<view>/<field>/`` +
    ``information_abundance``, ``effective_rank``, ``stable_rank`` and (with the fit-start ``initial`` record)
    ``information_abundance_vs_init``; per view ``collapse/<view>/mean_information_abundance`` and
    ``.../excluded_rows``; with an interaction matrix, :func:`interaction_tags`.

    Example:
        >>> view = SpectrumView(width=4, fields={"user": FieldSpectrum(information_abundance=2.0)})
        >>> spectrum_tags(SpectrumRecord(views={"emb": view}))["collapse/emb/mean_information_abundance"]
        2.0
    """
    tags: dict[str, float] = {}
    for name, view in record.views.items():
        start = initial.views.get(name) if initial is not None else None
        for field_name, fld in view.fields.items():
            prefix = f"collapse/{name}/{field_name}"
            tags.update({f"{prefix}/information_abundance": fld.information_abundance,
                         f"{prefix}/effective_rank": fld.effective_rank, f"{prefix}/stable_rank": fld.stable_rank})
            before = start.fields.get(field_name) if start is not None else None
            if before is not None and before.information_abundance:
                tags[f"{prefix}/information_abundance_vs_init"] = (fld.information_abundance
                                                                   / before.information_abundance)
        ias = [fld.information_abundance for fld in view.fields.values()]
        tags[f"collapse/{name}/mean_information_abundance"] = sum(ias) / max(1, len(ias))
        tags[f"collapse/{name}/excluded_rows"] = float(view.excluded_rows)
    if record.interaction is not None:
        tags.update(interaction_tags(record.interaction))
    return tags


def interaction_tags(interaction: Interaction) -> dict[str, float]:
    """``collapse/<view>/interaction/<field>/mean_information_abundance``: each row's mean of the interaction matrix.

    Example:
        >>> interaction_tags(Interaction(view="emb", fields=["a"], matrix=[[2.0, 4.0]]))
        {'collapse/emb/interaction/a/mean_information_abundance': 3.0}
    """
    return {f"collapse/{interaction.view}/interaction/{name}/mean_information_abundance": sum(row) / len(row)
            for name, row in zip(interaction.fields, interaction.matrix)}
