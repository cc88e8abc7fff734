"""Event-file CRCs: tensorboard's pure-Python CRC32C against ``google-crc32c``'s C (``lightning_recanalysis._event_crc``),
writing and reading back what a multi-task demo's monitors write.

    python -m benchmarks.bench_event_crc [--repeats 7]

One "run" of events: 15 images of 30 KB, 8 analysis records of 17 KB and 90 histograms, about what STEM's monitors
write in 4 epochs (half a megabyte). Writing: a ``SummaryWriter`` as tensorboard leaves it against one given C
checksums by ``use_c_checksums``; each adds the run and flushes, and the CPU time of the process (the writer's
thread included, where the CRCs are computed) is timed. Reading: tensorboard's ``RawEventFileLoader`` (CRCs in
Python) against ``event_records`` (CRCs in C). The two variants alternate round by round. Printed: median
milliseconds of each, the ratio's min / median / max over the rounds, and whether the two files' records are the
same bytes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ._common import machine, median, table

SUPPORTS_QUICK = True


def _summaries():
    from tensorboard.compat.proto.summary_pb2 import Summary

    rng = np.random.default_rng(0)
    images = [Summary(value=[Summary.Value(tag=f"image/{i}", image=Summary.Image(
        height=290, width=892, colorspace=3, encoded_image_string=rng.bytes(30_000)))]) for i in range(15)]
    records = [Summary(value=[Summary.Value(tag=f"record/{i}", tensor={"dtype": "DT_STRING",
                                                                       "string_val": [rng.bytes(17_000)]})])
               for i in range(8)]
    histograms = [rng.random(3000) for _ in range(90)]
    return images, records, histograms


def _write(folder: str, c_checksums: bool, summaries) -> tuple[float, Path]:
    from torch.utils.tensorboard import SummaryWriter

    from lightning_recanalysis._event_crc import use_c_checksums

    images, records, histograms = summaries
    writer = SummaryWriter(folder)
    if c_checksums:
        use_c_checksums(writer)
    start = time.process_time()
    file_writer = writer._get_file_writer()
    for step, summary in enumerate(images + records):
        file_writer.add_summary(summary, global_step=step, walltime=1.0)
    for step, values in enumerate(histograms):
        writer.add_histogram("h", values, global_step=step, bins=39, walltime=1.0)
    writer.flush()
    seconds = time.process_time() - start
    writer.close()
    (path,) = Path(folder).glob("events.*")
    return seconds, path


def _read(path: Path, c_checksums: bool) -> tuple[float, list[bytes]]:
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    from lightning_recanalysis._event_crc import event_records

    start = time.process_time()
    records = list(event_records(path)) if c_checksums else list(RawEventFileLoader(str(path)).Load())
    return time.process_time() - start, records


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args(argv)
    from lightning_recanalysis._event_crc import C_CRC32C_AVAILABLE

    if not C_CRC32C_AVAILABLE:
        print("google-crc32c's C extension is not installed: nothing to compare")
        return
    repeats = 3 if args.quick else args.repeats
    summaries = _summaries()
    times = {("write", False): [], ("write", True): [], ("read", False): [], ("read", True): []}
    same = True
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as python_dir, tempfile.TemporaryDirectory() as c_dir:
            seconds, python_file = _write(python_dir, False, summaries)
            times["write", False].append(seconds)
            seconds, c_file = _write(c_dir, True, summaries)
            times["write", True].append(seconds)
            seconds, theirs = _read(python_file, False)
            times["read", False].append(seconds)
            seconds, ours = _read(c_file, True)
            times["read", True].append(seconds)
            same &= theirs[1:] == ours[1:]  # after the file-version event, whose wall time is the clock's
            size = c_file.stat().st_size
    rows = []
    for what in ("write", "read"):
        python, c = times[what, False], times[what, True]
        ratios = sorted(p / q for p, q in zip(python, c))
        rows.append([what, f"{1e3 * median(python):.1f}", f"{1e3 * median(c):.1f}",
                     f"{ratios[0]:.1f} / {median(ratios):.1f} / {ratios[-1]:.1f}"])
    print(f"event-file CRCs, tensorboard's Python vs C; {machine()}; {repeats} interleaved rounds of a "
          f"{size / 1e3:.0f}-KB event file")
    print(table(["", "Python CRC ms (median)", "C CRC ms (median)", "Python / C (min / median / max)"], rows))
    print(f"same records, byte for byte: {same}")


if __name__ == "__main__":
    main()
