"""``compare``'s tables by analysis, view and field: the runs' numbers lined up by what they measure, not by tag.

Two runs of one network often name its tables differently: the concatenated DCNv2 keeps its eight fields in one
table (``embedding.embedding``), the per-feature DCNv2 in eight (the field set ``embedding_dict``), a renamed
module moves every tag. Their tags share nothing, but their fields do. So each analysis' views are matched across
the runs (:func:`match_views`): a view of the same name, else the view that shares the most field names; the
mapping is stated in the table's title and in a note. Rows are then fields (and task pairs), with one column per
run and one difference column per run after the first (:func:`value_cells`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..findings.formatting import format_value

__all__ = ["ViewMatch", "difference_headers", "difference_note", "field_rows", "mapping_notes", "match_views",
           "run_labels", "value_cells"]


def run_labels(names: Sequence[str]) -> list[str]:
    """Short column labels for runs: a last path part every name shares (``monitors``) is left out.

    Example:
        >>> run_labels(["dcnv2-synthetic/monitors", "dcnv2_per_feature-synthetic/monitors"])
        ['dcnv2-synthetic', 'dcnv2_per_feature-synthetic']
        >>> run_labels(["a/monitors", "b/version_0"])
        ['a/monitors', 'b/version_0']
    """
    tails = {n.rsplit("/", 1)[-1] for n in names}
    if len(tails) == 1 and all("/" in n for n in names):
        short = [n.rsplit("/", 1)[0] for n in names]
        if len(set(short)) == len(short):
            return short
    return list(names)


def difference_headers(labels: Sequence[str]) -> list[str]:
    """The difference columns: each run after the first minus the first (for two runs one column, "difference",
    whose direction :func:`difference_note` states).

    Example:
        >>> difference_headers(["mmoe", "stem"]), difference_headers(["mmoe", "stem", "ple"])
        (['difference'], ['stem - mmoe', 'ple - mmoe'])
    """
    if len(labels) == 2:
        return ["difference"]
    return [f"{label} - {labels[0]}" for label in labels[1:]]


def difference_note(labels: Sequence[str]) -> str:
    """What the difference columns hold, for a section's notes.

    Example:
        >>> difference_note(["mmoe", "stem"])
        'difference: stem minus mmoe.'
    """
    if len(labels) == 2:
        return f"difference: {labels[1]} minus {labels[0]}."
    return f"differences: each run minus {labels[0]}."


def _number(value: float | None, digits: int, sign: bool = False, count: bool = False) -> str:
    """``digits`` decimals; ``count`` (whole numbers, one of 1000 or more: a sample count) without decimals."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if count:
        return f"{value:+,.0f}" if sign else f"{value:,.0f}"
    return f"{value:+.{digits}f}" if sign else format_value(value, digits)


def value_cells(values: Sequence[float | None], digits: int = 3) -> list[str]:
    """One cell per run, then each later run's difference from the first ('-' where either is missing).

    Example:
        >>> value_cells([0.5, 0.25, None])
        ['0.500', '0.250', '-', '-0.250', '-']
        >>> value_cells([180000.0, 180000.0])
        ['180,000', '180,000', '+0']
    """
    first = values[0]
    diffs = [None if first is None or v is None else v - first for v in values[1:]]
    known = [float(v) for v in values if v is not None and math.isfinite(v)]
    count = bool(known) and all(v.is_integer() for v in known) and max(abs(v) for v in known) >= 1000
    return [_number(v, digits, count=count) for v in values] + [_number(d, digits, True, count) for d in diffs]


@dataclass
class ViewMatch:
    """One view lined up across runs: ``views[run]`` the run's view (absent: the run has none that matches),
    ``fields`` the field names in the first run's order, ``how`` in words."""

    views: dict[str, str]
    fields: list[str]
    how: str = ""
    shared: list[str] = field(default_factory=list)

    def title(self, labels: Mapping[str, str]) -> str:
        names = list(dict.fromkeys(self.views.values()))
        if len(names) == 1:
            return f"`{names[0]}`"
        return " = ".join(f"`{view}` ({labels[run]})" for run, view in self.views.items())


def match_views(per_run: Mapping[str, Mapping[str, Sequence[str]]]) -> list[ViewMatch]:
    """Line up the views of several runs: ``per_run[run][view]`` is the view's field names (a view without
    numbers is best left out by the caller). Each view of the first run that has it takes, in every other run, the
    view of the same name, else the one sharing the most field names (ties: the first); each view is taken once.
    A view of a later run that matches nothing gets a line of its own.

    Example:
        >>> concatenated = {"embedding.embedding": ["user", "item", "city"]}
        >>> per_feature = {"embedding_dict": ["city", "user", "item"]}
        >>> [(m.views, m.how) for m in match_views({"dcn": concatenated, "dcn_per_feature": per_feature})]
        [({'dcn': 'embedding.embedding', 'dcn_per_feature': 'embedding_dict'}, 'matched by their 3 field names')]
    """
    runs = list(per_run)
    taken: dict[str, set[str]] = {run: set() for run in runs}
    matches: list[ViewMatch] = []
    for index, run in enumerate(runs):
        for view, fields in per_run[run].items():
            if view in taken[run]:
                continue
            taken[run].add(view)
            match = ViewMatch({run: view}, list(fields))
            renamed = []
            for other in runs[index + 1:]:
                free = [v for v in per_run[other] if v not in taken[other]]
                same = view if view in free else None
                overlap = {v: len(set(fields) & set(per_run[other][v])) for v in free}
                best = same or max(free, key=lambda v: overlap[v], default=None)
                if best is None or (best != view and overlap[best] == 0):
                    continue
                taken[other].add(best)
                match.views[other] = best
                match.fields += [f for f in per_run[other][best] if f not in match.fields]
                if best != view:
                    renamed.append(best)
            shared = [f for f in match.fields if all(f in per_run[r][v] for r, v in match.views.items())]
            match.shared = shared
            if renamed:
                match.how = f"matched by their {len(shared)} field names"
            matches.append(match)
    return matches


def mapping_notes(matches: Sequence[ViewMatch], labels: Mapping[str, str], what: str) -> list[str]:
    """A note per view matched under different names, and per view only some runs have."""
    notes = []  # plain text: a report shows its notes as they are, without markdown
    for m in matches:
        if m.how:
            notes.append(f"{what}: {m.title(labels).replace('`', '')}, {m.how} (the runs name the view differently).")
        missing = [labels[r] for r in labels if r not in m.views]
        if missing and len(labels) > 1:
            notes.append(f"{what}: {m.title(labels).replace('`', '')} has no counterpart in {', '.join(missing)}.")
    return notes


def field_rows(match: ViewMatch, runs: Sequence[str], value: Callable[[str, str, str], float | None],
               key: Callable[[str], Any] | None = None, digits: int = 3,
               extra: Callable[[str], list[Any]] | None = None) -> list[list[Any]]:
    """One row per field of ``match``: ``[field, *extra(field), value per run, differences]``, where
    ``value(run, view, field)`` reads a run's number (None: it has none); rows with no number at all are left out."""
    rows = []
    for name in sorted(match.fields, key=key) if key else match.fields:
        values = [value(run, match.views[run], name) if run in match.views else None for run in runs]
        if any(v is not None for v in values):
            rows.append([name] + (extra(name) if extra else []) + value_cells(values, digits))
    return rows
