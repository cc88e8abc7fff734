"""Bucketed (value of field i, value of field j, label) counts for every pair of fields, over batches and processes.

The ground truth of the field-pair correlation analysis (see :mod:`lightning_recanalysis.functional.field_pair`)
is, for each pair of fields i < j, a table n(a, b, y) of how often field i took value a, field j value b and the
label was y. Counts are sums, so they accumulate over batches and add up across processes.

**Bucketing.** Real CTR fields have 10^5 to 10^7 values; a pair's table would have 10^10 cells and more. Each
field keeps its ``num_values`` most frequent values (default 31) as buckets of their own and puts every other
value into one "other" bucket, so each pair's table is (V + 1) x (V + 1) x 2 whatever the vocabulary.

How the frequent values are chosen: from the first ``warmup_batches`` batches (default 8). Those batches are held
(features and labels, ``warmup_batches x B x N`` integers), their value frequencies are summed over processes,
each field's ``num_values`` most frequent values are taken (ties to the smaller value, so every process chooses
the same), and only then are the held batches counted, so no sample is lost. From then on the vocabulary is
fixed: counts taken before and after share one bucketing, which a streaming heavy-hitter sketch whose kept
values change over time would not give. Or pass ``vocabulary`` to fix it yourself (no warm-up).

What bucketing does to the estimate: merging values is a function of the data, so by the data-processing
inequality MI(bucket(F_i), bucket(F_j); Y) <= MI((F_i, F_j); Y): every pair MI is a lower bound of the pair's
MI over its full vocabularies, exact for fields with at most ``num_values`` values. What is lost is the
information carried by the tail's individual values (in CTR data mostly what a model could not learn from a few
samples either). Interaction information is a difference of such bounds and has no sign guarantee. With many
buckets and few samples the plug-in estimate is biased up instead (see ``bias_correction`` in the monitor).

**Memory.** int64 counts of N(N - 1)/2 pair tables of (V + 1)^2 x 2 cells plus N field tables of (V + 1) x 2:
for the 39 Criteo fields at V = 31, 741 x 2,048 x 8 bytes = 11.6 MiB (one copy per process); for the DCNv2 demo's
8 fields, 0.4 MiB. During warm-up the held batches add 8 x B x N x 8 bytes (2.4 MiB at B = 1024, N = 39); after
it, the rows waiting to be counted take up to 9 bytes per id and label (10 MiB at N = 39), and a count makes a
transient int32 code array of at most 32,768 x (N - 1) (4.6 MiB at N = 39). The
id -> bucket table takes 2 bytes per id from 0 to each field's largest kept id (at most 8 MiB, else a binary
search is used; a few KiB when ids are numbered by frequency, as in the demo).

**Cost.** Per batch after the warm-up, on CPU: one copy into the rows waiting. Per flush (once 32,768 rows and
2^22 codes wait): one gather in a dense id -> bucket table (binary search for ids too large for one), then
B x N(N - 1)/2 increments, one ``bincount`` per field over all its pairs (see :mod:`.field_pair_cpu`; on CUDA
``index_add_``; both exact). The increments are the floor: the whole count is a small multiple of ``bincount``
alone (``benchmarks/bench_field_pair.py`` measures both).

Where things are: the kept values and the bucket lookup in :mod:`.field_vocabulary`, the counting in
:mod:`.field_pair_cpu` (numpy) and :mod:`.field_pair_torch` (GPUs), the checks of a batch in
:mod:`.field_batches`; this module holds the ``Metric`` (warm-up, waiting rows, sync, the tables it answers).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from ..checks import check_positive_int
from ..functional.field_pair import field_pair_matrices
from .field_batches import check_feature_shapes, check_feature_values
from .field_pair_cpu import count_buckets, lookup_buckets, padded_lookup
from .field_pair_torch import code_parts, count_buckets_torch
from .field_vocabulary import (
    PAD,
    VocabularyTables,
    choose_vocabulary,
    lookup_buckets_torch,
    value_frequencies,
    vocabulary_tables,
)

__all__ = ["FieldPairCounts"]

# After the warm-up, batches wait (shapes checked at once) and are checked and counted together once their
# rows x pairs reach this many codes (16 MiB of int32 codes): on a GPU each batch's value checks would each
# stop the host until the training step's kernels finish, and one pass over many batches costs about what one
# costs over a single batch.
_FLUSH_CODES = 1 << 22
# On CPU, batches also wait until at least this many rows have gathered: counting costs a fixed few microseconds
# per field and adds every pair's 16 KiB table to the state per block, which 1,024-row batches of 39 fields did
# not amortise (2.2 ns per sample and pair, against 1.1 ns at 32,768 rows). 32,768 rows of 39 int64 ids wait in
# 10 MiB.
_FLUSH_MIN_ROWS_CPU = 1 << 15
_COUNT_BLOCK_ROWS = 1 << 15


class FieldPairCounts(Metric):
    """Counts of (bucket of field i, bucket of field j, label) for all pairs i < j, and of (bucket, label) per field.

    Feed it batches with :meth:`update` (not ``forward``: the warm-up holds batches, which a per-batch value
    cannot reflect). Read the tables with :meth:`pair_tables` / :meth:`field_tables`, or the MI matrices with
    :meth:`compute`. Under DDP ``compute`` (or ``with metric.sync_context(): ...``) sums the counts of all
    processes, torchmetrics' usual ``sync``; the vocabulary is chosen from all processes' warm-up batches.

    Buckets: for field f, bucket k < V is its k-th most frequent value (``vocabulary[f][k]``); bucket V (=
    ``num_values``) holds every other value, including values unseen in the warm-up. A field with fewer than V
    values leaves the remaining buckets empty (they contribute nothing).

    Args:
        num_fields: N, the number of columns of the ``features`` each batch brings.
        num_values: V, the most frequent values kept per field (default 31, so 32 buckets with "other").
        warmup_batches: batches held to choose the frequent values (default 8). The choice is made after that
            many updates, or at the first ``compute``/``sync`` if sooner (e.g. a small data set).
        vocabulary: the kept values of each field (N sequences of at most V ids, most frequent first); skips the
            warm-up.
        field_names: names for error messages (default ``field 0``, ``field 1``, ...).
        field_dims: if given, field f's ids must lie in ``[0, field_dims[f])`` (the size of its embedding); an
            id outside is an error naming the field.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Layout: ``pair_counts[p, a, b, y]`` for the p-th pair of ``pairs()`` (i < j, row-major: (0, 1), (0, 2),
    ..., (N - 2, N - 1)); ``field_counts[f, a, y]``.

    Example:
        >>> metric = FieldPairCounts(num_fields=3, num_values=2, warmup_batches=1)
        >>> metric.update(torch.tensor([[0, 5, 1], [1, 5, 0], [0, 7, 1], [1, 7, 0]]), torch.tensor([0, 1, 0, 1]))
        >>> metric.vocabulary  # each field's kept values, most frequent first
        [[0, 1], [5, 7], [0, 1]]
        >>> metric.compute()["mutual_information"]  # bits; fields 0 and 2 each give the label, field 1 does not
        tensor([[1., 1., 1.],
                [1., 0., 1.],
                [1., 1., 1.]], dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        num_fields: int,
        num_values: int = 31,
        warmup_batches: int = 8,
        vocabulary: Sequence[Sequence[int]] | None = None,
        field_names: Sequence[str] | None = None,
        field_dims: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("num_fields", num_fields), ("num_values", num_values),
                            ("warmup_batches", warmup_batches)):
            check_positive_int(name, value)
        self.num_fields, self.num_values, self.warmup_batches = num_fields, num_values, warmup_batches
        self.num_buckets = num_values + 1
        self.field_names = [f"field {f}" for f in range(num_fields)] if field_names is None else list(field_names)
        if len(self.field_names) != num_fields:
            raise ValueError(f"field_names has {len(self.field_names)} names for num_fields={num_fields}")
        if field_dims is not None:
            if len(field_dims) != num_fields:
                raise ValueError(f"field_dims has {len(field_dims)} entries for num_fields={num_fields}")
            if any(int(d) < 1 for d in field_dims):
                raise ValueError(f"field_dims must be positive, got {list(field_dims)}")
        self.field_dims = None if field_dims is None else [int(d) for d in field_dims]
        pairs = torch.triu_indices(num_fields, num_fields, 1)
        self._first, self._second = pairs[0].clone(), pairs[1].clone()
        num_pairs = self._first.numel()
        cells = self.num_buckets * self.num_buckets * 2
        if num_pairs * cells >= 2**31:
            raise ValueError(
                f"{num_fields} fields at num_values={num_values} need {num_pairs * cells:,} cells, more than the "
                "2^31 a count code can address; lower num_values or analyse a subset of fields"
            )
        self.add_state("pair_counts", default=torch.zeros(num_pairs, self.num_buckets, self.num_buckets, 2,
                                                          dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("field_counts", default=torch.zeros(num_fields, self.num_buckets, 2, dtype=torch.int64),
                       dist_reduce_fx="sum")
        # Not states: the vocabulary is the same on every process and outlives reset(); the warm-up is local.
        self._held: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._waiting: list[tuple[torch.Tensor, torch.Tensor]] = []  # after the warm-up, not yet counted
        self._waiting_rows = 0
        # CPU batches after the warm-up wait here instead: (ids [rows, N] int64, labels [rows] float64), rows used.
        self._buffered: tuple[torch.Tensor, torch.Tensor] | None = None
        self._buffered_count = 0
        self._tables: VocabularyTables | None = None  # the bucket lookup, once the vocabulary is fixed
        self._lookup_np: tuple | None = None  # (the lookup it was made from, its numpy form), see _buckets_numpy
        self._parts: tuple[torch.Tensor, ...] | None = None  # see code_parts
        self.vocabulary: list[list[int]] | None = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    # ---- pairs ------------------------------------------------------------------------------------------------
    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(first, second)``: the field indices of every pair, i < j, in the order of ``pair_counts``."""
        return self._first, self._second

    def pair_index(self, i: int, j: int) -> int:
        """Position of the pair {i, j} (i != j, either order) in ``pair_counts``."""
        n = self.num_fields
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"pair ({i}, {j}) is not a pair of two distinct fields among {n}")
        i, j = min(i, j), max(i, j)
        return i * n - i * (i + 1) // 2 + (j - i - 1)

    # ---- vocabulary ---------------------------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        return self._tables is not None

    def set_vocabulary(self, vocabulary: Sequence[Sequence[int]]) -> None:
        """Fix each field's kept values (most frequent first; bucket k = ``vocabulary[f][k]``)."""
        if len(vocabulary) != self.num_fields:
            raise ValueError(f"vocabulary has {len(vocabulary)} fields, the metric {self.num_fields}")
        kept = []
        for f, values in enumerate(vocabulary):
            values = [int(v) for v in values]
            if len(values) > self.num_values:
                raise ValueError(f"vocabulary of {self.field_names[f]} has {len(values)} values; at most "
                                 f"num_values={self.num_values}")
            if len(set(values)) != len(values) or any(v < 0 or v >= PAD for v in values):
                raise ValueError(f"vocabulary of {self.field_names[f]} must hold distinct non-negative ids")
            kept.append(values)
        self.vocabulary = kept
        self._tables = vocabulary_tables(kept, self.num_values, self.device)

    def freeze_vocabulary(self) -> None:
        """Choose the frequent values from the held warm-up batches (summed over processes) and count them.

        Called by :meth:`update` after ``warmup_batches`` updates and by ``sync``/``compute``; a collective under
        DDP, so every process must reach it at the same point (both of those are).
        """
        if self.frozen:
            return
        held, self._held = self._held, []
        n, dev = self.num_fields, self.device
        feats = torch.cat([x for x, _ in held]) if held else torch.zeros(0, n, dtype=torch.int64, device=dev)
        # Local frequencies as rows (field, value, count): only the values this process saw.
        every = self._gather(value_frequencies(feats))
        self.set_vocabulary(choose_vocabulary(every, n, self.num_values))
        for x, y in held:
            self._count(x, y)

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return local
        return torch.cat(gather_all_tensors(local.contiguous(), group=self.process_group))

    # ---- accumulation -------------------------------------------------------------------------------------------
    def update(self, features: torch.Tensor, label: torch.Tensor) -> None:
        """Count one batch.

        Args:
            features: ``[B, N]`` integer value ids, column f = field f (ids need not be contiguous, only
                non-negative).
            label: ``[B]`` (or ``[B, 1]``) 0/1 labels, any dtype.

        Raises:
            ValueError: on a batch whose field count differs from ``num_fields``, non-integer or negative ids, ids
                beyond ``field_dims``, or labels outside {0, 1}; the message names the field.

        Shapes and dtypes are checked at once. Values (labels, id ranges) are checked at once during the
        warm-up; after it, when the batch is counted together with the next few (see :meth:`flush`), which every
        read of the counts does first.
        """
        if not self.frozen:
            features, label = self._validate(features, label)
            # Held as given (same device); the bucketing needs the warm-up's frequencies first.
            self._held.append((features.clone(), label.clone()))
            if len(self._held) >= self.warmup_batches:
                self.freeze_vocabulary()
            return
        features, label = check_feature_shapes(features, label, self.field_names)
        if features.shape[0] == 0:
            return
        if features.is_cuda:
            self._waiting.append((features.clone(), label.clone()))
        else:
            self._buffer_rows(features, label)
        self._waiting_rows += features.shape[0]
        enough = self._waiting_rows * max(1, self._first.numel()) >= _FLUSH_CODES
        if enough and (self._waiting_rows >= _FLUSH_MIN_ROWS_CPU or self.field_counts.is_cuda):
            self.flush()

    def _buffer_rows(self, features: torch.Tensor, label: torch.Tensor) -> None:
        """Copy a CPU batch into the rows waiting to be counted: one copy per batch, where a clone per batch and
        a concatenation at the flush made two (ids as int64 and labels as float64 keep every value the checks
        at the flush look at)."""
        rows = features.shape[0]
        held = self._buffered
        if held is None or held[0].shape[0] < self._buffered_count + rows:
            pairs = max(1, self._first.numel())
            capacity = max(self._buffered_count + rows, _FLUSH_MIN_ROWS_CPU, -(-_FLUSH_CODES // pairs)) + rows
            grown = (torch.empty(capacity, self.num_fields, dtype=torch.int64),
                     torch.empty(capacity, dtype=torch.float64))
            if held is not None and self._buffered_count:
                grown[0][: self._buffered_count] = held[0][: self._buffered_count]
                grown[1][: self._buffered_count] = held[1][: self._buffered_count]
            self._buffered = held = grown
        held[0][self._buffered_count : self._buffered_count + rows] = features
        held[1][self._buffered_count : self._buffered_count + rows] = label
        self._buffered_count += rows

    def flush(self) -> None:
        """Check and count the batches waiting (every read of the counts, ``sync`` and ``reset`` do it first)."""
        if self._buffered_count:
            rows, self._buffered_count = self._buffered_count, 0
            self._waiting_rows = sum(f.shape[0] for f, _ in self._waiting)
            self._count(*self._validate(self._buffered[0][:rows], self._buffered[1][:rows]))
        if not self._waiting:
            return
        waiting, self._waiting, self._waiting_rows = self._waiting, [], 0
        features = waiting[0][0] if len(waiting) == 1 else torch.cat([f for f, _ in waiting])
        label = waiting[0][1] if len(waiting) == 1 else torch.cat([y for _, y in waiting])
        self._count(*self._validate(features, label))

    def _validate(self, features, label) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes, dtypes and values; returns int64 features and labels."""
        features, label = check_feature_shapes(features, label, self.field_names)
        return check_feature_values(features, label, self.field_names, self.field_dims)

    def buckets(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` bucket of every value (0..V-1 kept values by frequency, V = "other"); needs the vocabulary."""
        if not self.frozen:
            raise RuntimeError("no vocabulary yet: update() warmup_batches times, call freeze_vocabulary() or pass "
                               "vocabulary=")
        if self._tables.lookup is not None and not features.is_cuda:
            # numpy's gather and select: about twice as fast as torch's integer kernels on CPU here.
            return torch.from_numpy(self._buckets_numpy(features).T.astype(np.int64))
        return lookup_buckets_torch(features, self._tables, self.num_values)

    def _count(self, features: torch.Tensor, label: torch.Tensor) -> None:
        if features.shape[0] == 0:
            return
        device = self.field_counts.device
        if device.type == "cpu":
            self._count_numpy(features.cpu(), label.cpu())
            return
        buckets = self.buckets(features).T.to(device=device, dtype=torch.int32)  # [N, B]
        if self._parts is None or self._parts[0].device != device:  # made once per device
            self._parts = code_parts(self.num_fields, self.num_buckets, device)
        count_buckets_torch(buckets, label.to(device=device, dtype=torch.int32), self.field_counts, self.pair_counts,
                            self._parts)

    def _count_numpy(self, features: torch.Tensor, label: torch.Tensor) -> None:
        """:meth:`_count` on CPU: one ``bincount`` per field over all its pairs (see
        :func:`~lightning_recanalysis.metrics.field_pair_cpu.count_buckets`)."""
        count_buckets(self._buckets_numpy(features), label.numpy(), self.field_counts, self.pair_counts,
                      _COUNT_BLOCK_ROWS)

    def _buckets_numpy(self, features: torch.Tensor) -> np.ndarray:
        """:meth:`buckets` on CPU as an ``[N, B]`` int32 array: one gather in the dense table for all fields
        (the binary search, for ids too large for a table, is :meth:`buckets`' own)."""
        lookup = self._tables.lookup
        if lookup is None:
            return np.ascontiguousarray(self.buckets(features).numpy().T.astype(np.int32))
        if self._lookup_np is None or self._lookup_np[0] is not lookup:
            self._lookup_np = (lookup, padded_lookup(*(t.cpu().numpy() for t in lookup), self.num_values))
        return lookup_buckets(features.numpy(), self._lookup_np[1])

    # ---- torchmetrics plumbing ---------------------------------------------------------------------------------
    def sync(self, *args, **kwargs) -> None:
        # Held warm-up batches and waiting batches must be counted before the states are summed, or they would
        # be missing (torchmetrics restores a copy of the states taken before the sync when it unsyncs).
        self.freeze_vocabulary()
        self.flush()
        super().sync(*args, **kwargs)

    def forward(self, *args, **kwargs) -> None:
        """Same as :meth:`update` (there is no per-batch value to return)."""
        self.update(*args, **kwargs)

    def reset(self) -> None:
        """Zero the counts (and drop held warm-up batches); the vocabulary is kept."""
        super().reset()
        self._held = []
        self._waiting, self._waiting_rows, self._buffered_count = [], 0, 0

    # ---- reading ------------------------------------------------------------------------------------------------
    @property
    def samples(self) -> int:
        """Samples counted so far (held warm-up batches not yet included)."""
        self.flush()
        return int(self.field_counts[0].sum()) if self.num_fields else 0

    def pair_tables(self) -> torch.Tensor:
        """``[P, V + 1, V + 1, 2]`` counts of (bucket of field i, bucket of field j, label), pairs as :meth:`pairs`."""
        self.flush()
        return self.pair_counts

    def field_tables(self) -> torch.Tensor:
        """``[N, V + 1, 2]`` counts of (bucket, label) per field."""
        self.flush()
        return self.field_counts

    def other_fraction(self) -> torch.Tensor:
        """``[N]`` float64 share of the counted samples whose value fell in the "other" bucket, per field."""
        self.flush()
        per_field = self.field_counts.sum(-1).to(torch.float64)
        total = per_field.sum(-1).clamp_min(1)
        return (per_field[:, self.num_values] / total).cpu()

    def compute(self, *, base: float = 2.0, bias_correction: str = "none") -> dict[str, torch.Tensor]:
        """The ``[N, N]`` MI matrices of the counts so far (bits by default), see
        :func:`~lightning_recanalysis.functional.field_pair_matrices`; plus ``samples``."""
        self.flush()
        out = field_pair_matrices(self.pair_counts, self.field_counts, self._first, self._second, base=base,
                                  bias_correction=bias_correction)
        out["samples"] = torch.tensor(self.samples)
        return out
