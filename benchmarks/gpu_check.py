"""The GPU check: the analyses on CUDA tensors, timed and checked against float64 oracles, and the demos on a GPU.

    python -m benchmarks.gpu_check [--out DIR] [--quick] [--device cuda]

Meant for a machine with an NVIDIA GPU (the tests and CI never need one); ``--quick --device cpu`` runs the
same code on small sizes anywhere, to check the script itself. Every section is independent: one that fails
prints its error and the others still run. Results are printed and written to ``DIR/gpu_check.json``.

Sections:

1. **Spectra** of 1M/4M/16M x 16/32/64 float32 tables living on the GPU: ``singular_values`` against the
   authors' full ``torch.svd`` and ``torch.linalg.svdvals`` of the row-normalised table (both on the GPU),
   medians of interleaved repetitions; extra peak GPU memory of each (allocator high-water mark above the
   table); our largest error against a float64 oracle, in units of s_1; the host's resident memory growth
   during our call (the table is never copied to the host).
2. **TF32 guard**: the same spectrum with ``torch.set_float32_matmul_precision("high")`` in force, as many GPU
   training scripts set it: our error must stay where it was.
3. **Half precision**: IA of float16/bfloat16 copies of a table against float32, relative.
4. **Counting** (``BehaviorTargetCounts``) on CUDA batches: identical counts to the CPU, and the time of each.
5. **Gradient cosine** on CUDA gradients against the float64 CPU value.
6. **Demos on the GPU**: every demo model trained with and without its monitors, and DCNv2 under
   ``bf16-mixed``; the ratio of fit times.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from .bench_spectrum import _normalised

RESULTS: dict = {}
OUT_FILE: Path | None = None


def _save() -> None:
    """Write what is known so far, so that a run cut short still leaves its figures."""
    if OUT_FILE is not None:
        OUT_FILE.write_text(json.dumps(RESULTS, indent=1, default=str))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def _peak_extra(fn, device) -> tuple[object, float, int]:
    """Result, seconds and the allocator high-water mark above what was allocated before the call (bytes)."""
    if device.type != "cuda":
        out, secs = _timed(fn, device)
        return out, secs, -1
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out, secs = _timed(fn, device)
    return out, secs, torch.cuda.max_memory_allocated(device) - before


def _table(rows: int, cols: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A table with a decaying spectrum (so small singular values matter): Gaussian rows times a diagonal that
    falls from 1 to 1e-3 over the columns, then a random rotation."""
    g = torch.Generator(device=device).manual_seed(seed)
    scales = torch.logspace(0, -3, cols, device=device)
    rotation = torch.linalg.qr(torch.randn(cols, cols, device=device, generator=g))[0]
    out = torch.empty(rows, cols, device=device)
    step = 1 << 22
    for start in range(0, rows, step):  # built in slices, so that building it needs no second table of memory
        stop = min(rows, start + step)
        out[start:stop] = (torch.randn(stop - start, cols, device=device, generator=g) * scales) @ rotation
    return out


def _oracle_sv(table: torch.Tensor) -> torch.Tensor:
    """float64 singular values of the row-normalised table: a float64 Gram summed over slices, then eigvalsh."""
    gram = torch.zeros(table.shape[1], table.shape[1], dtype=torch.float64, device=table.device)
    for start in range(0, table.shape[0], 1 << 21):
        c = table[start:start + (1 << 21)].to(torch.float64)
        c = c / (c.norm(dim=1, keepdim=True) + 1e-8)
        gram += c.T @ c
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)


