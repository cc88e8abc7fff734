"""The record of ``entanglement/``: each task's embedding view of (user, item) pairs, by label subset.

Numbers are keyed by view, label subset and task in the typed record; :func:`entanglement_tags` turns a record into
its TensorBoard scalars (the one place tag strings are made), and the published dict keeps them under
``metrics``, as every earlier version wrote them, so stored runs read back the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from .base import Part, TaggedRecord, transient

__all__ = ["EntanglementRecord", "EntanglementView", "entanglement_tags"]

PREFIX = "entanglement"
CONFLICT = f"{PREFIX}/conflict"


@dataclass
class EntanglementView(Part):
    """One view's user-item distances: the mean over all validation pairs and over each non-empty label subset."""

    distance_mean: float | None = None
    subsets: dict[str, float] = field(default_factory=dict)


@dataclass
class EntanglementRecord(TaggedRecord):
    """One validation epoch of :class:`~lightning_recanalysis.EntanglementMonitor` (``stage`` ``"validation"``).

    Attributes:
        tasks: the tasks, in order; views: the analysed views (``table``, ``table[group]``, ``user~item[group]``).
        world_size: processes whose validation pairs were gathered.
        pairs: validation pairs; subset_pairs: pairs per label subset (``both``, ``click_only``, ...; every
            subset, empty ones too).
        distances: per view, the mean user-item distance (:class:`EntanglementView`).
        auroc: per task and sample subset (``all``, ``labels_agree``, ``given_<other>_pos``, ...) its AUROC, where
            defined.
        histograms: per view and label subset the distance density on the view's 39-bin grid,
            ``{view: {subset: {"centers", "density"}}}``.
        conflict: the conflict subsets (with single-task references; None, absent from the dict, without):
            ``{"tasks", "high", "low", "bins", "frequent_only", "validation_pairs", "pairs", "references", "modes",
            "views"}``, each view ``{"modes", "edges", "low", "high", "rank_correlation"}``.
        histogram_samples: the values the live histograms bin, by tag (transient).

    The published dict holds ``pairs``, ``subset_pairs``, ``distances`` and ``auroc`` as ``metrics`` by tag
    (:func:`entanglement_tags`).

    Example:
        >>> r = EntanglementRecord(stage="validation", tasks=["click", "buy"], views=["emb"], pairs=4,
        ...                        subset_pairs={"both": 1, "neither": 3},
        ...                        distances={"emb": EntanglementView(2.0, {"both": 1.0, "neither": 2.5})})
        >>> r.metrics["entanglement/emb/both/distance_mean"], "conflict" in r.to_dict()  # absent without references
        (1.0, False)
        >>> EntanglementRecord.from_dict(r.to_dict()) == r
        True
    """

    tasks: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    world_size: int = 1
    pairs: int = 0
    subset_pairs: dict[str, int] = field(default_factory=dict)
    distances: dict[str, EntanglementView] = field(default_factory=dict)
    auroc: dict[str, dict[str, float]] = field(default_factory=dict)
    histograms: dict[str, Any] = field(default_factory=dict)
    conflict: dict[str, Any] | None = None
    histogram_samples: dict[str, Any] = transient(None)

    optional_keys: ClassVar[tuple[str, ...]] = ("conflict",)
    in_metrics: ClassVar[tuple[str, ...]] = ("pairs", "subset_pairs", "distances", "auroc")
    metrics_after: ClassVar[str | None] = "world_size"

    def tags(self) -> dict[str, float]:
        return entanglement_tags(self)

    def read_tags(self, metrics: Mapping[str, float]) -> None:
        _parse_metrics(self, metrics)


def entanglement_tags(record: EntanglementRecord) -> dict[str, float]:
    """The scalars of an entanglement record by TensorBoard tag: ``entanglement/pairs``,
    ``entanglement/<subset>/pairs``, ``entanglement/<view>[/<subset>]/distance_mean``,
    ``entanglement/<task>/auroc/<subset>`` and, with references, the conflict subsets' ``entanglement/conflict/...``
    (``selected_pairs``; ``<mode>/pairs``, ``<mode>/fraction``; ``<view>/<mode>/share_<where>``,
    ``<view>/<mode>/agreement_<task>``; ``<view>/rank_correlation_<task>``)."""
    tags = {f"{PREFIX}/pairs": float(record.pairs)}
    tags.update({f"{PREFIX}/{subset}/pairs": float(n) for subset, n in record.subset_pairs.items()})
    for view, d in record.distances.items():
        if d.distance_mean is not None:
            tags[f"{PREFIX}/{view}/distance_mean"] = d.distance_mean
        tags.update({f"{PREFIX}/{view}/{subset}/distance_mean": v for subset, v in d.subsets.items()})
    for task, by_subset in record.auroc.items():
        tags.update({f"{PREFIX}/{task}/auroc/{subset}": v for subset, v in by_subset.items()})
    part = record.conflict
    if part is not None:
        tags[f"{CONFLICT}/selected_pairs"] = float(part["pairs"])
        for mode, m in part["modes"].items():
            tags[f"{CONFLICT}/{mode}/pairs"] = float(m["pairs"])
            tags[f"{CONFLICT}/{mode}/fraction"] = m["pairs"] / part["pairs"]
        for view, v in part["views"].items():
            for mode, m in v["modes"].items():
                tags.update({f"{CONFLICT}/{view}/{mode}/share_{k}": x for k, x in m["shares"].items()})
                tags.update({f"{CONFLICT}/{view}/{mode}/agreement_{t}": x for t, x in m["agreement"].items()})
            tags.update({f"{CONFLICT}/{view}/rank_correlation_{t}": x for t, x in v["rank_correlation"].items()})
    return tags


def _parse_metrics(record: EntanglementRecord, metrics: Mapping[str, float]) -> None:
    """Fill the typed numbers of ``record`` from a published ``metrics`` dict (the tags of
    :func:`entanglement_tags`; the conflict subsets' are derived from the ``conflict`` part and skipped here)."""
    views = sorted(record.views, key=len, reverse=True)  # the longest name first: a view may prefix another
    for tag, value in metrics.items():
        if not tag.startswith(PREFIX + "/") or tag.startswith(CONFLICT + "/"):
            continue
        rest = tag[len(PREFIX) + 1:]
        if rest == "pairs":
            record.pairs = int(value)
        elif rest.endswith("/distance_mean"):
            body = rest[: -len("/distance_mean")]
            view = next((v for v in views if body == v or body.startswith(v + "/")), None)
            if view is None:
                continue
            d = record.distances.setdefault(view, EntanglementView())
            if body == view:
                d.distance_mean = value
            else:
                d.subsets[body[len(view) + 1:]] = value
        elif rest.endswith("/pairs") and rest.count("/") == 1:
            record.subset_pairs[rest[: -len("/pairs")]] = int(value)
        elif "/auroc/" in rest:
            task, subset = rest.split("/auroc/", 1)
            record.auroc.setdefault(task, {})[subset] = value
