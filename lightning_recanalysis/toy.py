"""Toy models and batches for the runnable examples in the docstrings: small enough to train in a blink.

Not models to learn from (those are in ``demo_models/``): just the layouts the monitors read, so an example can
attach a monitor to a ``Trainer`` in five lines.

- :class:`ToyDCN`: N categorical fields in one concatenated embedding table and a DCNv2 cross layer (a square
  ``nn.Linear`` over the N K concatenated embeddings); batches ``{"features": [B, N], "label": [B]}``.
- :class:`ToySequence`: a behaviour sequence model with a category and a position embedding; batches
  ``{"target_category": [B], "behavior_category": [B, L], "label": [B], "mask": [B, L]}``.
- :class:`ToyTwoTask`: two tasks (click, buy) on one shared table of a user and an item field, following the
  multi-task protocol (``task_names``, ``task_losses``, ``validation_step`` scores and labels); batches
  ``{"features": [B, 2], "click": [B], "buy": [B]}``.
- :func:`toy_conflict_subsets`: the conflict-subset part of an entanglement record with chosen shares, for the
  report's examples.
"""

from __future__ import annotations

from typing import Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["ToyDCN", "ToySequence", "ToyTwoTask", "toy_conflict_subsets", "toy_loader", "toy_trainer"]


class ToyDCN(pl.LightningModule):
    """logit = w^T (x_0 + x_0 * (W x_0 + b)), x_0 the concatenated field embeddings (one DCNv2 cross layer).

    Example:
        >>> model = ToyDCN(field_dims=(3, 4), embed_dim=2)
        >>> model({"features": torch.tensor([[0, 1], [2, 3]])}).shape
        torch.Size([2])
    """

    def __init__(self, field_dims: Sequence[int] = (4, 6, 8), embed_dim: int = 4) -> None:
        super().__init__()
        self.field_dims = list(field_dims)
        self.embedding = nn.Embedding(sum(self.field_dims), embed_dim)
        self.register_buffer("offsets", torch.cumsum(torch.tensor([0, *self.field_dims[:-1]]), 0))
        side = len(self.field_dims) * embed_dim
        self.cross = nn.Linear(side, side)
        self.head = nn.Linear(side, 1)

    def forward(self, batch: dict) -> torch.Tensor:
        x0 = self.embedding(batch["features"] + self.offsets).flatten(1)
        return self.head(x0 + x0 * self.cross(x0)).squeeze(1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(self(batch), batch["label"].float())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ToySequence(pl.LightningModule):
    """logit = mean over real behaviours of <E_cat[c] + E_pos[p], E_cat[c_t] + E_pos[0]> (p = 1 most recent).

    Example:
        >>> batch = next(iter(toy_loader("sequence")))
        >>> ToySequence()(batch).shape
        torch.Size([16])
    """

    def __init__(self, num_categories: int = 6, max_length: int = 5, embed_dim: int = 4) -> None:
        super().__init__()
        self.category = nn.Embedding(num_categories, embed_dim)
        self.position = nn.Embedding(max_length + 1, embed_dim)

    def forward(self, batch: dict) -> torch.Tensor:
        length = batch["behavior_category"].shape[1]
        positions = torch.arange(length, 0, -1, device=self.device)  # the last column is the most recent, p = 1
        behaviours = self.category(batch["behavior_category"]) + self.position(positions)
        target = self.category(batch["target_category"]) + self.position.weight[0]
        mask = batch["mask"].float()
        return ((behaviours * target[:, None]).sum(-1) * mask).sum(1) / mask.sum(1).clamp_min(1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(self(batch), batch["label"].float())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ToyTwoTask(pl.LightningModule):
    """logit_t = <h_t, [E[user], E[item]]> for the tasks click and buy, E one table of ``user`` (8 rows) then
    ``item`` (6 rows): the two tasks share every embedding row.

    Example:
        >>> batch = next(iter(toy_loader("two_task")))
        >>> {task: scores.shape for task, scores in ToyTwoTask()(batch).items()}
        {'click': torch.Size([16]), 'buy': torch.Size([16])}
    """

    task_names = ("click", "buy")

    def __init__(self, users: int = 8, items: int = 6, embed_dim: int = 4) -> None:
        super().__init__()
        self.task_losses: dict[str, torch.Tensor] = {}
        self.embedding = nn.Embedding(users + items, embed_dim)
        self.register_buffer("offsets", torch.tensor([0, users]))
        self.heads = nn.ModuleDict({task: nn.Linear(2 * embed_dim, 1) for task in self.task_names})

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = self.embedding(batch["features"] + self.offsets).flatten(1)
        return {task: head(x).squeeze(1) for task, head in self.heads.items()}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        self.task_losses = {task: nn.functional.binary_cross_entropy_with_logits(logits[task], batch[task].float())
                            for task in self.task_names}
        return sum(self.task_losses.values())

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return {"task_scores": self(batch), "task_labels": {task: batch[task] for task in self.task_names}}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def toy_loader(kind: str = "dcn", *, samples: int = 32, batch_size: int = 16, seed: int = 0) -> DataLoader:
    """Batches for :class:`ToyDCN` (``kind="dcn"``, its default three fields), :class:`ToySequence`
    (``"sequence"``, its default six categories and length five) or :class:`ToyTwoTask` (``"two_task"``, its
    default 8 users and 6 items); the label depends on the first field (dcn), on whether the most recent behaviour
    has the target's category (sequence), or (two_task) click on the user's parity and buy on the item's.

    Example:
        >>> batch = next(iter(toy_loader("two_task", samples=8, batch_size=4)))
        >>> batch["features"].shape, bool((batch["click"] == batch["features"][:, 0] % 2).all())
        (torch.Size([4, 2]), True)
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "dcn":
        features = torch.stack([torch.randint(0, d, (samples,), generator=g) for d in (4, 6, 8)], 1)
        rows = [{"features": f, "label": int(f[0] % 2)} for f in features]
    elif kind == "sequence":
        target = torch.randint(0, 6, (samples,), generator=g)
        behaviour = torch.randint(0, 6, (samples, 5), generator=g)
        rows = [{"target_category": t, "behavior_category": b, "label": int(b[-1] == t),
                 "mask": torch.ones(5, dtype=torch.bool)} for t, b in zip(target, behaviour)]
    elif kind == "two_task":
        features = torch.stack([torch.randint(0, 8, (samples,), generator=g),
                                torch.randint(0, 6, (samples,), generator=g)], 1)
        rows = [{"features": f, "click": int(f[0] % 2), "buy": int(f[1] % 2)} for f in features]
    else:
        raise ValueError(f"kind must be 'dcn', 'sequence' or 'two_task', got {kind!r}")
    return DataLoader(rows, batch_size=batch_size)


def toy_trainer(callbacks: list, max_epochs: int = 1, **kwargs) -> pl.Trainer:
    """A quiet CPU ``Trainer`` for the examples: no logger, checkpoints, progress bar or model summary.

    Example:
        >>> trainer = toy_trainer([], max_steps=1)
        >>> trainer.fit(ToyDCN(), toy_loader())
        >>> trainer.global_step
        1
    """
    options = dict(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    return pl.Trainer(callbacks=callbacks, **{**options, **kwargs})


def toy_conflict_subsets(views: dict[str, tuple[float, float, float, float]], pairs: int = 80) -> dict:
    """The ``conflict`` part of an :class:`~lightning_recanalysis.records.EntanglementRecord` of tasks ``a`` and
    ``b`` whose view ``v`` puts the pairs of mode ``a_far_b_near`` at shares ``(top, bottom) = views[v][:2]`` and
    those of ``b_far_a_near`` at ``views[v][2:]``; its agreements follow (far task: top - bottom, near task:
    bottom - top), its histograms are flat.

    Example:
        >>> part = toy_conflict_subsets({"emb": (0.5, 0.25, 0.25, 0.25)})
        >>> part["views"]["emb"]["modes"]["a_far_b_near"]["agreement"]
        {'a': 0.25, 'b': -0.25}
    """
    modes = {"a_far_b_near": ("a", "b"), "b_far_a_near": ("b", "a")}
    parts = {}
    for view, shares in views.items():
        by_mode = {}
        for (mode, (far, near)), (top, bottom) in zip(modes.items(), (shares[:2], shares[2:])):
            by_mode[mode] = {"conflict": [1] * 39, "rest": [2] * 39,
                             "shares": {"top": top, "middle": 1 - top - bottom, "bottom": bottom},
                             "agreement": {far: top - bottom, near: bottom - top}}
        parts[view] = {"edges": [0.1 * k for k in range(40)], "low": 1.5, "high": 2.5, "modes": by_mode,
                       "rank_correlation": {"a": 0.1, "b": -0.1}}
    return {"tasks": ["a", "b"], "high": 60.0, "low": 40.0, "bins": 39, "frequent_only": False,
            "validation_pairs": 100, "pairs": pairs, "references": {"a": "ref_a.ckpt", "b": "ref_b.ckpt"},
            "modes": {mode: {"far": far, "near": near, "pairs": pairs // 4} for mode, (far, near) in modes.items()},
            "views": parts}
