"""The documentation site builds with ``mkdocs build --strict``: a broken link, a missing page, an unknown
cross-reference or a docstring griffe cannot read fails the test suite."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .markdown_blocks import ROOT

TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    for tool in TOOLS:
        pytest.importorskip(tool, reason=f"{tool} is not installed: pip install '.[docs]' (or '.[test]') to build the docs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                          "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "callbacks" / "index.html").exists()


def test_griffe_extension_examples():
    """The API reference's griffe extension (docs/_griffe/) is build code, not a page: its example runs here."""
    import doctest
    import importlib.util

    pytest.importorskip("griffe", reason="griffe comes with mkdocstrings[python]: pip install '.[docs]'")
    path = ROOT / "docs" / "_griffe" / "examples_sections.py"
    spec = importlib.util.spec_from_file_location("docs_griffe_examples_sections", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and not result.failed
