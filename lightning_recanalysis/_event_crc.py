"""Event-file checksums computed in C: for the TensorBoard writers the monitors log to, and for reading event files.

Every record of a TensorBoard event file ends in a masked CRC32C of its bytes (the TFRecord format)::

    uint64 length | uint32 masked_crc(length) | data[length] | uint32 masked_crc(data)
    masked_crc(x) = ((c >> 15) | (c << 17)) + 0xa282ead8  (mod 2**32),  c = CRC32C(x)

Without TensorFlow, ``tensorboard``'s writer computes that CRC in pure Python, one table lookup per byte, in the
writer's thread while it holds the interpreter lock. ``google-crc32c`` computes the same CRC in C (with the CPU's
CRC32C instruction where there is one); ``python -m benchmarks.bench_event_crc`` compares the two.

:func:`use_c_checksums` gives one ``SummaryWriter``'s record writer a ``write`` that frames records with that CRC.
The file's bytes stay the same, byte for byte: before the first install the new ``write`` and tensorboard's own
frame two sample records, and the install happens only if the two agree (so a changed record format, or a CRC
package that answers differently, leaves tensorboard's writer as it is). Only the writers the monitors log to
are touched (from the monitors' first write on, every record of that file, the logger's own included, until it is
closed); any other ``SummaryWriter`` in the process keeps tensorboard's ``write``.

:func:`event_records` reads an event file's records back, both CRCs of each checked the same way, for the report
that is rebuilt from event files (``python -m lightning_recanalysis report``).

Private: the record writer sits at ``SummaryWriter.file_writer.event_writer._async_writer._writer``; no public
API reaches it. ``tests/test_event_crc.py`` pins the path and the bytes.

Example:
    >>> import tempfile
    >>> from torch.utils.tensorboard import SummaryWriter
    >>> from lightning_recanalysis._event_crc import C_CRC32C_AVAILABLE, use_c_checksums
    >>> writer = SummaryWriter(tempfile.mkdtemp())
    >>> use_c_checksums(writer) == C_CRC32C_AVAILABLE
    True
    >>> writer.close()
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as _python_masked_crc32c
from tensorboard.summary.writer.record_writer import RecordWriter

try:  # C, and the CPU's CRC32C instruction where there is one; its pure-Python fallback would be no faster
    with warnings.catch_warnings():  # that fallback warns at import; here it is simply not used
        warnings.simplefilter("ignore", RuntimeWarning)
        import google_crc32c

    _crc32c = google_crc32c.value if getattr(google_crc32c, "implementation", None) == "c" else None
except ImportError:  # an installation without it keeps tensorboard's own checksums
    _crc32c = None

__all__ = ["C_CRC32C_AVAILABLE", "event_records", "masked_crc32c", "use_c_checksums"]

#: Whether a C CRC32C is importable (``google-crc32c`` with its compiled extension).
C_CRC32C_AVAILABLE = _crc32c is not None

_MASK_DELTA = 0xA282EAD8
_agrees: bool | None = None  # the one-time comparison with tensorboard's own framing


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data``: ``((c >> 15) | (c << 17)) + 0xa282ead8`` mod 2**32; in C, or with
    tensorboard's pure-Python CRC where no C CRC32C is installed.

    Example:
        >>> from lightning_recanalysis._event_crc import masked_crc32c
        >>> hex(masked_crc32c(b"123456789"))  # CRC32C("123456789") = 0xe3069283, the standard check value
        '0xc78ab0e5'
    """
    if _crc32c is None:
        return _python_masked_crc32c(data)
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def event_records(path: str | Path) -> Iterator[bytes]:
    """The data of each record of the event file at ``path`` (each an ``Event`` proto's bytes), in file order.

    Both CRCs of every record are checked with :func:`masked_crc32c` (in C where ``google-crc32c`` is installed). A record cut short at the end of the file (one still being written) ends the records
    quietly, as tensorboard's reader does; a record whose CRC does not match raises ``ValueError`` naming its
    offset, where tensorboard's reader would stop without a word.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> from tensorboard.compat.proto.event_pb2 import Event
        >>> from lightning_recanalysis._event_crc import event_records
        >>> writer = SummaryWriter(tempfile.mkdtemp()); writer.add_scalar("loss", 0.5, global_step=3); writer.close()
        >>> (path,) = Path(writer.log_dir).glob("events.*")
        >>> [(e.step, [v.tag for v in e.summary.value]) for e in map(Event.FromString, event_records(path))]
        [(0, []), (3, ['loss'])]
    """
    masked, unpack = masked_crc32c, struct.unpack
    with open(path, "rb") as file:
        while True:
            offset = file.tell()
            header = file.read(12)
            if len(header) < 12:
                return
            (length,), (length_crc,) = unpack("<Q", header[:8]), unpack("<I", header[8:])
            if masked(header[:8]) != length_crc:
                raise ValueError(f"{path}: the record at byte {offset} has a damaged length (CRC mismatch)")
            body = file.read(length + 4)
            if len(body) < length + 4:
                return
            data = body[:length]
            if masked(data) != unpack("<I", body[length:])[0]:
                raise ValueError(f"{path}: the record at byte {offset} is damaged (CRC mismatch)")
            yield data


def _framed_write(out):
    """A ``RecordWriter.write`` for the file object ``out``: the record framed as the module docstring shows."""
    pack = struct.pack

    def write(data: bytes) -> None:
        header = pack("<Q", len(data))
        out.write(header + pack("<I", masked_crc32c(header)) + data + pack("<I", masked_crc32c(data)))

    return write


def _framing_agrees() -> bool:
    """Whether our framing writes what tensorboard's ``RecordWriter`` writes, on two sample records (once)."""
    global _agrees
    if _agrees is None:
        ours, theirs = io.BytesIO(), io.BytesIO()
        reference, write = RecordWriter(theirs), _framed_write(ours)
        for sample in (b"", bytes(range(256)) * 3):
            reference.write(sample)
            write(sample)
        _agrees = ours.getvalue() == theirs.getvalue()
    return _agrees


def use_c_checksums(experiment) -> bool:
    """Frame the records of ``experiment``'s (a ``SummaryWriter``'s) open event file with a CRC32C computed in C.

    Returns whether its records are now framed so (also when an earlier call did it). False, and nothing
    changed, where no C CRC32C is installed, where the writer is not laid out as torch's ``SummaryWriter``
    (its event file not open yet, or closed; ``tensorboardX``; another version's internals), or where the
    framing would differ from tensorboard's. Never opens or reopens an event file.
    """
    if _crc32c is None:
        return False
    try:  # private, see the module docstring
        record_writer = experiment.file_writer.event_writer._async_writer._writer
    except AttributeError:
        return False
    if type(record_writer) is not RecordWriter:
        return False
    if "write" in vars(record_writer):  # installed before (or replaced by someone else: left alone)
        return getattr(record_writer.write, "__qualname__", "").startswith(_framed_write.__qualname__)
    if not _framing_agrees():
        return False
    # The writer's thread looks ``write`` up on the instance at every record, so this takes effect at the next
    # record. Replacing an attribute is atomic under the interpreter lock.
    record_writer.write = _framed_write(record_writer._writer)
    return True
