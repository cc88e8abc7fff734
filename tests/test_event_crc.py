"""Event files framed with a C CRC32C (``_event_crc``): the same bytes as tensorboard's own writer, read back by its
CRC-checking reader, installed only on the writers the monitors log to."""

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_masked_crc32c
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import SummaryWriter

from lightning_recanalysis import _event_crc
from lightning_recanalysis._event_crc import C_CRC32C_AVAILABLE, masked_crc32c, use_c_checksums
from lightning_recanalysis.writers import AnalysisWriter, tensorboard_experiments

needs_c = pytest.mark.skipif(not C_CRC32C_AVAILABLE, reason="google-crc32c's C extension is not installed")


def _record_writer(experiment):
    return experiment.file_writer.event_writer._async_writer._writer


def _installed(experiment) -> bool:
    return "write" in vars(_record_writer(experiment))


@needs_c
def test_masked_crc32c_equals_tensorboards_and_the_standard_check_value():
    # CRC-32C's published check value (RFC 3720, appendix B.4): CRC32C(b"123456789") = 0xE3069283.
    assert _event_crc._crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 8, 12, 255, 4096, 30_001):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == tensorboard_masked_crc32c(data)  # the oracle: tensorboard's pure Python


def _write_events(experiment, steps):
    """The same summaries, wall times fixed, into one writer: a scalar, an image-sized blob and a histogram."""
    blob = bytes(range(256)) * 40
    for step in steps:
        summary = Summary(value=[Summary.Value(tag="loss", simple_value=0.5 / (step + 1)),
                                 Summary.Value(tag="blob", image=Summary.Image(encoded_image_string=blob))])
        experiment._get_file_writer().add_summary(summary, global_step=step, walltime=1000.0 + step)
        experiment.add_histogram("h", np.arange(step + 5.0), global_step=step, walltime=1000.0 + step)
    experiment.flush()


def _records_after_the_first(path):
    """The file's bytes after its first record (the file-version event, whose wall time is the clock's)."""
    data = path.read_bytes()
    first = int.from_bytes(data[:8], "little")
    return data[8 + 4 + first + 4:]


@needs_c
def test_the_event_file_has_the_same_bytes_and_reads_back_through_the_crc_check(tmp_path):
    ours, theirs = SummaryWriter(str(tmp_path / "ours")), SummaryWriter(str(tmp_path / "theirs"))
    assert use_c_checksums(ours) and _installed(ours) and not _installed(theirs)
    assert use_c_checksums(ours)  # a second call finds it installed
    _write_events(ours, range(3))
    _write_events(theirs, range(3))
    for writer in (ours, theirs):
        writer.close()
    (mine,), (reference,) = (list((tmp_path / name).glob("events.*")) for name in ("ours", "theirs"))
    assert _records_after_the_first(mine) == _records_after_the_first(reference)
    # tensorboard's reader checks every record's two CRCs (DataLossError otherwise).
    events = list(EventFileLoader(str(mine)).Load())
    assert [e.step for e in events if e.summary.value and e.summary.value[0].tag == "loss"] == [0, 1, 2]


class _SlowFile:
    """A file object whose writes take a while, so that the writer's thread falls behind and records queue up."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        time.sleep(0.002)
        self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


@needs_c
def test_records_queued_before_the_install_and_a_reopened_file(tmp_path):
    """Installing while the writer's thread still has records queued, then after close() reopened the file."""
    writer = SummaryWriter(str(tmp_path))
    record_writer = _record_writer(writer)
    record_writer._writer = _SlowFile(record_writer._writer)
    for step in range(40):  # no flush: the thread writes them one by one, 2 ms each
        writer.add_scalar("loss", 1.0 / (step + 1), global_step=step, walltime=1000.0 + step)
    assert writer.file_writer.event_writer._async_writer._byte_queue.qsize() > 0  # still queued
    assert use_c_checksums(writer)
    _write_events(writer, range(40, 42))
    writer.close()
    assert not use_c_checksums(writer)  # closed: nothing to frame, and no file is reopened
    assert len(list(tmp_path.glob("events.*"))) == 1
    writer._get_file_writer()  # what a later write does: a new event file, with a new record writer
    assert not _installed(writer) and use_c_checksums(writer)
    _write_events(writer, range(42, 44))
    writer.close()
    steps = sorted(e.step for f in tmp_path.glob("events.*") for e in EventFileLoader(str(f)).Load()
                   if e.summary.value and e.summary.value[0].tag == "loss")
    assert steps == list(range(44))  # every record, each through tensorboard's CRC check


@needs_c
def test_the_installed_write_and_the_reader_compute_the_crc_in_c(tmp_path, monkeypatch):
    calls = []
    c_crc = _event_crc._crc32c
    monkeypatch.setattr(_event_crc, "_crc32c", lambda data: calls.append(len(data)) or c_crc(data))
    path = _written_file(tmp_path)
    written = len(calls)
    assert written >= 2 * 8  # a header and a data CRC for each of the 8 records written after the install
    records = list(_event_crc.event_records(path))
    assert len(calls) - written == 2 * len(records)


