"""Whole batches sliced from in-memory tensors: a DataLoader that does one index per batch, not one per sample."""

from __future__ import annotations

from typing import Mapping

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler


class TensorBatches(Dataset):
    """A dict of equal-length tensors; indexing with a list of rows returns the dict of those rows."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"all tensors need the same length, got { {k: len(t) for k, t in tensors.items()} }")
        self.tensors = dict(tensors)
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, rows):
        index = torch.as_tensor(rows, dtype=torch.long)
        return {k: t[index] for k, t in self.tensors.items()}


def batch_loader(tensors: Mapping[str, torch.Tensor], batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches of ``batch_size`` rows (shuffled each epoch by a seeded generator when ``shuffle``)."""
    dataset = TensorBatches(tensors)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=False))


def split(tensors: Mapping[str, torch.Tensor], fraction: float, seed: int) -> tuple[dict, dict]:
    """Random train/validation split of a dict of tensors."""
    n = len(next(iter(tensors.values())))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(n * (1 - fraction))
    return ({k: t[perm[:cut]] for k, t in tensors.items()}, {k: t[perm[cut:]] for k, t in tensors.items()})
