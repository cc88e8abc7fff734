"""A griffe extension for the API reference: two docstring habits of the package that read well as text but
not as Markdown, fixed on the rendered page only (nothing in the package changes).

- Runnable examples are titled ``Example:`` (as torchmetrics and Lightning title them). griffe's Google parser
  reads that title as an admonition, whose ``>>>`` lines would render as plain text; renamed ``Examples:``,
  they become griffe's examples section and render as Python console blocks.
- The monitors list their tags under a title line, ``Scalars (every logger):`` followed by an indented
  ``- tag: meaning`` list. Markdown needs a blank line before a list, and reads four spaces of indentation after
  one as code: the list is given the blank line and dedented under its title.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_TITLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_INDENT = re.compile(r"^(\s*)")


def _indent(line: str) -> int:
    return len(_INDENT.match(line).group(1))


def unindent_title_lists(text: str) -> str:
    """A line ending in ``:`` followed by a more indented ``- item`` list: a blank line, then the list at the
    title's indentation (continuation lines keep their indentation relative to the list).

    >>> print(unindent_title_lists("Scalars (every logger):\\n    - ``a``: one,\\n      two.\\n    - ``b``.\\nEnd."))
    Scalars (every logger):
    <BLANKLINE>
    - ``a``: one,
      two.
    - ``b``.
    End.
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.rstrip().endswith(":") and line.strip() and nxt.strip().startswith("- ") \
                and _indent(nxt) > _indent(line):
            shift = _indent(nxt) - _indent(line)
            out.append("")
            i += 1
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= _indent(nxt):
                out.append(lines[i][shift:])
                i += 1
            continue
        i += 1
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Apply both fixes to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        value = obj.docstring.value
        if "Example:" in value:
            value = _EXAMPLE_TITLE.sub(r"\1Examples:", value)
        if ":\n" in value:
            value = unindent_title_lists(value)
        obj.docstring.value = value
