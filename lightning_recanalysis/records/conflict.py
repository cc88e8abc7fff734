"""The record of ``conflict/``: per view, field and task pair the statistics of the tasks' gradient cosines.

Numbers are keyed by (view, field, task pair) in the typed record; :func:`conflict_tags` turns a record into its
TensorBoard scalars (the one place tag strings are made), and the published dict keeps them under ``metrics``,
as every earlier version wrote them, so stored runs read back the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from .base import Part, TaggedRecord, transient

__all__ = ["ConflictRecord", "ConflictView", "PairStatistics", "TaskPair", "conflict_tags", "pair_name"]

#: Two tasks, in the monitor's task order.
TaskPair = tuple[str, str]

STATISTICS = ("cosine_mean", "negative_fraction", "norm_ratio", "probes", "cosine_std")


def pair_name(pair: TaskPair) -> str:
    """``a_vs_b``: how a task pair is written in tags.

    Example:
        >>> pair_name(("click", "buy"))
        'click_vs_buy'
    """
    return f"{pair[0]}_vs_{pair[1]}"


@dataclass
class PairStatistics(Part):
    """One task pair's gradient statistics over an epoch's measured probes (None where undefined).

    Attributes:
        cosine_mean: mean of cos(g_a, g_b) over the probes where both gradients are nonzero.
        negative_fraction: share of those probes with a negative cosine.
        norm_ratio: mean ||g_a|| / mean ||g_b||.
        probes: the probes with a defined cosine (None in records written before it was kept).
        cosine_std: the sample standard deviation of the cosine over those probes (None with fewer than two).
    """

    cosine_mean: float | None = None
    negative_fraction: float | None = None
    norm_ratio: float | None = None
    probes: int | None = None
    cosine_std: float | None = None

    optional_keys: ClassVar[tuple[str, ...]] = STATISTICS


@dataclass
class ConflictView(Part):
    """One view's statistics: the whole view's, and each field's when the view has several.

    Attributes:
        gradient_norm: per task, the mean norm of its gradient on the whole view.
        pairs: per task pair, on the whole view.
        fields: per field, per task pair.
    """

    gradient_norm: dict[str, float] = field(default_factory=dict)
    pairs: dict[TaskPair, PairStatistics] = field(default_factory=dict)
    fields: dict[str, dict[TaskPair, PairStatistics]] = field(default_factory=dict)

    #: The row label of the whole view in :meth:`cosine_matrix`.
    WHOLE: ClassVar[str] = "(whole view)"

    def cosine_matrix(self) -> tuple[list[str], list[TaskPair], list[list[float]]]:
        """Rows (the whole view, then each field), task pairs, and the mean cosine of each (NaN where undefined):
        the view's field x task-pair map, as the live image and the report draw it.

        Example:
            >>> view = ConflictView(pairs={("a", "b"): PairStatistics(0.2)},
            ...                     fields={"user": {("a", "b"): PairStatistics(-0.5)}, "item": {}})
            >>> view.cosine_matrix()
            (['(whole view)', 'user', 'item'], [('a', 'b')], [[0.2], [-0.5], [nan]])
        """
        rows = [(self.WHOLE, self.pairs)] + list(self.fields.items())
        pairs = list(dict.fromkeys(p for _, by_pair in rows for p in by_pair))
        nan = float("nan")
        matrix = [[nan if (s := by_pair.get(p)) is None or s.cosine_mean is None else s.cosine_mean for p in pairs]
                  for _, by_pair in rows]
        return [name for name, _ in rows], pairs, matrix


@dataclass
class ConflictRecord(TaggedRecord):
    """One epoch of :class:`~lightning_recanalysis.GradientConflictMonitor` (``stage`` ``"train"``).

    Attributes:
        tasks: the compared tasks, in order.
        world_size: processes whose probes the statistics pool.
        measured_steps / skipped_steps: probes that measured two tasks or more / that could not (all processes).
        problems: bad input of this process by kind (``"missing:<task>"``, ``"nonfinite:<task>"``,
            ``"unreached:<task>"``, ``"no-lookup"``, ``"no-measured-steps"``): how many times it was met.
        views: by view name (published as ``metrics``, by tag: see :func:`conflict_tags`).
        per_step_cosines: this rank's cosine of each probe, by (view, task pair), ``[probes x fields]`` (transient:
            for the live histograms).

    Example:
        >>> stats = PairStatistics(cosine_mean=-0.5, negative_fraction=0.8)
        >>> r = ConflictRecord(stage="train", epoch=0, step=8, tasks=["click", "buy"], measured_steps=4,
        ...                    views={"emb": ConflictView(fields={"user": {("click", "buy"): stats}})})
        >>> r.metrics  # the scalars, by tag
        {'conflict/measured_steps': 4.0, 'conflict/skipped_steps': 0.0, 'conflict/emb/user/click_vs_buy/cosine_mean': -0.5, 'conflict/emb/user/click_vs_buy/negative_fraction': 0.8}
        >>> ConflictRecord.from_dict(r.to_dict()) == r
        True
    """

    tasks: list[str] = field(default_factory=list)
    world_size: int = 1
    measured_steps: int = 0
    skipped_steps: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    views: dict[str, ConflictView] = field(default_factory=dict)
    per_step_cosines: dict[tuple[str, TaskPair], Any] = transient(None)

    in_metrics: ClassVar[tuple[str, ...]] = ("views",)
    metrics_after: ClassVar[str | None] = "problems"

    def tags(self) -> dict[str, float]:
        return conflict_tags(self)

    def read_tags(self, metrics: Mapping[str, float]) -> None:
        self.views = _parse_metrics(metrics, self.tasks)

    def pair_statistics(self) -> dict[tuple[str, str | None, TaskPair], PairStatistics]:
        """Every (view, field, task pair) -> statistics; field None for the whole view.

        Example:
            >>> view = ConflictView(pairs={("a", "b"): PairStatistics(cosine_mean=0.1)})
            >>> list(ConflictRecord(tasks=["a", "b"], views={"emb": view}).pair_statistics())
            [('emb', None, ('a', 'b'))]
        """
        out = {}
        for name, view in self.views.items():
            out.update({(name, None, pair): s for pair, s in view.pairs.items()})
            for fld, pairs in view.fields.items():
                out.update({(name, fld, pair): s for pair, s in pairs.items()})
        return out


def conflict_tags(record: ConflictRecord) -> dict[str, float]:
    """The scalars of a conflict record by TensorBoard tag: ``conflict/measured_steps``, ``.../skipped_steps``,
    ``conflict/<view>/<task>/gradient_norm`` and ``conflict/<view>[/<field>]/<a>_vs_<b>/<statistic>``."""
    tags = {"conflict/measured_steps": float(record.measured_steps),
            "conflict/skipped_steps": float(record.skipped_steps)}
    for name, view in record.views.items():
        for task, norm in view.gradient_norm.items():
            tags[f"conflict/{name}/{task}/gradient_norm"] = norm
        rows = [(f"conflict/{name}", view.pairs)] + [(f"conflict/{name}/{f}", p) for f, p in view.fields.items()]
        for prefix, pairs in rows:
            for pair, stats in pairs.items():
                for stat, value in stats.to_dict().items():
                    tags[f"{prefix}/{pair_name(pair)}/{stat}"] = float(value)
    return tags


def _parse_metrics(metrics: Mapping[str, float], tasks: list[str]) -> dict[str, ConflictView]:
    """The typed views of a published ``metrics`` dict (the tags of :func:`conflict_tags`)."""
    pairs = {pair_name((a, b)): (a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:]}
    views: dict[str, ConflictView] = {}
    for tag, value in metrics.items():
        parts = tag.split("/")
        if len(parts) == 4 and parts[3] == "gradient_norm" and parts[2] in tasks:
            views.setdefault(parts[1], ConflictView()).gradient_norm[parts[2]] = value
        elif len(parts) in (4, 5) and parts[-2] in pairs and parts[-1] in STATISTICS:
            view = views.setdefault(parts[1], ConflictView())
            where = view.pairs if len(parts) == 4 else view.fields.setdefault(parts[2], {})
            value = int(value) if parts[-1] == "probes" else value
            setattr(where.setdefault(pairs[parts[-2]], PairStatistics()), parts[-1], value)
    return views
