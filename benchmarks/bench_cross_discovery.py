"""What finding the cross input's field order costs, against one training step of the per-feature DCNv2 demo.

    python -m benchmarks.bench_cross_discovery [--repeats 7] [--batch 1024] [--fields 8|26] [--threads 1] [--quick]

One process, interleaved repetitions, medians, one torch thread by default (as the demos train): small kernels
on two threads wait on each other, and a busy neighbour process slows them many times over. A training step is forward + backward + Adam step on one batch of
the demo's synthetic data. The discovery is everything it adds, once: registering the hooks, the hooked forward's
extra cost (forward with hooks minus forward without, measured side by side) and the matching after it. After
it, the model holds no hook (checked), so later steps cost what they cost without the monitor.
"""

from __future__ import annotations

import argparse
import time

import torch

from ._common import machine, median, table

SUPPORTS_QUICK = True


def _model(fields: int, batch: int):
    from demo_models.data.ctr import synthetic_ctr
    from demo_models.dcnv2_per_feature import DCNv2PerFeature

    ctr = synthetic_ctr(n_samples=batch, seed=0)
    names, dims = ctr.field_names, ctr.field_dims
    features = ctr.features
    if fields > len(names):  # wider: repeat the columns under new names, as a 26-field Criteo-like model
        reps = -(-fields // len(names))
        names = [f"{n}_{r}" for r in range(reps) for n in ctr.field_names][:fields]
        dims = (dims * reps)[:fields]
        features = features.repeat(1, reps)[:, :fields]
    return DCNv2PerFeature(names, dims), features, ctr.label


def _finder(model):
    from lightning_recanalysis.model.cross.finder import CrossFinder
    from lightning_recanalysis.model.field_sets import analysis_units
    from lightning_recanalysis.model.tables import discover_tables

    finder = CrossFinder("auto", owner="bench")
    finder.setup(model, analysis_units(discover_tables(model)))
    return finder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats = 3
    torch.manual_seed(0)
    model, x, y = _model(args.fields, args.batch)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    step_s, forward_s, hooked_s, setup_s, match_s = [], [], [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        step_s.append(time.perf_counter() - t0)
        with torch.no_grad():
            t0 = time.perf_counter()
            model(x)
            forward_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            finder = _finder(model)
            finder.start()
            setup_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model(x)
            hooked_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert finder.finish() and len(finder.layout.slots) == args.fields
            match_s.append(time.perf_counter() - t0)
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        assert hooks == 0, f"{hooks} hooks left on the model"
    step, extra = median(step_s), max(0.0, median(hooked_s) - median(forward_s))
    discovery = median(setup_s) + extra + median(match_s)
    print(f"per-feature DCNv2, {args.fields} fields of 16, batch {args.batch}; {machine()}; "
          f"medians of {args.repeats} interleaved repetitions")
    print(table(["what", "ms", "share of one training step"], [
        ["one training step (forward, backward, Adam)", f"{step * 1e3:.2f}", "1"],
        ["setup: tables, field sets, candidate kernels, hooks", f"{median(setup_s) * 1e3:.2f}", f"{median(setup_s) / step:.3f}"],
        ["hooked forward minus plain forward", f"{extra * 1e3:.2f}", f"{extra / step:.3f}"],
        ["matching the input against the lookups", f"{median(match_s) * 1e3:.2f}", f"{median(match_s) / step:.3f}"],
        ["discovery in all (once per fit)", f"{discovery * 1e3:.2f}", f"{discovery / step:.3f}"],
        ["hooks left on the model afterwards", "0", "0 per step"],
    ]))


if __name__ == "__main__":
    main()