def test_without_a_c_crc_the_checksums_are_tensorboards(monkeypatch):
    monkeypatch.setattr(_event_crc, "_crc32c", None)
    data = bytes(range(256)) * 5
    assert masked_crc32c(data) == tensorboard_masked_crc32c(data)


def test_nothing_changes_without_a_c_crc_or_where_the_framing_would_differ(tmp_path, monkeypatch):
    writer = SummaryWriter(str(tmp_path))
    monkeypatch.setattr(_event_crc, "_crc32c", None)
    assert not use_c_checksums(writer) and not _installed(writer)
    monkeypatch.undo()
    if C_CRC32C_AVAILABLE:
        monkeypatch.setattr(_event_crc, "_agrees", None)
        monkeypatch.setattr(_event_crc, "masked_crc32c", lambda data: 0)  # a framing unlike tensorboard's
        assert not use_c_checksums(writer) and not _installed(writer)
    writer.close()


def test_other_writers_and_layouts_are_left_alone(tmp_path):
    assert not use_c_checksums(SimpleNamespace())  # not a SummaryWriter
    odd = SimpleNamespace(file_writer=SimpleNamespace(event_writer=SimpleNamespace(
        _async_writer=SimpleNamespace(_writer=object()))))
    assert not use_c_checksums(odd)  # a record writer of another kind
    writer = SummaryWriter(str(tmp_path))
    sentinel = _record_writer(writer).write = lambda data: None  # someone else's replacement
    assert not use_c_checksums(writer) and _record_writer(writer).write is sentinel
    del _record_writer(writer).write
    writer.close()
    assert type(_record_writer(SummaryWriter(str(tmp_path / "b")))) is RecordWriter  # the layout relied on


@needs_c
def test_the_monitors_writers_install_it_on_rank_zero_only(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    other = SummaryWriter(str(tmp_path / "user"))  # a writer of the user's own, untouched
    assert tensorboard_experiments(SimpleNamespace(is_global_zero=False, loggers=[logger])) == []
    assert not _installed(logger.experiment)
    AnalysisWriter("test").scalars(SimpleNamespace(is_global_zero=True, loggers=[logger]), {"a": 1.0}, step=0)
    assert _installed(logger.experiment) and not _installed(other)
    second = TensorBoardLogger(str(tmp_path), name="second", version=0)
    (experiment,) = tensorboard_experiments(SimpleNamespace(is_global_zero=True, loggers=[second]))
    assert _installed(experiment)
    second.finalize("success")
    logger.finalize("success")
    other.close()
    (path,) = (tmp_path / "run" / "version_0").glob("events.*")
    assert any(v.tag == "a" for e in EventFileLoader(str(path)).Load() for v in e.summary.value)
    assert os.path.getsize(path) > 0


def _written_file(tmp_path, steps=range(4)):
    writer = SummaryWriter(str(tmp_path))
    use_c_checksums(writer)
    _write_events(writer, steps)
    writer.close()
    (path,) = tmp_path.glob("events.*")
    return path


@pytest.mark.parametrize("c_crc", [True, False], ids=["c", "python"])
def test_event_records_reads_what_tensorboards_reader_reads(tmp_path, monkeypatch, c_crc):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    if c_crc and not C_CRC32C_AVAILABLE:
        pytest.skip("google-crc32c's C extension is not installed")
    path = _written_file(tmp_path)
    if not c_crc:
        monkeypatch.setattr(_event_crc, "_crc32c", None)
    ours = list(_event_crc.event_records(path))
    assert ours == list(RawEventFileLoader(str(path)).Load())  # the oracle: tensorboard's CRC-checking reader
    assert len(ours) == 1 + 4 * 2  # the file-version event, then a summary and a histogram per step


def test_event_records_stops_at_a_cut_tail_and_names_a_damaged_record(tmp_path):
    path = _written_file(tmp_path)
    data = path.read_bytes()
    records = list(_event_crc.event_records(path))
    offsets = np.cumsum([0] + [8 + 4 + len(r) + 4 for r in records])
    assert offsets[-1] == len(data)
    cut = tmp_path / "cut"
    for end in (offsets[5] + 3, offsets[5] + 13, offsets[6] - 1):  # in a header, in the data, in the last CRC
        cut.write_bytes(data[:end])
        assert list(_event_crc.event_records(cut)) == records[:5]  # a file still being written: no error
    damaged = bytearray(data)
    damaged[offsets[3] + 12 + 5] ^= 0x01  # one bit of record 3's data
    cut.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=f"record at byte {offsets[3]} is damaged"):
        list(_event_crc.event_records(cut))
    damaged = bytearray(data)
    damaged[offsets[2]] ^= 0x01  # one bit of record 2's length
    cut.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=f"record at byte {offsets[2]} has a damaged length"):
        list(_event_crc.event_records(cut))
