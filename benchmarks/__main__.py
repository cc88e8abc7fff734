"""Run every benchmark: ``python -m benchmarks [--quick]``. Each prints its own table of ratios."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n=== {name} ===", flush=True)
        module.main(["--quick"] if quick and getattr(module, "SUPPORTS_QUICK", False) else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