def section_spectra(device, sizes, repeats) -> None:
    from lightning_recanalysis.functional import singular_values

    methods = {
        "ours": lambda a: singular_values(a),
        "svdvals": lambda a: torch.linalg.svdvals(_normalised(a)),
        "authors": lambda a: torch.svd(_normalised(a)).S,
    }
    slow: set[str] = set()
    out = RESULTS.setdefault("spectra", [])
    print(f"{'rows':>10} {'cols':>4} {'method':>8} {'median s':>9} {'vs ours':>8} {'extra peak MiB':>15} "
          f"{'of table':>9} {'max err/s1':>11}", flush=True)
    for rows, cols in sizes:
        a = _table(rows, cols, device)
        table_bytes = a.numel() * 4
        oracle = _oracle_sv(a)
        times: dict[str, list[float]] = {m: [] for m in methods}
        peaks: dict[str, int] = {}
        errors: dict[str, float] = {}
        failures: dict[str, str] = {}
        for m, fn in methods.items():  # warm-up: kernels, cuSOLVER handles, allocator
            if m not in slow:
                fn(a[:4096])
        _sync(device)
        host_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for rep in range(repeats):
            for m, fn in methods.items():  # interleaved, so drift hits every method alike
                if m in slow or (rep > 0 and m == "authors" and times[m] and times[m][0] > 5):
                    continue
                try:
                    sv, secs, peak = _peak_extra(lambda: fn(a), device)
                except Exception as error:  # out of memory, or a solver that refuses the size
                    slow.add(m)
                    failures[m] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
                    continue
                times[m].append(secs)
                peaks[m] = max(peaks.get(m, 0), peak)
                sv = sv.to(torch.float64)[: oracle.numel()]
                errors[m] = float((sv - oracle).abs().max() / oracle[0])
                del sv
        host_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - host_before) / 1024
        ours = sorted(times["ours"])[len(times["ours"]) // 2]
        for m in methods:
            if not times[m]:
                why = failures.get(m, "skipped: too slow, or failed, at a smaller size")
                print(f"{rows:>10,} {cols:>4} {m:>8}   {why}")
                out.append({"rows": rows, "cols": cols, "method": m, "failed": why})
                continue
            med = sorted(times[m])[len(times[m]) // 2]
            peak = peaks.get(m, -1)
            print(f"{rows:>10,} {cols:>4} {m:>8} {med:9.4f} {med / ours:7.1f}x {peak / 2**20:15.1f} "
                  f"{100 * peak / table_bytes:8.1f}% {errors.get(m, float('nan')):11.2e}", flush=True)
            out.append({"rows": rows, "cols": cols, "method": m, "seconds": med, "vs_ours": med / ours,
                        "extra_peak_bytes": peak, "table_bytes": table_bytes, "max_error_over_s1": errors.get(m),
                        "repeats": len(times[m])})
            if med > 6:
                slow.add(m)  # the next size is 2x to 4x the work: too long for a check that must stay short
        print(f"   host resident-memory growth over these calls: {host_growth_mib:.0f} MiB "
              f"(the table is {table_bytes / 2**20:.0f} MiB)", flush=True)
        out.append({"rows": rows, "cols": cols, "host_rss_growth_mib": host_growth_mib})
        _save()
        del a, oracle
        if device.type == "cuda":
            torch.cuda.empty_cache()


def section_tf32(device, rows) -> None:
    from lightning_recanalysis.functional import singular_values

    a = _table(rows, 32, device, seed=1)
    oracle = _oracle_sv(a)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        ours = singular_values(a)
        restored = torch.get_float32_matmul_precision()
        c = _normalised(a)
        naive = torch.linalg.eigvalsh((c.T @ c).to(torch.float64)).clamp_min(0).sqrt().flip(0)  # TF32 product
    finally:
        torch.set_float32_matmul_precision(previous)
    err = float((ours - oracle).abs().max() / oracle[0])
    err_naive = float((naive - oracle).abs().max() / oracle[0])
    print(f"with float32_matmul_precision('high'): ours max err/s1 {err:.2e}; a plain float32 Gram under the "
          f"same setting {err_naive:.2e}; setting after our call: {restored!r}", flush=True)
    RESULTS["tf32_guard"] = {"rows": rows, "ours_error": err, "plain_gram_error": err_naive,
                             "precision_after_call": restored}


def section_half(device, rows) -> None:
    from lightning_recanalysis.functional import information_abundance, singular_values

    a = _table(rows, 32, device, seed=2)
    ia32 = float(information_abundance(singular_values(a)))
    out = {"float32": ia32}
    for dtype in (torch.float16, torch.bfloat16):
        ia = float(information_abundance(singular_values(a.to(dtype))))
        # The half table holds rounded values: compare with float32 IA of the same rounded values.
        ia_same = float(information_abundance(singular_values(a.to(dtype).to(torch.float32))))
        out[str(dtype)] = {"ia": ia, "relative_to_float32": abs(ia - ia32) / ia32,
                           "relative_to_rounded_float32": abs(ia - ia_same) / ia_same}
        print(f"IA {dtype}: {ia:.5f} vs float32 {ia32:.5f} (relative {abs(ia - ia32) / ia32:.1e}; "
              f"vs the rounded table in float32 {abs(ia - ia_same) / ia_same:.1e})", flush=True)
    RESULTS["half_precision"] = out


def section_counting(device, sequences, length, categories) -> None:
    from benchmarks.bench_counting import make_chunk
    from lightning_recanalysis.metrics import BehaviorTargetCounts

    batch = min(65_536, sequences)
    chunks = [make_chunk(i, batch, length, categories) for i in range(max(1, sequences // batch))]
    results = {}
    for where in ("cpu", device.type):
        dev = torch.device(where) if where == "cpu" else device
        metric = BehaviorTargetCounts().to(dev)
        moved = [tuple(x.to(dev) for x in c) for c in chunks]
        _sync(dev)
        start = time.perf_counter()
        for target, behavior, label in moved:
            metric.update(target, behavior, label)
        keys, counts = metric._merged("triple")
        _sync(dev)
        results[where] = (time.perf_counter() - start, keys.cpu(), counts.cpu())
    cpu_s, cpu_k, cpu_c = results["cpu"]
    dev_s, dev_k, dev_c = results[device.type]
    identical = torch.equal(cpu_k, dev_k) and torch.equal(cpu_c, dev_c)
    n = len(chunks) * batch * length
    print(f"counting {n:,} behaviours, {categories} categories: cpu {cpu_s:.3f} s, {device.type} {dev_s:.3f} s "
          f"(cpu / {device.type} = {cpu_s / dev_s:.1f}x); counts identical: {identical}", flush=True)
    RESULTS["counting"] = {"behaviours": n, "categories": categories, "cpu_seconds": cpu_s,
                           "device_seconds": dev_s, "identical": identical}


def section_cosine(device) -> None:
    from lightning_recanalysis.functional import gradient_cosine

    g = torch.Generator().manual_seed(5)
    grads = {f"task{i}": torch.randn(50_000, 16, generator=g) for i in range(3)}
    grads["task2"] = -0.5 * grads["task0"] + 0.1 * grads["task2"]
    on_cpu = gradient_cosine({k: v.to(torch.float64) for k, v in grads.items()})
    on_dev = gradient_cosine({k: v.to(device) for k, v in grads.items()})
    err = float((on_dev.cpu() - on_cpu).abs().max())
    print(f"gradient cosine on {on_dev.device}: max |difference| to float64 CPU {err:.1e}; "
          f"cos(task0, task2) = {float(on_dev[0, 2]):.4f}", flush=True)
    RESULTS["gradient_cosine"] = {"device": str(on_dev.device), "max_abs_error": err}


def section_demos(device, models, epochs, out_dir: Path) -> None:
    from demo_models.__main__ import run

    accelerator = "gpu" if device.type == "cuda" else "cpu"
    rows = RESULTS.setdefault("demos", [])
    cases = [(m, "32-true") for m in models] + ([("dcnv2", "bf16-mixed")] if "dcnv2" in models else [])
    for model, precision in cases:
        times = {}
        for monitors in (False, True):
            start = time.perf_counter()
            log_dir = run(model, None, epochs, out_dir / precision, 0, monitors, quiet=True,
                          accelerator=accelerator, precision=precision)
            times[monitors] = time.perf_counter() - start
        report = log_dir / "summary.json"
        findings = json.loads(report.read_text()).get("findings", []) if report.exists() else []
        ratio = times[True] / times[False]
        print(f"demo {model} ({precision}, {epochs} epochs, {accelerator}): no monitors {times[False]:.1f} s, "
              f"monitors + report {times[True]:.1f} s, ratio {ratio:.3f}; summary.json "
              f"{'written' if report.exists() else 'MISSING'}, {len(findings)} findings", flush=True)
        rows.append({"model": model, "precision": precision, "epochs": epochs, "no_monitors_s": times[False],
                     "monitors_s": times[True], "ratio": ratio, "summary_written": report.exists(),
                     "findings": [f if isinstance(f, str) else f.get("text", str(f)) for f in findings][:6]})
        _save()


def section_hooks(device, models, epochs) -> None:
    """Where the monitors' time goes on this device: seconds inside each monitor's hooks, as a share of fit,
    and the most expensive library functions under cProfile."""
    import cProfile
    import pstats

    from benchmarks.bench_overhead import worker

    rows = RESULTS.setdefault("hooks", [])
    for model in models:
        profiler = cProfile.Profile()
        result = worker(model, "all", epochs, accelerator="gpu" if device.type == "cuda" else "cpu",
                        profiler=profiler)
        total, seconds = result["total"], result["monitors"]
        shares = {k: v / total for k, v in seconds.items()}
        print(f"{model}: fit {total:.2f} s; inside monitors: "
              + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items()), flush=True)
        stats = pstats.Stats(profiler)
        top = sorted(((v[3], f"{k[0].split('lightning_recanalysis/')[-1]}:{k[1]}({k[2]})", v[1])
                      for k, v in stats.stats.items() if "lightning_recanalysis" in k[0]), reverse=True)[:25]
        for cumulative, where, calls in top:
            print(f"   {cumulative:7.3f} s  {calls:6d} calls  {where}")
        rows.append({"model": model, "fit_s": total, "shares": shares,
                     "top": [{"s": c, "where": w, "calls": n} for c, w, n in top]})
        _save()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (to check the script on any machine)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sections", default="spectra,tf32,half,counting,cosine,demos")
    parser.add_argument("--rows", default="", help="spectra: comma-separated row counts (default 2^20,2^22,2^24)")
    parser.add_argument("--models", default="", help="demos and hooks: comma-separated demo models")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --quick to check the script")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    global OUT_FILE
    OUT_FILE = args.out / "gpu_check.json"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    RESULTS["machine"] = {"device": name, "torch": torch.__version__, "python": sys.version.split()[0]}
    print(f"gpu_check on {name}, torch {torch.__version__}", flush=True)
    if args.quick:
        sizes, repeats, rows, counting, models = [(20_000, 16), (40_000, 32)], 2, 50_000, (4_096, 50, 100), ["dcnv2"]
    else:
        sizes = [(r, c) for r in (1 << 20, 1 << 22, 1 << 24) for c in (16, 32, 64)]
        repeats, rows, counting = 3, 1 << 22, (1_000_000, 50, 100)
        # The three that carry every monitor first, in case the run is cut short.
        models = ["dcnv2", "tin", "mmoe", "din", "shared_bottom", "ple", "stem"]
    if args.rows:
        sizes = [(int(r), c) for r in args.rows.split(",") for c in (16, 32, 64)]
    if args.models:
        models = args.models.split(",")
    sections = {
        "spectra": lambda: section_spectra(device, sizes, repeats),
        "tf32": lambda: section_tf32(device, rows),
        "half": lambda: section_half(device, rows),
        "counting": lambda: section_counting(device, *counting),
        "cosine": lambda: section_cosine(device),
        "hooks": lambda: section_hooks(device, models, args.epochs),
        "demos": lambda: section_demos(device, models, args.epochs, Path(tempfile.mkdtemp(prefix="gpu_demos_"))),
    }
    failed = []
    for key in args.sections.split(","):
        print(f"\n=== {key} ===", flush=True)
        start = time.perf_counter()
        try:
            sections[key]()
        except Exception:  # one section's failure must not hide the others' figures
            failed.append(key)
            traceback.print_exc()
            RESULTS[f"{key}_error"] = traceback.format_exc()[-2000:]
        print(f"[{key}: {time.perf_counter() - start:.1f} s]", flush=True)
        _save()
    print(f"\nsections failed: {failed or 'none'}; results in {args.out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
