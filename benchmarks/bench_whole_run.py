"""Whole runs of the demo CLI with every monitor and the report, against ``--no-monitors``: the A/B a user sees.

    python -m benchmarks.bench_whole_run [--models dcnv2,tin,mmoe] [--epochs 2] [--repeats 3] [--threads 1]

Each run is one fresh ``python -m demo_models MODEL --epochs N --quiet --threads T [--no-monitors]`` process, timed
from start to exit (imports, data, fit, and with monitors the end-of-run report), the two variants interleaved pair
by pair, each going first in every other pair, so that drift in machine load reaches both. Printed per model: min,
median and max of each variant's seconds (wall and CPU), and of the per-pair ratio monitored / plain (the ratio of
two runs side by side, which cancels slow drifts in load). ``--epochs 0`` runs each demo at its own default number of epochs. A multi-task demo's two single-
task references (extra models its conflict-subset analysis reads, not monitor cost) are trained once beforehand and
reused by every monitored run (``--references``), as a user trains them once; the time they took is printed apart.

The bytecode of the package and the demos is written first, as an installed package has it: this project's
machines set ``PYTHONDONTWRITEBYTECODE``, under which the editable install would compile every module it imports
from source in every run (``_common.compile_bytecode``).

On a shared 2-core machine one thread per run (the default here) keeps a busy neighbour from stalling the
training's own threads; the spread printed says how far to trust the median.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from demo_models.references import MULTITASK_MODELS, train_references
from demo_models.registry import DATASETS

from ._common import compile_bytecode, machine, table

SUPPORTS_QUICK = True


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(model: str, epochs: int, threads: int, monitors: bool, references: str | None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, of the process and its threads) of one fresh demo run."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "demo_models", model, "--out", out, "--quiet", "--threads", str(threads)]
        if references is not None and monitors:
            command += ["--references", references]
        if epochs:
            command += ["--epochs", str(epochs)]
        if not monitors:
            command.append("--no-monitors")
        start, cpu = time.perf_counter(), _children_cpu()
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        seconds, cpu_seconds = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    return seconds, cpu_seconds


def _spread(values: list[float], fmt: str) -> str:
    values = sorted(values)
    return " ".join(format(v, fmt) for v in (values[0], statistics.median(values), values[-1]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="dcnv2,tin,mmoe")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (0: each demo's default)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved pairs of runs per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (demo_models --threads)")
    parser.add_argument("--quick", action="store_true", help="DCNv2 only, one pair")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.repeats = "dcnv2", 1
    print(f"whole demo runs, all monitors and the report vs --no-monitors; {machine()}; {args.threads} torch "
          f"thread(s) per run; {args.repeats} interleaved pairs of fresh processes; "
          f"{args.epochs or 'default'} epochs; {compile_bytecode()}", flush=True)
    rows = []
    reference_root = tempfile.mkdtemp(prefix="bench_whole_run_references_")
    for model in args.models.split(","):
        references = None
        if model in MULTITASK_MODELS:
            # The single-task references are extra models the conflict-subset analysis needs, not monitor cost:
            # trained once here (as a user trains them once, --references), and the time they take printed apart.
            data = DATASETS[model][0]
            if not any(Path(reference_root).glob(f"reference_*-{data}")):
                start = time.perf_counter()
                train_references(data, 0, Path(reference_root), args.epochs or None)
                print(f"  {model}: trained its single-task references once, {time.perf_counter() - start:.1f} s "
                      "(not in the runs below, which reuse them)", flush=True)
            references = reference_root
        plain, monitored = [], []
        for repeat in range(args.repeats):
            # Each variant goes first in every other pair: a run that follows another one in the same second
            # measured up to 3% faster, and that must not favour one variant.
            for monitors in ((False, True) if repeat % 2 == 0 else (True, False)):
                result = _run(model, args.epochs, args.threads, monitors=monitors,
                              references=references if monitors else None)
                (monitored if monitors else plain).append(result)
        row = [model]
        for k in (0, 1):  # wall time, then CPU time
            a, b = [r[k] for r in plain], [r[k] for r in monitored]
            row += [_spread(a, ".1f"), _spread(b, ".1f"), _spread([m / p for m, p in zip(b, a)], ".3f"),
                    f"{statistics.median(b) / statistics.median(a):.3f}"]
        rows.append(row)
        print(f"  done {model}", flush=True)
    print(table(["model", "plain wall s", "monitored wall s", "wall ratio per pair", "of medians",
                 "plain CPU s", "monitored CPU s", "CPU ratio per pair", "of medians"], rows))
    print("(min med max over the pairs; CPU: user + system time of the run's process, which a busy neighbour "
          "inflates far less than wall time)")

if __name__ == "__main__":
    main()
