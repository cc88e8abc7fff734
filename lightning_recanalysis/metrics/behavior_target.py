"""Exact (target category, behaviour category, position, label) counts, accumulated over batches and processes.

The ground truth of the feature-correlation analysis (Zhou et al., WWW 2024; Pan et al., KDD 2024) is a 2 x 2
table per (target category c_t, behaviour category c, target-relative position p):

    n(X = 1, Y = y) = samples with target category c_t, label y and category c at position p
    n(X = 0, Y = y) = N(c_t, y) - n(X = 1, Y = y)     every other sample of c_t, shorter sequences included

so two sparse counters are enough: one of (c_t, c, p, y) over real behaviours, one of (c_t, y) over samples.
Counts are sums, so they accumulate over batches and add up across processes.

**Why sparse.** Real vocabularies have 10^5 categories and more; a dense (c_t, c, p, y) array would have
10^10 x P cells, almost all zero. Only the triples that occur are kept: sorted unique int64 keys with their
counts, so memory grows with the distinct (c_t, c, p) triples seen.

**Why fast.** The authors count with a Python dictionary, one increment per behaviour (about 1 us each). Here a
batch is counted in a handful of vectorised passes: each real behaviour becomes one integer code, the codes are
counted with ``bincount`` when their range is small and by sorting otherwise (numpy's SIMD sort on CPU,
``torch.unique`` on CUDA), and only the batch's distinct codes are merged into the running state.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from ..functional.correlation import target_relative_positions

__all__ = ["BehaviorTargetCounts"]

# Bit layout of a stored key: target (24 bits) | behaviour (24 bits) | position - 1 (12 bits) | label (1 bit).
# 61 bits in all, so keys stay positive in int64 and sort in (target, behaviour, position, label) order.
CATEGORY_BITS = 24
POSITION_BITS = 12
MAX_CATEGORIES = 1 << CATEGORY_BITS
MAX_POSITIONS = 1 << POSITION_BITS

# A batch's codes are counted densely (bincount) when their range is at most this many times the number of
# behaviours, or below _DENSE_MIN_RANGE: a dense pass then touches little more memory than the behaviours
# themselves. Above it, most of the range would be empty and sorting the codes is cheaper.
_DENSE_RANGE_PER_ELEMENT = 1
_DENSE_MIN_RANGE = 1 << 16


def _encode(target: torch.Tensor, behavior: torch.Tensor, position: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    key = (target.to(torch.int64) << CATEGORY_BITS) | behavior.to(torch.int64)
    key = (key << POSITION_BITS) | (position.to(torch.int64) - 1)
    return (key << 1) | label.to(torch.int64)


def _decode(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    label = key & 1
    position = ((key >> 1) & (MAX_POSITIONS - 1)) + 1
    behavior = (key >> (1 + POSITION_BITS)) & (MAX_CATEGORIES - 1)
    target = key >> (1 + POSITION_BITS + CATEGORY_BITS)
    return target, behavior, position, label


def _unique_counts(codes: torch.Tensor, code_range: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct values of ``codes`` (1-D, values in [0, code_range]) and how often each occurs.

    The value ``code_range`` itself marks padding and is dropped.
    """
    n = codes.numel()
    if code_range <= max(_DENSE_MIN_RANGE, _DENSE_RANGE_PER_ELEMENT * n):
        counts = torch.bincount(codes, minlength=code_range + 1)[:code_range]
        values = torch.nonzero(counts).squeeze(1)
        return values, counts[values]
    if codes.is_cuda:
        values, counts = torch.unique(codes, sorted=True, return_counts=True)
    else:
        # numpy sorts integers with SIMD (x86-simd-sort): 3 to 5 times faster than torch.sort on CPU.
        ordered = np.sort(codes.numpy())
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        counts_np = np.diff(np.append(starts, ordered.size))
        values, counts = torch.from_numpy(ordered[starts]), torch.from_numpy(counts_np)
    if values.numel() and int(values[-1]) == code_range:
        values, counts = values[:-1], counts[:-1]
    return values.to(torch.int64), counts.to(torch.int64)


def _check_integer(name: str, value: torch.Tensor) -> None:
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer category ids, got dtype {value.dtype}")


