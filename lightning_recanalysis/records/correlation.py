"""The records of ``correlation/``: target-behaviour correlation, and field-pair correlation with the label."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Part, Record

__all__ = ["BehaviorTargetRecord", "FieldPairRecord", "TargetCorrelation", "correlation_tags", "field_pair_tags"]


@dataclass
class TargetCorrelation(Part):
    """One analysed target category: MI of (behaviour category c at position p) with the label, and as learned.

    Attributes:
        target_category / name: the target category and its name.
        samples: training samples whose target is this category.
        positions: the positions p = 1..P of the map's columns.
        behavior_categories / behavior_names: the map's rows, most informative first.
        ground_truth_mi: ``[C, P]`` MI in bits; ground_truth: the same min-max scaled to [0, 1].
        learned: ``[C, P]`` the model's learned correlation (None without embeddings to read).
        agreement: Spearman's rho of learned vs ground truth (None without a learned map).
    """

    target_category: int = 0
    name: str = ""
    samples: int = 0
    positions: list[int] = field(default_factory=list)
    behavior_categories: list[int] = field(default_factory=list)
    behavior_names: list[str] = field(default_factory=list)
    ground_truth_mi: list[list[float]] = field(default_factory=list)
    ground_truth: list[list[float]] = field(default_factory=list)
    learned: list[list[float]] | None = None
    agreement: float | None = None


@dataclass
class BehaviorTargetRecord(Record):
    """One analysis of :class:`~lightning_recanalysis.FeatureCorrelationMonitor`.

    Attributes:
        samples: training samples counted (all processes).
        positive_rate: share of them with label 1.
        same_category_positions / same_category_mi: MI (bits) by position of "the behaviour at p has the
            target's category" vs the label.
        targets: per analysed target category.
        agreement: the mean of the targets' agreements (None without learned maps).

    Example:
        >>> BehaviorTargetRecord(stage="epoch", epoch=0, step=8, samples=64).to_dict()["positive_rate"]
        0.0
    """

    samples: int = 0
    positive_rate: float = 0.0
    same_category_positions: list[int] = field(default_factory=list)
    same_category_mi: list[float] = field(default_factory=list)
    targets: list[TargetCorrelation] = field(default_factory=list)
    agreement: float | None = None


@dataclass
class FieldPairRecord(Record):
    """One analysis of :class:`~lightning_recanalysis.FieldPairCorrelationMonitor` (matrices over ``fields``).

    Attributes:
        fields: the analysed fields' names, in the configured order.
        samples: training samples in the counted pass (all processes).
        bias_correction: ``"miller_madow"`` or ``"none"``.
        other_fraction: per field, the share of samples in the "other" bucket.
        field_mutual_information: MI(F_i; Y) per field, bits.
        mutual_information: N x N, MI((F_i, F_j); Y), diagonal MI(F_i; Y), bits.
        interaction_information: N x N, MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y), bits.
        learned / learned_source: N x N learned pair strength and where it was read (None without one).
        agreement / agreement_interaction: Spearman's rho of the learned strength with the MI / the
            interaction information over the pairs i < j (None without a learned strength).

    Example:
        >>> FieldPairRecord(stage="epoch", epoch=1, step=16, fields=["a", "b"]).to_dict()["fields"]
        ['a', 'b']
        >>> record = FieldPairRecord.from_dict({"stage": "epoch", "epoch": 2, "step": 40, "samples": 512})
        >>> record.samples, record.agreement
        (512, None)
    """

    fields: list[str] = field(default_factory=list)
    samples: int = 0
    bias_correction: str = "miller_madow"
    other_fraction: list[float] = field(default_factory=list)
    field_mutual_information: list[float] = field(default_factory=list)
    mutual_information: list[list[float]] = field(default_factory=list)
    interaction_information: list[list[float]] = field(default_factory=list)
    learned: list[list[float]] | None = None
    learned_source: str | None = None
    agreement: float | None = None
    agreement_interaction: float | None = None


def correlation_tags(record: BehaviorTargetRecord) -> dict[str, float]:
    """``correlation/target_<t>/agreement`` per target with a learned map, and ``correlation/agreement``.

    Example:
        >>> correlation_tags(BehaviorTargetRecord(targets=[TargetCorrelation(target_category=3, agreement=0.5)],
        ...                                       agreement=0.5))
        {'correlation/target_3/agreement': 0.5, 'correlation/agreement': 0.5}
    """
    tags = {f"correlation/target_{t.target_category}/agreement": t.agreement
            for t in record.targets if t.agreement is not None}
    if record.agreement is not None:
        tags["correlation/agreement"] = record.agreement
    return tags


def field_pair_tags(record: FieldPairRecord) -> dict[str, float]:
    """``correlation/field_pair/`` + ``samples``, ``other_fraction`` (the mean over fields) and, with a learned
    strength, ``agreement`` and ``agreement_interaction``.

    Example:
        >>> field_pair_tags(FieldPairRecord(samples=10, other_fraction=[0.0, 0.5]))
        {'correlation/field_pair/samples': 10.0, 'correlation/field_pair/other_fraction': 0.25}
    """
    fractions = record.other_fraction
    tags = {"correlation/field_pair/samples": float(record.samples),
            "correlation/field_pair/other_fraction": sum(fractions) / len(fractions) if fractions else float("nan")}
    if record.agreement is not None:
        tags["correlation/field_pair/agreement"] = record.agreement
        tags["correlation/field_pair/agreement_interaction"] = record.agreement_interaction
    return tags
