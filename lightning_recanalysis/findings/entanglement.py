"""Findings of ``entanglement/``: how far each embedding view reproduces each task's single-task geometry on the
pairs that single-task models disagree on (the authors' conflict subsets, Pan et al., KDD 2024).

A view's agreement with task t is the mean, over the conflict modes that involve t, of the share of those pairs
it places as t's single-task model does minus the share it places the other way: 1 = as t's own model, about 0
by chance. A shared view cannot serve two tasks that disagree on a pair; a task's own chunk (STEM) can. These are
**fine** findings (what the geometry is), except a task chunk that does not reproduce its own task (agreement
<= 0), which is **inconclusive**: a chunk that does not serve its task.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..records import EntanglementRecord
from .finding import Finding
from .thresholds import ReportThresholds

__all__ = ["entanglement_findings", "own_task", "reproduction_sentence", "view_reproduction"]


def view_reproduction(part: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{view: {task: mean agreement over the modes that involve the task}}``.

    The agreement of a view with task t on mode ``f_far_n_near`` (t = f or n) is ``top - bottom`` share of the
    mode's pairs if t is the far task, ``bottom - top`` if the near one
    (:func:`~lightning_recanalysis.functional.conflict_subset.geometry_agreement`); the mean over both modes of
    two tasks is 1 when the view places every conflict pair as t's single-task model does, about 0 by chance.

    Example:
        >>> from lightning_recanalysis.toy import toy_conflict_subsets
        >>> view_reproduction(toy_conflict_subsets({"emb[a]": (0.75, 0.25, 0.25, 0.5)}))  # a: (0.5 + 0.25) / 2
        {'emb[a]': {'a': 0.375, 'b': -0.375}}
    """
    out: dict[str, dict[str, float]] = {}
    for view, view_part in part.get("views", {}).items():
        sums: dict[str, list[float]] = {}
        for mode in view_part["modes"].values():
            for task, value in mode["agreement"].items():
                if value is not None and value == value:
                    sums.setdefault(task, []).append(value)
        out[view] = {task: sum(v) / len(v) for task, v in sums.items() if v}
    return out


def own_task(view: str, tasks) -> str | None:
    """The task whose chunk a view is (``table[task]``), or None for a shared view.

    Example:
        >>> own_task("emb[click]", ["click", "buy"]), own_task("emb[shared]", ["click", "buy"])
        ('click', None)
    """
    return next((t for t in tasks if view.endswith(f"[{t}]")), None)


def reproduction_sentence(view: str, agreement: Mapping[str, float], part: Mapping[str, Any], run: str = "") -> str:
    """One finding: how far ``view`` reproduces each task's single-task geometry on the conflict pairs.

    Example:
        >>> from lightning_recanalysis.toy import toy_conflict_subsets
        >>> part = toy_conflict_subsets({"emb": (0.5, 0.25, 0.25, 0.25)})
        >>> print(reproduction_sentence("emb", view_reproduction(part)["emb"], part))
        `emb` (shared by every task) reproduces the single-task geometries on the conflict pairs at a +0.12,
        b -0.12 (at best +0.12): one distance per pair cannot place a pair far for one task and near for the other.
    """
    who = f"{run}'s " if run else ""
    task = own_task(view, part["tasks"])
    values = ", ".join(f"{t} {a:+.2f}" for t, a in agreement.items())
    if task is not None:
        modes = [(m, d) for m, d in part["views"][view]["modes"].items() if m.startswith(f"{task}_far_")]
        where = ""
        if modes and modes[0][1]["shares"]["top"] == modes[0][1]["shares"]["top"]:
            mode, data = modes[0]
            where = (f"; it puts {data['shares']['top']:.0%} of the {mode.replace('_', ' ')} pairs in its top "
                     f"{100 - part['high']:g}%")
        return (f"{who}task chunk `{view}` reproduces its own task's single-task geometry on the conflict pairs: "
                f"agreement {agreement.get(task, float('nan')):+.2f} with {task} (all: {values}){where}.")
    best = max(agreement.values(), default=float("nan"))
    return (f"{who}`{view}` (shared by every task) reproduces the single-task geometries on the conflict pairs at "
            f"{values} (at best {best:+.2f}): one distance per pair cannot place a pair far for one task and near "
            "for the other.")


def entanglement_findings(records: Sequence[EntanglementRecord], thresholds: ReportThresholds) -> list[Finding]:
    """One finding per view of the last validation record with conflict subsets; none without references.

    Example:
        >>> from lightning_recanalysis.toy import toy_conflict_subsets
        >>> part = toy_conflict_subsets({"emb[a]": (0.75, 0.25, 0.25, 0.5), "emb[shared]": (0.5, 0.25, 0.25, 0.25)})
        >>> record = EntanglementRecord(stage="validation", tasks=["a", "b"], conflict=part)
        >>> [(f.subject, f.verdict) for f in entanglement_findings([record], None)]
        [('emb[a]', 'fine'), ('emb[shared]', 'fine')]
    """
    last = next((r for r in reversed(list(records)) if r.stage == "validation" and r.conflict), None)
    if last is None:
        return []
    part = last.conflict
    agreement = view_reproduction(part)
    found = []
    for view in part["views"]:
        task = own_task(view, part["tasks"])
        text = reproduction_sentence(view, agreement[view], part)
        if task is not None and not agreement[view].get(task, float("nan")) > 0:
            found.append(Finding("entanglement", "geometry", "inconclusive", view, text,
                                 f"The chunk meant for {task} does not place the conflict pairs as {task}'s own model "
                                 "does: check that only that task's loss reaches it.", severity=0.2))
        elif task is not None:
            found.append(Finding("entanglement", "geometry", "fine", view, text,
                                 "A task's own chunk serves its task where the tasks disagree (STEM's point)."))
        else:
            found.append(Finding("entanglement", "geometry", "fine", view, text,
                                 "Expected of a shared embedding; if the tasks' disagreement costs accuracy, "
                                 "task-specific chunks (STEM, Su et al., AAAI 2024) can serve both."))
    return found
