"""Every Python code block of the README and of the docs runs (CPU only, a few seconds each).

One test per page: a page's blocks share one namespace and run in order. The number of blocks is stated in
docs/architecture.md, and checked here, so the docs say truthfully how many of their blocks are tested.
"""

from __future__ import annotations

import re
import warnings

import pytest

from .markdown_blocks import ROOT, documents, python_blocks, run_page

pytest.importorskip("sybil", reason="the docs' code blocks are read with Sybil: pip install '.[docs]' (or '.[test]')")

PAGES = [p for p in documents() if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks write runs/ and reports where they stand: here, not in the repository
    results = run_page(page)
    assert [r for r in results if r[1] == "ran"], f"no block of {page} ran"
    for line, outcome, _ in results:
        if outcome != "ran":
            warnings.warn(f"{page.relative_to(ROOT)}, line {line}: {outcome}", UserWarning)


def test_the_docs_state_how_many_blocks_are_tested():
    total = sum(len(python_blocks(p)) for p in documents())
    text = (ROOT / "docs" / "architecture.md").read_text()
    stated = re.search(r"\*\*(\d+) Python code blocks\*\*", text)
    assert stated, "docs/architecture.md no longer states how many Python code blocks are tested"
    assert int(stated.group(1)) == total, (f"docs/architecture.md says {stated.group(1)} Python code blocks are "
                                           f"tested; the README and docs hold {total}: update the number")


def test_every_python_block_is_found():
    """A block fenced as ```python is tested; one fenced ```py or ```Python would be skipped silently."""
    for page in documents():
        odd = re.findall(r"^```\s*(py|Python|python3|pycon)\s*$", page.read_text(), flags=re.MULTILINE)
        assert not odd, f"{page.relative_to(ROOT)}: fence the code blocks as ```python so they run ({odd})"
