"""Behaviour-sequence data for the DIN and TIN demos: a synthetic generator with a planted semantic-temporal
correlation, and loaders for the Alimama and MovieLens samples.

All return ``SequenceData`` whose ``tensors`` are the batch fields the models and FeatureCorrelationMonitor read:

- ``target_category`` [n] int64: the category of the item the user responds to (or not);
- ``behavior_category`` [n, L] int64: categories of the user's earlier behaviours, the most recent in the last
  column, left-padded (padding cells hold 0 and are masked);
- ``mask`` [n, L] bool: true for real behaviours;
- ``label`` [n] float: 1 when the user responded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import numpy as np
import torch

from .paths import dataset_path

#: Effect on the logit of a behaviour of category c at position p for a target of category c_t:
#: ``PLANTED_STRENGTH * RELEVANCE[d] * p ** -PLANTED_DECAY``, d = distance of c and c_t on a circle of categories.
#: d = 0 is the target's own category, d = 1 its two related ones, d >= 2 unrelated (no effect).
RELEVANCE = (1.0, 0.8)
#: Share of behaviours of the target's own category, and of its related categories.
OWN_SHARE, RELATED_SHARE = 0.15, 0.15
PLANTED_STRENGTH = 1.2
#: MI falls roughly as the square of the effect, so p ** -0.5 gives MI ~ 1 / p: close to the decay Pan et al.
#: measure on Amazon Electronics (1, 0.48, 0.30, 0.27, 0.23, ...).
PLANTED_DECAY = 0.5


@dataclass
class SequenceData:
    tensors: dict[str, torch.Tensor]
    num_categories: int
    max_length: int
    description: str
    category_names: list[str] | None = None
    planted: dict = field(default_factory=dict)


def planted_sequences(
    n_samples: int = 200_000,
    num_categories: int = 12,
    max_length: int = 20,
    seed: int = 0,
    strength: float = PLANTED_STRENGTH,
    decay: float = PLANTED_DECAY,
    own_share: float = OWN_SHARE,
    related_share: float = RELATED_SHARE,
) -> SequenceData:
    """Synthetic behaviour sequences whose label depends on the target's own and related categories, by recency.

    Categories sit on a circle; d(c, c_t) is their distance on it. For each sample:

        c_t ~ Zipf-like over categories (category 0 the most frequent target)
        l   ~ uniform {4, ..., L}: sequence length, left-padded to L
        behaviour at each of the l positions: c_t with probability 0.15, one of its two neighbours (d = 1)
            with probability 0.15, else uniform over all categories
        logit = b + strength * sum_{p <= l} (RELEVANCE[d(c_p, c_t)] - r_bar) * p ** -decay   (RELEVANCE 0 for d >= 2)
        label ~ Bernoulli(sigmoid(logit))

    with r_bar the expected relevance of a behaviour (so that length alone carries no signal) and b set so
    that about a third of labels are 1. ``strength=0`` gives labels independent of the sequence.
    The ground truth this plants: the own-category row of the correlation map is the highest, the related rows
    lower, and every row falls with position.
    """
    g = torch.Generator().manual_seed(seed)
    c, length = num_categories, max_length
    target = torch.multinomial(1.0 / torch.arange(1, c + 1, dtype=torch.float64) ** 0.7, n_samples,
                               replacement=True, generator=g)
    lengths = torch.randint(4, length + 1, (n_samples,), generator=g)
    mask = torch.arange(length)[None, :] >= (length - lengths)[:, None]
    kind = torch.rand(n_samples, length, generator=g)
    offset = torch.tensor([-1, 1])[torch.randint(0, 2, (n_samples, length), generator=g)]
    behavior = torch.where(
        kind < own_share, target[:, None],
        torch.where(kind < own_share + related_share, (target[:, None] + offset) % c,
                    torch.randint(0, c, (n_samples, length), generator=g)),
    )
    behavior = torch.where(mask, behavior, torch.zeros_like(behavior))
    distance = (behavior - target[:, None]).abs()
    distance = torch.minimum(distance, c - distance)
    relevance = torch.tensor([*RELEVANCE, 0.0])[distance.clamp_max(len(RELEVANCE))]
    position = torch.arange(length, 0, -1, dtype=torch.float64)  # p of each column: L, ..., 1
    weight = position ** -decay * mask
    effect = strength * (relevance * weight).sum(1)
    # Centre the effect on its expectation given the length: otherwise a long sequence alone would raise the
    # response, and "a behaviour at position 15" would be informative just for saying the sequence is long.
    uniform_share = 1.0 - own_share - related_share
    expected_relevance = own_share * RELEVANCE[0] + related_share * RELEVANCE[1] + uniform_share * _mean_relevance(c)
    logit = effect - strength * expected_relevance * weight.sum(1) - 0.6
    label = torch.bernoulli(torch.sigmoid(logit), generator=g).float()
    return SequenceData(
        tensors={"target_category": target, "behavior_category": behavior, "mask": mask, "label": label},
        num_categories=c,
        max_length=length,
        description=f"synthetic planted sequences, {c} categories, length <= {length}",
        planted={"relevance": RELEVANCE, "strength": strength, "decay": decay},
    )


def _mean_relevance(num_categories: int) -> float:
    """Mean relevance of a category drawn uniformly from the circle."""
    return (RELEVANCE[0] + 2 * RELEVANCE[1]) / num_categories


def _compact_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to 0..K-1 (in sorted order of the raw ids); returns the new ids and the raw id of each."""
    raw, compact = np.unique(values, return_inverse=True)
    return compact.reshape(values.shape), raw


