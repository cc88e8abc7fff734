"""Exact (target category, behaviour category, position, label) counts, accumulated over batches and processes.

The ground truth of the feature-correlation analysis (Zhou et al., WWW 2024; Pan et al., KDD 2024) is a 2 x 2
table per (target category c_t, behaviour category c, target-relative position p):

    n(X = 1, Y = y) = samples with target category c_t, label y and category c at position p
    n(X = 0, Y = y) = N(c_t, y) - n(X = 1, Y = y)     every other sample of c_t, shorter sequences included

so two counters are enough: one of (c_t, c, p, y) over real behaviours, one of (c_t, y) over samples. Counts
are sums, so they accumulate over batches and add up across processes.

**Memory.** Real vocabularies have 10^5 categories and more; a dense (c_t, c, p, y) array would have
10^10 x P cells, almost all zero. So the counts are kept sparse, memory growing with the distinct (c_t, c, p)
triples seen. Only while the whole (c_t, c, p, y) space is small (at most ``DENSE_MAX_CELLS`` cells, 32 MB) is it
a dense array, which is cheaper to add to; the first batch that would make it larger turns it into sparse keys for
good. On CPU with numba, while target ids stay below 65,536 and behaviour ids below 32,768, a key takes 8 bytes
(a 4-byte code per position and a 4-byte count, :mod:`.position_counter`), until the keys held are many enough
that one byte per (c_t, c, p, y) cell of the ids seen takes at most 16 bytes a key (at 1,000 categories and 50
positions, 6.25 million keys), when that counter takes a uint8 array (counts past 255 kept as carries); otherwise
(larger ids, CUDA, no numba) 16 (a sorted int64 key and an int64 count, :mod:`.sparse_keys`).

**Speed.** The authors count with a Python dictionary, one increment per behaviour (100 ns to a microsecond each,
depending on how many keys it holds). Here batches wait until about 10^5 behaviours have gathered (up to 10^6 as
the counts grow) and are then counted in a few passes: every behaviour becomes one integer code; codes are
counted with ``bincount`` while the dense array holds them, and otherwise by a compiled radix sort per position
merged into sorted runs (:mod:`.compiled_counts`, with numba), or by ``torch.sort`` and run boundaries without
numba (``torch.unique`` on CUDA).

Where things are: the key layout and the 16-byte sparse counters in :mod:`.sparse_keys`, the 8-byte one in
:mod:`.position_counter` (compiled loops in :mod:`.compiled_counts`), the dense array in
:mod:`.dense_counts`, the checks of a batch in :mod:`.behavior_batches`; this module holds the ``Metric``
(accumulation, sync across processes, the tables it answers).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from ..functional.correlation import target_relative_positions
from . import compiled_counts
from .behavior_batches import check_batch_shapes, check_batch_values
from .dense_counts import count_dense, dense_keys, grown_size
from .position_counter import PositionCodeCounter
from .sparse_keys import (
    BEHAVIOR_SHIFT,
    MAX_CATEGORIES,
    POSITION_SHIFT,
    TARGET_SHIFT,
    add_sorted_counts,
    decode_keys,
    encode_keys,
    lookup_counts,
    merged_counts,
    sum_equal_keys,
    unique_counts,
    unique_counts_numpy,
)

__all__ = ["BehaviorTargetCounts"]

#: The dense array is used while target x behaviour x (positions + 1) x 2 stays at most this many cells.
DENSE_MAX_CELLS = 1 << 22
# Batches are counted together once enough behaviours wait: at least _FLUSH_BEHAVIORS, since a vectorised pass
# over 10^5 behaviours costs little more than one over 10^4; and at least twice the state (dense cells or sparse
# keys), since adding a chunk's counts to the state costs in proportion to the state, not to the chunk. At most
# _FLUSH_MAX_BEHAVIORS, so that what waits stays a few tens of MB.
_FLUSH_BEHAVIORS = 1 << 17
_FLUSH_MAX_BEHAVIORS = 1 << 22
_FLUSH_COMPILED_MAX_BEHAVIORS = 1 << 20
# Tells compiled_counts.position_runs that column j holds position L - j.
_BY_COLUMN = np.zeros((0, 0), dtype=np.int64)


def _held(key_list) -> int:
    """Keys held by a sparse counter's list state (0 while synced states are tensors, not lists)."""
    return sum(k.numel() for k in key_list) if isinstance(key_list, list) else 0


