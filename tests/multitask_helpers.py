"""Hand-built multi-task models with known gradients, and small demo runs, for the conflict and entanglement tests."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

#: Two fields of four values each in one concatenated table: rows 0-3 are field "f0", rows 4-7 field "f1".
KNOWN_FIELDS = {"f0": 4, "f1": 4}
U = torch.tensor([1.0, 0.0, 0.0, 0.0])
U_PERP = torch.tensor([0.0, 1.0, 0.0, 0.0])
W = torch.tensor([0.0, 0.0, 1.0, 1.0])


class ListBatches(Dataset):
    """A fixed list of batches, one per index (``DataLoader(..., batch_size=None)`` yields them as they are)."""

    def __init__(self, batches):
        self.batches = list(batches)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def known_batches(n_batches: int = 6, batch_size: int = 16, seed: int = 0) -> list[torch.Tensor]:
    """Row ids ``[B, 2]`` (field f0 in column 0, field f1 offset by 4 in column 1), repeated ids included."""
    g = torch.Generator().manual_seed(seed)
    return [torch.stack([torch.randint(0, 4, (batch_size,), generator=g),
                         4 + torch.randint(0, 4, (batch_size,), generator=g)], dim=1) for _ in range(n_batches)]


class KnownGradients(pl.LightningModule):
    """Two tasks whose losses are linear in the embeddings, so their row gradients are known exactly:

        L_a = sum_samples <e_f0, U>       + <e_f1, W>
        L_b = sum_samples <e_f0, U_PERP>  - 2 <e_f1, W>

    On field f0 every row's gradients are count * U and count * U_PERP: cosine 0. On field f1 they are count * W
    and -2 count * W: cosine -1 and norm ratio ||g_a|| / ||g_b|| = 0.5. Being linear, the gradients do not depend
    on the weights, so training does not move them.

    Options: ``extra_task`` adds a task "c" whose loss never reaches the embeddings; ``faults`` maps a batch index to
    "missing-b" (task b left out of task_losses) or "nan-a" (task a's loss NaN).
    """

    task_names = ("a", "b")

    def __init__(self, extra_task: bool = False, faults: dict[int, str] | None = None, lr: float = 0.1) -> None:
        super().__init__()
        self.task_losses = {}
        self.embedding = nn.Embedding(8, 4)
        self.bias = nn.Parameter(torch.zeros(()))
        self.extra_task, self.faults, self.lr = extra_task, dict(faults or {}), lr
        if extra_task:
            self.task_names = ("a", "b", "c")

    def training_step(self, batch, batch_idx):
        e = self.embedding(batch)
        losses = {"a": (e[:, 0] @ U).sum() + (e[:, 1] @ W).sum(),
                  "b": (e[:, 0] @ U_PERP).sum() - 2 * (e[:, 1] @ W).sum()}
        if self.extra_task:
            losses["c"] = self.bias * 3.0
        total = sum(losses.values()) + 0.0 * self.bias
        fault = self.faults.get(batch_idx)
        if fault == "missing-b":
            losses.pop("b")
        elif fault == "nan-a":
            losses["a"] = losses["a"] * float("nan")
        self.task_losses = losses
        return total

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class KnownGradientsPerFeature(KnownGradients):
    """:class:`KnownGradients` with one table per field (an ``nn.ModuleDict``, the layout of public CTR
    libraries): the same losses, so the same gradients, field by field and over both tables together."""

    def __init__(self) -> None:
        super().__init__()
        del self.embedding
        self.embedding_dict = nn.ModuleDict({"f0": nn.Embedding(4, 4), "f1": nn.Embedding(4, 4)})

    def training_step(self, batch, batch_idx):
        e0, e1 = self.embedding_dict["f0"](batch[:, 0]), self.embedding_dict["f1"](batch[:, 1] - 4)
        self.task_losses = {"a": (e0 @ U).sum() + (e1 @ W).sum(), "b": (e0 @ U_PERP).sum() - 2 * (e1 @ W).sum()}
        return sum(self.task_losses.values()) + 0.0 * self.bias


def known_loader(n_batches: int = 6, batch_size: int = 16, seed: int = 0) -> DataLoader:
    return DataLoader(ListBatches(known_batches(n_batches, batch_size, seed)), batch_size=None)


def numpy_table_cosine(batch: torch.Tensor) -> float:
    """Oracle for KnownGradients on the whole table: dense float64 row gradients built from the id counts."""
    ids = batch.numpy()
    g_a, g_b = np.zeros((8, 4)), np.zeros((8, 4))
    for r in ids[:, 0]:
        g_a[r] += U.numpy()
        g_b[r] += U_PERP.numpy()
    for r in ids[:, 1]:
        g_a[r] += W.numpy()
        g_b[r] -= 2 * W.numpy()
    a, b = g_a.ravel(), g_b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class KnownChunks(pl.LightningModule):
    """A STEM-style table of width 6 = [a | b | shared] chunks of 2 columns, with linear task losses:

        L_a = sum <e[:, 0:2], (1, 2)>  + <e[:, 4:6], S>
        L_b = sum <e[:, 2:4], (3, -1)> - <e[:, 4:6], S>

    so task a never reaches chunk b (and b never chunk a), and on the shared chunk their gradients are opposite.
    """

    task_names = ("a", "b")

    def __init__(self) -> None:
        super().__init__()
        self.task_losses = {}
        self.embedding = nn.Embedding(8, 6)

    def training_step(self, batch, batch_idx):
        e = self.embedding(batch)
        s = torch.tensor([1.0, -0.5])
        self.task_losses = {
            "a": (e[..., 0:2] @ torch.tensor([1.0, 2.0])).sum() + (e[..., 4:6] @ s).sum(),
            "b": (e[..., 2:4] @ torch.tensor([3.0, -1.0])).sum() - (e[..., 4:6] @ s).sum(),
        }
        return sum(self.task_losses.values())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def quiet_trainer(tmp_path=None, **kwargs) -> pl.Trainer:
    from lightning.pytorch.loggers import TensorBoardLogger

    options = dict(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, deterministic=True,
                   logger=TensorBoardLogger(str(tmp_path), name="tb", version=0) if tmp_path else False)
    options.update(kwargs)
    return pl.Trainer(**options)


def small_multitask(model: str, *, n_samples: int = 6000, seed: int = 0, batch_size: int = 128, **model_options):
    """A demo multi-task model on a small slice of the synthetic data: (module, train loader, val loader, data)."""
    from demo_models.data.batches import batch_loader, split
    from demo_models.data.multitask import synthetic_two_task
    from demo_models.multitask import MODEL_CLASSES

    data = synthetic_two_task(n_samples=n_samples, seed=seed)
    train, val = split({"features": data.features, "labels": data.labels}, 0.2, seed)
    module = MODEL_CLASSES[model](data.field_dims, data.tasks, **model_options)
    return (module, batch_loader(train, batch_size, shuffle=True, seed=seed),
            batch_loader(val, 1024, shuffle=False), data)
