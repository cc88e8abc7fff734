"""Package attributes loaded on first use (PEP 562).

A package lists what it exports, module by module; a submodule is imported the first time one of its names is
read. ``import lightning_recanalysis`` then loads only the modules a run uses: a multi-task run never imports the
correlation counters, a DCNv2 run never imports the conflict analysis. On a short run these imports are a
visible part of the monitors' cost (``python -m benchmarks.bench_whole_run``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[Callable[[str], Any],
                                                                            Callable[[], list[str]], list[str]]:
    """The package's ``__getattr__``, ``__dir__`` and ``__all__`` for ``exports``: relative submodule -> its names.

    Example:
        >>> import lightning_recanalysis.figures as figures
        >>> "heatmap_image" in figures.__all__, "heatmap_image" in dir(figures)
        (True, True)
        >>> figures.heatmap_image.__module__  # imported now, if no one had before
        'lightning_recanalysis.figures.heatmap'
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # the next read is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, list(where)
