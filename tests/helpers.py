"""Small models, data and oracles shared by the tests."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def numpy_row_normalized_singular_values(table) -> np.ndarray:
    """The oracle: float64 numpy SVD of the row-normalised table (rows / (norm + 1e-8)), as Guo et al. define it."""
    a = np.asarray(table.detach().cpu().double() if hasattr(table, "detach") else table, dtype=np.float64)
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-8)
    return np.linalg.svd(a, compute_uv=False)


def numpy_information_abundance(sv: np.ndarray) -> float:
    return float(sv.sum() / sv.max())


class TinyCTR(pl.LightningModule):
    """A two-field embedding model with a concatenated table, small enough for a test to train in seconds."""

    def __init__(self, field_dims=(7, 50), dim: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.field_dims = list(field_dims)
        self.embedding = nn.Embedding(sum(field_dims), dim)
        self.register_buffer("offsets", torch.tensor([0, *np.cumsum(field_dims)[:-1].tolist()]))
        self.head = nn.Linear(len(field_dims) * dim, 1)
        self.lr = lr

    def forward(self, x):
        return self.head(self.embedding(x + self.offsets).flatten(1)).squeeze(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def tiny_ctr_loader(field_dims=(7, 50), n: int = 512, batch_size: int = 64, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, d, (n,), generator=g) for d in field_dims], 1)
    y = ((x[:, 0] % 2) ^ (x[:, 1] % 3 == 0)).float()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def read_events(log_dir: str | Path):
    """All scalar, image, histogram and text tags of a run's event files (tensorboard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc
