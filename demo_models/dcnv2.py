"""DCNv2 (Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021), the full-matrix version.

    x_0 = [e_1, ..., e_N]                       concatenated field embeddings, one table split by field_dims
    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l       cross layer l, W_l a full (N K) x (N K) matrix
    h = MLP(x_0)                                deep tower, in parallel with the cross network
    logit = w^T [x_L ; h] + b

The first cross layer's W_0 is what the interaction-collapse analysis reads: block (j, i) maps field i's
embedding into field j's slot.

The demo keeps a checkpoint of every epoch (``<log dir>/checkpoints/epoch=E-step=S.ckpt``), holding the field
names among its hyperparameters, so that the trajectory can be analysed again offline with the demo's monitors:

    python -m lightning_recanalysis analyze runs/dcnv2-synthetic/monitors/checkpoints \
        --model demo_models.dcnv2.DCNv2 --monitors demo_models.dcnv2.monitors --out runs/dcnv2-offline
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torchmetrics
from lightning.pytorch.callbacks import ModelCheckpoint
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
    """``field_names`` (saved with the hyperparameters) name the fields for :func:`monitors`; ``every_epoch``: keep
    a checkpoint of every epoch where the Trainer checkpoints with Lightning's default (the last one only)."""

    def __init__(self, field_dims: list[int], embed_dim: int = 16, cross_layers: int = 3,
                 mlp_dims: tuple[int, ...] = (256, 128), dropout: float = 0.1, lr: float = 1e-3,
                 field_names: list[str] | None = None, every_epoch: bool = True) -> None:
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

    def configure_callbacks(self):
        # Only in place of Lightning's default checkpoint (a Trainer without checkpointing, or with a checkpoint
        # callback of its own, is left as it is).
        trainer = self._trainer
        default = trainer is not None and [
            (type(c), c.save_top_k, c.monitor, c.dirpath) for c in trainer.checkpoint_callbacks] == [
            (ModelCheckpoint, 1, None, None)]
        if not self.hparams.get("every_epoch", True) or not default or trainer.state.fn != "fit":
            return []
        return [ModelCheckpoint(filename="{epoch}-{step}", save_top_k=-1, every_n_epochs=1)]


def monitors(module: DCNv2) -> list:
    """The demo's two monitors for a trained DCNv2 (from its hyperparameters), e.g. to analyse its checkpoints:
    ``python -m lightning_recanalysis analyze DIR --model demo_models.dcnv2.DCNv2 --monitors demo_models.dcnv2.monitors``."""
    dims = list(module.hparams.field_dims)
    names = list(module.hparams.get("field_names") or [f"f{i}" for i in range(len(dims))])
    return demo_monitors(names, dims)


def demo_monitors(field_names: list[str], field_dims: list[int]) -> list:
    """The spectrum monitor (through the first cross layer) and the field-pair monitor, as the demo trains with."""
    from lightning_recanalysis import EmbeddingSpectrumMonitor, FieldPairCorrelationMonitor

    # Which field pairs tell about the click in the data, beside how strongly the cross layer couples them.
    return [EmbeddingSpectrumMonitor(field_dims=dict(zip(field_names, field_dims)), cross_layer="cross.layers.0"),
            FieldPairCorrelationMonitor(field_names, field_dims=field_dims, cross_layer="cross.layers.0")]


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


def demo_loader(split: str = "val", data: str = "synthetic", seed: int = 0, n_samples: int | None = None):
    """The demo's ``"train"`` or ``"val"`` loader, as :func:`build` makes it (the training loader's first epoch
    gives the batches in the order the live run counted them), e.g. for ``python -m lightning_recanalysis analyze
    ... --data demo_models.dcnv2.demo_loader --data-args '{"split": "train"}'``."""
    _, train, val, batch_size, _ = ctr_split(data, seed, n_samples)
    return batch_loader(train, batch_size, shuffle=True, seed=seed) if split == "train" else batch_loader(val, 4096, shuffle=False)


def build(model: str, data: str, seed: int, monitors: bool, n_samples: int | None = None) -> Experiment:
    ctr, train, val, batch_size, epochs = ctr_split(data, seed, n_samples)
    module = DCNv2(ctr.field_dims, field_names=list(ctr.field_names))
    callbacks = demo_monitors(list(ctr.field_names), list(ctr.field_dims)) if monitors else []
    return Experiment(
        module=module,
        train_loader=batch_loader(train, batch_size, shuffle=True, seed=seed),
        val_loader=batch_loader(val, 4096, shuffle=False),
        callbacks=callbacks,
        max_epochs=epochs,
        description=f"DCNv2, {len(ctr.field_dims)} fields, {len(train['label'])} training rows",
        extra={"planted_pairs": ctr.planted_pairs, "field_names": ctr.field_names},
    )
