"""One rank's analysis fails before a collective: ``python fault_ddp.py SCENARIOS OUT_DIR DEVICES``.

SCENARIOS is a comma-separated list of ``spectrum``, ``conflict``, ``correlation``, ``field_pair`` and
``bad_label``. Each trains a small model with one monitor (``strict=False``) for two epochs; on rank 1 only (the
process Lightning starts with ``LOCAL_RANK=1``), one function the monitor calls at the end of epoch 0, before or
around its collective, raises once. ``bad_label`` instead shows FeatureCorrelationMonitor a label 2 on rank 1, an
error in the data that must stop training on every rank; its fit raises, so it goes last. Each rank dumps, per
scenario, the monitor's history, its failure count, its warnings and the error its fit raised to
``OUT_DIR/<scenario>_rank<r>.json``. Run by tests/callbacks/test_faults_ddp.py (through the scenario groups of
tests/scripts/scenario_groups.py, :func:`scenario`), which fails when this does not end.
"""

import json
import os
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_common import wait_for_other_ranks  # noqa: E402

from demo_models.data.batches import TensorBatches, split  # noqa: E402

import lightning_recanalysis.callbacks.conflict as conflict_module  # noqa: E402
import lightning_recanalysis.callbacks.field_pair as field_pair_module  # noqa: E402
import lightning_recanalysis.callbacks.spectrum as spectrum_module  # noqa: E402
from lightning_recanalysis.metrics.behavior_target import BehaviorTargetCounts  # noqa: E402

#: Where each scenario's fault goes: (owner of the function, its name). Each is called by the monitor at the
#: end of an analysed epoch, on this rank alone, before (spectrum, conflict, correlation) or instead of
#: (field_pair: the analysis, after the sync) the collective that pools the ranks.
FAULTS = {
    "spectrum": (spectrum_module, "row_normalized_gram"),  # before the row_sharded all-reduce of the Gram
    "conflict": (conflict_module, "cosine_sums"),  # before the all-reduce of the epoch's sums
    "correlation": (BehaviorTargetCounts, "flush"),  # counting the waiting batches, before the counts' sync
    "field_pair": (field_pair_module, "field_pair_matrices"),  # the analysis of the synced counts
}


class Fault(pl.Callback):
    """Arms the fault at the end of epoch 0 (listed before the monitor, so its hook runs first); the patched
    function raises at its first call after that, once."""

    armed = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        Fault.armed = trainer.current_epoch == 0


def inject(scenario: str):
    """Patch the scenario's function on this process; returns what undoes it (scenarios run one after another)."""
    owner, name = FAULTS[scenario]
    original = getattr(owner, name)

    def failing(*args, **kwargs):
        if Fault.armed:
            Fault.armed = False
            raise RuntimeError(f"injected fault in {name} on rank 1")
        return original(*args, **kwargs)

    setattr(owner, name, failing)
    return lambda: setattr(owner, name, original)


def inject_bad_label():
    """The counts see a label 2 in rank 1's first batch (the model trains on the true labels)."""
    original = BehaviorTargetCounts.update
    done = []

    def update(self, target_category, behavior_category, label, mask=None):
        if not done:
            done.append(True)
            label = label.clone()
            label[0] = 2
        return original(self, target_category, behavior_category, label, mask)

    BehaviorTargetCounts.update = update
    return lambda: setattr(BehaviorTargetCounts, "update", original)


def experiment(scenario: str):
    """(module, train loader, val loader or None, monitor) of one scenario, small enough for a few seconds."""
    from lightning_recanalysis import (
        EmbeddingSpectrumMonitor,
        FeatureCorrelationMonitor,
        FieldPairCorrelationMonitor,
        GradientConflictMonitor,
    )

    if scenario == "spectrum":
        from helpers import TinyCTR

        g = torch.Generator().manual_seed(0)
        x = torch.stack([torch.randint(0, 7, (512,), generator=g), torch.randint(0, 50, (512,), generator=g)], 1)
        y = ((x[:, 0] % 2) ^ (x[:, 1] % 3 == 0)).float()
        loader = DataLoader(list(zip(x, y)), batch_size=32)
        # "Row-sharded": each rank's replica counts as its shard, so the Gram is summed over both ranks.
        monitor = EmbeddingSpectrumMonitor(row_sharded=["embedding"], cross_layer=None, images=False)
        return TinyCTR(), loader, None, monitor
    if scenario == "conflict":
        from demo_models.data.multitask import synthetic_two_task
        from demo_models.multitask import MMoE

        data = synthetic_two_task(n_samples=640, seed=0)
        train, _ = split({"features": data.features, "labels": data.labels}, 0.2, 0)
        monitor = GradientConflictMonitor(field_dims=dict(zip(data.field_names, data.field_dims)), every_n_steps=2)
        return MMoE(data.field_dims, data.tasks), DataLoader(TensorBatches(train), batch_size=32), None, monitor
    if scenario in ("correlation", "bad_label"):
        from demo_models.data.sequences import planted_sequences
        from demo_models.tin import TIN

        data = planted_sequences(n_samples=512, seed=3)
        monitor = FeatureCorrelationMonitor(category_embedding="category_embedding",
                                            position_embedding="position_embedding", images=False)
        module = TIN(data.num_categories, data.max_length, embed_dim=8)
        return module, DataLoader(TensorBatches(data.tensors), batch_size=32), None, monitor
    if scenario == "field_pair":
        from demo_models.data.ctr import synthetic_ctr
        from demo_models.dcnv2 import DCNv2

        data = synthetic_ctr(n_samples=512, seed=0)
        module = DCNv2(data.field_dims, embed_dim=4, cross_layers=1, mlp_dims=(16,))
        monitor = FieldPairCorrelationMonitor(data.field_names, cross_layer="cross.layers.0", images=False)
        loader = DataLoader(TensorBatches({"features": data.features, "label": data.label}), batch_size=32)
        return module, loader, None, monitor
    raise ValueError(f"unknown scenario {scenario!r}: {[*FAULTS, 'bad_label']}")


def run(scenario: str, out: Path, devices: int) -> pl.Trainer:
    pl.seed_everything(0, verbose=False)
    module, train, val, monitor = experiment(scenario)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        logger=TensorBoardLogger(str(out), name=scenario, version=0), callbacks=[Fault(), monitor],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    undo = None
    if os.environ.get("LOCAL_RANK") == "1":
        undo = inject_bad_label() if scenario == "bad_label" else inject(scenario)
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.fit(module, train, val)
        except Exception as err:  # bad_label: kept for the test, which reads what each rank raised
            error = f"{type(err).__name__}: {err}"
        finally:
            if undo is not None:
                undo()
    name = type(monitor).__name__
    dump = {
        "error": error,
        "history": monitor.history,
        "failures": monitor.failures,
        "warnings": [str(w.message) for w in caught if str(w.message).startswith(name)],
        "final_weights_sum": float(sum(p.detach().double().sum() for p in module.parameters())),
    }
    (out / f"{scenario}_rank{trainer.global_rank}.json").write_text(json.dumps(dump))
    return trainer


def scenario(out: Path, scenarios: str, devices: int) -> pl.Trainer:
    """Every scenario of ``scenarios`` (comma-separated), one after the other; returns the first Trainer."""
    torch.set_num_threads(1)
    first = None
    for name in scenarios.split(","):
        trainer = run(name, out, devices)
        first = first or trainer
    return first


if __name__ == "__main__":
    out_dir = Path(sys.argv[2])
    wait_for_other_ranks(scenario(out_dir, sys.argv[1], int(sys.argv[3])), out_dir)
