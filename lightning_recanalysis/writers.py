"""Where analysis results go: every Lightning logger for scalars, TensorBoard for images, histograms and text.

One step convention for everything a monitor logs: ``trainer.global_step`` at the moment of the analysis (0 for
the fit-start baseline), so scalars, images and histograms of one analysis line up in TensorBoard and beside
the training loss.

Writing never takes training down: a failed write (full disk, unwritable directory) becomes one warning per
kind of failure and the run goes on.

Two private TensorBoard/Lightning attributes are used, because no public API does the same: torch's
``SummaryWriter._get_file_writer()`` (the only way to add a ready-made ``Summary`` proto: our JSON records under
our own plugin, and all of an analysis' scalars or an already PNG-encoded image in one event) and Lightning's
``TensorBoardLogger._prefix`` (the prefix ``log_metrics`` puts before every tag; it has no public getter).
``tests/test_writers.py`` pins both: what they return and that the events read back as the public path writes them.
"""

from __future__ import annotations

import json
import warnings
from typing import Iterable, Mapping

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import histogram as histogram_summary

from ._event_crc import use_c_checksums
from .figures.png import encode_png

__all__ = ["AnalysisWriter", "tensorboard_experiments", "RECORD_PLUGIN", "record_tag", "record_summary",
           "image_summary"]

#: Plugin name of the summaries that carry each analysis' full record (JSON). TensorBoard's dashboards ignore
#: plugins they do not know, so these stay out of sight, while ``python -m lightning_recanalysis report`` reads
#: them back to rebuild the report from the event files alone.
RECORD_PLUGIN = "lightning_recanalysis"


def record_tag(namespace: str) -> str:
    """The tag of a namespace's record summaries.

    Example:
        >>> from lightning_recanalysis.writers import record_tag
        >>> record_tag("collapse")
        'collapse/_record'
    """
    return f"{namespace}/_record"


def record_summary(namespace: str, record: Mapping) -> "object":
    """A TensorBoard ``Summary`` holding one analysis record as a JSON string tensor under our own plugin.

    Example:
        >>> from lightning_recanalysis.writers import record_summary
        >>> value = record_summary("collapse", {"epoch": 0, "ia": float("nan")}).value[0]
        >>> value.tag, value.metadata.plugin_data.plugin_name, value.tensor.string_val[0]
        ('collapse/_record', 'lightning_recanalysis', b'{"epoch": 0, "ia": NaN}')
    """
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=RECORD_PLUGIN, content=b"1"))
    tensor = TensorProto(dtype="DT_STRING", string_val=[json.dumps(record, allow_nan=True).encode("utf-8")],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=record_tag(namespace), metadata=metadata, tensor=tensor)])


def image_summary(tag: str, image_hwc: np.ndarray) -> "object":
    """A TensorBoard image ``Summary`` of an ``[H, W, 3]`` uint8 image, PNG-encoded at zlib level 1.

    The same summary as ``SummaryWriter.add_image``'s, without its round trip of the pixels through float32: the
    PNG comes from :func:`~lightning_recanalysis.figures.png.encode_png` (every row filtered "Up", zlib at level
    1; the same pixels). The docs' benchmarks compare the two.

    Example:
        >>> import numpy as np
        >>> from lightning_recanalysis.writers import image_summary
        >>> image = image_summary("collapse/t/spectrum_heatmap", np.zeros((4, 6, 3), np.uint8)).value[0].image
        >>> image.height, image.width, image.encoded_image_string[:4]
        (4, 6, b'\\x89PNG')
    """
    height, width = image_hwc.shape[:2]
    png = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encode_png(image_hwc))
    return Summary(value=[Summary.Value(tag=tag, image=png)])


