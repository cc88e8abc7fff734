"""The records the monitors keep, one typed class per analysis, shared by a monitor and its report section.

A monitor's ``compute`` returns one of these; the base class keeps it in ``history`` and publishes it to the
event file as a plain dict (:meth:`Record.to_dict`: numbers, strings, lists and dicts only), which is what a
checkpoint stores (torch loads them with ``weights_only=True``) and what the report reads back from event files.
:meth:`Record.from_dict` turns such a dict (from ``history``, a checkpoint or an event file) back into the typed
record; keys it does not know (a newer writer) are kept in ``extra`` and written back, so nothing is lost.

The nested parts (a view's fields, a target's map) stay plain dicts: their keys are listed in each class's
docstring. A leaf module: it imports nothing from the package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, TypeVar

__all__ = [
    "BehaviorTargetRecord", "ConflictRecord", "EntanglementRecord", "FieldPairRecord", "Record", "SpectrumRecord",
]

R = TypeVar("R", bound="Record")


@dataclass
class Record:
    """What every record holds: when it was made.

    Attributes:
        stage: ``"init"`` (the initial weights, before the first step) or ``"epoch"`` (the end of an epoch).
        epoch: the epoch (0 for ``"init"``).
        step: ``trainer.global_step`` when it was made: the step of its TensorBoard values.
        extra: keys of a published record this class does not know, kept as they were.

    Example:
        >>> Record(stage="init").to_dict()
        {'stage': 'init', 'epoch': 0, 'step': 0}
        >>> Record.from_dict({"stage": "epoch", "epoch": 1, "step": 40, "written_later": 3}).extra
        {'written_later': 3}
    """

    stage: str = "epoch"
    epoch: int = 0
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    #: Keys left out of :meth:`to_dict` when their value is None (absent in records written before they existed).
    optional_keys: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The published form: ``stage``, ``epoch``, ``step``, then the analysis' keys in declaration order."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self.optional_keys:
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The typed record of a published dict; a key the dict lacks takes its field's default (None).

        Example:
            >>> record = FieldPairRecord.from_dict({"stage": "epoch", "epoch": 2, "step": 40, "samples": 512})
            >>> record.samples, record.agreement
            (512, None)
            >>> record.to_dict()["samples"]
            512
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**known, extra=extra)


@dataclass
class SpectrumRecord(Record):
    """One analysis of :class:`~lightning_recanalysis.EmbeddingSpectrumMonitor`.

    Attributes:
        views: by view name, ``{"width", "table", "group", "fields", "excluded_rows"}`` (a field set adds
            ``"tables"``); ``fields`` by field name ``{"cardinality", "information_abundance", "effective_rank",
            "stable_rank", "normalized_spectrum", "excluded_rows"}``.
        interaction: the interaction matrix, ``{"view", "layer", "fields", "matrix"}`` (optionally
            ``"source_fields"``, ``"kernel"``), or None without a cross layer (then absent from the dict).

    Example:
        >>> r = SpectrumRecord(stage="init", epoch=0, step=0, views={})
        >>> r.to_dict()
        {'stage': 'init', 'epoch': 0, 'step': 0, 'views': {}}
    """

    views: dict[str, Any] = field(default_factory=dict)
    interaction: dict[str, Any] | None = None

    optional_keys: ClassVar[tuple[str, ...]] = ("interaction",)


@dataclass
class BehaviorTargetRecord(Record):
    """One analysis of :class:`~lightning_recanalysis.FeatureCorrelationMonitor`.

    Attributes:
        samples: training samples counted (all processes).
        positive_rate: share of them with label 1.
        same_category_positions / same_category_mi: MI (bits) by position of "the behaviour at p has the
            target's category" vs the label.
        targets: per analysed target category ``{"target_category", "name", "samples", "positions",
            "behavior_categories", "behavior_names", "ground_truth_mi", "ground_truth", "learned", "agreement"}``.
        agreement: the mean of the targets' agreements (None without learned maps).

    Example:
        >>> BehaviorTargetRecord(stage="epoch", epoch=0, step=8, samples=64).to_dict()["positive_rate"]
        0.0
    """

    samples: int = 0
    positive_rate: float = 0.0
    same_category_positions: list[int] = field(default_factory=list)
    same_category_mi: list[float] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
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


@dataclass
class ConflictRecord(Record):
    """One epoch of :class:`~lightning_recanalysis.GradientConflictMonitor` (``stage`` ``"train"``).

    Attributes:
        tasks: the compared tasks, in order.
        world_size: processes whose probes the statistics pool.
        measured_steps / skipped_steps: probes that measured two tasks or more / that could not (all processes).
        problems: bad input of this process by kind (``"missing:<task>"``, ``"nonfinite:<task>"``,
            ``"unreached:<task>"``, ``"no-lookup"``, ``"no-measured-steps"``): how many times it was met.
        metrics: the epoch's scalars by TensorBoard tag (``conflict/<view>[/<field>]/<a>_vs_<b>/cosine_mean``,
            ``.../negative_fraction``, ``.../norm_ratio``, ``conflict/<view>/<task>/gradient_norm``, ...).

    Example:
        >>> r = ConflictRecord(stage="train", epoch=0, step=8, tasks=["click", "buy"], measured_steps=4)
        >>> ConflictRecord.from_dict(r.to_dict()) == r
        True
    """

    tasks: list[str] = field(default_factory=list)
    world_size: int = 1
    measured_steps: int = 0
    skipped_steps: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class EntanglementRecord(Record):
    """One validation epoch of :class:`~lightning_recanalysis.EntanglementMonitor` (``stage`` ``"validation"``).

    Attributes:
        tasks: the tasks, in order; views: the analysed views (``table``, ``table[group]``, ``user~item[group]``).
        world_size: processes whose validation pairs were gathered.
        metrics: the scalars by TensorBoard tag (``entanglement/<view>[/<subset>]/distance_mean``,
            ``entanglement/<subset>/pairs``, ``entanglement/<task>/auroc/<subset>``, the conflict subsets' ...).
        histograms: per view and label subset the distance density on the view's 39-bin grid,
            ``{view: {subset: {"centers", "density"}}}``.
        conflict: the conflict subsets (with single-task references; None, absent from the dict, without):
            ``{"tasks", "high", "low", "bins", "frequent_only", "validation_pairs", "pairs", "references", "modes",
            "views"}``, each view ``{"modes", "edges", "low", "high", "rank_correlation"}``.

    Example:
        >>> r = EntanglementRecord(stage="validation", tasks=["click", "buy"], views=["emb"])
        >>> "conflict" in r.to_dict()  # absent without references
        False
    """

    tasks: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    world_size: int = 1
    metrics: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Any] = field(default_factory=dict)
    conflict: dict[str, Any] | None = None

    optional_keys: ClassVar[tuple[str, ...]] = ("conflict",)
