"""DCNv2 (Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021), the full-matrix version.

    x_0 = [e_1, ..., e_N]                       concatenated field embeddings, one table split by field_dims
    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l       cross layer l, W_l a full (N K) x (N K) matrix
    h = MLP(x_0)                                deep tower, in parallel with the cross network
    logit = w^T [x_L ; h] + b

The first cross layer's W_0 is what the interaction-collapse analysis reads: block (j, i) maps field i's
embedding into field j's slot.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torchmetrics
from torch import nn

from .common import Experiment, synthetic_size
from .data.batches import batch_loader, split
from .data.ctr import criteo_sample, synthetic_ctr


class FeaturesEmbedding(nn.Module):
    """One concatenated table of sum(field_dims) rows; field i's value v is row offsets[i] + v."""

    def __init__(self, field_dims: list[int], dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(sum(field_dims), dim)
        self.register_buffer("offsets", torch.tensor([0, *torch.tensor(field_dims).cumsum(0)[:-1].tolist()]))
        # pytorch-fm's initialisation: small values, so what training writes dominates what it started from.
        nn.init.xavier_uniform_(self.embedding.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x + self.offsets)


class CrossNetworkV2(nn.Module):
    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2(pl.LightningModule):
    def __init__(self, field_dims: list[int], embed_dim: int = 16, cross_layers: int = 3,
                 mlp_dims: tuple[int, ...] = (256, 128), dropout: float = 0.1, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        input_dim = len(field_dims) * embed_dim
        self.cross = CrossNetworkV2(input_dim, cross_layers)
        layers, width = [], input_dim
        for hidden in mlp_dims:
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(input_dim + width, 1)
        self.val_auroc = torchmetrics.AUROC(task="binary")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(features).flatten(1)
        return self.head(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(1)

    def training_step(self, batch, batch_idx):
        loss = nn.functional.binary_cross_entropy_with_logits(self(batch["features"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["features"])
        self.log("val/loss", nn.functional.binary_cross_entropy_with_logits(logits, batch["label"]))
        self.val_auroc.update(logits, batch["label"].long())
        self.log("val/auroc", self.val_auroc, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def ctr_split(data: str, seed: int, n_samples: int | None = None):
    """The CTR demos' data: ``(ctr, train, val, batch_size, epochs)`` for ``data`` ("synthetic" or the Criteo
    sample), split 90/10 with ``seed``."""
    size = synthetic_size(data, n_samples)
    if data == "synthetic":
        ctr = synthetic_ctr(seed=seed, **size)
        batch_size, epochs = 1024, 8
    else:
        ctr = criteo_sample()
        batch_size, epochs = 64, 8
    train, val = split({"features": ctr.features, "label": ctr.label}, 0.1, seed)
    return ctr, train, val, batch_size, epochs


def build(model: str, data: str, seed: int, monitors: bool, n_samples: int | None = None) -> Experiment:
    from lightning_recanalysis import EmbeddingSpectrumMonitor, FieldPairCorrelationMonitor

    ctr, train, val, batch_size, epochs = ctr_split(data, seed, n_samples)
    module = DCNv2(ctr.field_dims)
    callbacks = []
    if monitors:
        callbacks.append(EmbeddingSpectrumMonitor(
            field_dims=dict(zip(ctr.field_names, ctr.field_dims)),
            cross_layer="cross.layers.0",
        ))
        # Which field pairs tell about the click in the data, beside how strongly the cross layer couples them.
        callbacks.append(FieldPairCorrelationMonitor(
            ctr.field_names,
            field_dims=ctr.field_dims,
            cross_layer="cross.layers.0",
        ))
    return Experiment(
        module=module,
        train_loader=batch_loader(train, batch_size, shuffle=True, seed=seed),
        val_loader=batch_loader(val, 4096, shuffle=False),
        callbacks=callbacks,
        max_epochs=epochs,
        description=f"DCNv2, {len(ctr.field_dims)} fields, {len(train['label'])} training rows",
        extra={"planted_pairs": ctr.planted_pairs, "field_names": ctr.field_names},
    )
