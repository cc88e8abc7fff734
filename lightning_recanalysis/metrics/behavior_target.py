"""Exact (target category, behaviour category, position, label) counts, accumulated over batches and processes.

The ground truth of the feature-correlation analysis (Zhou et al., WWW 2024; Pan et al., KDD 2024) is a 2 x 2
table per (target category c_t, behaviour category c, target-relative position p):

    n(X = 1, Y = y) = samples with target category c_t, label y and category c at position p
    n(X = 0, Y = y) = N(c_t, y) - n(X = 1, Y = y)     every other sample of c_t, shorter sequences included

so two counters are enough: one of (c_t, c, p, y) over real behaviours, one of (c_t, y) over samples. Counts
are sums, so they accumulate over batches and add up across processes.

**Memory.** Real vocabularies have 10^5 categories and more; a dense (c_t, c, p, y) array would have
10^10 x P cells, almost all zero. So the counts are kept sparse: sorted unique int64 keys with their counts,
memory growing with the distinct (c_t, c, p) triples seen. Only while the whole (c_t, c, p, y) space is small
(at most ``DENSE_MAX_CELLS`` cells, 32 MB) is it a dense array, which is cheaper to add to; the first batch that
would make it larger turns it into sparse keys for good.

**Speed.** The authors count with a Python dictionary, one increment per behaviour (about a microsecond each).
Here batches wait until about 10^5 behaviours have gathered and are then counted in a few vectorised passes:
every behaviour becomes one integer code, and the codes are counted with ``bincount`` when their range is
small and by sorting otherwise (``torch.sort``, then run boundaries; ``torch.unique`` on CUDA).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from ..functional.correlation import target_relative_positions

__all__ = ["BehaviorTargetCounts"]

# Bit layout of a stored key: target (24 bits) | behaviour (24 bits) | position (12 bits) | label (1 bit).
# 61 bits in all, so keys stay positive in int64 and sort in (target, behaviour, position, label) order.
CATEGORY_BITS = 24
POSITION_BITS = 12
MAX_CATEGORIES = 1 << CATEGORY_BITS
MAX_POSITIONS = (1 << POSITION_BITS) - 1
_TARGET_SHIFT = 1 + POSITION_BITS + CATEGORY_BITS
_BEHAVIOR_SHIFT = 1 + POSITION_BITS

#: The dense array is used while target x behaviour x (positions + 1) x 2 stays at most this many cells.
DENSE_MAX_CELLS = 1 << 22
# Beyond this many cells (512 KB) the dense array leaves the cache, and batches of at least this many rows are
# counted one position at a time (see _count_dense).
_DENSE_IN_CACHE_CELLS = 1 << 16
_ROWS_PER_POSITION_PASS = 1 << 12
# Batches are counted together once enough behaviours wait: at least _FLUSH_BEHAVIORS, since a vectorised pass
# over 10^5 behaviours costs little more than one over 10^4; and at least twice the state (dense cells or sparse
# keys), since adding a chunk's counts to the state costs in proportion to the state, not to the chunk. At most
# _FLUSH_MAX_BEHAVIORS, so that what waits stays a few tens of MB.
_FLUSH_BEHAVIORS = 1 << 17
_FLUSH_MAX_BEHAVIORS = 1 << 22
# Below this range, or below the number of codes, codes are counted with bincount rather than by sorting.
_BINCOUNT_MIN_RANGE = 1 << 16


def _encode(target: torch.Tensor, behavior: torch.Tensor, position: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    key = (target.to(torch.int64) << _TARGET_SHIFT) | (behavior.to(torch.int64) << _BEHAVIOR_SHIFT)
    return key | (position.to(torch.int64) << 1) | label.to(torch.int64)


def _decode(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    label = key & 1
    position = (key >> 1) & MAX_POSITIONS
    behavior = (key >> _BEHAVIOR_SHIFT) & (MAX_CATEGORIES - 1)
    target = key >> _TARGET_SHIFT
    return target, behavior, position, label


def _bincount(codes: torch.Tensor, size: int) -> torch.Tensor:
    """``torch.bincount``; numpy's on CPU, which is 3 to 5 times faster there."""
    if codes.is_cuda:
        return torch.bincount(codes, minlength=size)
    # int32 codes go in as they are (numpy widens them internally, in cache); anything else as int64.
    codes = codes if codes.dtype in (torch.int32, torch.int64) else codes.to(torch.int64)
    return torch.from_numpy(np.bincount(codes.numpy(), minlength=size))