class BehaviorTargetCounts(Metric):
    """Exact counts of (target category, behaviour category, target-relative position, label).

    Feed it batches with :meth:`update`; read 2 x 2 tables with :meth:`table` and
    :meth:`same_category_table` (and pass them to
    :func:`~lightning_recanalysis.functional.mutual_information`). Under DDP the states are gathered and summed
    by torchmetrics' usual ``sync`` (``compute``, or ``with metric.sync_context(): ...`` around the queries).

    Args:
        num_categories: if given, category ids must lie in ``[0, num_categories)`` (the size of the model's
            category embedding); an id outside is an error that names the argument. Ids must always be below
            2^24 and sequences at most 4096 long (the key layout).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Positions: p = 1 is the most recent real behaviour (the last column), p = 2 the one before, and so on;
    padding anywhere in a row is skipped (see
    :func:`~lightning_recanalysis.functional.target_relative_positions`).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_categories: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_categories is not None and not (0 < int(num_categories) <= MAX_CATEGORIES):
            raise ValueError(f"num_categories must be in [1, {MAX_CATEGORIES}], got {num_categories}")
        self.num_categories = None if num_categories is None else int(num_categories)
        # Each pair of list states is a sparse counter: element 0 holds sorted unique keys (and their counts);
        # later elements are pending chunks of keys not yet merged in. "cat" concatenates them across ranks,
        # and _merged() sums duplicate keys, which is the sum over ranks.
        self.add_state("triple_keys", default=[], dist_reduce_fx="cat")
        self.add_state("triple_counts", default=[], dist_reduce_fx="cat")
        self.add_state("target_keys", default=[], dist_reduce_fx="cat")
        self.add_state("target_counts", default=[], dist_reduce_fx="cat")
        self.add_state("max_length", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="max")

    # ---- accumulation -----------------------------------------------------------------------------------
    def update(
        self,
        target_category: torch.Tensor,
        behavior_category: torch.Tensor,
        label: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Count one batch.

        Args:
            target_category: ``[B]`` integer category of each sample's target.
            behavior_category: ``[B, L]`` integer categories of the behaviours, the most recent in the last column.
            label: ``[B]`` 0/1 response to the target (any dtype).
            mask: ``[B, L]`` true (or 1) for real behaviours; ``None`` means all are real. Padding cells may hold
                any value.

        Raises:
            ValueError: on mismatched shapes, non-integer or out-of-range category ids, or labels outside {0, 1};
                the message names the argument.
        """
        target, behavior, label, valid, t_max, b_max = self._validate(target_category, behavior_category, label, mask)
        batch, length = behavior.shape
        self.max_length = torch.maximum(self.max_length, torch.tensor(length, device=self.max_length.device))
        if batch == 0:
            return
        y = label.to(torch.int64)
        self._add("target", *_unique_counts(target * 2 + y, t_max * 2 + 2))

        if valid is None:
            offsets = torch.arange(length - 1, -1, -1, device=behavior.device)  # position - 1 of each column
            real = None
        else:
            real = valid
            # With left padding (or none) every real behaviour's position is simply L - column; only rows with
            # a gap need the running count.
            contiguous = bool((valid[:, 1:] >= valid[:, :-1]).all())
            offsets = None if not contiguous else torch.arange(length - 1, -1, -1, device=behavior.device)
            if not bool(valid.any()):
                return
        t_range, b_range = t_max + 1, b_max + 1
        # Code of a behaviour: ((t * V + b) * L + (p - 1)) * 2 + y, lexicographic in (t, b, p, y) like the
        # stored keys, so the batch's distinct codes come out already in key order.
        code_range = t_range * b_range * length * 2
        dtype = torch.int32 if code_range < 2**31 - 1 else torch.int64
        row = (target.to(dtype) * (b_range * length * 2) + y.to(dtype))[:, None]
        codes = behavior.to(dtype) * (length * 2)
        if offsets is not None:
            codes += row + (offsets.to(dtype) * 2)[None, :]
        else:
            codes += row + (target_relative_positions(real).to(dtype) - 1) * 2
        if real is not None:
            codes = torch.where(real, codes, torch.full((), code_range, dtype=dtype, device=codes.device))
        values, counts = _unique_counts(codes.reshape(-1), code_range)
        if values.numel() == 0:
            return
        # Back from the batch's compact radix to the stored bit layout (only the distinct codes).
        y_v = values % 2
        rest = values // 2
        p_v = rest % length + 1
        rest = rest // length
        self._add("triple", _encode(rest // b_range, rest % b_range, p_v, y_v), counts)

    def _validate(self, target, behavior, label, mask):
        for name, value in (("target_category", target), ("behavior_category", behavior), ("label", label)):
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{name} must be a tensor, got {type(value).__name__}")
        _check_integer("target_category", target)
        _check_integer("behavior_category", behavior)
        if target.dim() != 1:
            raise ValueError(f"target_category must be [B], got shape {tuple(target.shape)}")
        if behavior.dim() != 2 or behavior.shape[0] != target.shape[0]:
            raise ValueError(
                f"behavior_category must be [B, L] with B = {target.shape[0]} (the batch of target_category), "
                f"got shape {tuple(behavior.shape)}"
            )
        label = label.reshape(-1) if label.dim() == 2 and label.shape[1] == 1 else label
        if label.dim() != 1 or label.shape[0] != target.shape[0]:
            raise ValueError(f"label must be [B] with B = {target.shape[0]}, got shape {tuple(label.shape)}")
        if label.numel() and not bool(((label == 0) | (label == 1)).all()):
            bad = label[(label != 0) & (label != 1)][0].item()
            raise ValueError(f"label must hold 0/1 responses, found {bad!r}")
        if behavior.shape[1] > MAX_POSITIONS:
            raise ValueError(f"behavior_category has {behavior.shape[1]} columns; at most {MAX_POSITIONS} are supported")
        valid = None
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(behavior.shape):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise ValueError(f"mask must have the shape of behavior_category {tuple(behavior.shape)}, got {shape}")
            valid = mask.to(torch.bool) if mask.dtype != torch.bool else mask
            if bool(valid.all()):
                valid = None
        limit = self.num_categories if self.num_categories is not None else MAX_CATEGORIES
        what = "the category embedding's" if self.num_categories is not None else "the supported"
        t_max = b_max = 0
        if target.numel():
            low, t_max = (int(v) for v in torch.aminmax(target))
            if low < 0 or t_max >= limit:
                raise ValueError(f"target_category ids must lie in [0, {limit}) ({what} size), found {low if low < 0 else t_max}")
        if behavior.numel():
            # Padding cells may hold anything (-1, a pad id): only real behaviours are checked and counted.
            real = behavior if valid is None else torch.where(valid, behavior, torch.zeros((), dtype=behavior.dtype))
            low, b_max = (int(v) for v in torch.aminmax(real))
            if low < 0 or b_max >= limit:
                raise ValueError(
                    f"behavior_category ids of real (unmasked) behaviours must lie in [0, {limit}) ({what} size), "
                    f"found {low if low < 0 else b_max}"
                )
        return target.to(torch.int64), behavior, label, valid, t_max, b_max

    def _add(self, name: str, keys: torch.Tensor, counts: torch.Tensor) -> None:
        """Add sorted unique ``keys`` with ``counts`` to the sparse counter ``name``."""
        key_list, count_list = getattr(self, f"{name}_keys"), getattr(self, f"{name}_counts")
        keys, counts = keys.to(self.device), counts.to(self.device)
        if not key_list:
            key_list.append(keys.clone())
            count_list.append(counts.clone())
            return
        merged_keys, merged_counts = key_list[0], count_list[0]
        if merged_keys.numel():
            at = torch.searchsorted(merged_keys, keys).clamp_max(merged_keys.numel() - 1)
            hit = merged_keys[at] == keys
            # Keys are unique within a batch, so the hit positions are distinct and a plain += is exact.
            merged_counts[at[hit]] += counts[hit]
            keys, counts = keys[~hit], counts[~hit]
        if keys.numel():
            key_list.append(keys.clone())
            count_list.append(counts.clone())
            pending = sum(k.numel() for k in key_list[1:])
            # Merging costs a sort of everything held; doing it only once the new keys outnumber the merged
            # ones keeps the total work proportional to the keys added (amortised doubling).
            if pending > max(merged_keys.numel(), 4096):
                merged = self._merged(name)
                key_list[:] = [merged[0]]
                count_list[:] = [merged[1]]

    def _merged(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted unique keys of counter ``name`` and their summed counts (over chunks and, once synced, ranks)."""
        keys, counts = getattr(self, f"{name}_keys"), getattr(self, f"{name}_counts")
        if isinstance(keys, list):
            if not keys:
                empty = torch.zeros(0, dtype=torch.int64, device=self.device)
                return empty, empty.clone()
            if len(keys) == 1:
                return keys[0], counts[0]
            keys, counts = torch.cat(keys), torch.cat(counts)
        keys, counts = keys.to(torch.int64), counts.to(torch.int64)
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        summed = torch.zeros(unique.numel(), dtype=torch.int64, device=keys.device).index_add_(0, inverse, counts)
        return unique, summed

    def _sync_dist(self, *args, **kwargs) -> None:
        # torchmetrics fills a rank that saw no batch with an empty *float* tensor, which cannot be gathered with
        # the int64 keys of the other ranks; give every list state an int64 tensor first.
        for name in ("triple", "target"):
            keys, counts = self._merged(name)
            setattr(self, f"{name}_keys", [keys])
            setattr(self, f"{name}_counts", [counts])
        super()._sync_dist(*args, **kwargs)

    # ---- queries ----------------------------------------------------------------------------------------
    @staticmethod
    def _lookup(keys: torch.Tensor, counts: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        if keys.numel() == 0:
            return torch.zeros(wanted.shape, dtype=torch.int64, device=wanted.device)
        wanted = wanted.to(keys.device)
        at = torch.searchsorted(keys, wanted.reshape(-1)).clamp_max(keys.numel() - 1)
        found = keys[at] == wanted.reshape(-1)
        return torch.where(found, counts[at], torch.zeros_like(counts[at])).view(wanted.shape)

    @property
    def num_positions(self) -> int:
        """The longest sequence (columns) seen: the positions 1..num_positions that tables cover by default."""
        return int(self.max_length)

    def label_counts(self, target_category: int | None = None) -> torch.Tensor:
        """``[2]`` samples with label 0 and 1, of one target category or (``None``) of all."""
        keys, counts = self._merged("target")
        if target_category is None:
            return torch.stack([counts[keys % 2 == 0].sum(), counts[keys % 2 == 1].sum()]).to(torch.int64)
        wanted = torch.tensor([2 * int(target_category), 2 * int(target_category) + 1], device=keys.device)
        return self._lookup(keys, counts, wanted)

    def target_frequencies(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Target categories seen, most frequent first, and their ``[K, 2]`` label counts."""
        keys, counts = self._merged("target")
        categories = torch.unique(keys // 2, sorted=True)
        per_label = self._lookup(keys, counts, categories[:, None] * 2 + torch.arange(2, device=keys.device))
        order = torch.argsort(per_label.sum(1), descending=True, stable=True)
        return categories[order], per_label[order]

    def behavior_categories(self, target_category: int) -> torch.Tensor:
        """Sorted behaviour categories seen (at any position) with a target of this category."""
        keys, _ = self._merged("triple")
        shift = 1 + POSITION_BITS + CATEGORY_BITS
        lo, hi = torch.searchsorted(keys, torch.tensor([int(target_category) << shift, (int(target_category) + 1) << shift],
                                                      device=keys.device)).tolist()
        return torch.unique(_decode(keys[lo:hi])[1], sorted=True)

    def table(self, target_category: int, behavior_categories, num_positions: int | None = None) -> torch.Tensor:
        """``[C, P, 2, 2]`` int64 counts of (X, Y) over the samples whose target has ``target_category``.

        X = 1 when the behaviour at position p (1..P) has category ``behavior_categories[c]``, X = 0 for every
        other sample of that target category (shorter sequences included); Y = the label. A target category
        never seen gives all zeros (and so MI 0).
        """
        keys, counts = self._merged("triple")
        device = keys.device
        cats = torch.as_tensor(behavior_categories, dtype=torch.int64, device=device).reshape(-1)
        positions = torch.arange(1, (num_positions or max(self.num_positions, 1)) + 1, device=device)
        t = torch.full((), int(target_category), dtype=torch.int64, device=device)
        grid = _encode(t, cats[:, None, None], positions[None, :, None], torch.arange(2, device=device)[None, None, :])
        x1 = self._lookup(keys, counts, grid)  # [C, P, 2]
        totals = self.label_counts(int(target_category)).to(device)  # [2]
        return torch.stack([totals - x1, x1], dim=-2)

    def same_category_table(self, num_positions: int | None = None) -> torch.Tensor:
        """``[P, 2, 2]`` counts of (X, Y) over all samples, X = 1 when the behaviour at position p has the target's
        own category: the target-agnostic summary of the semantic and temporal pattern."""
        keys, counts = self._merged("triple")
        n_pos = num_positions or max(self.num_positions, 1)
        target, behavior, position, label = _decode(keys)
        same = (target == behavior) & (position <= n_pos)
        x1 = torch.zeros(n_pos * 2, dtype=torch.int64, device=keys.device)
        x1.index_add_(0, ((position[same] - 1) * 2 + label[same]), counts[same])
        x1 = x1.view(n_pos, 2)
        totals = self.label_counts().to(keys.device)
        return torch.stack([totals - x1, x1], dim=-2)

    def compute(self) -> torch.Tensor:
        """The same-category table ``[P, 2, 2]`` (see :meth:`same_category_table`), summed over processes."""
        return self.same_category_table()
