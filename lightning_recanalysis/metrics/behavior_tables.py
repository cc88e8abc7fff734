"""The 2 x 2 tables that :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` reads from its counts.

For a target category c_t, a behaviour category c and a target-relative position p:

    n(X = 1, Y = y) = count of (c_t, c, p, y)                      a lookup of the stored key
    n(X = 0, Y = y) = N(c_t, y) - n(X = 1, Y = y)                   N from the (target, label) counter

so that X = 0 covers every other sample of c_t, shorter sequences included. The same-category table sums
n(X = 1, Y = y) over the keys whose behaviour category equals the target's, per position, and N over all targets.
A table of C behaviour categories and P positions costs 2 C P lookups (binary searches in the sorted keys, or in
the 8-byte counter's runs); the same-category table, one pass over the keys held.
"""

from __future__ import annotations

import torch

from .sparse_keys import decode_keys, encode_keys, lookup_counts

__all__ = ["BehaviorTables"]


class BehaviorTables:
    """The queries of :class:`~lightning_recanalysis.metrics.BehaviorTargetCounts` (a mixin: the metric provides
    the merged counts, ``_merged``, and the 8-byte counter when it holds them, ``_local_compact``)."""

    @property
    def num_positions(self) -> int:
        """The longest sequence (columns) seen: the positions 1..num_positions that tables cover by default."""
        if not self._is_synced:
            self.flush()
        return int(self.max_length)

    def label_counts(self, target_category: int | None = None) -> torch.Tensor:
        """``[2]`` samples with label 0 and 1, of one target category or (``None``) of all."""
        keys, counts = self._merged("target")
        if target_category is None:
            return torch.stack([counts[keys % 2 == 0].sum(), counts[keys % 2 == 1].sum()]).to(torch.int64)
        wanted = torch.tensor([2 * int(target_category), 2 * int(target_category) + 1], device=keys.device)
        return lookup_counts(keys, counts, wanted)

    def target_frequencies(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Target categories seen, most frequent first, and their ``[K, 2]`` label counts."""
        keys, counts = self._merged("target")
        categories = torch.unique(keys // 2, sorted=True)
        per_label = lookup_counts(keys, counts, categories[:, None] * 2 + torch.arange(2, device=keys.device))
        order = torch.argsort(per_label.sum(1), descending=True, stable=True)
        return categories[order], per_label[order]

    def behavior_categories(self, target_category: int) -> torch.Tensor:
        """Sorted behaviour categories seen (at any position) with a target of this category."""
        compact = self._local_compact()
        if compact is not None:
            return torch.from_numpy(compact.behaviors_of(int(target_category)))
        keys, _ = self._merged("triple")
        target, behavior, _, _ = decode_keys(keys)
        return torch.unique(behavior[target == int(target_category)], sorted=True)

    def table(self, target_category: int, behavior_categories, num_positions: int | None = None) -> torch.Tensor:
        """``[C, P, 2, 2]`` int64 counts of (X, Y) over the samples whose target has ``target_category``.

        X = 1 when the behaviour at position p (1..P) has category ``behavior_categories[c]``, X = 0 for every
        other sample of that target category (shorter sequences included); Y = the label. A target category
        never seen gives all zeros (and so MI 0).
        """
        compact = self._local_compact()
        keys, counts = self._merged("triple") if compact is None else (None, None)
        device = self.device if compact is not None else keys.device
        cats = torch.as_tensor(behavior_categories, dtype=torch.int64, device=device).reshape(-1)
        positions = torch.arange(1, (num_positions or max(self.num_positions, 1)) + 1, device=device)
        t = torch.full((), int(target_category), dtype=torch.int64, device=device)
        labels = torch.arange(2, device=device)
        grid = encode_keys(t, cats[:, None, None], positions[None, :, None], labels[None, None, :])
        if compact is not None:
            x1 = torch.from_numpy(compact.lookup(grid.reshape(-1).numpy())).view(grid.shape)  # [C, P, 2]
        else:
            x1 = lookup_counts(keys, counts, grid)  # [C, P, 2]
        totals = self.label_counts(int(target_category)).to(device)  # [2]
        return torch.stack([totals - x1, x1], dim=-2)

    def same_category_table(self, num_positions: int | None = None) -> torch.Tensor:
        """``[P, 2, 2]`` counts of (X, Y) over all samples, X = 1 when the behaviour at position p has the target's
        own category: the target-agnostic summary of the semantic and temporal pattern."""
        n_pos = num_positions or max(self.num_positions, 1)
        compact = self._local_compact()
        if compact is not None:
            totals = self.label_counts()
            x1 = torch.from_numpy(compact.same_category(n_pos))
            return torch.stack([totals - x1, x1], dim=-2)
        keys, counts = self._merged("triple")
        target, behavior, position, label = decode_keys(keys)
        same = (target == behavior) & (position <= n_pos)
        x1 = torch.zeros(n_pos * 2, dtype=torch.int64, device=keys.device)
        x1.index_add_(0, ((position[same] - 1) * 2 + label[same]), counts[same])
        x1 = x1.view(n_pos, 2)
        totals = self.label_counts().to(keys.device)
        return torch.stack([totals - x1, x1], dim=-2)