def _tensorboard_scalars(trainer, logger, metrics: Mapping[str, float], step: int) -> bool:
    """Write ``metrics`` to a ``TensorBoardLogger`` as one event; False for any other logger (left to it).

    The values TensorBoardLogger.log_metrics writes (one ``simple_value`` per tag, under the logger's prefix,
    rank 0 only), in one event instead of one per scalar: an analysis logs tens to hundreds of scalars, and
    each event has its own cost to build and queue."""
    # A subclass that overrides log_metrics (to filter or rename) gets its own method.
    if not isinstance(logger, TensorBoardLogger) or type(logger).log_metrics is not TensorBoardLogger.log_metrics:
        return False
    if not trainer.is_global_zero:
        return True  # log_metrics is rank-zero-only too
    experiment = logger.experiment
    if not _writes_tensorboard_protos(experiment):
        return False
    # Private: TensorBoardLogger has no public getter of the prefix log_metrics puts before every tag.
    prefix = getattr(logger, "_prefix", "")
    join = getattr(logger, "LOGGER_JOIN_CHAR", "-")
    values = [Summary.Value(tag=f"{prefix}{join}{tag}" if prefix else tag, simple_value=value)
              for tag, value in metrics.items()]
    # Private: SummaryWriter has no public way to add a ready-made Summary (here: many scalars in one event).
    file_writer = experiment._get_file_writer()  # reopens the event file if the logger closed it
    use_c_checksums(experiment)
    file_writer.add_summary(Summary(value=values), global_step=step)
    return True


def _writes_tensorboard_protos(experiment) -> bool:
    """True for torch's own ``SummaryWriter`` (not a subclass that changes how it adds scalars or images), whose
    file writer takes ``tensorboard``'s protos."""
    kind = type(experiment)
    return (isinstance(experiment, SummaryWriter) and kind.add_image is SummaryWriter.add_image
            and kind.add_scalar is SummaryWriter.add_scalar)


