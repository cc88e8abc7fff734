"""Are the findings trustworthy? False alarms and misses on a panel of planted healthy and sick models (issue 24).

    python -m benchmarks.bench_findings_panel [--seeds 0 1 2] [--cases KEY ...] [--verbose]

Trains every case of :mod:`benchmarks.findings_panel` at every seed (tiny models, CPU, one torch thread), then
prints one line per case and alarm kind: runs, false alarms (any alarm of a healthy case; an alarm on a subject a
sick case keeps healthy) and misses (an alarm a sick case plants and did not get), with the seeds where they
happened; then the total, the seeds, each run's premise as measured, the time, and the text of every false alarm
and of the findings of every miss. The premise of each case is measured by hand in the run (numpy IA, autograd
cosines, counted MI); a run whose premise fails is listed, since its findings say nothing.

Exit status 0 whatever the panel finds (it is a measurement; ``tests/findings/test_panel.py`` is the gate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

SUPPORTS_QUICK = True


def main(argv: list[str] | None = None) -> int:
    from benchmarks.findings_panel import CASES, SEEDS, panel_table, quiet_lightning, run_case

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None)
    parser.add_argument("--verbose", action="store_true", help="print every run's premise numbers")
    parser.add_argument("--quick", action="store_true", help="seed 0 only")
    args = parser.parse_args(argv)
    seeds = [args.seeds[0]] if args.quick else args.seeds
    cases = [CASES[k] for k in args.cases] if args.cases else list(CASES.values())

    torch.set_num_threads(1)
    quiet_lightning()
    start = time.perf_counter()
    runs = []
    for case in cases:
        for seed in seeds:
            run = run_case(case, seed)
            runs.append(run)
            if args.verbose:
                print(f"{case.number:>3} {case.key} seed {seed}: {run.seconds:.2f} s, premise "
                      f"{'holds' if run.premise.ok else 'FAILS'}: {json.dumps(run.premise.numbers, default=str)}",
                      flush=True)
    total = time.perf_counter() - start

    print(f"Findings panel: {len(cases)} cases x seeds {seeds}; findings read from "
          f"{', '.join(sorted({r.source for r in runs}))}\n")
    print(panel_table(runs))
    times = sorted(r.seconds for r in runs)
    print(f"time: {total:.1f} s for {len(runs)} fits (each {times[0]:.2f} to {times[-1]:.2f} s, median "
          f"{times[len(times) // 2]:.2f} s), torch on 1 thread")

    print("\nPremises (measured by hand after training):")
    for case in cases:
        mine = [r for r in runs if r.case is case]
        held = sum(r.premise.ok for r in mine)
        print(f"  {case.number:>3} {case.key}: {held}/{len(mine)} hold"
              + "".join(f"\n        seed {r.seed} FAILS: {'; '.join(r.premise.failed)}" for r in mine
                        if not r.premise.ok))
        for description, _ in mine[0].premise.checks:
            print(f"        - {description}")

    wrong = [r for r in runs if r.misses or r.false_alarms]
    if wrong:
        print("\nFalse alarms and misses:")
        for run in wrong:
            print(run.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
