"""What importing the package costs a run: the modules a multi-task run needs, against every name the package exports.

    python -m benchmarks.bench_imports [--repeats 7]

Each measurement is a fresh process that first imports what a run without monitors imports anyway (Lightning,
its TensorBoard logger), then times one of:

- ``multi-task``: the names a multi-task run takes (``AnalysisReport``, ``GradientConflictMonitor``,
  ``EntanglementMonitor``) and the report's two section builders; the package's exports load on first use
  (``lightning_recanalysis/_lazy.py``), so this is what such a run pays;
- ``every export``: every name that the package and its subpackages export, which is what ``import
  lightning_recanalysis`` cost while its ``__init__`` files imported their modules eagerly.

The package's bytecode is written first, as an installed package has it (see ``_common.compile_bytecode``). The
two alternate repetition by repetition, so that load on the machine reaches both. Printed: milliseconds and
modules of each (min, median, max over the repetitions) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import time

from ._common import compile_bytecode, machine, median, run_worker, table

SUPPORTS_QUICK = True


def worker(kind: str) -> dict:
    import importlib
    import sys
    import tempfile

    import lightning.pytorch  # noqa: F401
    from lightning.pytorch.loggers import TensorBoardLogger

    import lightning_recanalysis

    _ = TensorBoardLogger(tempfile.mkdtemp()).experiment  # a run without monitors has this loaded too
    start = time.perf_counter()
    if kind == "multi-task":
        from lightning_recanalysis import AnalysisReport, EntanglementMonitor, GradientConflictMonitor  # noqa: F401
        from lightning_recanalysis.report.sections import builder_for

        builder_for("conflict"), builder_for("entanglement")
    else:
        for package in ("", ".callbacks", ".functional", ".figures", ".findings", ".metrics", ".report"):
            module = importlib.import_module(package, "lightning_recanalysis") if package else lightning_recanalysis
            for name in module.__all__:
                getattr(module, name)
        from lightning_recanalysis.report.sections import BUILDERS, builder_for

        for namespace in BUILDERS:  # the report's sections, which the report's package also imported eagerly
            builder_for(namespace)
    seconds = time.perf_counter() - start
    modules = sum(name.startswith("lightning_recanalysis") for name in sys.modules)
    return {"seconds": seconds, "modules": modules}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repetitions")
    parser.add_argument("--worker", choices=["multi-task", "every"])
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    repeats = 3 if args.quick else args.repeats
    compiled = compile_bytecode(("lightning_recanalysis",))
    runs: dict[str, list[dict]] = {"multi-task": [], "every": []}
    for _ in range(repeats):
        for kind, results in runs.items():
            results.append(run_worker("benchmarks.bench_imports", kind))
    rows = []
    for kind, results in runs.items():
        ms = sorted(1e3 * r["seconds"] for r in results)
        rows.append(["multi-task" if kind == "multi-task" else "every export", f"{results[0]['modules']}",
                     f"{ms[0]:.1f} / {median(ms):.1f} / {ms[-1]:.1f}"])
    ratio = median(r["seconds"] for r in runs["multi-task"]) / median(r["seconds"] for r in runs["every"])
    print(f"importing the package after Lightning; {machine()}; {repeats} interleaved pairs of fresh processes; "
          f"{compiled}")
    print(table(["imports", "modules of the package", "ms (min / median / max)"], rows))
    print(f"multi-task / every export (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
