"""Spectra of a tall embedding table: ``singular_values`` against the authors' way and against svdvals.

    python -m benchmarks.bench_spectrum [--rows 2000000] [--cols 32] [--repeats 3]
    python -m benchmarks.bench_spectrum --sweep [--repeats 3] [--large-repeats 1]
    python -m benchmarks.bench_spectrum --methods ours,floor --table decaying   # a collapsed table

``--table gaussian`` (the default) has no small singular values, so ``ours`` reads it once; ``--table decaying``
has singular values falling geometrically from 1 to 1e-4 (a collapsed table), so every direction below about
1e-2 s_1 takes the second, narrow pass.

``--sweep`` measures 1M, 4M and 16M rows x 16, 32 and 64 columns (2^20, 2^22, 2^24 rows) in one table; the
16M-row tables (1 to 4 GiB, and the authors' method forms U of the same size) get ``--large-repeats``.

Each method runs in a fresh process (so no allocator cache or warm-up is shared), the methods interleaved
repetition by repetition, medians reported. Methods, all on the row-normalised float32 table:

- ``authors``: ``torch.svd`` of the whole normalised table, as the authors' notebook does (forms U as well);
- ``svdvals``: ``torch.linalg.svdvals`` of the whole normalised table;
- ``ours``: ``lightning_recanalysis.functional.singular_values`` (one streamed pass, float64-accurate);
- ``floor``: one float32 ``A^T A`` over the table, the N x K^2 multiply-adds no exact method can skip.

Extra peak memory is the growth of the process's resident high-water mark during the call, beyond the table
(after a warm-up call on a tiny table has loaded the libraries each method needs).

``ours`` streams the table in chunks over worker threads (one per torch thread, each operator single-threaded),
so another process on one core costs it about that core's share; the floor is one multithreaded BLAS call. Each
repetition runs ``ours`` and ``floor`` back to back, so their per-repetition ratio (printed with its spread)
cancels slow drifts in machine load.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import time

import torch

from lightning_recanalysis.functional import singular_values

from ._common import machine, median, peak_rss_bytes, run_worker, table

METHODS = ("authors", "svdvals", "ours", "floor")


def _normalised(a):
    return a / (a.norm(dim=1, keepdim=True) + 1e-8)


def _call(method: str, a: torch.Tensor):
    if method == "authors":
        return torch.svd(_normalised(a)).S
    if method == "svdvals":
        return torch.linalg.svdvals(_normalised(a))
    if method == "ours":
        return singular_values(a)
    if method == "floor":
        return a.T @ a
    raise ValueError(method)


def _table(kind: str, rows: int, cols: int) -> torch.Tensor:
    a = torch.randn(rows, cols, generator=torch.Generator().manual_seed(0))
    if kind == "decaying":
        a *= torch.logspace(0, -4, cols)
    elif kind != "gaussian":
        raise ValueError(f"unknown table kind {kind!r}: gaussian or decaying")
    return a


def worker(method: str, rows: int, cols: int, threads: int, kind: str = "gaussian") -> dict:
    if threads:
        torch.set_num_threads(threads)
    a = _table(kind, rows, cols)
    # Load the method's libraries (LAPACK, BLAS kernels) on a tiny table first: their code pages are not the
    # method's working memory, and every method pays this once per process anyway.
    _call(method, a[:2048].clone())
    gc.collect()
    before = peak_rss_bytes()
    start = time.perf_counter()
    _call(method, a)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "extra_peak_bytes": max(0, peak_rss_bytes() - before),
            "table_bytes": a.numel() * a.element_size()}


def _measure(methods, rows, cols, repeats, threads, kind="gaussian") -> tuple[dict, dict, int]:
    results = {m: [] for m in methods}
    for _ in range(repeats):
        for m in methods:  # interleaved, so drift in machine load hits every method alike
            try:
                results[m].append(run_worker("benchmarks.bench_spectrum", m, str(rows), str(cols), str(threads),
                                             kind))
            except (RuntimeError, subprocess.TimeoutExpired) as error:  # e.g. out of memory for the authors' U of a 16M-row table
                print(f"  {m} at {rows:,} x {cols} failed: {str(error).splitlines()[-1][:200]}", flush=True)
    secs = {m: median(r["seconds"] for r in results[m]) for m in methods if results[m]}
    mem = {m: median(r["extra_peak_bytes"] for r in results[m]) for m in methods if results[m]}
    table_bytes = rows * cols * 4
    return secs, mem, table_bytes


def sweep(methods, repeats, large_repeats, threads, sizes=(1 << 20, 1 << 22, 1 << 24), kind="gaussian") -> None:
    print(f"spectra of float32 tables; {machine()}; "
          f"{f'{threads} torch thread(s)' if threads else 'default torch threads'} per worker; medians of "
          f"{repeats} fresh processes each ({large_repeats} at 16M rows), methods interleaved", flush=True)
    out = []
    for rows in sizes:
        for cols in (16, 32, 64):
            secs, mem, table_bytes = _measure(methods, rows, cols, large_repeats if rows >= 1 << 24 else repeats,
                                              threads, kind)
            for m in methods:
                if m not in secs:
                    out.append([f"{rows:,}", cols, m, "failed", "-", "-", "-"])
                    continue
                out.append([f"{rows:,}", cols, m, f"{secs[m]:.3f}",
                            f"{secs[m] / secs['ours']:.1f}x" if "ours" in secs else "-",
                            f"{mem[m] / 2**20:.1f}", f"{100 * mem[m] / table_bytes:.1f}%"])
            print(f"  done {rows:,} x {cols}", flush=True)
    print(table(["rows", "cols", "method", "seconds", "time / ours", "extra peak MiB", "of table"], out))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--cols", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every worker (default: torch's own)")
    parser.add_argument("--sweep", action="store_true", help="1M/4M/16M rows x 16/32/64 columns")
    parser.add_argument("--large-repeats", type=int, default=1, help="repetitions at 16M rows in --sweep")
    parser.add_argument("--sweep-rows", default=f"{1 << 20},{1 << 22},{1 << 24}", help="row counts of --sweep")
    parser.add_argument("--table", default="gaussian", choices=("gaussian", "decaying"),
                        help="gaussian: no small singular values; decaying: s_k from 1 down to 1e-4 (collapsed)")
    parser.add_argument("--worker", nargs=5, metavar=("METHOD", "ROWS", "COLS", "THREADS", "TABLE"))
    args = parser.parse_args(argv)
    if args.worker:
        method, rows, cols, threads, kind = args.worker
        print(json.dumps(worker(method, int(rows), int(cols), int(threads), kind)))
        return
    methods = args.methods.split(",")
    if args.sweep:
        sweep(methods, args.repeats, args.large_repeats, args.threads,
              tuple(int(r) for r in args.sweep_rows.split(",")), args.table)
        return
    results = {m: [] for m in methods}
    for _ in range(args.repeats):
        for m in methods:  # interleaved, so drift in machine load hits every method alike
            results[m].append(run_worker("benchmarks.bench_spectrum", m, str(args.rows), str(args.cols),
                                         str(args.threads), args.table))
    secs = {m: median(r["seconds"] for r in results[m]) for m in methods}
    mem = {m: median(r["extra_peak_bytes"] for r in results[m]) for m in methods}
    table_bytes = results[methods[0]][0]["table_bytes"]
    threads = f"{args.threads} torch thread(s) per worker" if args.threads else "torch's default threads"
    print(f"spectrum of a {args.rows:,} x {args.cols} {args.table} float32 table ({table_bytes / 2**20:.0f} MiB); "
          f"{machine()}; "
          f"{threads}; median of {args.repeats} fresh processes each")
    rows = []
    for m in methods:
        spread = sorted(r["seconds"] for r in results[m])
        rows.append([m, f"{spread[0]:.3f} {secs[m]:.3f} {spread[-1]:.3f}",
                     f"{secs[m] / secs['ours']:.1f}x" if "ours" in secs else "-",
                     f"{mem[m] / 2**20:.1f}", f"{100 * mem[m] / table_bytes:.1f}%"])
    print(table(["method", "seconds min median max", "time / ours", "extra peak MiB", "of table"], rows))
    if "ours" in secs and "floor" in secs:
        # Each repetition's ours and floor ran back to back, so their ratio cancels slow drifts in machine load.
        ratios = sorted(o["seconds"] / f["seconds"] for o, f in zip(results["ours"], results["floor"]))
        print(f"ours takes {secs['ours'] / secs['floor']:.2f}x the float32 floor (one A^T A pass; ratio of the "
              f"medians); per repetition min {ratios[0]:.2f}x, median {median(ratios):.2f}x, max {ratios[-1]:.2f}x")


if __name__ == "__main__":
    main()
