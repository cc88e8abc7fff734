"""Command line: rebuild a run's report from its event files, compare runs, or analyse checkpoints
(``python -m lightning_recanalysis``, whose ``__main__`` runs :func:`main`; the code lives here so that its
examples run with the tests).

    python -m lightning_recanalysis report RUN_DIR [--out DIR] [thresholds...]
    python -m lightning_recanalysis compare RUN_A RUN_B [...] --out DIR
    python -m lightning_recanalysis analyze CHECKPOINT_OR_DIR [--model package.module.Class] [--data ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .report import ReportThresholds, build_report, compare_runs, find_runs, read_run
from .report.run_data import progress_printer

__all__ = ["build_parser", "main"]

_USAGE = """Command line: rebuild a run's report from its event files, compare runs, or analyse checkpoints.

    python -m lightning_recanalysis report RUN_DIR [--out DIR] [thresholds...]
    python -m lightning_recanalysis compare RUN_A RUN_B [...] --out DIR
    python -m lightning_recanalysis analyze CHECKPOINT_OR_DIR [--model package.module.Class] [--data ...] [--out DIR]
"""


def _threshold_help() -> dict[str, str]:
    """Each threshold's description, from :class:`ReportThresholds`' docstring (one place to say what it means)."""
    doc = (ReportThresholds.__doc__ or "").split("Attributes:", 1)[-1].split("Example:", 1)[0]
    out: dict[str, str] = {}
    name = None
    for line in doc.splitlines():
        stripped = line.strip()
        head, sep, rest = stripped.partition(": ")
        if sep and line.startswith(" " * 8) and not line.startswith(" " * 12) and head.isidentifier():
            name, out[head] = head, rest
        elif name and stripped:
            out[name] += " " + stripped
    return out


def _add_thresholds(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`ReportThresholds` field (``--collapsed-fraction`` for ``collapsed_fraction``)."""
    d = ReportThresholds()
    helps = _threshold_help()
    group = parser.add_argument_group("finding thresholds (when a number becomes a finding)")
    for f in dataclasses.fields(ReportThresholds):
        default = getattr(d, f.name)
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(default), default=default,
                           help=f"{helps.get(f.name, '').replace('%', '%%')} (default {default})")


def _thresholds(args) -> ReportThresholds:
    return ReportThresholds(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ReportThresholds)})


def _runs_under(path: Path) -> list[Path]:
    try:
        runs = find_runs(path)
    except FileNotFoundError:
        raise SystemExit(f"error: {path} does not exist")
    if not runs:
        raise SystemExit(f"error: no TensorBoard event files (events.out.tfevents.*) under {path}: "
                         "point at a run's log directory, e.g. runs/dcnv2-synthetic/monitors")
    return runs


