"""The epoch statistics of :class:`~lightning_recanalysis.callbacks.conflict.GradientConflictMonitor`, from the
sums behind them (summed over ranks with one all-reduce, so every rank holds the same numbers).

The sums, per view (``:<view index>`` in the key), each ``[fields + 1, T, T]`` (fields, then the whole view) from
:func:`~lightning_recanalysis.functional.conflict.cosine_sums`: ``cos_sum``/``cos_n``/``neg_n`` sum the defined
cosines, count them and count the negative ones; ``norm_sum``/``norm_n`` sum the present tasks' gradient norms and
count them. Beside them ``measured`` and ``skipped`` count the probes.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..parallel.distributed import data_parallel_group, sum_over_ranks
from ..records import ConflictView, PairStatistics
from .field_sets import AnalysisUnit

__all__ = ["pooled_sums", "conflict_views"]


def pooled_sums(trainer: Any, device: torch.device, acc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The epoch's sums, added over ranks with one all-reduce (every rank calls it, in the same order)."""
    if trainer.world_size <= 1:
        return acc
    keys = list(acc)
    flat = torch.cat([acc[k].reshape(-1) for k in keys]).to(device)
    # Over the ranks whose batches differ: tensor-parallel ranks that train on the same rows count them once.
    flat = sum_over_ranks(flat, data_parallel_group(trainer)).cpu()
    pooled, offset = {}, 0
    for k in keys:
        size = acc[k].numel()
        pooled[k] = flat[offset : offset + size].reshape(acc[k].shape)
        offset += size
    return pooled


def conflict_views(acc: dict[str, torch.Tensor], views: Sequence[AnalysisUnit],
                   tasks: Sequence[str]) -> dict[str, ConflictView]:
    """Every statistic of the epoch, by view, field and task pair: ``cosine_mean`` = cos_sum / cos_n,
    ``negative_fraction`` = neg_n / cos_n, ``norm_ratio`` = mean ||g_a|| / mean ||g_b||, and per task
    ``gradient_norm``, and the ``probes`` behind the cosine with its sample standard deviation ``cosine_std``; a
    statistic without a defined value is left None (a pair with none is left out)."""
    pairs = [(a, b) for a in range(len(tasks)) for b in range(a + 1, len(tasks))]
    out: dict[str, ConflictView] = {}
    for vi, view in enumerate(views):
        cos_sum, cos_n, neg_n = acc[f"cos_sum:{vi}"], acc[f"cos_n:{vi}"], acc[f"neg_n:{vi}"]
        cos_sq = acc[f"cos_sq_sum:{vi}"]
        norm_n = acc[f"norm_n:{vi}"]
        norm_mean = acc[f"norm_sum:{vi}"] / norm_n.clamp_min(1)
        whole = len(view.fields)
        typed = out[view.name] = ConflictView(gradient_norm={
            task: float(norm_mean[whole, t]) for t, task in enumerate(tasks) if norm_n[whole, t] > 0})
        rows = [(whole, typed.pairs)]
        if len(view.fields) > 1:
            rows += [(f, typed.fields.setdefault(fld.name, {})) for f, fld in enumerate(view.fields)]
        for row, where in rows:
            for a, b in pairs:
                stats = PairStatistics()
                n = float(cos_n[row, a, b])
                if n > 0:
                    stats.cosine_mean = float(cos_sum[row, a, b] / n)
                    stats.negative_fraction = float(neg_n[row, a, b] / n)
                    stats.probes = int(n)
                    if n > 1:  # the sample variance from the sums: (sum c^2 - n mean^2) / (n - 1)
                        variance = (float(cos_sq[row, a, b]) - n * stats.cosine_mean ** 2) / (n - 1)
                        stats.cosine_std = max(0.0, variance) ** 0.5
                if norm_n[row, a] > 0 and norm_n[row, b] > 0 and norm_mean[row, b] > 0:
                    stats.norm_ratio = float(norm_mean[row, a] / norm_mean[row, b])
                if stats.to_dict():
                    where[(tasks[a], tasks[b])] = stats
    return out
