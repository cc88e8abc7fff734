"""A finding: one claim of an analysis, against the baseline a healthy model sets, with its uncertainty and advice.

Every analysis' ``*_findings(records, thresholds)`` returns :class:`Finding` objects; the monitors' live Text tabs
and the report show the same ones (:func:`findings_markdown`), problems first and by how much they matter.

- ``verdict``: ``"problem"`` (the evidence clears the rule's baseline and its uncertainty: act on it),
  ``"inconclusive"`` (a hint the data cannot yet support; the text says what would settle it) or ``"fine"`` (a
  number that looks alarming and is not, said so that nobody acts on it: a field bounded by its cardinality, a
  spectrum that concentrated while every dimension stayed in use).
- ``severity``: 0 to 1, how much it matters; problems are ordered by it.
- ``advice``: what it means for the model and what to try, with the published remedy where there is one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

__all__ = ["VERDICTS", "Finding", "findings_markdown", "ranked"]

#: The verdicts, most pressing first.
VERDICTS = ("problem", "inconclusive", "fine")


@dataclass
class Finding:
    """One claim of an analysis.

    Attributes:
        analysis: the namespace (``"collapse"``, ``"conflict"``, ``"correlation"``, ...).
        kind: what is claimed (``"collapse"``, ``"interaction_collapse"``, ``"conflict"``, ``"missed_correlation"``,
            ``"no_signal"``, ...).
        verdict: ``"problem"``, ``"inconclusive"`` or ``"fine"``.
        subject: what it is about (``"embedding/F2"``, ``"emb/user/click_vs_buy"``).
        text: the claim with its baseline and uncertainty (Markdown).
        advice: one line: what it means and what to try.
        severity: 0 to 1, how much it matters.

    Example:
        >>> f = Finding("conflict", "conflict", "problem", "emb/user/a_vs_b", "Tasks **a** and **b** conflict.",
        ...             "Give each task its own embedding.", 0.6)
        >>> f.to_dict()["verdict"], f.is_problem
        ('problem', True)
    """

    analysis: str
    kind: str
    verdict: str
    subject: str
    text: str
    advice: str = ""
    severity: float = 0.0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def is_problem(self) -> bool:
        return self.verdict == "problem"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """One list item: the verdict, the claim, and the advice on its own line."""
        label = {"problem": "**Problem**", "inconclusive": "Inconclusive", "fine": "Fine"}[self.verdict]
        advice = f"  \n  *What to do:* {self.advice}" if self.advice else ""
        return f"- {label}: {self.text}{advice}"


def ranked(findings: Iterable[Finding]) -> list[Finding]:
    """Problems first, then inconclusive, then fine; within each, the most severe first (stable otherwise).

    Example:
        >>> a = Finding("collapse", "bounded", "fine", "t/a", "a")
        >>> b = Finding("collapse", "collapse", "problem", "t/b", "b", severity=0.2)
        >>> c = Finding("collapse", "collapse", "problem", "t/c", "c", severity=0.9)
        >>> [f.subject for f in ranked([a, b, c])]
        ['t/c', 't/b', 't/a']
    """
    return sorted(findings, key=lambda f: (VERDICTS.index(f.verdict), -f.severity))


def findings_markdown(findings: Iterable[Finding], nothing: str = "nothing to report yet") -> str:
    """The findings as a Markdown list, ranked (:func:`ranked`), for the live Text tab.

    Example:
        >>> print(findings_markdown([Finding("conflict", "conflict", "inconclusive", "emb", "Too few probes.")]))
        - Inconclusive: Too few probes.
        >>> findings_markdown([])
        '- nothing to report yet'
    """
    items = [f.markdown() for f in ranked(findings)]
    return "\n".join(items) if items else f"- {nothing}"
