"""What DIN and TIN share: the click-through LightningModule around a user-interest layer (the demo builder is
:mod:`demo_models.sequence_demo`).

    u = interest(behaviour sequence, target)        DIN: activation-weighted sum; TIN: target-aware attention
    logit = MLP([u, v])                             v = the target's embedding

Both models see categories only (the feature the correlation analysis is about); production versions also
embed item ids, user profile and context, which would only add columns to the MLP's input.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torchmetrics
from torch import nn



def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with PReLU between them (DIN's choice of activation, before Dice), none after the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.PReLU())
    return nn.Sequential(*layers)


class SequenceCTR(pl.LightningModule):
    """Binary response to a target from a behaviour sequence; subclasses define ``interest``.

    Batches are dicts with ``target_category`` [B], ``behavior_category`` [B, L] (most recent last),
    ``mask`` [B, L] and ``label`` [B] (see :mod:`demo_models.data.sequences`).
    """

    def __init__(self, num_categories: int, max_length: int, embed_dim: int = 16, mlp_dims=(64, 32),
                 lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.category_embedding = nn.Embedding(num_categories, embed_dim)
        nn.init.normal_(self.category_embedding.weight, std=0.1)
        self.head = mlp([2 * embed_dim, *mlp_dims, 1])
        self.val_auroc = torchmetrics.AUROC(task="binary")

    def interest(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u [B, d], v [B, d])``: the user's interest in the target, and the target's embedding."""
        raise NotImplementedError

    def forward(self, batch: dict) -> torch.Tensor:
        u, v = self.interest(batch)
        return self.head(torch.cat([u, v], dim=1)).squeeze(1)

    def training_step(self, batch, batch_idx):
        loss = nn.functional.binary_cross_entropy_with_logits(self(batch), batch["label"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch)
        self.log("val/loss", nn.functional.binary_cross_entropy_with_logits(logits, batch["label"]))
        self.val_auroc.update(logits, batch["label"].long())
        self.log("val/auroc", self.val_auroc, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
