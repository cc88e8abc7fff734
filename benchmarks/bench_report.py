"""What writing the report costs beside training: ``python -m benchmarks.bench_report [RUNS_DIR]``.

For every run under RUNS_DIR (default ``runs/``, e.g. after ``python -m demo_models all``), in one process:
the training time (wall time between the run's first and last event), the time to read the event files, and
the time to build and write ``report.html``/``report.md``/``summary.json`` (into a temporary directory), and
their ratio. The report written at the end of fit does the same work minus the reading.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ._common import machine, table


def _training_seconds(run_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = [e.wall_time for f in sorted(run_dir.glob("events.out.tfevents.*")) for e in EventFileLoader(str(f)).Load()]
    return max(times) - min(times) if times else float("nan")


def main(argv=None) -> None:
    from lightning_recanalysis.report import build_report, find_runs, read_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="?", type=Path, default=Path("runs"))
    parser.add_argument("--quick", action="store_true", help="(no effect: already quick)")
    args = parser.parse_args(argv)
    if not args.runs.exists():
        print(f"{args.runs} does not exist: run `python -m demo_models all` first")
        return
    rows = []
    for run_dir in find_runs(args.runs):
        if "no-monitors" in str(run_dir):
            continue
        start = time.perf_counter()
        run = read_run(run_dir)
        read = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            build_report(run, out)
            write = time.perf_counter() - start
        train = _training_seconds(run_dir)
        rows.append([run.name, f"{train:.1f}", f"{read:.2f}", f"{write:.2f}", f"{100 * write / train:.1f}%",
                     f"{100 * (read + write) / train:.1f}%"])
    print(f"report cost per run; {machine()}")
    print(table(["run", "training s", "read events s", "write report s", "write / training",
                 "read+write / training"], rows))


if __name__ == "__main__":
    main()
