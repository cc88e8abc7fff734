"""AnalysisWriter against what tensorboard and Lightning write themselves: images (pixel for pixel), scalars and
histograms (the same values, in fewer events), and the private attributes it relies on."""

import io
from types import SimpleNamespace

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from helpers import read_events
from lightning_recanalysis.figures import heatmap_image
from lightning_recanalysis.writers import AnalysisWriter


def test_images_read_back_pixel_for_pixel_beside_add_image(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger])
    drawn = heatmap_image(np.arange(12.0).reshape(3, 4) / 11, title="a map", annotate=True)
    writer = AnalysisWriter("test")
    writer.image(trainer, "ours", drawn, step=3)
    logger.experiment.add_image("theirs", drawn, global_step=3, dataformats="HWC")  # the oracle: tensorboard's own
    # A float image is not ours to encode: it goes through add_image (values in [0, 1]).
    writer.image(trainer, "float", drawn.astype(np.float32) / 255, step=3)
    logger.experiment.flush()
    events = read_events(tmp_path / "run" / "version_0")
    decoded = {}
    for tag in ("ours", "theirs", "float"):
        (event,) = events.Images(tag)
        assert event.step == 3 and (event.height, event.width) == drawn.shape[:2]
        decoded[tag] = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert np.array_equal(decoded["ours"], drawn)
    assert np.array_equal(decoded["ours"], decoded["theirs"])
    assert np.abs(decoded["float"].astype(int) - drawn).max() <= 1


