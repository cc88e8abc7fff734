"""Exact (target category, behaviour category, position, label) counts, accumulated over batches and processes.

The ground truth of the feature-correlation analysis (Zhou et al., WWW 2024; Pan et al., KDD 2024) is a 2 x 2
table per (target category c_t, behaviour category c, target-relative position p):

    n(X = 1, Y = y) = samples with target category c_t, label y and category c at position p
    n(X = 0, Y = y) = N(c_t, y) - n(X = 1, Y = y)     every other sample of c_t, shorter sequences included

so two counters are enough: one of (c_t, c, p, y) over real behaviours, one of (c_t, y) over samples. Counts
are sums, so they accumulate over batches and add up across processes.

**Memory.** Real vocabularies have 10^5 categories and more; a dense (c_t, c, p, y) array would have
10^10 x P cells, almost all zero. So the counts are kept sparse, memory growing with the distinct (c_t, c, p)
triples seen. Only while the whole (c_t, c, p, y) space is small (at most
:data:`~.behavior_counting.DENSE_MAX_CELLS` cells, 32 MB) is it a dense array, which is cheaper to add to; the
first batch that would make it larger turns it into sparse keys for good. On CPU with numba, while target ids stay
below 65,536 and behaviour ids below 32,768, a key takes 8 bytes (a 4-byte code per position and a 4-byte count,
:mod:`.position_counter`), until the keys held are many enough that one byte per (c_t, c, p, y) cell of the ids
seen takes at most 16 bytes a key (at 1,000 categories and 50 positions, 6.25 million keys), when that counter
takes a uint8 array (counts past 255 kept as carries); otherwise (larger ids, CUDA, no numba) 16 (a sorted int64
key and an int64 count, :mod:`.sparse_keys`).

**Speed.** The authors count with a Python dictionary, one increment (a hash-table lookup) per behaviour. Here
batches wait until about 10^5 behaviours have gathered (2 x 10^6 for the 8-byte counter) and are then
counted in a few passes: every behaviour becomes one integer code; codes are counted with ``bincount`` while the
dense array holds them, and otherwise sorted per position and merged into sorted runs (:mod:`.compiled_counts`,
with numba: numpy's vectorised sort for 4-byte codes, a compiled radix sort for wider ones), or by ``torch.sort``
and run boundaries without numba (``torch.unique`` on CUDA).

Where things are: the key layout and the 16-byte sparse counters in :mod:`.sparse_keys`, the 8-byte one in
:mod:`.position_counter` (compiled loops in :mod:`.compiled_counts`), the dense array in
:mod:`.dense_counts`, the checks of a batch in :mod:`.behavior_batches`, the counting of the batches waiting in
:mod:`.behavior_counting`, the tables read from the counts in :mod:`.behavior_tables`; this module holds the
``Metric`` (accumulation, sync across processes).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from .behavior_batches import check_batch_shapes, check_batches_values
from .behavior_counting import BehaviorCounting
from .behavior_tables import BehaviorTables
from .dense_counts import dense_keys
from .position_counter import PositionCodeCounter
from .sparse_keys import MAX_CATEGORIES, add_sorted_counts, merged_counts, sum_equal_keys

__all__ = ["BehaviorTargetCounts"]


class BehaviorTargetCounts(BehaviorCounting, BehaviorTables, Metric):
    """Exact counts of (target category, behaviour category, target-relative position, label).

    Feed it batches with :meth:`update`; read 2 x 2 tables with :meth:`table` and
    :meth:`same_category_table` (and pass them to
    :func:`~lightning_recanalysis.functional.mutual_information`). Under DDP the states are gathered and summed
    by torchmetrics' usual ``sync`` (``compute``, or ``with metric.sync_context(): ...`` around the queries).

    Args:
        num_categories: if given, category ids must lie in ``[0, num_categories)`` (the size of the model's
            category embedding); an id outside is an error that names the argument. Ids must always be below
            2^24 and sequences at most 4095 long (the key layout).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Positions: p = 1 is the most recent real behaviour (the last column), p = 2 the one before, and so on;
    padding anywhere in a row is skipped (see
    :func:`~lightning_recanalysis.functional.target_relative_positions`).

    Example:
        >>> metric = BehaviorTargetCounts(num_categories=4)
        >>> metric.update(target_category=torch.tensor([2, 2, 1]),
        ...               behavior_category=torch.tensor([[0, 2, 2], [1, 3, 2], [0, 0, 1]]),
        ...               label=torch.tensor([1, 0, 1]),
        ...               mask=torch.tensor([[0, 1, 1], [1, 1, 1], [1, 1, 1]]))  # row 0: one padding cell
        >>> metric.label_counts(2).tolist()  # target category 2: one sample of each label
        [1, 1]
        >>> metric.table(2, [2], num_positions=2).tolist()  # [C, P, X, Y]: category 2 at p = 1 in both samples
        [[[[0, 0], [1, 1]], [[1, 0], [0, 1]]]]
        >>> from lightning_recanalysis.functional import mutual_information
        >>> mutual_information(metric.table(2, [2], num_positions=2)).tolist()  # bits, per position
        [[0.0, 1.0]]
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
        # later elements are sorted chunks not yet merged in. "cat" concatenates them across ranks, and
        # _merged() sums equal keys, which is the sum over ranks.
        self.add_state("triple_keys", default=[], dist_reduce_fx="cat")
        self.add_state("triple_counts", default=[], dist_reduce_fx="cat")
        self.add_state("target_keys", default=[], dist_reduce_fx="cat")
        self.add_state("target_counts", default=[], dist_reduce_fx="cat")
        self.add_state("max_length", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="max")
        self._clear_local()

    def _clear_local(self) -> None:
        """What is not a torchmetrics state: batches waiting to be counted, the dense array, a query cache."""
        self._waiting: list[tuple] = []
        self._waiting_length = 0
        self._waiting_size = 0
        self._dense: torch.Tensor | None = None  # flat int64, layout [targets, behaviours, positions + 1, 2]
        self._dense_shape = (0, 0, 0)
        self._dense_off = False
        # The compiled CPU path's counts in 8 bytes a key while ids and totals fit (see position_counter); None
        # before the first sparse batch, and for good once the counts have moved to the 16-byte keys.
        self._compact: PositionCodeCounter | None = None
        self._compact_off = False
        self._version = 0
        self._query_cache: dict = {}

    def reset(self) -> None:
        self._clear_local()
        super().reset()

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

        Shapes and dtypes are checked at once; values (labels, id ranges) when the batch is counted, together
        with the next few, once about 10^5 behaviours wait (one check over all of them costs what one costs
        over a single batch), and at every :meth:`flush`, query, ``sync`` and ``reset``.
        """
        target, behavior, label, mask = check_batch_shapes(target_category, behavior_category, label, mask)
        batch, length = behavior.shape
        if batch == 0:
            return
        if self._waiting and self._waiting_length != length:
            self.flush()
        self._waiting.append((target, behavior, label, mask))
        self._waiting_length = length
        self._waiting_size += batch * length
        if self._waiting_size >= self._flush_at():
            self.flush()

    def flush(self) -> None:
        """Check and count the batches waiting, all at once (queries, ``sync`` and ``reset`` do it themselves)."""
        if not self._waiting:
            return
        parts, self._waiting, self._waiting_size = self._waiting, [], 0
        self._count_parts(check_batches_values(parts, self.num_categories))

    def _local_compact(self) -> PositionCodeCounter | None:
        """The 8-byte counter when it holds this process's counts and the queries should read it (not synced)."""
        if self._is_synced:
            return None
        self.flush()
        return self._compact

    def _add(self, name: str, keys: torch.Tensor, counts: torch.Tensor) -> None:
        """Add sorted unique ``keys`` with ``counts`` to the sparse counter ``name``."""
        if name == "triple" and self._compact is not None:
            # A batch that the 8-byte counter cannot take (on CUDA, or counted without numba): one store only,
            # so that every query reads every count.
            self._leave_compact()
        self._version += 1
        # The (target, label) counter stays small: the numpy path, without numba's import.
        add_sorted_counts(getattr(self, f"{name}_keys"), getattr(self, f"{name}_counts"), keys.to(self.device),
                          counts.to(self.device), compiled=name == "triple")

    def _merged(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted unique keys of counter ``name`` and their summed counts (over chunks, the dense array and,
        once synced, ranks)."""
        if not self._is_synced:
            self.flush()
        # The analysis asks for several tables in a row; merge once per change, not once per question.
        stamp = (self._version, self._is_synced)
        cached = self._query_cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if name == "triple" and self._compact is not None and not self._is_synced:
            # Exported as 16-byte keys on request (sync, tests), not kept: the queries read the counter itself.
            held_keys, held_counts = self._compact.stored()
            return torch.from_numpy(held_keys), torch.from_numpy(held_counts)
        keys, counts = getattr(self, f"{name}_keys"), getattr(self, f"{name}_counts")
        if isinstance(keys, list):  # not synced: local chunks, plus the dense array
            keys, counts = list(keys), list(counts)
            if name == "triple" and self._dense is not None:
                held_keys, held_counts = dense_keys(self._dense, self._dense_shape)
                keys.append(held_keys.to(self.device))
                counts.append(held_counts.to(self.device))
            if not keys:
                empty = torch.zeros(0, dtype=torch.int64, device=self.device)
                result = (empty, empty.clone())
            elif len(keys) == 1:
                result = (keys[0], counts[0])
            else:
                result = merged_counts(keys, counts, compiled=name == "triple")
                if name != "triple" or self._dense is None:
                    # The merged keys become the state: the chunks they came from (whose keys may repeat
                    # across chunks) are dropped rather than kept beside a merged copy, so the state holds each
                    # distinct key once (16 bytes: key and count).
                    getattr(self, f"{name}_keys")[:] = [result[0]]
                    getattr(self, f"{name}_counts")[:] = [result[1]]
        else:  # synced: every rank's keys, concatenated
            result = sum_equal_keys(keys, counts)
        self._query_cache[name] = (stamp, result)
        return result

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """Count the batch into the running counts (as :meth:`update`) and return the batch's own same-category
        table (this metric's ``compute`` on the batch alone, not synced).

        torchmetrics' ``forward`` resets the metric around the batch and restores its states afterwards, which
        would drop the counts held outside them (the dense array, the 8-byte counter, batches still waiting).
        """
        if self._is_synced:
            raise RuntimeError("BehaviorTargetCounts: forward on a synced metric; call unsync() first")
        batch = BehaviorTargetCounts(num_categories=self.num_categories).to(self.device)
        batch.update(*args, **kwargs)
        self.update(*args, **kwargs)
        self._forward_cache = batch.same_category_table()
        return self._forward_cache

    def merge_state(self, incoming_state) -> None:
        """Add another ``BehaviorTargetCounts``' counts (all of them, those held outside its torchmetrics states
        included), or a dict of states as torchmetrics' ``merge_state`` does."""
        if not isinstance(incoming_state, BehaviorTargetCounts):
            super().merge_state(incoming_state)
            self._version += 1
            return
        for name in ("triple", "target"):
            keys, counts = incoming_state._merged(name)
            if keys.numel():
                self._add(name, keys.to(self.device), counts.to(self.device))
        self.max_length = torch.maximum(self.max_length, incoming_state.max_length.to(self.device))

    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """torchmetrics' ``state_dict``; with ``persistent(True)`` the saved sparse states hold every count, those
        of the 8-byte counter and of the dense array included (they are not torchmetrics states themselves)."""
        if self._is_synced or not self._persistent.get("triple_keys"):
            return super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        self.flush()
        held = self.triple_keys, self.triple_counts
        if self._compact is not None or self._dense is not None:
            keys, counts = self._merged("triple")
            self.triple_keys, self.triple_counts = [keys], [counts]
        try:
            return super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        finally:
            self.triple_keys, self.triple_counts = held

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if prefix + "triple_keys" in state_dict:  # the loaded states replace every count held here
            self._clear_local()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def sync(self, *args, **kwargs) -> None:
        # Count the waiting batches into the states first: torchmetrics copies the states before syncing and
        # restores that copy afterwards, so batches counted during the sync would be lost on unsync.
        self.flush()
        super().sync(*args, **kwargs)

    def _sync_dist(self, *args, **kwargs) -> None:
        # The dense array is not a state: its counts go into the list states that torchmetrics gathers (the
        # copy restored on unsync does not hold them, and the dense array stays as it was). torchmetrics also
        # fills a rank that saw no batch with an empty *float* tensor, which cannot be gathered with other
        # ranks' int64 keys: every rank sends one int64 tensor per state.
        # This overrides a private method because no public hook runs between the copy of the states that
        # ``sync`` keeps for ``unsync`` and the gather: done in ``sync`` the dense counts would enter that copy
        # and be counted twice after ``unsync``; ``dist_sync_fn`` sees only the states, after they are read.
        # tests/metrics/test_behavior_target.py pins what this relies on: ``sync`` copies the states, then calls
        # ``_sync_dist(dist_sync_fn, process_group=...)``, which gathers each list state with ``dist_sync_fn``.
        self.flush()
        for name in ("triple", "target"):
            keys, counts = self._merged(name)
            setattr(self, f"{name}_keys", [keys])
            setattr(self, f"{name}_counts", [counts])
        self._version += 1
        super()._sync_dist(*args, **kwargs)

    # ---- queries (the tables themselves: behavior_tables) ------------------------------------------------
    def compute(self) -> torch.Tensor:
        """The same-category table ``[P, 2, 2]`` (see :meth:`same_category_table`), summed over processes."""
        return self.same_category_table()
