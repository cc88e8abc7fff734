"""What a report is built from: each analysis' records and the run's scalars, taken either from the live
callbacks at the end of fit or from a run's TensorBoard event files (finished or still being written).

Both paths give the same :class:`RunData`, which is why a report regenerated from the event files holds the same
numbers as the one written at the end of fit.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.util import tensor_util

from .._event_crc import event_records
from ..records import Record, record_type
from ..writers import RECORD_PLUGIN

__all__ = ["RunData", "find_runs", "progress_printer", "read_run", "run_from_callbacks", "run_name"]

EVENT_GLOB = "events.out.tfevents.*"


def run_name(path: str | Path) -> str:
    """A run's name: its directory and the one above (``dcnv2-synthetic/monitors``, ``my_model/version_3``).

    Example:
        >>> run_name("/tmp/runs/dcnv2-synthetic/monitors")
        'dcnv2-synthetic/monitors'
    """
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


@dataclass
class RunData:
    """One run: its typed records per analysis namespace (:mod:`lightning_recanalysis.records`, oldest first), its scalar series
    (``tag -> [(step, value), ...]``), and notes on what could not be read.

    Example:
        >>> run = RunData("dcnv2/monitors", "runs/dcnv2/monitors", records={"collapse": [], "correlation": []})
        >>> run.namespaces, run.scalars
        (['collapse', 'correlation'], {})
    """

    name: str
    path: str
    records: dict[str, list[Record]] = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Published dicts (a record built by hand, or read by older code) become the namespace's typed records.
        self.records = {ns: [r if isinstance(r, Record) else record_type(ns).from_dict(r) for r in recs]
                        for ns, recs in self.records.items()}

    @property
    def namespaces(self) -> list[str]:
        return sorted(self.records)


def _sorted_records(namespace: str, published: Iterable[dict[str, Any]]) -> list[Record]:
    """The typed records of ``namespace`` from published dicts, one per (stage, epoch) (a resumed run may have
    written an epoch twice; the later write wins), ordered by step with the fit-start baseline first."""
    unique: dict[tuple, dict[str, Any]] = {}
    for r in published:
        unique[(r.get("stage"), r.get("epoch"))] = r
    kind = record_type(namespace)
    return sorted((kind.from_dict(r) for r in unique.values()), key=lambda r: (r.step, r.stage != "init", r.epoch))


def run_from_callbacks(callbacks: Iterable[Any], name: str, path: str | Path) -> RunData:
    """RunData from live monitors at the end of fit: every callback with a ``namespace`` and a non-empty
    ``history`` of records (what :class:`~lightning_recanalysis.callbacks.base.AnalysisCallback` keeps; the
    report reads that shape rather than the monitors' classes). Records are kept one per (stage, epoch), ordered
    by step with the fit-start baseline first.

    Example:
        >>> from types import SimpleNamespace
        >>> monitor = SimpleNamespace(namespace="collapse", history=[
        ...     {"stage": "epoch", "epoch": 0, "step": 8}, {"stage": "init", "epoch": 0, "step": 0}])
        >>> run = run_from_callbacks([monitor, SimpleNamespace()], name="toy", path="runs/toy")
        >>> [(r.stage, r.step) for r in run.records["collapse"]]
        [('init', 0), ('epoch', 8)]
    """
    run = RunData(name=name, path=str(path))
    published: dict[str, list[dict[str, Any]]] = {}
    for cb in callbacks:
        coverage = getattr(cb, "coverage_record", None)
        if isinstance(getattr(cb, "namespace", None), str) and (getattr(cb, "history", None) or coverage):
            # Round-trip through JSON so the live report sees exactly what the event files hold.
            shown = list(getattr(cb, "history", None) or []) + ([coverage] if coverage else [])
            published.setdefault(cb.namespace, []).extend(json.loads(json.dumps(shown, allow_nan=True)))
    run.records = {ns: _sorted_records(ns, recs) for ns, recs in published.items()}
    return run


def find_runs(root: str | Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that holds TensorBoard event files.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "dcnv2" / "monitors").mkdir(parents=True)
        >>> (root / "dcnv2" / "monitors" / "events.out.tfevents.1.host").touch()
        >>> [p.relative_to(root).as_posix() for p in find_runs(root)]
        ['dcnv2/monitors']
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    dirs = sorted({p.parent for p in root.rglob(EVENT_GLOB)})
    return dirs


def read_run(run_dir: str | Path, progress: Callable[[str], None] | None = None) -> RunData:
    """Read one run directory's event files, every record's CRCs checked (:func:`.._event_crc.event_records`).

    A file is read up to its first damaged record, and the damage becomes a note, never an exception; a record cut
    short at the end of a file (one still being written) ends that file quietly. ``progress`` receives a line per
    event file, for long reads.

    Example:
        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> from lightning.pytorch.loggers import TensorBoardLogger
        >>> from lightning_recanalysis.writers import AnalysisWriter
        >>> logger = TensorBoardLogger(tempfile.mkdtemp(), name="toy", version="monitors")
        >>> trainer = SimpleNamespace(is_global_zero=True, loggers=[logger])  # what the writer reads of a Trainer
        >>> writer = AnalysisWriter("Example")
        >>> writer.scalars(trainer, {"collapse/t/mean_information_abundance": 3.5}, step=0)
        >>> writer.record(trainer, "collapse", {"stage": "init", "epoch": 0, "step": 0, "views": {}}, step=0)
        >>> writer.flush(trainer)
        >>> run = read_run(logger.log_dir)
        >>> run.name, run.records["collapse"][0].stage, run.scalars["collapse/t/mean_information_abundance"]
        ('toy/monitors', 'init', [(0, 3.5)])
    """
    run_dir = Path(run_dir)
    run = RunData(name=run_name(run_dir), path=str(run_dir))
    files = sorted(run_dir.glob(EVENT_GLOB))
    if not files:
        run.notes.append(f"no event files in {run_dir}")
        return run
    records: dict[str, list[dict[str, Any]]] = {}
    for number, path in enumerate(files, 1):
        if progress:
            progress(f"reading {path.name} ({path.stat().st_size / 2**20:.1f} MiB, file {number} of {len(files)})")
        try:
            for data in event_records(path):  # each record's CRCs checked in C, not in tensorboard's Python
                event = Event.FromString(data)
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    _take_value(value, event.step, run, records)
        except Exception as err:  # a corrupt or half-written file: keep what was read before the damage
            run.notes.append(f"{path.name}: stopped reading at a damaged record ({type(err).__name__}: {err})")
    run.records = {ns: _sorted_records(ns, recs) for ns, recs in records.items()}
    for tag, series in run.scalars.items():
        run.scalars[tag] = sorted(dict(series).items())
    return run


def _take_value(value, step: int, run: RunData, records: dict[str, list[dict[str, Any]]]) -> None:
    plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
    if plugin == RECORD_PLUGIN and value.tag.endswith("/_record"):
        namespace = value.tag[: -len("/_record")]
        try:
            records.setdefault(namespace, []).append(json.loads(value.tensor.string_val[0].decode("utf-8")))
        except (ValueError, IndexError) as err:
            run.notes.append(f"{value.tag} at step {step}: unreadable record ({err})")
    elif value.HasField("simple_value"):
        run.scalars.setdefault(value.tag, []).append((step, float(value.simple_value)))
    elif plugin == "scalars" and value.HasField("tensor"):
        run.scalars.setdefault(value.tag, []).append((step, float(tensor_util.make_ndarray(value.tensor).item())))


def progress_printer(prefix: str = "") -> Callable[[str], None]:
    """A ``progress`` for :func:`read_run`: each line to stderr, after ``prefix``, flushed at once.

    Example:
        >>> import contextlib, io
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     progress_printer("  ")("reading events.out.tfevents.1 (0.1 MiB, file 1 of 1)")
        >>> print(err.getvalue(), end="")
          reading events.out.tfevents.1 (0.1 MiB, file 1 of 1)
    """
    def emit(line: str) -> None:
        print(f"{prefix}{line}", file=sys.stderr, flush=True)

    return emit
