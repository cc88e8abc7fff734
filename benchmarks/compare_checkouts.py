"""The counting metrics of two checkouts side by side, e.g. before and after a change that must not slow them.

    python -m benchmarks.compare_checkouts BEFORE_DIR AFTER_DIR [--repeats 7]

``BEFORE_DIR`` and ``AFTER_DIR`` each hold a ``lightning_recanalysis`` package (``git archive REV
lightning_recanalysis benchmarks | tar -x -C DIR`` makes one). Fresh processes, one torch thread, the two
alternating (the order swapped every repetition, so that drift in machine load reaches both); each imports its
own package and benchmarks (checked: the paths are printed).

- ``BehaviorTargetCounts``: ``update`` of 4 batches of 65,536 sequences x 50 behaviours
  (``benchmarks.bench_counting``'s data) and a first query (which merges), CPU ns per behaviour, at 100
  categories (the dense array), 1,000 and 10,000 (sparse keys); the counted totals must be equal. Each process
  first counts a few small batches untimed, so that numba's import and the load of the compiled loops stay out
  of the times.
- ``FieldPairCounts``: ``update`` + ``flush`` of 30 batches of 1,024 rows x 39 fields
  (``benchmarks.bench_field_pair.count_worker``), CPU ns per sample and pair, median of its 5 passes.

Prints each quantity's medians and the after / before ratio per repetition (min, median, max).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_WORKER = r"""
import json, time, torch
torch.set_num_threads(1)
import lightning_recanalysis
from lightning_recanalysis.metrics import BehaviorTargetCounts
from benchmarks.bench_counting import make_chunk
from benchmarks.bench_field_pair import count_worker
out = {"package": lightning_recanalysis.__file__}
for categories in (100, 1000, 10000):  # untimed: numba's import and the load of each compiled loop, once
    warm = BehaviorTargetCounts()
    for i in range(3):
        warm.update(*make_chunk(99 + i, 4096 * (1 + i % 2), 50, categories))
    warm._merged("triple")
for categories in (100, 1000, 10000):
    chunks = [make_chunk(i, 65536, 50, categories) for i in range(4)]
    metric = BehaviorTargetCounts()
    cpu = time.process_time()
    for chunk in chunks:
        metric.update(*chunk)
    metric.table(0, [0], 1)  # the first query: what waits is counted and the runs merged
    out[f"counting {categories} categories, ns per behaviour"] = 1e9 * (time.process_time() - cpu) / (4 * 65536 * 50)
    keys, counts = metric._merged("triple")
    out[f"total {categories}"] = int(counts.sum())
out["field pairs, 39 fields, ns per sample and pair"] = sorted(count_worker(39, 1024, 1, 30)["update_cpu_ns"])[2]
print(json.dumps(out))
"""


def _run(checkout: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), OMP_NUM_THREADS="1")
    # Run outside the repository, so that the current directory does not put this checkout's package first.
    done = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True, text=True, cwd="/")
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.repeats):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for name in order:
            runs[name].append(_run(getattr(args, name)))
    print("packages:", runs["before"][0]["package"], "|", runs["after"][0]["package"])
    for key in (k for k in runs["after"][0] if k.endswith("pair") or k.endswith("behaviour")):
        before = [run[key] for run in runs["before"]]
        after = [run[key] for run in runs["after"]]
        ratios = sorted(a / b for a, b in zip(after, before))
        print(f"{key:48s} before {statistics.median(before):7.2f}  after {statistics.median(after):7.2f}  "
              f"after/before min {ratios[0]:.2f} median {statistics.median(ratios):.2f} max {ratios[-1]:.2f}")
    same = all(a[k] == b[k] for a, b in zip(runs["after"], runs["before"]) for k in a if k.startswith("total"))
    print("counted totals identical:", same)


if __name__ == "__main__":
    main()
