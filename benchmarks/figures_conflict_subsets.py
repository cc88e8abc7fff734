"""The README's conflict-subset figures: how well the single-task references find the planted disagreeing pairs,
and how far each multi-task demo's embedding reproduces the single-task geometries, over several seeds.

    python -m benchmarks.figures_conflict_subsets [--seeds 0 1 2] [--models mmoe ple stem]

Per seed: the two single-task references (``demo_models.references.train_references``, as ``python -m
demo_models`` trains them), the conflict subsets of the validation pairs and their precision and recall against
the planted pairs, then each multi-task demo (synthetic data, its default epochs) with EntanglementMonitor and
the references. Printed: per model and task the mean agreement over both modes in the view that serves the task
(the task's own STEM chunk, else the shared embedding): 1 = places every conflict pair as the task's single-task
model does, 0 = chance; the weaker task's value is the model's score. Mean and range over the seeds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from ._common import table


def planted_precision_recall(references: dict[str, Path], seed: int) -> dict[str, tuple[float, float]]:
    from demo_models.data.batches import split
    from demo_models.multitask import build, demo_data
    from lightning_recanalysis.model.reference import load_reference
    from lightning_recanalysis.functional.conflict_subset import conflict_subsets
    from lightning_recanalysis.model.tables import discover_tables

    data = demo_data("synthetic-pairs", seed)
    _, val = split({"features": data.features, "planted": data.planted_pairs}, 0.2, seed)
    table_ = discover_tables(build("shared_bottom", "synthetic-pairs", seed, monitors=False, task="click").module,
                             field_dims=dict(zip(data.field_names, data.field_dims)))[0]
    user, item = [(table_, f) for f in table_.fields if f.name in ("user_id", "item_id")]
    refs = {t: load_reference(p, t, user, item, {}, "figures") for t, p in references.items()}
    masks = conflict_subsets({t: r.distances(val["features"][:, 0], val["features"][:, 1]) for t, r in refs.items()})
    out = {}
    for mode, plant in (("purchase_far_click_near", 1), ("click_far_purchase_near", -1)):
        truth, found = val["planted"] == plant, masks[mode]
        out[mode] = (float((found & truth).sum() / found.sum()), float((found & truth).sum() / truth.sum()))
    return out


def main(argv=None) -> None:
    import lightning.pytorch as pl

    from demo_models.multitask import build
    from demo_models.references import train_references
    from lightning_recanalysis.report.compare_conflict import own_task_agreement

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["mmoe", "ple", "stem"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    precision: dict[str, list[tuple[float, float]]] = {}
    scores: dict[str, list[dict[str, float]]] = {m: [] for m in args.models}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="conflict_figures_") as out:
            references = train_references("synthetic-pairs", seed, Path(out))
            for mode, pr in planted_precision_recall(references, seed).items():
                precision.setdefault(mode, []).append(pr)
            for model in args.models:
                pl.seed_everything(seed, verbose=False)
                experiment = build(model, "synthetic-pairs", seed, monitors=True, references=references)
                monitor = experiment.callbacks[1]
                pl.Trainer(max_epochs=experiment.max_epochs, callbacks=[monitor], logger=False, accelerator="cpu",
                           enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                           num_sanity_val_steps=0, deterministic=True).fit(
                    experiment.module, experiment.train_loader, experiment.val_loader)
                scores[model].append(own_task_agreement(monitor.history[-1]["conflict"]))
                print(f"seed {seed} {model}: {scores[model][-1]}", flush=True)

    def spread(values):
        return f"{sum(values) / len(values):+.2f} [{min(values):+.2f}, {max(values):+.2f}]"

    print(f"\nconflict subsets against the planted pairs, seeds {args.seeds} (mean [min, max]):")
    print(table(["mode", "precision", "recall"],
                [[m, spread([p for p, _ in v]), spread([r for _, r in v])] for m, v in precision.items()]))
    print("\nagreement with each task's single-task geometry in the view serving the task (mean [min, max]):")
    tasks = list(scores[args.models[0]][0])
    print(table(["model"] + tasks + ["weaker task"],
                [[m] + [spread([s[t] for s in v]) for t in tasks] + [spread([min(s.values()) for s in v])]
                 for m, v in scores.items()]))


if __name__ == "__main__":
    main()