def alimama_sample() -> SequenceData:
    """The Alimama sample (DMR's data): behaviour category history in columns 50-99 (the last the most recent),
    its mask in 150-199, the target ad's category in 260, the click label in 266. Raw category ids (up to ~13k,
    0 = padding) are mapped to compact ids over the categories that occur."""
    raw = np.loadtxt(dataset_path("alimama-sample", "alimama_sampled_train.txt"), delimiter=",", dtype=np.float64)
    history = raw[:, 50:100].astype(np.int64)
    mask = raw[:, 150:200] > 0
    target = raw[:, 260].astype(np.int64)
    label = raw[:, 266]
    ids, names = _compact_ids(np.concatenate([target, history[mask]]))
    target_c = ids[: len(target)]
    behavior = np.zeros_like(history)
    behavior[mask] = ids[len(target):]
    return SequenceData(
        tensors={"target_category": torch.from_numpy(target_c), "behavior_category": torch.from_numpy(behavior),
                 "mask": torch.from_numpy(mask), "label": torch.from_numpy(label).float()},
        num_categories=len(names),
        max_length=history.shape[1],
        description=f"Alimama sample, {len(target)} rows, {len(names)} categories",
        category_names=[str(int(n)) for n in names],
    )


def movielens_sequences(max_length: int = 20) -> SequenceData:
    """MovieLens latest-small as behaviour sequences: each rating is a sample whose target is the rated movie's
    first genre, label = rating >= 4, and whose behaviours are the first genres of the same user's earlier
    ratings (up to ``max_length``, time order, ties in file order). A user's first rating has no history and
    is left out."""
    genre_of: dict[int, str] = {}
    with open(dataset_path("movielens-latest-small", "movies.csv"), newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            genre_of[int(row["movieId"])] = row["genres"].split("|")[0]
    ratings = np.loadtxt(dataset_path("movielens-latest-small", "ratings.csv"), delimiter=",", skiprows=1)
    user, movie = ratings[:, 0].astype(np.int64), ratings[:, 1].astype(np.int64)
    rating, time = ratings[:, 2], ratings[:, 3]
    order = np.lexsort((np.arange(len(user)), time, user))  # by user, then time, then file order
    user, movie, rating = user[order], movie[order], rating[order]
    names = sorted(set(genre_of.values()))
    index = {name: i for i, name in enumerate(names)}
    category = np.array([index[genre_of[m]] for m in movie], dtype=np.int64)
    n = len(user)
    behavior = np.zeros((n, max_length), dtype=np.int64)
    mask = np.zeros((n, max_length), dtype=bool)
    for back in range(1, max_length + 1):  # column L - back holds the rating `back` steps earlier
        earlier = np.arange(n) - back
        ok = (earlier >= 0) & (user[np.clip(earlier, 0, None)] == user)
        behavior[ok, max_length - back] = category[earlier[ok]]
        mask[ok, max_length - back] = True
    keep = mask[:, -1]
    return SequenceData(
        tensors={"target_category": torch.from_numpy(category[keep]),
                 "behavior_category": torch.from_numpy(behavior[keep]),
                 "mask": torch.from_numpy(mask[keep]),
                 "label": torch.from_numpy((rating[keep] >= 4.0).astype(np.float32))},
        num_categories=len(names),
        max_length=max_length,
        description=f"MovieLens latest-small, {int(keep.sum())} ratings with history, {len(names)} first genres",
        category_names=names,
    )


def load(name: str, seed: int = 0) -> SequenceData:
    if name == "synthetic":
        return planted_sequences(seed=seed)
    if name == "alimama-sample":
        return alimama_sample()
    if name == "movielens":
        return movielens_sequences()
    raise ValueError(f"unknown sequence data set '{name}': synthetic, alimama-sample or movielens")


__all__ = ["SequenceData", "planted_sequences", "alimama_sample", "movielens_sequences", "load"]