class BehaviorTargetCounts(Metric):
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

    def _flush_at(self) -> int:
        if self._dense is None and self._dense_off and compiled_counts.available() and self.device.type == "cpu":
            # The compiled sparse path adds a run in time proportional to the run, not to the state, but each key
            # of a run is merged again about log2(state / run) times: runs of 10^6 behaviours, rather than 10^5,
            # made batches of 1,024 sequences (2.4 x 10^7 keys in the end) 1.4 to 1.5 times faster to count.
            # What waits stays under about half a byte more per key held, and under 10 MB.
            held = self._compact.distinct_upper_bound if self._compact is not None else _held(self.triple_keys)
            return min(max(_FLUSH_BEHAVIORS, held // 2), _FLUSH_COMPILED_MAX_BEHAVIORS)
        if self._dense is not None:
            state = self._dense.numel()
        else:
            state = _held(self.triple_keys)
        return min(max(_FLUSH_BEHAVIORS, 2 * state), _FLUSH_MAX_BEHAVIORS)

    def flush(self) -> None:
        """Check and count the batches waiting, all at once (queries, ``sync`` and ``reset`` do it themselves)."""
        if not self._waiting:
            return
        parts, self._waiting, self._waiting_size = self._waiting, [], 0
        if len(parts) == 1:
            target, behavior, label, mask = parts[0]
        else:
            target = torch.cat([p[0] for p in parts])
            behavior = torch.cat([p[1] for p in parts])
            label = torch.cat([p[2] for p in parts])
            mask = None
            if any(p[3] is not None for p in parts):
                mask = torch.cat([p[3] if p[3] is not None else torch.ones_like(p[1], dtype=torch.bool) for p in parts])
        self._count(*check_batch_values(target, behavior, label, mask, self.num_categories))

    def _count(self, target: torch.Tensor, behavior: torch.Tensor, label: torch.Tensor,
               valid: torch.Tensor | None, t_max: int, b_max: int) -> None:
        self._version += 1
        length = behavior.shape[1]
        self.max_length = torch.clamp_min(self.max_length, length)
        y = label.to(torch.int64)
        self._add("target", *unique_counts(target * 2 + y, (t_max + 1) * 2))
        # Every cell holds a valid id here (check_batch_values zeroed padding that did not), padding included: it gets
        # position p = 0 and is dropped after counting, cheaper than masking it out.
        positions = torch.arange(length, 0, -1, device=behavior.device)  # p of each column
        # With left padding (or none), a real behaviour's position is simply L - column.
        by_column = valid is None or bool((valid[:, 1:] >= valid[:, :-1]).all())
        if valid is None:
            cell_positions = positions[None, :]
        elif by_column:
            cell_positions = valid * positions
        else:
            cell_positions = target_relative_positions(valid)
        if self._dense_layout(t_max + 1, b_max + 1, length + 1) is not None:
            count_dense(self._dense, self._dense_shape, target, behavior, y, valid if by_column else None,
                        cell_positions, by_column)
            return
        # Sparse. With numba, a compiled pass buckets the cells by position and radix-sorts each bucket.
        b_bits = max(1, b_max.bit_length())
        if not behavior.is_cuda and compiled_counts.available():
            positions = None if valid is None else torch.as_tensor(cell_positions).expand(
                behavior.shape).to(torch.int64).contiguous().numpy()
            arrays = (target.to(torch.int64).numpy(), behavior.to(torch.int64).contiguous().numpy(), y.numpy())
            if self.device.type == "cpu" and self._compact_ready(t_max, b_max, behavior.numel()):
                self._compact.add_batch(*arrays, positions, length, checked_max=(t_max, b_max))
                self._version += 1
                return
            code_bits = max(1, t_max.bit_length()) + b_bits + 1
            keys, counts = compiled_counts.position_runs(
                *arrays, _BY_COLUMN if positions is None else positions, length, b_bits, code_bits,
                *(np.empty(behavior.numel(), np.int32 if code_bits <= 31 else np.int64) for _ in range(2)),
                POSITION_SHIFT, TARGET_SHIFT, BEHAVIOR_SHIFT)
            if keys.size:
                self._add("triple", torch.from_numpy(keys), torch.from_numpy(counts))
            return
        # Otherwise a cell's code holds its position, target, behaviour and label in power-of-two digits
        # (p, t, b, y), so that codes order like the stored keys and become keys with shifts.
        t_shift = b_bits + 1
        p_shift = t_shift + max(1, t_max.bit_length())
        code_range = (length + 1) << p_shift
        if behavior.is_cuda:
            codes = torch.add((cell_positions << p_shift) + ((target << t_shift) + y)[:, None], behavior << 1)
            values, counts = unique_counts(codes.reshape(-1), code_range)
        else:
            # The same in numpy, in place and in int32 where the codes fit: torch's integer kernels on CPU ran 4
            # to 10 times slower than numpy's here (shifts, masks, boolean selection of millions of int64).
            dtype = np.int32 if code_range <= 2**31 else np.int64
            codes = behavior.numpy().astype(dtype)
            codes <<= 1
            codes += ((target.numpy().astype(dtype) << t_shift) + y.numpy().astype(dtype))[:, None]
            codes += torch.as_tensor(cell_positions).numpy().astype(dtype) << p_shift
            values, counts = unique_counts_numpy(codes.reshape(-1))
            values = values.astype(np.int64)
        positions = values >> p_shift
        if valid is not None:  # padding cells have p = 0: dropped here, cheaper than masking them before
            real = positions >= 1
            values, positions, counts = values[real], positions[real], counts[real]
        targets = (values >> t_shift) & ((1 << (p_shift - t_shift)) - 1)
        keys = ((positions << POSITION_SHIFT) | (targets << TARGET_SHIFT)
                | (((values >> 1) & ((1 << b_bits) - 1)) << BEHAVIOR_SHIFT) | (values & 1))
        if not behavior.is_cuda:
            keys, counts = torch.from_numpy(keys), torch.from_numpy(counts)
        if keys.numel():
            self._add("triple", keys, counts)

    def _dense_layout(self, n_targets: int, n_behaviors: int, n_positions: int) -> tuple[int, int, int] | None:
        """The dense array's (positions + 1, targets, behaviours), grown to hold this batch; None once sparse."""
        if self._dense_off:
            return None
        old = self._dense_shape
        shape = (max(old[0], n_positions), grown_size(old[1], n_targets), grown_size(old[2], n_behaviors))
        if shape[0] * shape[1] * shape[2] * 2 > DENSE_MAX_CELLS:
            if self._dense is not None:
                keys, counts = dense_keys(self._dense, self._dense_shape)
                if keys.numel():
                    target, behavior, _, _ = decode_keys(keys)
                    if (not keys.is_cuda and self.device.type == "cpu" and compiled_counts.available()
                            and self._compact_ready(int(target.max()), int(behavior.max()), int(counts.sum()))):
                        self._compact.add_sorted(keys.numpy(), counts.numpy())
                    else:
                        self._add("triple", keys, counts)
            self._dense, self._dense_shape, self._dense_off = None, (0, 0, 0), True
            return None
        if shape != old:
            grown = torch.zeros(*shape, 2, dtype=torch.int64, device=self.device)
            if self._dense is not None:
                grown[: old[0], : old[1], : old[2]] = self._dense.view(*old, 2)
            self._dense, self._dense_shape = grown.view(-1), shape
        return shape

    def _compact_ready(self, t_max: int, b_max: int, behaviours: int) -> bool:
        """Whether the next ``behaviours`` (ids up to ``t_max``, ``b_max``) go to the 8-byte counter (made here
        on first use). When they do not fit it, its counts move to the 16-byte keys, for good."""
        if self._compact_off:
            return False
        if self._compact is None and _held(self.triple_keys):
            self._compact_off = True  # counts already held as 16-byte keys stay there
            return False
        if PositionCodeCounter.fits(t_max, b_max) and (self._compact is None or self._compact.has_room(behaviours)):
            if self._compact is None:
                self._compact = PositionCodeCounter()
            return True
        self._leave_compact()
        return False

    def _leave_compact(self) -> None:
        """Move the 8-byte counter's counts to the 16-byte keys, and count there from now on."""
        self._compact_off = True
        if self._compact is None:
            return
        keys, counts = self._compact.stored()
        self._compact = None
        if keys.size:
            self._add("triple", torch.from_numpy(keys), torch.from_numpy(counts))

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

    # ---- queries ----------------------------------------------------------------------------------------
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

    def compute(self) -> torch.Tensor:
        """The same-category table ``[P, 2, 2]`` (see :meth:`same_category_table`), summed over processes."""
        return self.same_category_table()
