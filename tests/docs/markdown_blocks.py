"""The Python code blocks of the README and of the docs, read with Sybil's Markdown parsers.

Every ```` ```python ```` block of a page runs, in page order, in one namespace per page (a block may use what an
earlier block of its page defined), in a fresh working directory. ``<!-- skip: next if(cond, reason="...") -->``
before a block skips it where ``cond`` holds (Sybil's syntax); the docs use it only for blocks that need an
optional package (TorchRec).
"""

from __future__ import annotations

import sys
import time
import types
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documents() -> list[Path]:
    """The README and every page under docs/, in a fixed order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _sybil():
    from sybil import Sybil
    from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

    return Sybil(parsers=[PythonCodeBlockParser(), SkipParser()])


def _is_block(example) -> bool:
    from sybil.evaluators.python import PythonEvaluator

    return isinstance(example.region.evaluator, PythonEvaluator)


def python_blocks(path: Path) -> list:
    """The Python code blocks of one page, as Sybil examples (skip directives left out)."""
    return [e for e in _sybil().parse(path).examples() if _is_block(e)]


def run_page(path: Path) -> list[tuple[int, str, float]]:
    """Run every block of ``path`` in order; returns (line, outcome, seconds) per block, outcome "ran" or the
    reason it was skipped. A failing block raises, its page and line in the traceback."""
    document = _sybil().parse(path)
    # A module object's namespace, registered under its own name: classes and dataclasses that a block defines
    # get a real __module__ (dataclasses and pickling look it up in sys.modules).
    name = "docs_page_" + "_".join(path.relative_to(ROOT).with_suffix("").parts).replace("-", "_")
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    document.namespace = module.__dict__
    results = []
    try:
        for example in document.examples():
            start = time.perf_counter()
            is_block = _is_block(example)
            try:
                example.evaluate()
            except unittest.SkipTest as skipped:
                results.append((example.line, f"skipped: {skipped}", 0.0))
                continue
            if is_block:
                results.append((example.line, "ran", time.perf_counter() - start))
    finally:
        sys.modules.pop(name, None)
    return results