def _finite(values) -> np.ndarray:
    """The finite values of a tensor, an array or any iterable of numbers, as float64."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    elif not isinstance(values, np.ndarray):
        values = list(values)  # any iterable, generators included
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def _is_rgb8(image: np.ndarray) -> bool:
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def tensorboard_experiments(trainer) -> list:
    """The ``SummaryWriter`` of every TensorBoard logger attached to the trainer (rank 0 only; else empty).

    Example:
        >>> from types import SimpleNamespace
        >>> from lightning_recanalysis.writers import tensorboard_experiments
        >>> tensorboard_experiments(SimpleNamespace(is_global_zero=False, loggers=[]))
        []
    """
    if trainer is None or not trainer.is_global_zero:
        return []
    experiments = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    for experiment in experiments:
        # The same bytes, framed with a CRC computed in C instead of tensorboard's pure Python (see _event_crc):
        # a multi-task demo's monitors write half a megabyte of images and records.
        use_c_checksums(experiment)
    return experiments


class AnalysisWriter:
    """Sends one analysis' results to the trainer's loggers.

    Scalars go to every logger (``log_metrics``, which Lightning's loggers already restrict to rank 0; to a
    TensorBoard logger as one event per call, the same values);
    images, histograms and text go to TensorBoard loggers only. With loggers but none of them TensorBoard,
    images and histograms are skipped with a single warning (with no logger at all, silently).

    Example:
        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> from lightning.pytorch.loggers import TensorBoardLogger
        >>> from lightning_recanalysis.writers import AnalysisWriter
        >>> logger = TensorBoardLogger(tempfile.mkdtemp(), name="run", version=0)
        >>> trainer = SimpleNamespace(is_global_zero=True, loggers=[logger])  # what the writer reads of a Trainer
        >>> writer = AnalysisWriter("MyMonitor")
        >>> writer.scalars(trainer, {"collapse/t/f/information_abundance": 3.5}, step=0)
        >>> writer.text(trainer, "collapse/findings", "- no field is collapsed yet", step=0)
        >>> writer.flush(trainer)
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{self.owner}: {message}", RuntimeWarning, stacklevel=3)

    def _experiments(self, trainer, what: str) -> list:
        experiments = tensorboard_experiments(trainer)
        if not experiments and trainer is not None and trainer.is_global_zero and trainer.loggers:
            self._warn_once(
                "no-tensorboard",
                f"no TensorBoardLogger attached, so {what} and other images/histograms are skipped "
                "(scalars still go to every logger). Add `lightning.pytorch.loggers.TensorBoardLogger` to see them.",
            )
        return experiments

    def scalars(self, trainer, metrics: Mapping[str, float], step: int) -> None:
        if not metrics or trainer is None:
            return
        clean = {k: float(v) for k, v in metrics.items()}
        for logger in trainer.loggers:
            try:
                if not _tensorboard_scalars(trainer, logger, clean, step):
                    logger.log_metrics(clean, step=step)
            except Exception as err:  # a logger's own failure must not stop training
                self._warn_once(f"scalars-{type(logger).__name__}", f"could not log scalars to {type(logger).__name__}: {err!r}")

    def image(self, trainer, tag: str, image_hwc: np.ndarray, step: int) -> None:
        """An ``[H, W, 3]`` uint8 image (what :mod:`~lightning_recanalysis.figures` draws)."""
        experiments = self._experiments(trainer, "image " + tag)
        if not experiments:
            return
        summary = None
        for exp in experiments:
            try:
                if _writes_tensorboard_protos(exp) and _is_rgb8(image_hwc):
                    summary = summary or image_summary(tag, image_hwc)
                    # Private: add_image would decode and re-encode the pixels we have encoded once.
                    exp._get_file_writer().add_summary(summary, global_step=step)
                else:
                    exp.add_image(tag, image_hwc, global_step=step, dataformats="HWC")
            except Exception as err:
                self._warn_once("image", f"could not write image '{tag}': {err!r}")

    def histogram(self, trainer, tag: str, values: torch.Tensor | np.ndarray | Iterable[float], step: int,
                  bins: str | int = "auto") -> None:
        """One histogram of ``values`` (their finite ones; none: nothing is written), as ``add_histogram``."""
        self.histograms(trainer, {tag: values}, step, bins)

    def histograms(self, trainer, values_by_tag: Mapping[str, torch.Tensor | np.ndarray | Iterable[float]],
                   step: int, bins: str | int = "auto") -> None:
        """Several histograms at one step, ``{tag: values}``: the buckets ``add_histogram`` writes, in one event.

        To torch's own ``SummaryWriter`` they go as one event of one value per tag, where ``add_histogram``
        writes an event each (each built, queued and written on its own); TensorBoard reads the same histograms
        either way. Any other writer gets ``add_histogram``."""
        experiments = self._experiments(trainer, "histogram " + next(iter(values_by_tag), ""))
        if not experiments:
            return
        arrays = {tag: arr for tag, arr in ((tag, _finite(values)) for tag, values in values_by_tag.items())
                  if arr.size}
        if not arrays:
            return
        summary = None
        for exp in experiments:
            try:
                if _writes_tensorboard_protos(exp) and type(exp).add_histogram is SummaryWriter.add_histogram \
                        and bins != "tensorflow":  # add_histogram's own name for its default bins
                    if summary is None:
                        summary = Summary(value=[histogram_summary(tag, arr, bins).value[0]
                                                 for tag, arr in arrays.items()])
                    # Private: add_histogram writes one event per tag, with no way to add a ready-made Summary.
                    exp._get_file_writer().add_summary(summary, global_step=step)
                else:
                    for tag, arr in arrays.items():
                        exp.add_histogram(tag, arr, global_step=step, bins=bins)
            except Exception as err:
                self._warn_once("histogram", f"could not write histograms {list(arrays)[:3]}: {err!r}")

    def text(self, trainer, tag: str, markdown: str, step: int) -> None:
        for exp in tensorboard_experiments(trainer):
            try:
                exp.add_text(tag, markdown, global_step=step)
            except Exception as err:
                self._warn_once("text", f"could not write text '{tag}': {err!r}")

    def record(self, trainer, namespace: str, record: Mapping, step: int) -> None:
        """Store an analysis' full record in the event file (see :data:`RECORD_PLUGIN`)."""
        for exp in tensorboard_experiments(trainer):
            try:  # private: no public SummaryWriter method adds a tensor summary under our own plugin
                exp._get_file_writer().add_summary(record_summary(namespace, record), global_step=step)
            except Exception as err:
                self._warn_once("record", f"could not write the {namespace} record to the event file: {err!r}")

    def custom_scalars(self, trainer, layout: Mapping) -> None:
        """Write TensorBoard's Custom Scalars layout ``{category: {chart: ["Multiline", [tag regex, ...]]}}``."""
        for exp in tensorboard_experiments(trainer):
            try:
                exp.add_custom_scalars(dict(layout))
            except Exception as err:
                self._warn_once("layout", f"could not write the custom-scalars layout: {err!r}")

    def flush(self, trainer) -> None:
        """Flush event files so a running ``tensorboard`` shows the analysis now, not minutes later."""
        for exp in tensorboard_experiments(trainer):
            try:
                exp.flush()
            except Exception as err:
                self._warn_once("flush", f"could not flush the TensorBoard event file: {err!r}")