def _scalars(log_dir):
    events = read_events(log_dir)
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_scalars_read_back_as_log_metrics_writes_them(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    metrics = [{"collapse/a/ia": 3.25, "collapse/b/ia": 1.5}, {"collapse/a/ia": 2.75, "collapse/c": -1e-3}]
    for prefix in ("", "fold1"):
        ours = TensorBoardLogger(str(tmp_path / f"ours{prefix}"), name="run", version=0, prefix=prefix)
        theirs = TensorBoardLogger(str(tmp_path / f"theirs{prefix}"), name="run", version=0, prefix=prefix)
        csv = CSVLogger(str(tmp_path / f"csv{prefix}"), name="run", version=0)
        writer = AnalysisWriter("test")
        for step, values in enumerate(metrics):
            writer.scalars(SimpleNamespace(is_global_zero=True, loggers=[ours, csv]), values, step)
            theirs.log_metrics(values, step=step)  # the oracle: Lightning's own path, one event per scalar
        for logger in (ours, theirs, csv):
            logger.finalize("success")
        got = _scalars(tmp_path / f"ours{prefix}" / "run" / "version_0")
        assert got == _scalars(tmp_path / f"theirs{prefix}" / "run" / "version_0")
        assert set(got) == {f"{prefix}-{t}" if prefix else t for t in ("collapse/a/ia", "collapse/b/ia", "collapse/c")}
        # Other loggers still get log_metrics.
        rows = (tmp_path / f"csv{prefix}" / "run" / "version_0" / "metrics.csv").read_text().splitlines()
        assert rows[0].split(",") == ["collapse/a/ia", "collapse/b/ia", "collapse/c", "step"] and len(rows) == 3
    # Off rank 0 nothing is written, as log_metrics does.
    quiet = TensorBoardLogger(str(tmp_path / "quiet"), name="run", version=0)
    AnalysisWriter("test").scalars(SimpleNamespace(is_global_zero=False, loggers=[quiet]), metrics[0], 0)
    assert not (tmp_path / "quiet").exists()


def test_a_logger_subclass_that_filters_its_metrics_keeps_its_own_log_metrics(tmp_path):
    class NoSkip(TensorBoardLogger):
        def log_metrics(self, metrics, step=None):
            super().log_metrics({k: v for k, v in metrics.items() if not k.startswith("skip/")}, step)

    logger = NoSkip(str(tmp_path), name="run", version=0)
    AnalysisWriter("test").scalars(SimpleNamespace(is_global_zero=True, loggers=[logger]), {"skip/a": 1.0, "keep": 2.0}, 0)
    logger.finalize("success")
    assert _scalars(tmp_path / "run" / "version_0") == {"keep": [(0, 2.0)]}


def test_the_private_tensorboard_attributes_writers_relies_on(tmp_path):
    """writers.py uses SummaryWriter._get_file_writer() (to add a ready-made Summary) and
    TensorBoardLogger._prefix (log_metrics' tag prefix), which have no public equivalent: pin what it relies on."""
    from lightning_recanalysis.writers import record_summary

    logger = TensorBoardLogger(str(tmp_path), name="run", version=0, prefix="fold1")
    assert logger._prefix == "fold1"
    experiment = logger.experiment
    file_writer = experiment._get_file_writer()
    assert file_writer is experiment._get_file_writer()  # one writer, not a new file per call
    file_writer.add_summary(record_summary("collapse", {"epoch": 1}), global_step=7)
    experiment.close()
    # After close() it opens a new event file rather than failing: a record written after a logger closed its
    # writer (e.g. by a user's on_fit_end) still lands on disk.
    experiment._get_file_writer().add_summary(record_summary("collapse", {"epoch": 2}), global_step=8)
    experiment.flush()
    events = read_events(tmp_path / "run" / "version_0")
    assert sorted(e.step for e in events.Tensors("collapse/_record")) == [7, 8]  # two files, either order


def test_histograms_read_back_as_add_histogram_writes_them_in_one_event(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(0)
    values = {"entanglement/a/distance": rng.random(3000),
              "entanglement/b/distance": torch.tensor([0.5, float("nan"), 2.0, float("inf"), 1.0]),  # finite kept
              "entanglement/c/distance": [3.0, 3.0, 3.0],  # one value: a single bucket
              "entanglement/d/distance": np.array([np.nan])}  # nothing finite: no histogram
    for bins in (39, "auto"):
        ours = TensorBoardLogger(str(tmp_path / f"ours{bins}"), name="run", version=0)
        theirs = SummaryWriter(str(tmp_path / f"theirs{bins}"))
        AnalysisWriter("test").histograms(SimpleNamespace(is_global_zero=True, loggers=[ours]), values, step=4,
                                          bins=bins)
        for tag, v in values.items():  # the oracle: torch's add_histogram, one call per tag
            arr = np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
            if np.isfinite(arr).any():
                theirs.add_histogram(tag, arr[np.isfinite(arr)], global_step=4, bins=bins)
        ours.finalize("success")
        theirs.close()
        got, want = read_events(tmp_path / f"ours{bins}" / "run" / "version_0"), read_events(tmp_path / f"theirs{bins}")
        assert set(got.Tags()["histograms"]) == set(want.Tags()["histograms"]) == set(list(values)[:3])
        for tag in want.Tags()["histograms"]:
            (a,), (b,) = got.Histograms(tag), want.Histograms(tag)
            assert a.step == b.step == 4 and a.histogram_value == b.histogram_value
        (path,) = (tmp_path / f"ours{bins}" / "run" / "version_0").glob("events.*")
        events = [Event.FromString(r) for r in RawEventFileLoader(str(path)).Load()]
        assert [len(e.summary.value) for e in events if any(v.HasField("histo") for v in e.summary.value)] == [3]


def test_a_writer_that_overrides_add_histogram_gets_add_histogram(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    calls = []

    class Counting(SummaryWriter):
        def add_histogram(self, tag, values, *args, **kwargs):
            calls.append(tag)
            return super().add_histogram(tag, values, *args, **kwargs)

    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    logger._experiment = Counting(logger.log_dir)
    AnalysisWriter("test").histograms(SimpleNamespace(is_global_zero=True, loggers=[logger]),
                                      {"a": [1.0, 2.0], "b": [3.0]}, step=0)
    logger.finalize("success")
    assert calls == ["a", "b"]