def _unique_counts(codes: torch.Tensor, code_range: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct values of ``codes`` (1-D, values in [0, code_range)) and how often each occurs."""
    if code_range <= max(_BINCOUNT_MIN_RANGE, codes.numel()):
        counts = _bincount(codes, code_range)
        values = torch.nonzero(counts).squeeze(1)
        return values, counts[values]
    if codes.is_cuda:
        values, counts = torch.unique(codes, sorted=True, return_counts=True)
        return values.to(torch.int64), counts.to(torch.int64)
    values, counts = _unique_counts_numpy(codes.to(torch.int32 if code_range <= 2**31 else torch.int64).numpy())
    return torch.from_numpy(values.astype(np.int64)), torch.from_numpy(counts)


def _unique_counts_numpy(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a 1-D integer array and their int64 counts.

    Sorted with ``torch.sort`` on the array's memory: on this project's 2-core AMD machine it sorted the
    counting benchmark's codes in 21 to 26 ns each (int32 or int64, one thread, CPU time), numpy's ``np.sort``
    in 35 to 58 ns (its AVX-512 sort relies on compress-stores, which are slow on that CPU).
    """
    ordered = torch.sort(torch.from_numpy(codes)).values.numpy()
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.diff(np.append(starts, ordered.size)).astype(np.int64)


def _check_integer(name: str, value: torch.Tensor) -> None:
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer category ids, got dtype {value.dtype}")


def _grown(size: int, needed: int) -> int:
    """A dense dimension that holds ``needed``: unchanged if it does, else at least half as large again (so that
    a vocabulary revealed id by id re-lays the array out only a few times), in multiples of 8."""
    if needed <= size:
        return size
    return -(-max(needed, size + size // 2) // 8) * 8


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
        target, behavior, label, mask = self._check_shapes(target_category, behavior_category, label, mask)
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
        if self._dense is not None:
            state = self._dense.numel()
        else:
            state = self.triple_keys[0].numel() if isinstance(self.triple_keys, list) and self.triple_keys else 0
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
        self._count(*self._check_values(target, behavior, label, mask))

    def _count(self, target: torch.Tensor, behavior: torch.Tensor, label: torch.Tensor,
               valid: torch.Tensor | None, t_max: int, b_max: int) -> None:
        self._version += 1
        length = behavior.shape[1]
        self.max_length = torch.clamp_min(self.max_length, length)
        y = label.to(torch.int64)
        self._add("target", *_unique_counts(target * 2 + y, (t_max + 1) * 2))
        # Every cell holds a valid id here (_check_values zeroed padding that did not), padding included: it gets
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
            self._count_dense(target, behavior, y, valid if by_column else None, cell_positions, by_column)
            return
        # Sparse: a cell's code holds its target, behaviour, position and label in power-of-two digits
        # (t, b, p, y), so that codes order like the stored keys and become keys with shifts.
        p_shift = length.bit_length() + 1
        b_bits = max(1, b_max.bit_length())
        t_shift = p_shift + b_bits
        code_range = (t_max + 1) << t_shift
        if behavior.is_cuda:
            codes = torch.add(cell_positions * 2 + ((target << t_shift) + y)[:, None], behavior << p_shift).reshape(-1)
            values, counts = _unique_counts(codes, code_range)
        else:
            # The same in numpy, in place and in int32 where the codes fit: torch's integer kernels on CPU ran 4
            # to 10 times slower than numpy's here (shifts, masks, boolean selection of millions of int64).
            dtype = np.int32 if code_range <= 2**31 else np.int64
            codes = behavior.numpy().astype(dtype)
            codes <<= p_shift
            codes += ((target.numpy().astype(dtype) << t_shift) + y.numpy().astype(dtype))[:, None]
            codes += (torch.as_tensor(cell_positions).numpy() * 2).astype(dtype)
            values, counts = _unique_counts_numpy(codes.reshape(-1))
            values = values.astype(np.int64)
        low = values & ((1 << p_shift) - 1)  # 2p + y
        if valid is not None:  # padding cells have p = 0: dropped here, cheaper than masking them before
            real = low >= 2
            values, low, counts = values[real], low[real], counts[real]
        behaviors = (values >> p_shift) & ((1 << b_bits) - 1)
        keys = ((values >> t_shift) << _TARGET_SHIFT) | (behaviors << _BEHAVIOR_SHIFT) | low
        if not behavior.is_cuda:
            keys, counts = torch.from_numpy(keys), torch.from_numpy(counts)
        if keys.numel():
            self._add("triple", keys, counts)

    def _count_dense(self, target, behavior, y, valid, cell_positions, by_column: bool) -> None:
        """Add the cells' counts to the dense array, laid out [position, target, behaviour, label]."""
        n_positions, n_targets, n_behaviors = self._dense_shape
        block = n_targets * n_behaviors * 2  # the cells of one position
        table = self._dense.view(n_positions, block)
        row = target * (n_behaviors * 2) + y  # code within a position's block: (t V + b) 2 + y
        batch, length = behavior.shape
        if by_column and self._dense.numel() > _DENSE_IN_CACHE_CELLS and batch >= _ROWS_PER_POSITION_PASS:
            # One bincount per position over its own block, small enough to stay in cache, where one bincount
            # over the whole array would scatter its increments over every position's block: about 1.5 times
            # faster once the array outgrows the cache. A column holds one position (p = L - column); padding
            # goes to a spare cell past the block.
            # The transposed copy is the largest memory pass here: made from the narrowest integer type that
            # holds the ids (int16 for up to 32,767 categories), it moves a quarter of the bytes of int64, and the
            # codes (below 2^22, the dense array's size) are int32. About 1.4x faster overall than all-int64.
            narrow = torch.int16 if n_behaviors <= 1 << 15 else torch.int32
            columns = behavior.to(narrow).t().contiguous()
            row = row.to(torch.int32)
            real = None if valid is None else valid.t()
            for j in range(length):
                codes = torch.add(row, columns[j], alpha=2)
                if real is not None:
                    codes = torch.where(real[j], codes, torch.full_like(codes, block))
                table[length - j] += _bincount(codes, block + 1)[:block].to(table.device)
            return
        codes = torch.add(cell_positions * block + row[:, None], behavior, alpha=2).reshape(-1)
        self._dense += _bincount(codes, self._dense.numel()).to(self._dense.device)

    def _dense_layout(self, n_targets: int, n_behaviors: int, n_positions: int) -> tuple[int, int, int] | None:
        """The dense array's (positions + 1, targets, behaviours), grown to hold this batch; None once sparse."""
        if self._dense_off:
            return None
        old = self._dense_shape
        shape = (max(old[0], n_positions), _grown(old[1], n_targets), _grown(old[2], n_behaviors))
        if shape[0] * shape[1] * shape[2] * 2 > DENSE_MAX_CELLS:
            if self._dense is not None:
                keys, counts = self._dense_keys()
                if keys.numel():
                    self._add("triple", keys, counts)
            self._dense, self._dense_shape, self._dense_off = None, (0, 0, 0), True
            return None
        if shape != old:
            grown = torch.zeros(*shape, 2, dtype=torch.int64, device=self.device)
            if self._dense is not None:
                grown[: old[0], : old[1], : old[2]] = self._dense.view(*old, 2)
            self._dense, self._dense_shape = grown.view(-1), shape
        return shape

    def _dense_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense array's non-zero cells at real positions (p >= 1) as sorted stored keys, with their counts."""
        # Viewed [target, behaviour, position, label], its non-zero cells come out in the stored keys' order.
        cells = self._dense.view(*self._dense_shape, 2)[1:].permute(1, 2, 0, 3)
        where = torch.nonzero(cells)  # [K, 4] (t, b, p - 1, y), lexicographic
        counts = cells[where[:, 0], where[:, 1], where[:, 2], where[:, 3]]
        return _encode(where[:, 0], where[:, 1], where[:, 2] + 1, where[:, 3]), counts

    def _check_shapes(self, target, behavior, label, mask):
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
        if behavior.shape[1] > MAX_POSITIONS:
            raise ValueError(
                f"behavior_category has {behavior.shape[1]} columns; at most {MAX_POSITIONS} are supported")
        if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(behavior.shape)):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must have the shape of behavior_category {tuple(behavior.shape)}, got {shape}")
        return target, behavior, label, mask

    def _check_values(self, target, behavior, label, mask):
        """Labels in {0, 1} and category ids in range; returns what ``_count`` takes, padding zeroed if needed."""
        # y (1 - y) is 0 exactly for y in {0, 1}: one check for integer and float labels alike.
        if label.dtype != torch.bool and label.numel() and bool((label * (1 - label)).any()):
            bad = label[(label != 0) & (label != 1)][0].item()
            raise ValueError(f"label must hold 0/1 responses, found {bad!r}")
        valid = None if mask is None else (mask if mask.dtype == torch.bool else mask != 0)
        limit = self.num_categories if self.num_categories is not None else MAX_CATEGORIES
        what = "the category embedding's" if self.num_categories is not None else "the supported"
        t_max = b_max = 0
        if target.numel():
            low, t_max = (int(v) for v in torch.aminmax(target))
            if low < 0 or t_max >= limit:
                raise ValueError(f"target_category ids must lie in [0, {limit}) ({what} size), "
                                 f"found {low if low < 0 else t_max}")
        if behavior.numel():
            low, high = (int(v) for v in torch.aminmax(behavior))
            if (low < 0 or high >= limit) and valid is not None:
                # Padding may hold anything (-1, a pad id): only real behaviours must be valid ids. Zero the
                # padding so that counting can treat every cell alike.
                behavior = torch.where(valid, behavior, torch.zeros((), dtype=behavior.dtype, device=behavior.device))
                low, high = (int(v) for v in torch.aminmax(behavior))
            if low < 0 or high >= limit:
                raise ValueError(
                    f"behavior_category ids of real (unmasked) behaviours must lie in [0, {limit}) ({what} size), "
                    f"found {low if low < 0 else high}"
                )
            b_max = high
        return target.to(torch.int64), behavior.to(torch.int64), label, valid, t_max, b_max

    def _add(self, name: str, keys: torch.Tensor, counts: torch.Tensor) -> None:
        """Add sorted unique ``keys`` with ``counts`` to the sparse counter ``name``."""
        self._version += 1
        key_list, count_list = getattr(self, f"{name}_keys"), getattr(self, f"{name}_counts")
        keys, counts = keys.to(self.device), counts.to(self.device)
        if not key_list:
            key_list.append(keys.clone())
            count_list.append(counts.clone())
            return
        merged_keys, merged_counts = key_list[0], count_list[0]
        if merged_keys.numel():
            if keys.is_cuda:
                at = torch.searchsorted(merged_keys, keys).clamp_max(merged_keys.numel() - 1)
                hit = merged_keys[at] == keys
                # Keys are unique within a batch, so the hit positions are distinct and a plain += is exact.
                merged_counts[at[hit]] += counts[hit]
                keys, counts = keys[~hit], counts[~hit]
            else:
                # numpy's searchsorted and selection (torch's stall on CPU when its threads compete with
                # training for the cores, and its integer selection ran several times slower); the numpy
                # views share the tensors' memory, so the += lands in the state.
                held, held_counts, new, new_counts = (t.numpy() for t in (merged_keys, merged_counts, keys, counts))
                at = np.minimum(np.searchsorted(held, new), held.size - 1)
                hit = held[at] == new
                held_counts[at[hit]] += new_counts[hit]
                miss = ~hit
                keys, counts = torch.from_numpy(new[miss]), torch.from_numpy(new_counts[miss])
        if keys.numel():
            key_list.append(keys.clone())
            count_list.append(counts.clone())
            pending = sum(k.numel() for k in key_list[1:])
            # Merging sorts everything held; doing it only once the new keys outnumber the merged ones keeps
            # the total work proportional to the keys added (amortised doubling).
            if pending > max(merged_keys.numel(), 4096) or len(key_list) > 64:
                if merged_keys.is_cuda:
                    merged = self._sum_equal_keys(torch.cat(key_list), torch.cat(count_list))
                else:
                    # The pending chunks hold only keys that were missing from the merged ones when they came
                    # (hits were added in place above), so the two sets are disjoint: sum the pending chunks
                    # among themselves, then insert them into the sorted merged keys in one linear pass
                    # instead of sorting everything again.
                    new_keys, new_counts = self._sum_equal_keys(torch.cat(key_list[1:]), torch.cat(count_list[1:]))
                    held = merged_keys.numpy()
                    at = np.searchsorted(held, new_keys.numpy())
                    merged = (torch.from_numpy(np.insert(held, at, new_keys.numpy())),
                              torch.from_numpy(np.insert(merged_counts.numpy(), at, new_counts.numpy())))
                key_list[:] = [merged[0]]
                count_list[:] = [merged[1]]

    @staticmethod
    def _sum_equal_keys(keys: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted unique keys and the sum of the counts of each (keys may repeat, in any order)."""
        keys, counts = keys.to(torch.int64), counts.to(torch.int64)
        if keys.is_cuda:
            unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
            summed = torch.zeros(unique.numel(), dtype=torch.int64, device=keys.device).index_add_(0, inverse, counts)
            return unique, summed
        if keys.numel() == 0:
            return keys, counts
        # torch's sort: about twice as fast as numpy's argsort on this project's machine (see _unique_counts_numpy).
        ordered, order = torch.sort(keys)
        ordered, ordered_counts = ordered.numpy(), counts.numpy()[order.numpy()]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        return torch.from_numpy(ordered[starts]), torch.from_numpy(np.add.reduceat(ordered_counts, starts))

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
        keys, counts = getattr(self, f"{name}_keys"), getattr(self, f"{name}_counts")
        if isinstance(keys, list):  # not synced: local chunks, plus the dense array
            keys, counts = list(keys), list(counts)
            if name == "triple" and self._dense is not None:
                dense_keys, dense_counts = self._dense_keys()
                keys.append(dense_keys.to(self.device))
                counts.append(dense_counts.to(self.device))
            if not keys:
                empty = torch.zeros(0, dtype=torch.int64, device=self.device)
                result = (empty, empty.clone())
            elif len(keys) == 1:
                result = (keys[0], counts[0])
            else:
                result = self._sum_equal_keys(torch.cat(keys), torch.cat(counts))
                if name != "triple" or self._dense is None:
                    # The merged keys become the state: the chunks they came from (whose keys may repeat
                    # across chunks) are dropped rather than kept beside a merged copy, so the state holds each
                    # distinct key once (16 bytes: key and count).
                    getattr(self, f"{name}_keys")[:] = [result[0]]
                    getattr(self, f"{name}_counts")[:] = [result[1]]
        else:  # synced: every rank's keys, concatenated
            result = self._sum_equal_keys(keys, counts)
        self._query_cache[name] = (stamp, result)
        return result

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
        self.flush()
        for name in ("triple", "target"):
            keys, counts = self._merged(name)
            setattr(self, f"{name}_keys", [keys])
            setattr(self, f"{name}_counts", [counts])
        self._version += 1
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
        if not self._is_synced:
            self.flush()
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
        bounds = torch.tensor([int(target_category) << _TARGET_SHIFT, (int(target_category) + 1) << _TARGET_SHIFT],
                              device=keys.device)
        lo, hi = torch.searchsorted(keys, bounds).tolist()
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
