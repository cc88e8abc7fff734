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
from .field_sets import AnalysisUnit

__all__ = ["pooled_sums", "conflict_metrics", "whole_view_mean_cosine"]


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


def conflict_metrics(acc: dict[str, torch.Tensor], views: Sequence[AnalysisUnit],
                     tasks: Sequence[str]) -> dict[str, float]:
    """Every scalar of the epoch by TensorBoard tag: per view (and per field of a view with several) and task
    pair ``cosine_mean`` = cos_sum / cos_n, ``negative_fraction`` = neg_n / cos_n, ``norm_ratio`` = mean ||g_a||
    / mean ||g_b||, and per task ``gradient_norm``; a statistic without a defined value is left out."""
    pairs = [(a, b) for a in range(len(tasks)) for b in range(a + 1, len(tasks))]
    metrics = {"conflict/measured_steps": float(acc["measured"]), "conflict/skipped_steps": float(acc["skipped"])}
    for vi, view in enumerate(views):
        cos_sum, cos_n, neg_n = acc[f"cos_sum:{vi}"], acc[f"cos_n:{vi}"], acc[f"neg_n:{vi}"]
        norm_mean = acc[f"norm_sum:{vi}"] / acc[f"norm_n:{vi}"].clamp_min(1)
        whole = len(view.fields)
        for t, task in enumerate(tasks):
            if acc[f"norm_n:{vi}"][whole, t] > 0:
                metrics[f"conflict/{view.name}/{task}/gradient_norm"] = float(norm_mean[whole, t])
        rows = [(whole, f"conflict/{view.name}")]
        if len(view.fields) > 1:
            rows += [(f, f"conflict/{view.name}/{fld.name}") for f, fld in enumerate(view.fields)]
        for row, prefix in rows:
            for a, b in pairs:
                tag = f"{prefix}/{tasks[a]}_vs_{tasks[b]}"
                if cos_n[row, a, b] > 0:
                    metrics[f"{tag}/cosine_mean"] = float(cos_sum[row, a, b] / cos_n[row, a, b])
                    metrics[f"{tag}/negative_fraction"] = float(neg_n[row, a, b] / cos_n[row, a, b])
                counted = acc[f"norm_n:{vi}"][row, a] > 0 and acc[f"norm_n:{vi}"][row, b] > 0
                if counted and norm_mean[row, b] > 0:
                    metrics[f"{tag}/norm_ratio"] = float(norm_mean[row, a] / norm_mean[row, b])
    return metrics


def whole_view_mean_cosine(acc: dict[str, torch.Tensor], view_index: int, whole: int) -> torch.Tensor:
    """The task x task mean cosine on the whole view ``[T, T]`` (NaN where no cosine was defined): the heatmap."""
    counts = acc[f"cos_n:{view_index}"][whole]
    return torch.where(counts > 0, acc[f"cos_sum:{view_index}"][whole] / counts.clamp_min(1),
                       torch.full_like(counts, float("nan")))
