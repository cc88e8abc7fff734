"""Findings of ``conflict/``: do two tasks pull a shared embedding apart, beyond what noise explains?

For each (view, field, task pair) the probes of the last ``conflict_window`` analysed epochs are pooled: n probes
with a defined cosine, their mean cosine c-bar with its t interval, and the number k of negative ones. The rule:

- **problem**: n >= ``conflict_min_probes``, the interval's upper end below 0, c-bar <= -``conflict_min_cosine``
  (a minimum size: a tiny but consistent negative cosine costs the tasks little), and the sign test (k or more negatives
  out of n under p = 1/2) below ``alpha`` / m, with m the pairs tested (Bonferroni over fields and task pairs);
- **inconclusive**: c-bar < 0 without that support; the text says how many probes there were and what gives more;
- nothing is said of a pair whose cosine is positive: the tasks agree there.

A view with several fields is judged per field; a view of one field (a table per feature) on the whole view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..records import ConflictRecord, ConflictView, pair_name
from .finding import Finding
from .thresholds import ReportThresholds
from .uncertainty import mean_interval, sign_test

__all__ = ["PooledCosines", "conflict_findings", "pooled_cosines"]

ADVICE = ("The tasks want different things of these rows: give each task its own embedding beside a shared one "
          "(STEM, Su et al., AAAI 2024), or task-specific tables for this field.")
INCONCLUSIVE_ADVICE = ("Probe more often (a smaller `every_n_steps` of GradientConflictMonitor) or for more epochs; "
                       "a mean cosine this close to 0 may be noise.")


@dataclass
class PooledCosines:
    """The probes of one (view, field, task pair), pooled over epochs: count, sum, sum of squares, negatives."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    negative: int = 0
    epochs: int = 0
    exact: bool = True  # False when a record lacks the spread (written before it was recorded)


def pooled_cosines(records: Sequence[ConflictRecord], window: int
                   ) -> dict[tuple[str, str | None, tuple[str, str]], PooledCosines]:
    """Per (view, field or None for the whole view, task pair), the probes of the last ``window`` records pooled.

    Each record's statistics give back its sums exactly: sum = n c-bar, sum of squares = (n - 1) s^2 + n c-bar^2.

    Example:
        >>> from lightning_recanalysis.records import PairStatistics
        >>> def epoch(mean, std):
        ...     stats = PairStatistics(cosine_mean=mean, negative_fraction=0.5, probes=4, cosine_std=std)
        ...     return ConflictRecord(stage="train", tasks=["a", "b"], views={"v": ConflictView(pairs={("a", "b"): stats})})
        >>> pooled = pooled_cosines([epoch(0.1, 0.2), epoch(-0.1, 0.2)], window=4)[("v", None, ("a", "b"))]
        >>> pooled.n, round(pooled.total, 6), pooled.negative
        (8, 0.0, 4)
    """
    out: dict[tuple[str, str | None, tuple[str, str]], PooledCosines] = {}
    for record in list(records)[-window:]:
        for key, stats in record.pair_statistics().items():
            if stats.cosine_mean is None:
                continue
            n = stats.probes if stats.probes is not None else record.measured_steps
            pooled = out.setdefault(key, PooledCosines())
            pooled.n += n
            pooled.total += n * stats.cosine_mean
            if stats.cosine_std is None:
                pooled.exact = False
            else:
                pooled.total_sq += (n - 1) * stats.cosine_std ** 2 + n * stats.cosine_mean ** 2
            pooled.negative += round((stats.negative_fraction or 0.0) * n)
            pooled.epochs += 1
    return out


def _judged(view: ConflictView, field: str | None) -> bool:
    """Per field in a view of several fields; the whole view only where it is the one field."""
    return (field is not None) or not view.fields


def conflict_findings(records: Sequence[ConflictRecord], thresholds: ReportThresholds) -> list[Finding]:
    """The conflict findings of the last epochs (see the module's rule), most negative first.

    Example:
        >>> from lightning_recanalysis.records import PairStatistics
        >>> stats = PairStatistics(cosine_mean=-0.6, negative_fraction=1.0, probes=12, cosine_std=0.1)
        >>> record = ConflictRecord(stage="train", epoch=3, tasks=["a", "b"], measured_steps=12,
        ...                         views={"emb": ConflictView(fields={"user": {("a", "b"): stats}, "item": {}})})
        >>> [(f.verdict, f.subject) for f in conflict_findings([record], ReportThresholds())]
        [('problem', 'emb/user/a_vs_b')]
    """
    epochs = [r for r in records if r.stage == "train"]
    if not epochs:
        return []
    last = epochs[-1]
    pooled = {key: p for key, p in pooled_cosines(epochs, thresholds.conflict_window).items()
              if key[0] in last.views and _judged(last.views[key[0]], key[1])}
    tested = max(1, len(pooled))
    found = []
    for (view, field, pair), p in pooled.items():
        where = "the whole view" if field is None else f"field **{field}**"
        subject = f"{view}/{field or ConflictView.WHOLE}/{pair_name(pair)}"
        mean, low, high = mean_interval(p.n, p.total, p.total_sq) if p.exact else (p.total / max(1, p.n), -1.0, 1.0)
        if not mean < 0:
            continue
        sign_p = sign_test(p.negative, p.n)
        span = f"{p.epochs} epoch{'s' if p.epochs > 1 else ''}"
        interval = f"95% interval {low:+.2f} to {high:+.2f}, " if p.exact and p.n >= 2 else ""
        evidence = (f"mean gradient cosine {mean:+.2f} ({interval}{p.n} probes over the last {span}), negative on "
                    f"{p.negative} of {p.n} (sign test p = {sign_p:.2g})")
        supported = (p.n >= thresholds.conflict_min_probes and high < 0 and mean <= -thresholds.conflict_min_cosine
                     and sign_p < thresholds.alpha / tested)
        if supported:
            found.append(Finding(
                "conflict", "conflict", "problem", subject,
                f"Tasks **{pair[0]}** and **{pair[1]}** pull {where} of `{view}` in opposite directions: {evidence}.",
                ADVICE, severity=min(1.0, -mean)))
        else:
            why = (f"only {p.n} probes (at least {thresholds.conflict_min_probes} are needed)"
                   if p.n < thresholds.conflict_min_probes else
                   "too small to matter" if high < 0 and mean > -thresholds.conflict_min_cosine else
                   "not distinguishable from noise")
            found.append(Finding(
                "conflict", "inconclusive", "inconclusive", subject,
                f"Tasks **{pair[0]}** and **{pair[1]}** on {where} of `{view}`: {evidence}: {why}.",
                INCONCLUSIVE_ADVICE if "noise" in why or "probes" in why else
                "A consistent but tiny negative cosine: the tasks barely interfere here.", severity=min(1.0, -mean) / 4))
    return sorted(found, key=lambda f: -f.severity)
