"""Train a small MMoE with GradientConflictMonitor and EntanglementMonitor on N CPU processes (Lightning "ddp",
gloo) and dump what each rank holds: ``python conflict_ddp.py OUT_DIR DEVICES``. Run by
tests/callbacks/test_multitask_ddp.py, through the scenario groups of tests/scripts/scenario_groups.py
(:func:`scenario`).

The EntanglementMonitor has two single-task references (untrained single-task Shared-Bottoms with fixed seeds:
their random geometries disagree, which is all the conflict subsets need) and keeps frequent pairs only, so the
frequency counts are summed over ranks."""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from demo_models.data.batches import TensorBatches, split  # noqa: E402
from demo_models.data.multitask import synthetic_two_task  # noqa: E402
from demo_models.multitask import MMoE, SharedBottom, monitors_for  # noqa: E402


def scenario(out: Path, devices: int) -> pl.Trainer:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    data = synthetic_two_task(n_samples=2000, seed=0)
    train, val = split({"features": data.features, "labels": data.labels}, 0.2, 0)
    module = MMoE(data.field_dims, data.tasks)
    references = {}
    for seed, task in enumerate(data.tasks):
        torch.manual_seed(100 + seed)
        references[task] = SharedBottom(data.field_dims, (task,))
    monitors = monitors_for("mmoe", data.field_names, data.field_dims, data.tasks, data.user_field,
                            data.item_field, references=references, every_n_steps=2, strict=True)
    monitors[1].strict, monitors[1].conflict.frequent_only = True, True
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        logger=TensorBoardLogger(str(out), name="tb", version=0), callbacks=monitors,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    # Per-sample loaders, so that Lightning can give each rank its own shard (DistributedSampler).
    trainer.fit(module, DataLoader(TensorBatches(train), batch_size=64), DataLoader(TensorBatches(val), batch_size=100))
    rank = trainer.global_rank
    dump = {type(m).__name__: m.history for m in monitors}
    dump["train_batches_per_rank"] = len(trainer.train_dataloader)
    (out / f"history_rank{rank}.json").write_text(json.dumps(dump))
    return trainer


if __name__ == "__main__":
    scenario(Path(sys.argv[1]), int(sys.argv[2]))