def _cmd_report(args: argparse.Namespace) -> int:
    """``report``: rebuild the report of every run under ``args.run_dir`` from its event files, into the run's
    own directory (or ``args.out`` for a single run); prints the paths written."""
    progress = None if args.quiet else progress_printer("  ")
    runs = _runs_under(args.run_dir)
    if len(runs) > 1 and args.out is not None:
        raise SystemExit(f"error: {args.run_dir} holds {len(runs)} runs; --out only applies to one. Drop --out to "
                         "write each run's report into its own directory.")
    for run_dir in runs:
        print(f"{run_dir}:", file=sys.stderr)
        run = read_run(run_dir, progress=progress)
        paths = build_report(run, args.out or run_dir, _thresholds(args))
        for note in run.notes:
            print(f"  note: {note}", file=sys.stderr)
        print(f"  wrote {paths['html']}, {paths['markdown']}, {paths['summary']}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """``compare``: read every run under ``args.runs`` (at least two) and write their comparison into
    ``args.out``; prints the paths written."""
    progress = None if args.quiet else progress_printer("  ")
    dirs = [d for path in args.runs for d in _runs_under(path)]
    if len(dirs) < 2:
        raise SystemExit(f"error: compare needs at least two runs; found {len(dirs)} under {[str(p) for p in args.runs]}")
    runs = []
    for d in dirs:
        print(f"{d}:", file=sys.stderr)
        runs.append(read_run(d, progress=progress))
    paths = compare_runs(runs, args.out, _thresholds(args))
    print(f"wrote {paths['html']}, {paths['markdown']}, {paths['summary']}")
    return 0


def _field_dims(text: str) -> list[int] | dict[str, int]:
    """``--field-dims``: ``4,6,8`` (cardinalities in row order) or ``user=4,item=6,category=8`` (named)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if all("=" in p for p in parts):
            return {name.strip(): int(dim) for name, dim in (p.split("=", 1) for p in parts)}
        return [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--field-dims takes 4,6,8 or user=4,item=6,category=8, not {text!r}")


def _cmd_analyze(args: argparse.Namespace) -> int:
    """``analyze``: analyse a checkpoint or a directory of them into one run (event files and the report); prints
    the paths written."""
    from .offline.checkpoints import analyze_checkpoints, import_object

    data = None
    if args.data is not None:
        data = import_object(args.data)
        if callable(data):  # a DataModule class or a function returning a DataLoader / DataModule
            data = data(**json.loads(args.data_args))
    monitors = import_object(args.monitors) if args.monitors is not None else None
    progress = None if args.quiet else progress_printer("  ")
    result = analyze_checkpoints(
        args.checkpoint, model_class=args.model, data=data, monitors=monitors, out=args.out, stage=args.stage,
        field_dims=args.field_dims, cross_layer=None if args.cross_layer == "none" else args.cross_layer,
        tables=args.tables, thresholds=_thresholds(args), overwrite=args.overwrite, progress=progress)
    paths = result.paths
    print(f"wrote {result.log_dir} (event files), {paths['html']}, {paths['markdown']}, {paths['summary']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: the ``report`` and ``compare`` subcommands and their finding thresholds.

    Example:
        >>> args = build_parser().parse_args(["report", "runs/dcnv2-synthetic/monitors", "--collapsed-fraction", "0.1"])
        >>> args.func.__name__, args.run_dir.name, args.collapsed_fraction, args.collapsed_vs_init
        ('_cmd_report', 'monitors', 0.1, 0.7)
    """
    parser = argparse.ArgumentParser(prog="python -m lightning_recanalysis", description=_USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="rebuild a run's report from its TensorBoard event files",
                         description="Rebuild report.html, report.md (+ figures/) and summary.json from a run's event "
                         "files, without the model. Works on finished runs and runs still being written. RUN_DIR may "
                         "hold several runs (e.g. runs/): each gets its report in its own directory.")
    rep.add_argument("run_dir", type=Path, help="a run's log directory, or a directory of runs")
    rep.add_argument("--out", type=Path, default=None, help="where to write (default: the run's own directory)")
    rep.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_thresholds(rep)
    rep.set_defaults(func=_cmd_report)
    cmp_ = sub.add_parser("compare", help="put two or more runs side by side",
                          description="Compare runs: the final value of every scalar the runs share, per analysis, and "
                          "IA per field run by run. Writes compare.html, compare.md (+ figures/) and compare.json.")
    cmp_.add_argument("runs", type=Path, nargs="+", help="run directories (or directories of runs)")
    cmp_.add_argument("--out", type=Path, required=True, help="directory to write the comparison into")
    cmp_.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_thresholds(cmp_)
    cmp_.set_defaults(func=_cmd_compare)
    ana = sub.add_parser("analyze", help="analyse a trained model's checkpoint, or a directory of checkpoints",
                         description="Run the monitors once on a checkpoint (trainer.validate with the monitors "
                         "attached) and write the TensorBoard event files and the report, as a live run would have "
                         "logged the same weights; a directory of checkpoints gives the trajectory, each at its saved "
                         "epoch and global step. With --model the files are Lightning checkpoints of that "
                         "LightningModule; without, plain state dicts, whose tables (found by name and shape) get "
                         "the spectrum analyses.")
    ana.add_argument("checkpoint", type=Path, help="a checkpoint file, or a directory of them (.ckpt, .pt, .pth)")
    ana.add_argument("--model", default=None, metavar="package.module.Class",
                     help="the LightningModule class, as LightningCLI names it: load_from_checkpoint builds the model")
    ana.add_argument("--data", default=None, metavar="package.module.name",
                     help="the evaluation data: a DataLoader, a LightningDataModule (class) or a function returning "
                     "one (called with --data-args); default: the module's own val_dataloader, else none (then "
                     "only the analyses of the weights run)")
    ana.add_argument("--data-args", default="{}", metavar="JSON", help="keyword arguments of --data, as JSON")
    ana.add_argument("--monitors", default=None, metavar="package.module.name",
                     help="the monitors, configured as for training: a list, or a function of the model returning "
                     "one; default: EmbeddingSpectrumMonitor (with --field-dims, --cross-layer, --tables)")
    ana.add_argument("--field-dims", type=_field_dims, default=None, metavar="4,6,8 | user=4,item=6,...",
                     help="split the table whose rows they add up to into fields (default monitors)")
    ana.add_argument("--cross-layer", default="auto", help="the cross layer's module name, 'auto' or 'none'")
    ana.add_argument("--tables", nargs="+", default=None, metavar="GLOB",
                     help="the tables' module paths (globs); default: every nn.Embedding, or for a state dict the "
                     "2-D weights whose path names an embedding")
    ana.add_argument("--stage", choices=["validate", "test"], default="validate",
                     help="trainer.validate (validation_step) or trainer.test (test_step)")
    ana.add_argument("--out", type=Path, default=None,
                     help="where to write the event files and the report (default analysis/<name>/version_<n>)")
    ana.add_argument("--overwrite", action="store_true", help="replace the event files already in --out")
    ana.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_thresholds(ana)
    ana.set_defaults(func=_cmd_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m lightning_recanalysis``: parse ``argv`` (default: the process's arguments) and run the
    subcommand; bad input (a missing directory, no event files) exits with a message that says what to change.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from lightning.pytorch.loggers import TensorBoardLogger
        >>> from lightning_recanalysis import EmbeddingSpectrumMonitor
        >>> from lightning_recanalysis.toy import ToyDCN, toy_loader, toy_trainer
        >>> root = Path(tempfile.mkdtemp())
        >>> for seed in (0, 1):  # two tiny runs, root/seed0/monitors and root/seed1/monitors
        ...     logger = TensorBoardLogger(root, name=f"seed{seed}", version="monitors")
        ...     toy_trainer([EmbeddingSpectrumMonitor(field_dims=[4, 6, 8])], logger=logger).fit(
        ...         ToyDCN(), toy_loader(seed=seed))
        >>> main(["report", str(root / "seed0" / "monitors"), "--quiet"])
          wrote .../seed0/monitors/report.html, .../seed0/monitors/report.md, .../seed0/monitors/summary.json
        0
        >>> main(["compare", str(root), "--out", str(root / "cmp"), "--quiet"])
        wrote .../cmp/compare.html, .../cmp/compare.md, .../cmp/compare.json
        0
        >>> main(["analyze", str(root / "seed0"), "--out", str(root / "offline"), "--quiet"])
        Traceback (most recent call last):
        SystemExit: error: no checkpoint (.ckpt, .pt, .pth) under .../seed0
        >>> main(["report", "no/such/run"])
        Traceback (most recent call last):
        SystemExit: error: no/such/run does not exist
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")

