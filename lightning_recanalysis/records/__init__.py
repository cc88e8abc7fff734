"""The typed records the monitors return, one class per analysis, and the parts they are made of.

A monitor's ``compute`` returns one of these; the same object reaches its live tags and images, the findings, the
report and ``compare``. The base class :class:`~lightning_recanalysis.records.base.Record` says how a record is
published (a plain dict in ``history``, checkpoints and event files) and read back. A leaf package: it imports
nothing from the rest of the package.
"""

from .base import Part, Record, TaggedRecord, TypedHistory, transient
from .conflict import ConflictRecord, ConflictView, PairStatistics, TaskPair, conflict_tags, pair_name
from .correlation import BehaviorTargetRecord, FieldPairRecord, TargetCorrelation, correlation_tags, field_pair_tags
from .entanglement import EntanglementRecord, EntanglementView, entanglement_tags
from .spectrum import FieldSpectrum, Interaction, SpectrumRecord, SpectrumView, interaction_tags, spectrum_tags

__all__ = [
    "BehaviorTargetRecord", "ConflictRecord", "ConflictView", "EntanglementRecord", "EntanglementView",
    "FieldPairRecord", "FieldSpectrum", "Interaction", "PairStatistics", "Part", "Record", "SpectrumRecord",
    "SpectrumView", "TaggedRecord", "TargetCorrelation", "TaskPair", "TypedHistory", "conflict_tags", "correlation_tags",
    "entanglement_tags", "field_pair_tags", "interaction_tags", "pair_name", "record_type", "spectrum_tags",
    "transient",
]

#: The record class of each analysis namespace, for reading published records back.
RECORD_TYPES: dict[str, type[Record]] = {
    "collapse": SpectrumRecord,
    "correlation": BehaviorTargetRecord,
    "correlation/field_pair": FieldPairRecord,
    "conflict": ConflictRecord,
    "entanglement": EntanglementRecord,
}


def record_type(namespace: str) -> type[Record]:
    """The record class of an analysis namespace (:class:`Record` for one this package does not know: a
    monitor of one's own keeps its published keys in ``extra``).

    Example:
        >>> record_type("collapse").__name__, record_type("my_analysis").__name__
        ('SpectrumRecord', 'Record')
    """
    return RECORD_TYPES.get(namespace, Record)
