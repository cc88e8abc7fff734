"""Imports only downward: no cycle among the modules of ``lightning_recanalysis`` or of ``demo_models``, checked
twice, on the source (an import graph built with ``ast``) and by importing every module in a fresh interpreter in
forward and in reverse order (a cycle breaks an import only from some entry points)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lightning_recanalysis", "demo_models")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package: str) -> dict[str, Path]:
    """Every module of ``package`` (``pkg.sub`` for ``pkg/sub/__init__.py``) and its file."""
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py")) if "__pycache__" not in p.parts}


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names ``node`` imports: ``from ..a import b`` in ``pkg.x.y`` gives ``pkg.a`` and ``pkg.a.b``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = package[: len(package) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its source (in functions too: an import hidden in
    a function to dodge a cycle still closes it). Importing ``pkg.a.b`` runs ``pkg/a/__init__.py`` first, so the
    packages on the way count too, except those the importer is itself inside (already being imported)."""
    modules = package_modules(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        own_packages = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        if path.name == "__init__.py":
            own_packages.add(name)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(name, path, node):
                parts = target.split(".")
                for k in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:k])
                    if prefix in modules and prefix not in own_packages and prefix != name:
                        graph[name].add(prefix)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_graph_resolves_relative_imports_and_the_packages_on_the_way():
    graph = import_graph("lightning_recanalysis")
    # report/sections/collapse.py: ``from ...figures.collapse import ...`` and ``from ..model import ...``
    assert {"lightning_recanalysis.figures", "lightning_recanalysis.figures.collapse",
            "lightning_recanalysis.report.model"} <= graph["lightning_recanalysis.report.sections.collapse"]
    # ... but not its own package, which is being imported when it runs
    assert "lightning_recanalysis.report" not in graph["lightning_recanalysis.report.sections.collapse"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    cycle = find_cycle(import_graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


#: The package's layers, lowest first: a module of a layer imports no module of a later one.
LAYERS = ("functional", "parallel", "model", "metrics", "figures", "findings", "callbacks", "report")


def upward_imports(graph: dict[str, set[str]], package: str = "lightning_recanalysis") -> list[tuple[str, str]]:
    """Every (importer, imported) pair of ``graph`` where a layer of :data:`LAYERS` imports a later layer."""
    def layer(module: str) -> int | None:
        parts = module.split(".")
        return LAYERS.index(parts[1]) if len(parts) > 1 and parts[0] == package and parts[1] in LAYERS else None

    found = []
    for name, targets in graph.items():
        own = layer(name)
        for target in sorted(targets):
            theirs = layer(target)
            if own is not None and theirs is not None and theirs > own:
                found.append((name, target))
    return found


def test_layer_check_finds_a_planted_upward_import():
    graph = {"lightning_recanalysis.callbacks.spectrum": {"lightning_recanalysis.report.model",
                                                          "lightning_recanalysis.findings.collapse"},
             "lightning_recanalysis.report.sections.collapse": {"lightning_recanalysis.callbacks.base"},
             "lightning_recanalysis.figures.bars": {"lightning_recanalysis.findings"}}
    assert upward_imports(graph) == [("lightning_recanalysis.callbacks.spectrum", "lightning_recanalysis.report.model"),
                                     ("lightning_recanalysis.figures.bars", "lightning_recanalysis.findings")]


def test_imports_only_go_downward_through_the_layers():
    upward = upward_imports(import_graph("lightning_recanalysis"))
    assert not upward, "upward imports: " + ", ".join(f"{a} -> {b}" for a, b in upward)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_every_module_imports_in_a_fresh_interpreter(order):
    names = [n for package in PACKAGES for n in package_modules(package) if not n.endswith("__main__")]
    if order == "reverse":
        names.reverse()
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


LAZY_PACKAGES = ("lightning_recanalysis", "lightning_recanalysis.callbacks", "lightning_recanalysis.functional",
                 "lightning_recanalysis.parallel", "lightning_recanalysis.model", "lightning_recanalysis.model.cross",
                 "lightning_recanalysis.figures", "lightning_recanalysis.findings", "lightning_recanalysis.metrics",
                 "lightning_recanalysis.report")


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves_from_its_module(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert name in dir(module)
        if hasattr(value, "__module__") and name != "__version__":
            # the same object as in the module that defines it (a re-export may come from a lower layer)
            assert value is getattr(sys.modules[value.__module__], name)
            assert value.__module__.startswith("lightning_recanalysis.")
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'NoSuchMonitor'"):
        _ = module.NoSuchMonitor


def test_a_multitask_run_loads_none_of_the_correlation_modules():
    """The exports load on first use: a run with the conflict and entanglement monitors and the report does not
    import the correlation counters, the field-pair monitor or the collapse analysis."""
    script = ("import sys\n"
              "from lightning_recanalysis import AnalysisReport, EntanglementMonitor, GradientConflictMonitor\n"
              "from lightning_recanalysis.report.sections import builder_for\n"
              "builder_for('conflict'), builder_for('entanglement')\n"
              "print(' '.join(sorted(m for m in sys.modules if m.startswith('lightning_recanalysis'))))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(done.stdout.split())
    assert {"lightning_recanalysis.callbacks.entanglement", "lightning_recanalysis.callbacks.conflict",
            "lightning_recanalysis.report.callback", "lightning_recanalysis.report.sections.conflict"} <= loaded
    unused = {"lightning_recanalysis.metrics.behavior_target", "lightning_recanalysis.metrics.position_counter",
              "lightning_recanalysis.callbacks.correlation", "lightning_recanalysis.callbacks.field_pair",
              "lightning_recanalysis.callbacks.spectrum", "lightning_recanalysis.report.sections.correlation",
              "lightning_recanalysis.figures.bars"}
    assert not unused & loaded, sorted(unused & loaded)


def private_imports(package: str) -> list[tuple[str, str]]:
    """Every (module, name) where a module of ``package`` imports another module's private name (``_name``, not a
    dunder such as ``__version__``): what a module keeps to itself is not another's to lean on."""
    found = []
    for name, path in package_modules(package).items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                found += [(name, alias.name) for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_private_import_check_finds_a_planted_one(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from ._version import __version__\n")
    (tmp_path / "pkg" / "a.py").write_text("from .b import _helper, public\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert private_imports("pkg") == [("pkg.a", "_helper")]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_name_is_imported_across_modules(package):
    found = private_imports(package)
    assert not found, "private names imported: " + ", ".join(f"{m}: {n}" for m, n in found)


def test_the_package_root_holds_few_modules():
    """The code lives in its layers; the root keeps the entry points and the few modules every layer shares."""
    root = [p.stem for p in (ROOT / "lightning_recanalysis").glob("*.py")
            if p.stem not in ("__init__", "__main__", "_version")]
    assert len(root) <= 8, sorted(root)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_file_is_under_400_lines(package):
    long = {str(p.relative_to(ROOT)): n for p in package_modules(package).values()
            if (n := len(p.read_text().splitlines())) >= 400}
    assert not long, long


def test_no_module_is_named_like_a_standard_library_module():
    """A module named ``numbers`` or ``types`` shadows the standard library's when its folder is on the path."""
    clash = {name for package in PACKAGES for name in package_modules(package)
             if name.rsplit(".", 1)[-1] in sys.stdlib_module_names}
    assert not clash, sorted(clash)


def test_every_overridden_lightning_hook_carries_override():
    """Each Lightning hook a callback of the package defines is marked ``@override`` (as Lightning marks its own), so
    that a hook renamed or misspelt fails loudly instead of never being called."""
    import importlib
    import inspect

    import lightning.pytorch as pl

    hooks = {n for n, v in vars(pl.Callback).items() if callable(v) and not n.startswith("_")}
    missing = set()
    for name in package_modules("lightning_recanalysis"):
        if name.endswith("__main__"):
            continue
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if not issubclass(cls, pl.Callback):
                continue
            for klass in cls.__mro__:
                if klass.__module__.startswith("lightning_recanalysis"):
                    missing |= {f"{klass.__qualname__}.{hook}" for hook in hooks & set(vars(klass))
                                if not getattr(vars(klass)[hook], "__override__", False)}
    assert not missing, sorted(missing)
