"""What an offline analysis of a checkpoint costs beyond loading it and computing the spectrum.

    python -m benchmarks.bench_offline [--rows 2000000] [--width 32] [--repeats 5] [--quick]

A LightningModule holding one ``rows x width`` embedding table is saved as a Lightning checkpoint. Each
repetition times, side by side in this process and in alternating order:

- **load + spectrum**: ``load_from_checkpoint`` and the spectrum computation alone (the row-normalised Gram, its
  singular values, IA), the least any offline spectrum must cost;
- **analyze (class)**: ``analyze_checkpoints(path, model_class)``, what ``python -m lightning_recanalysis analyze
  CKPT --model ...`` runs: the checkpoint's entries read, the model loaded, a Trainer, ``trainer.validate`` with the
  spectrum monitor, the TensorBoard tags, images and the report;
- **analyze (state dict)**: the same without the class (the tables of the checkpoint's state dict, memory-mapped).

It prints each offline path's time over the baseline's, per repetition (median, min and max): the ratio the issue
bounds at 1.5 for a 2M x 32 table. A first, untimed repetition warms the imports and the page cache (every
variant then reads the file from memory).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from benchmarks._common import machine, table

SUPPORTS_QUICK = True


class OneTable(pl.LightningModule):
    """One embedding table, nothing else: what the spectrum of a checkpoint reads."""

    def __init__(self, rows: int = 1000, width: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Embedding(rows, width)


def save_checkpoint(path: Path, rows: int, width: int) -> None:
    torch.manual_seed(0)
    model = OneTable(rows, width)
    torch.save({"epoch": 3, "global_step": 1200, "pytorch-lightning_version": pl.__version__,
                "state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "hparams_name": "kwargs"}, path)


def load_and_spectrum(path: Path) -> float:
    from lightning_recanalysis.functional import (information_abundance, row_normalized_gram,
                                                  singular_values_from_gram)

    model = OneTable.load_from_checkpoint(path, map_location="cpu")
    weight = model.embedding.weight.detach()
    s = singular_values_from_gram(row_normalized_gram(weight).gram, min(weight.shape))
    return float(information_abundance(s))


def analyze_with_class(path: Path, out: Path) -> float:
    from lightning_recanalysis import analyze_checkpoints

    record = analyze_checkpoints(path, OneTable, out=out, overwrite=True).records["collapse"][-1]
    return record.views["embedding"].fields["embedding"].information_abundance


def analyze_state_dict(path: Path, out: Path) -> float:
    from lightning_recanalysis import analyze_checkpoints

    record = analyze_checkpoints(path, out=out, overwrite=True).records["collapse"][-1]
    return record.views["embedding"].fields["embedding"].information_abundance


def timed(fn, *args) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200,000 rows, 3 repetitions")
    args = parser.parse_args(argv)
    rows, repeats = (200_000, 3) if args.quick else (args.rows, args.repeats)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "table.ckpt"
        save_checkpoint(path, rows, args.width)
        variants = {"load + spectrum": lambda: load_and_spectrum(path),
                    "analyze (class)": lambda: analyze_with_class(path, tmp / "class"),
                    "analyze (state dict)": lambda: analyze_state_dict(path, tmp / "state")}
        for fn in variants.values():  # warm-up: imports, page cache, numba and allocator caches
            fn()
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        values: dict[str, float] = {}
        names = list(variants)
        for rep in range(repeats):
            order = names if rep % 2 == 0 else names[::-1]
            for name in order:
                elapsed, values[name] = timed(variants[name])
                seconds[name].append(elapsed)
    base = seconds["load + spectrum"]
    print(f"offline spectrum of a {rows:,} x {args.width} table from a Lightning checkpoint "
          f"({rows * args.width * 4 / 2**20:.0f} MiB); {machine()}; {repeats} repetitions, alternating order")
    rows_out = []
    for name in names:
        ratios = [s / b for s, b in zip(seconds[name], base)]
        rows_out.append([name, f"{statistics.median(seconds[name]):.3f}", f"{min(seconds[name]):.3f}",
                         f"{max(seconds[name]):.3f}", f"{statistics.median(ratios):.2f}",
                         f"{min(ratios):.2f}-{max(ratios):.2f}", f"{values[name]:.6f}"])
    print(table(["variant", "median s", "min s", "max s", "x baseline (median)", "x baseline (range)", "IA"],
                rows_out))


if __name__ == "__main__":
    main()
