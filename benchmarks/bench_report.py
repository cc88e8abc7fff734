"""What writing the report costs beside training: ``python -m benchmarks.bench_report [RUNS_DIR] [--baseline DIR]``.

For every run under RUNS_DIR (default ``runs/``, e.g. after ``python -m demo_models all``): the training time
(wall time between the run's first and last event) and the time to build and write ``report.html``/``report.md``/
``summary.json`` into a temporary directory, as a ratio of the training time, marked against the budget of 10%.

Each run is measured in a fresh Python process that has imported the package (as the training process has), so
the first report of the process pays for what a report at the end of fit pays for: loading fonts, colour maps
and matplotlib's text machinery. That first write is the figure that counts ("first"); the best of two more
writes in the same process ("warm") shows how much of it was that one-off loading. Reading the event files is
timed apart: the report written at the end of fit reads nothing.

``--baseline DIR`` measures the same with the package imported from another checkout (e.g. ``git worktree add
/tmp/base HEAD~3``), alternating run by run with this checkout so both see the same machine load; ``--repeat N``
takes the best of N fresh processes per run and checkout (the machine's other work only ever adds time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ._common import machine, table

BUDGET = 0.10  # the report may cost at most this fraction of training time

# Runs in the child process, against whichever checkout PYTHONPATH names; it uses only read_run and
# build_report, which every version of the package has.
_CHILD = r"""
import json, sys, tempfile, time
import lightning_recanalysis.callbacks  # what a training process has imported before the report
from lightning_recanalysis.report import build_report, read_run
start = time.perf_counter()
run = read_run(sys.argv[1])
read = time.perf_counter() - start
times = []
for _ in range(3):
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        build_report(run, out)
        times.append(time.perf_counter() - start)
print(json.dumps({"read": read, "first": times[0], "warm": min(times[1:])}))
"""


def _training_seconds(run_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = [e.wall_time for f in sorted(run_dir.glob("events.out.tfevents.*")) for e in EventFileLoader(str(f)).Load()]
    return max(times) - min(times) if times else float("nan")


def _measure(run_dir: Path, code_root: Path) -> dict:
    """Report timings of one run in a fresh process importing the package from ``code_root``."""
    path = os.pathsep.join(p for p in (str(code_root), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(run_dir.resolve())], capture_output=True, text=True,
                          env=env, cwd=str(code_root), timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"report of {run_dir} with {code_root} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(results: list[dict]) -> dict:
    return {key: min(r[key] for r in results) for key in results[0]}


def _verdict(seconds: float, train: float) -> list[str]:
    ratio = seconds / train
    return [f"{seconds:.2f}", f"{100 * ratio:.1f}%", "yes" if ratio < BUDGET else "NO"]


def main(argv=None) -> None:
    from lightning_recanalysis.report import find_runs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="?", type=Path, default=Path("runs"))
    parser.add_argument("--baseline", type=Path, help="another checkout's root, measured alternately with this one")
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per run and checkout; the best counts")
    parser.add_argument("--quick", action="store_true", help="(no effect: already quick)")
    args = parser.parse_args(argv)
    if not args.runs.exists():
        print(f"{args.runs} does not exist: run `python -m demo_models all` first")
        return
    here = Path(__file__).resolve().parents[1]
    checkouts = {"this": here} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    rows = []
    for run_dir in find_runs(args.runs):
        if "no-monitors" in str(run_dir):
            continue
        train = _training_seconds(run_dir)
        results: dict[str, list[dict]] = {name: [] for name in checkouts}
        for _ in range(max(1, args.repeat)):
            for name, root in checkouts.items():  # alternate, so a burst of load hits both alike
                results[name].append(_measure(run_dir, root))
        best = {name: _best(r) for name, r in results.items()}
        row = [f"{run_dir.parent.name}/{run_dir.name}", f"{train:.1f}", f"{best['this']['read']:.2f}"]
        if args.baseline:
            row += _verdict(best["baseline"]["first"], train)
        row += _verdict(best["this"]["first"], train) + [f"{best['this']['warm']:.2f}"]
        rows.append(row)
    print(f"report cost per run (fresh process per run, best of {max(1, args.repeat)}; budget "
          f"{100 * BUDGET:.0f}% of training); {machine()}")
    headers = ["run", "training s", "read events s"]
    if args.baseline:
        headers += ["baseline report s", "baseline / training", f"baseline < {100 * BUDGET:.0f}%"]
    headers += ["report s", "report / training", f"< {100 * BUDGET:.0f}%", "warm report s"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
