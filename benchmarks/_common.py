"""Shared helpers: fresh-process workers, bytecode, peak memory, medians, a plain-text table."""

from __future__ import annotations

import compileall
import importlib.util
import json
import platform
import resource
import statistics
import subprocess
import sys

import torch


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def compile_bytecode(packages: tuple[str, ...] = ("lightning_recanalysis", "demo_models")) -> str:
    """Write the packages' bytecode (``__pycache__/*.pyc``), as ``pip install`` does for an installed package;
    returns a line for a benchmark's header.

    An editable install run with ``PYTHONDONTWRITEBYTECODE=1`` (set on this project's machines) never writes it,
    so every fresh process compiles each module it imports from source: about 30 ms for a multi-task run's
    monitors and report, which a user's installed package does not pay. Python checks each file's timestamp
    against its source, so bytecode left from older sources is never used."""
    for name in packages:
        for folder in importlib.util.find_spec(name).submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)
    return f"bytecode of {', '.join(packages)} compiled beforehand, as an installed package has it"


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(module: str, *args: str, timeout: float = 900) -> dict:
    """Run ``python -m module --worker args...`` in a fresh process; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-m", module, "--worker", *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {module} {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(values) -> float:
    return float(statistics.median(values))


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
