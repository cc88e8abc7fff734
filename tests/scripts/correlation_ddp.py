"""Train a small TIN with FeatureCorrelationMonitor on N CPU processes (Lightning "ddp", gloo) and dump what each
rank holds: ``python correlation_ddp.py OUT_DIR DEVICES``. Run by tests/callbacks/test_correlation_ddp.py, through the
scenario groups of tests/scripts/scenario_groups.py (:func:`scenario`)."""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from demo_models.data.sequences import planted_sequences  # noqa: E402
from demo_models.tin import TIN  # noqa: E402
from lightning_recanalysis import FeatureCorrelationMonitor  # noqa: E402


class Rows(Dataset):
    """One sample per index, so that Lightning's DistributedSampler can split the rows between ranks."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors["label"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}


def scenario(out: Path, devices: int) -> pl.Trainer:
    torch.set_num_threads(1)
    pl.seed_everything(0)
    data = planted_sequences(n_samples=2048, seed=3)
    model = TIN(data.num_categories, data.max_length, embed_dim=8)
    monitor = FeatureCorrelationMonitor(category_embedding="category_embedding",
                                        position_embedding="position_embedding", num_targets=2, strict=True)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        logger=TensorBoardLogger(str(out), name="tb", version=0), callbacks=[monitor],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(model, DataLoader(Rows(data.tensors), batch_size=128, shuffle=False))
    (out / f"history_rank{trainer.global_rank}.json").write_text(json.dumps(monitor.history))
    return trainer


if __name__ == "__main__":
    scenario(Path(sys.argv[1]), int(sys.argv[2]))
