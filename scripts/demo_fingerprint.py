"""What a user sees of the demos, as one JSON file: every event-file tag (with its kind and how many times it was
written) and every number of every run's ``summary.json``, so two checkouts can be compared after a change that
must not alter the output.

    python scripts/demo_fingerprint.py record runs_before before.json [--train --epochs 2]
    python scripts/demo_fingerprint.py compare before.json after.json [--rtol 1e-6]

``record`` reads the runs under a directory (``--train`` first trains every demo there with
``python -m demo_models all --epochs N``). ``compare`` prints each tag that one side lacks and each number that
differs beyond ``rtol`` (relative, with an absolute floor of ``rtol`` for values near zero) and exits 1 if any.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util.tensor_util import make_ndarray


def _kind(value) -> str:
    if value.HasField("simple_value"):
        return "scalar"
    if value.HasField("image"):
        return "image"
    if value.HasField("histo"):
        return "histogram"
    plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
    return plugin or "tensor"


def _flatten(prefix: str, obj, out: dict[str, float | str]) -> None:
    if isinstance(obj, dict):
        for key, item in obj.items():
            _flatten(f"{prefix}/{key}", item, out)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            _flatten(f"{prefix}[{i}]", item, out)
    elif isinstance(obj, bool) or obj is None:
        out[prefix] = str(obj)
    elif isinstance(obj, (int, float)):
        out[prefix] = float(obj)
    else:
        out[prefix] = str(obj)


def fingerprint(root: Path) -> dict:
    runs = {}
    for summary in sorted(root.rglob("summary.json")):
        run_dir = summary.parent
        tags: Counter[str] = Counter()
        scalars: dict[str, float] = {}
        for path in sorted(run_dir.glob("events.out.tfevents.*")):
            for event in EventFileLoader(str(path)).Load():
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    kind = _kind(value)
                    tags[f"{kind}:{value.tag}"] += 1
                    if kind == "scalar":
                        scalars[f"{value.tag}@{event.step}"] = float(value.simple_value)
                    elif kind == "scalars":
                        scalars[f"{value.tag}@{event.step}"] = float(make_ndarray(value.tensor).item())
        numbers: dict[str, float | str] = {}
        summary_json = json.loads(summary.read_text())
        # When and where the run was written differ between any two runs; everything else must not.
        summary_json.pop("created", None)
        summary_json.get("run", {}).pop("path", None)
        _flatten("summary", summary_json, numbers)
        runs[str(run_dir.relative_to(root))] = {"tags": dict(sorted(tags.items())), "scalars": scalars,
                                                "summary": numbers}
    return runs


def _close(a, b, rtol: float) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


def compare(before: dict, after: dict, rtol: float) -> list[str]:
    problems = []
    for run in sorted(set(before) | set(after)):
        if run not in before or run not in after:
            problems.append(f"{run}: only in {'after' if run in after else 'before'}")
            continue
        b, a = before[run], after[run]
        for section in ("tags", "scalars", "summary"):
            for key in sorted(set(b[section]) | set(a[section])):
                if key not in b[section] or key not in a[section]:
                    side = "after" if key in a[section] else "before"
                    problems.append(f"{run} {section} {key}: only in {side}")
                elif not _close(b[section][key], a[section][key], rtol):
                    problems.append(f"{run} {section} {key}: {b[section][key]!r} -> {a[section][key]!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("runs", type=Path)
    rec.add_argument("out", type=Path)
    rec.add_argument("--train", action="store_true", help="train every demo into RUNS first")
    rec.add_argument("--epochs", type=int, default=2)
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    cmp_.add_argument("--rtol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    if args.command == "record":
        if args.train:
            subprocess.run([sys.executable, "-m", "demo_models", "all", "--epochs", str(args.epochs),
                            "--out", str(args.runs), "--quiet"], check=True)
        args.out.write_text(json.dumps(fingerprint(args.runs), indent=1, sort_keys=True))
        return 0
    problems = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()), args.rtol)
    for line in problems:
        print(line)
    print(f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
