"""What every demo shares: the experiment a builder returns, and how it is trained."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader


def synthetic_size(data: str, n_samples: int | None) -> dict[str, int]:
    """Keyword arguments that set a synthetic generator's row count: none for the default, an error for real data."""
    if n_samples is None:
        return {}
    if not data.startswith("synthetic"):
        raise ValueError(f"n_samples sets the size of the synthetic data; the '{data}' sample is used whole")
    return {"n_samples": n_samples}


@dataclass
class Experiment:
    """A demo model, its data and the analysis callbacks that show it.

    Attributes:
        module: the LightningModule to train.
        train_loader / val_loader: its data.
        callbacks: the lightning_recanalysis monitors for this model (empty with ``--no-monitors``).
        max_epochs: the default number of epochs (``--epochs`` overrides it).
        description: one line for the console and the run's hyperparameters.
    """

    module: pl.LightningModule
    train_loader: DataLoader
    val_loader: DataLoader | None
    callbacks: list[pl.Callback] = field(default_factory=list)
    max_epochs: int = 5
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
