"""A panel of planted healthy and sick models, to measure the findings' false alarms and misses (issue 24).

Each :class:`Case` builds a tiny model and its data for a seed, trains it on the CPU with the monitor it is about
and an :class:`~lightning_recanalysis.AnalysisReport`, and reads the report's *alarms*: the findings whose verdict
is ``"problem"`` (:func:`alarms`, the one place that reads findings). A healthy case must raise none; a sick case
must raise the alarm it plants (a kind on a subject), and none on the subjects it keeps healthy.

Every case also measures its own **premise** after training, by hand and not through the library: information
abundance by a float64 numpy SVD of the row-normalised weight rows (METHODS.md section 1), per-task gradient
cosines from ``torch.autograd.grad`` on the embedding table, mutual information from counts. A case whose premise
does not hold says nothing about the findings (:class:`Premise`).

The cases (``CASES``; the numbers are the issue's):

healthy, expect no alarm
    1a ``barely_trained_dcn``: a DCN with a cross layer after 3 optimiser steps (EmbeddingSpectrumMonitor).
    1b ``barely_trained_two_task``: a two-task model after 3 steps, every step probed (GradientConflictMonitor).
    2 ``same_label``: two tasks with the same label, a linear head each (GradientConflictMonitor).
    3 ``disjoint_fields``: task a reads only the user field, task b only the item field (GradientConflictMonitor).
    4 ``opposite_labels_towers``: b's label is 1 - a's, an MLP tower per task absorbs the flip.
    5 ``full_rank_dcn``: a trained DCN (K = 16) whose fields keep IA near min(cardinality, K)
      (EmbeddingSpectrumMonitor).
sick, expect the named alarm
    6 ``frozen_low_rank_field``: one of four per-field tables frozen at rank 2 of K = 16 -> "collapse" on it.
    7 ``opposite_labels_shared``: b's label is 1 - a's through one shared logit -> "conflict" on the fields.
    8 ``collapsed_partner_dcn``: a DCN whose field ``c`` is held at rank 2, partner of the others through the
      cross layer -> "collapse" on ``embedding/c`` or "interaction_collapse" on ``embedding``.
    9 ``no_position_sequence``: sequences whose own-category signal decays with position, a model without any
      position information (its learned map is flat in position) -> "missed_correlation" on each target.

    >>> from benchmarks.findings_panel import CASES, run_case
    >>> run = run_case(CASES["disjoint_fields"], seed=0)   # doctest: +SKIP
    >>> run.premise.ok, run.false_alarms                   # doctest: +SKIP
    (True, [])
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["CASES", "SEEDS", "Case", "CaseRun", "Expect", "Premise", "alarms", "findings_of", "gradient_cosines",
           "numpy_information_abundance", "run_case", "run_panel"]

#: The seeds every case runs over.
SEEDS = (0, 1, 2)


# ---- reading the findings ------------------------------------------------------------------------------------

@dataclass
class _Sentence:
    """A finding of the code before :class:`~lightning_recanalysis.findings.Finding` existed (same fields)."""

    analysis: str
    kind: str
    verdict: str
    subject: str
    text: str
    advice: str = ""
    severity: float = 0.0


def _finding_class():
    try:
        from lightning_recanalysis.findings import Finding
    except ImportError:  # the code before the findings rewrite
        return _Sentence
    return Finding


def findings_of(report) -> list:
    """Every finding of a finished run's :class:`~lightning_recanalysis.AnalysisReport`, as
    :class:`~lightning_recanalysis.findings.Finding` objects.

    ``report.findings`` where the report has it; else ``summary.json``'s ``"findings"`` (dicts with a verdict);
    else, for the code before the findings rewrite (plain sentences ``{"analysis", "text"}``), each sentence is
    read as a problem, its kind and subject parsed from the text (:func:`_legacy_findings`).
    """
    return read_findings(report)[0]


def read_findings(report) -> tuple[list, str]:
    """:func:`findings_of` and where they came from: ``"report.findings"``, ``"summary.json"`` or ``"legacy
    sentences"``."""
    Finding = _finding_class()
    if getattr(report, "findings", None) is not None:
        return list(report.findings), "report.findings"
    summary = json.loads(Path(report.paths["summary"]).read_text())
    entries = summary.get("findings", [])
    if entries and all(isinstance(e, dict) and "verdict" in e for e in entries):
        return [Finding(**{k: e[k] for k in ("analysis", "kind", "verdict", "subject", "text", "advice", "severity")
                           if k in e}) for e in entries], "summary.json"
    return _legacy_findings(entries), "legacy sentences"


def alarms(report) -> list:
    """The alarms of a finished run: its findings whose verdict is ``"problem"``."""
    return [f for f in findings_of(report) if f.verdict == "problem"]


def _legacy_findings(entries: Sequence[dict]) -> list:
    """Sentences of the code before the findings rewrite, read as problems, one per subject they name."""
    Finding = _finding_class()

    found = []
    for entry in entries:
        analysis, text = entry["analysis"], entry["text"]
        views = re.findall(r"`([^`]+)`", text)
        bold = re.findall(r"\*\*([^*]+)\*\*", text)
        if analysis == "collapse" and text.startswith("Interaction collapse"):
            found.append(Finding(analysis, "interaction_collapse", "problem", views[0] if views else "", text))
        elif analysis == "collapse":
            for name in bold:
                found.append(Finding(analysis, "collapse", "problem", f"{views[0]}/{name}", text))
        elif analysis == "conflict" and len(bold) >= 3:
            found.append(Finding(analysis, "conflict", "problem", f"{views[0]}/{bold[2]}/{bold[0]}_vs_{bold[1]}",
                                 text))
        elif analysis == "correlation" and bold:
            kind = "missed_correlation" if "**disagrees**" in text else "correlation"
            found.append(Finding(analysis, kind, "problem", f"target_{bold[0]}", text))
        else:
            found.append(Finding(analysis, analysis, "problem", "", text))
    return found


# ---- measuring premises by hand --------------------------------------------------------------------------------

def numpy_information_abundance(rows) -> tuple[float, int]:
    """IA = sum(s) / s_1 and the rank (s_k / s_1 > 1e-6) of the row-normalised rows (row / (norm + 1e-8)),
    by a float64 numpy SVD (METHODS.md section 1).

    >>> ia, rank = numpy_information_abundance(np.eye(3))
    >>> round(ia, 6), rank
    (3.0, 3)
    """
    e = np.asarray(rows.detach().cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.float64)
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-8)
    s = np.linalg.svd(e, compute_uv=False)
    return float(s.sum() / s[0]), int((s / s[0] > 1e-6).sum())


def numpy_interaction_matrix(table, field_dims: Sequence[int], kernel) -> np.ndarray:
    """IA of field i's sub-embedding as seen by field j, P_ij = E_i W[jK:(j+1)K, iK:(i+1)K]^T (rows i, columns j),
    for a cross kernel W over the fields' concatenated embeddings, by numpy."""
    e = np.asarray(table.detach().cpu(), dtype=np.float64)
    w = np.asarray(kernel.detach().cpu(), dtype=np.float64)
    k = e.shape[1]
    starts = np.cumsum([0, *field_dims])
    n = len(field_dims)
    out = np.zeros((n, n))
    for i in range(n):
        e_i = e[starts[i]:starts[i + 1]]
        for j in range(n):
            out[i, j] = numpy_information_abundance(e_i @ w[j * k:(j + 1) * k, i * k:(i + 1) * k].T)[0]
    return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return None
    return float((a * b).sum()) / (na * nb)


def gradient_cosines(module: PanelTwoTask, batches: Sequence[dict]) -> dict[str, Any]:
    """Per batch, each task's gradient of its loss w.r.t. the shared table (``torch.autograd.grad``: the rows
    the batch looked up, summed per id) in float64, and the cosine between the two tasks on the whole table and on
    each field's rows (None where a gradient is zero: undefined). Returns the per-batch lists and their means over
    the defined ones, with ``overlap``: the number of rows both tasks' gradients touch."""
    weight = module.embedding.weight
    names = list(module.field_names)
    starts = np.cumsum([0, *module.cards])
    per: dict[str, list] = {"whole": [], **{n: [] for n in names}}
    overlap = []
    with torch.enable_grad():
        for batch in batches:
            losses = module.losses(batch)
            grads = [torch.autograd.grad(losses[t], weight, retain_graph=True)[0].double() for t in module.task_names]
            per["whole"].append(_cosine(*grads))
            for n, lo, hi in zip(names, starts[:-1], starts[1:]):
                per[n].append(_cosine(grads[0][lo:hi], grads[1][lo:hi]))
            touched = [g.abs().sum(1) > 0 for g in grads]
            overlap.append(int((touched[0] & touched[1]).sum()))
    means = {k: (float(np.mean([c for c in v if c is not None])) if any(c is not None for c in v) else None)
             for k, v in per.items()}
    return {"per_batch": per, "mean": means, "overlap": overlap}


@dataclass
class Premise:
    """What a case measured after training (``numbers``) and the checks its premise is made of."""

    numbers: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, description: str, ok) -> None:
        self.checks.append((description, bool(ok)))

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks)

    @property
    def failed(self) -> list[str]:
        return [d for d, ok in self.checks if not ok]


# ---- data ------------------------------------------------------------------------------------------------------

class _Batches(Dataset):
    """Fixed batches, one per index (``DataLoader(..., batch_size=None)`` yields them as they are): no per-row
    collation, which would cost more than these models' training steps."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def _loader(tensors: dict[str, torch.Tensor], batch_size: int) -> DataLoader:
    return DataLoader(_Batches(_batches(tensors, batch_size)), batch_size=None, shuffle=False)


def _batches(tensors: dict[str, torch.Tensor], batch_size: int) -> list[dict]:
    n = len(next(iter(tensors.values())))
    return [{k: v[i:i + batch_size] for k, v in tensors.items()} for i in range(0, n, batch_size)]


def ctr_data(field_dims: Sequence[int], n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Uniform categorical fields; label ~ Bernoulli(sigmoid(sum of per-value effects + a pair effect of fields
    0 and 1)), so that every field and the cross layer have something to learn."""
    features = torch.stack([torch.randint(0, d, (n,), generator=g) for d in field_dims], 1)
    logit = sum(torch.randn(d, generator=g)[features[:, i]] for i, d in enumerate(field_dims))
    pair = torch.randn(field_dims[0], field_dims[1], generator=g)
    logit = logit + 1.5 * pair[features[:, 0], features[:, 1]]
    label = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return {"features": features, "label": label}


def two_task_data(users: int, items: int, n: int, g: torch.Generator, mode: str) -> dict[str, torch.Tensor]:
    """A user and an item field; task a's label ~ Bernoulli(sigmoid(user effect + item effect)); task b's label:
    ``same`` (a's), ``opposite`` (1 - a's), ``disjoint`` (a from the user alone, b from the item alone) or
    ``independent`` (a from the user's parity, b from the item's)."""
    user = torch.randint(0, users, (n,), generator=g)
    item = torch.randint(0, items, (n,), generator=g)
    u, i = 2 * torch.randn(users, generator=g), 2 * torch.randn(items, generator=g)
    draw = lambda logit: (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    if mode == "independent":
        a, b = (user % 2).float(), (item % 2).float()
    elif mode == "disjoint":
        a, b = draw(u[user]), draw(i[item])
    else:
        a = draw(u[user] + i[item])
        b = a.clone() if mode == "same" else 1 - a
    return {"features": torch.stack([user, item], 1), "a": a, "b": b}


def sequence_data(num_categories: int, length: int, n: int, g: torch.Generator, *, own_share: float = 0.25,
                  strength: float = 2.0, target_share: float = 0.35) -> dict[str, torch.Tensor]:
    """Behaviour sequences (most recent in the last column, no padding) whose label depends on how recently the
    user saw the target's own category: logit = -1.5 + strength * sum_p [c_p == c_t] (L + 1 - p) / L, p = 1 the
    most recent, so the effect falls linearly to 1/L at the oldest position. Targets 0 and 1 each with probability
    ``target_share`` (the rest uniform over the other categories); each behaviour is the target's category with
    probability ``own_share``, else uniform over all."""
    pick = torch.rand(n, generator=g)
    target = torch.where(pick < target_share, 0, torch.where(pick < 2 * target_share, 1,
                                                              torch.randint(2, num_categories, (n,), generator=g)))
    own = torch.rand(n, length, generator=g) < own_share
    behavior = torch.where(own, target[:, None], torch.randint(0, num_categories, (n, length), generator=g))
    positions = torch.arange(length, 0, -1, dtype=torch.float32)  # column j holds position l - j
    weight = (length + 1 - positions) / length
    logit = -1.5 + strength * ((behavior == target[:, None]).float() * weight).sum(1)
    label = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return {"target_category": target, "behavior_category": behavior, "label": label,
            "mask": torch.ones(n, length, dtype=torch.bool)}


def counted_same_category_mi(data: dict[str, torch.Tensor], target: int, category: int | None = None) -> np.ndarray:
    """MI (bits) by position p = 1..L of X = [behaviour at p has category ``category``] (default: the target's
    own) and the label, over the samples whose target is ``target``, from the 2 x 2 tables of counts (empty cells
    contribute 0)."""
    category = target if category is None else category
    keep = data["target_category"] == target
    beh = data["behavior_category"][keep].numpy()[:, ::-1]  # column 0 = position 1
    y = data["label"][keep].numpy().astype(int)
    out = []
    for p in range(beh.shape[1]):
        x = (beh[:, p] == category).astype(int)
        table = np.array([[np.sum((x == a) & (y == b)) for b in (0, 1)] for a in (0, 1)], dtype=float)
        pxy = table / table.sum()
        px, py = pxy.sum(1, keepdims=True), pxy.sum(0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(pxy > 0, pxy * np.log2(pxy / (px * py)), 0.0)
        out.append(float(terms.sum()))
    return np.array(out)


def _spearman(a, b) -> float:
    """Spearman's rho of two sequences without ties (Pearson r of their ranks)."""
    ranks = [np.argsort(np.argsort(np.ravel(x), kind="stable")).astype(float) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


# ---- models ----------------------------------------------------------------------------------------------------

class _Module(pl.LightningModule):
    lr = 0.01

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)

    def training_step(self, batch, batch_idx):
        return nn.functional.binary_cross_entropy_with_logits(self(batch), batch["label"])


def _low_rank(rows: int, width: int, rank: int) -> torch.Tensor:
    """A rows x width matrix of rank ``rank`` (random factors, from the global generator)."""
    return torch.randn(rows, rank) @ torch.randn(rank, width) / rank ** 0.5


class PanelDCN(_Module):
    """DCNv2 with one cross layer: logit = w^T (x0 + x0 * (W x0 + b)), x0 the fields' embeddings from one
    concatenated table ``embedding`` and ``cross`` a square ``nn.Linear``. ``held_field``: that field's rows are
    set to a rank-``held_rank`` matrix and a gradient hook zeroes their gradient, so they never move (Adam
    without weight decay makes no update from a zero gradient)."""

    def __init__(self, field_dims: Sequence[int], embed_dim: int, lr: float = 0.01, held_field: int | None = None,
                 held_rank: int = 2) -> None:
        super().__init__()
        self.field_dims, self.lr = list(field_dims), lr
        self.embedding = nn.Embedding(sum(self.field_dims), embed_dim)  # N(0, 1), as nn.Embedding initialises
        self.register_buffer("offsets", torch.cumsum(torch.tensor([0, *self.field_dims[:-1]]), 0))
        side = len(self.field_dims) * embed_dim
        self.cross = nn.Linear(side, side)
        self.head = nn.Linear(side, 1)
        if held_field is not None:
            lo = sum(self.field_dims[:held_field])
            hi = lo + self.field_dims[held_field]
            with torch.no_grad():
                self.embedding.weight[lo:hi] = _low_rank(hi - lo, embed_dim, held_rank)
            mask = torch.ones(sum(self.field_dims), 1)
            mask[lo:hi] = 0
            self.register_buffer("trainable_rows", mask)
            self.embedding.weight.register_hook(lambda grad: grad * self.trainable_rows)

    def forward(self, batch):
        x0 = self.embedding(batch["features"] + self.offsets).flatten(1)
        return self.head(x0 + x0 * self.cross(x0)).squeeze(1)


class PanelPerField(_Module):
    """One ``nn.Embedding`` per field in ``tables`` (an ``nn.ModuleDict``) and an MLP on their concatenation;
    the table ``frozen`` is a fixed rank-``frozen_rank`` matrix with ``requires_grad`` off."""

    def __init__(self, field_dims: dict[str, int], embed_dim: int, frozen: str | None = None, frozen_rank: int = 2,
                 lr: float = 0.01) -> None:
        super().__init__()
        self.lr, self.names = lr, list(field_dims)
        self.tables = nn.ModuleDict({n: nn.Embedding(d, embed_dim) for n, d in field_dims.items()})  # N(0, 1)
        if frozen is not None:
            with torch.no_grad():
                self.tables[frozen].weight.copy_(_low_rank(field_dims[frozen], embed_dim, frozen_rank))
            self.tables[frozen].weight.requires_grad_(False)
        self.mlp = nn.Sequential(nn.Linear(len(field_dims) * embed_dim, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, batch):
        x = torch.cat([self.tables[n](batch["features"][:, i]) for i, n in enumerate(self.names)], 1)
        return self.mlp(x).squeeze(1)


class PanelTwoTask(pl.LightningModule):
    """Two tasks a and b on one shared table ``embedding`` of a user and an item field (multi-task protocol:
    ``task_names``, ``task_losses``).

    ``towers``: ``"linear"`` (a linear head per task), ``"mlp"`` (an MLP tower per task: Linear-ReLU-Linear),
    ``"shared"`` (one linear head: both tasks read the same logit). ``reads``: the fields each task's tower reads
    (``{"a": (0,), "b": (1,)}`` for disjoint fields; default both)."""

    task_names = ("a", "b")
    field_names = ("user", "item")

    def __init__(self, users: int, items: int, embed_dim: int = 8, towers: str = "linear",
                 reads: dict[str, tuple[int, ...]] | None = None, lr: float = 0.01) -> None:
        super().__init__()
        self.task_losses: dict[str, torch.Tensor] = {}
        self.cards, self.lr, self.towers_kind = (users, items), lr, towers
        self.embedding = nn.Embedding(users + items, embed_dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.register_buffer("offsets", torch.tensor([0, users]))
        self.reads = reads or {"a": (0, 1), "b": (0, 1)}

        def tower(fields: int) -> nn.Module:
            width = fields * embed_dim
            if towers == "mlp":
                return nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, 1))
            return nn.Linear(width, 1)

        if towers == "shared":
            self.shared = tower(2)
        else:
            self.heads = nn.ModuleDict({t: tower(len(self.reads[t])) for t in self.task_names})

    def forward(self, batch) -> dict[str, torch.Tensor]:
        e = self.embedding(batch["features"] + self.offsets)  # [B, 2, K]
        if self.towers_kind == "shared":
            logit = self.shared(e.flatten(1)).squeeze(1)
            return {t: logit for t in self.task_names}
        return {t: self.heads[t](e[:, list(self.reads[t])].flatten(1)).squeeze(1) for t in self.task_names}

    def losses(self, batch) -> dict[str, torch.Tensor]:
        logits = self(batch)
        return {t: nn.functional.binary_cross_entropy_with_logits(logits[t], batch[t]) for t in self.task_names}

    def training_step(self, batch, batch_idx):
        self.task_losses = self.losses(batch)
        return sum(self.task_losses.values())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class PanelDIN(_Module):
    """A sequence model with no position information: logit = b + w * mean_l <E[c_l], E[c_t]> over the
    behaviours (symmetric in the positions, so it cannot weigh recent behaviours more)."""

    def __init__(self, num_categories: int, embed_dim: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.category = nn.Embedding(num_categories, embed_dim)
        nn.init.normal_(self.category.weight, std=0.3)
        self.scale = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        e = self.category(batch["behavior_category"])
        v = self.category(batch["target_category"])
        mask = batch["mask"].float()
        score = ((e * v[:, None]).sum(-1) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.bias + self.scale * score


# ---- cases -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expect:
    """One alarm a sick case must raise: any of ``alternatives`` ((kind, subject) pairs) satisfies it."""

    label: str
    alternatives: tuple[tuple[str, str], ...]

    def met_by(self, alarm) -> bool:
        return (alarm.kind, alarm.subject) in self.alternatives


@dataclass
class Setup:
    """What a case builds for one seed: the module, its training data and loader, the monitors, and what its
    premise reads (``context``)."""

    module: pl.LightningModule
    train: DataLoader
    monitors: list
    max_epochs: int
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """A planted model. ``kinds``: the alarm kinds it is about (a healthy case counts every alarm as false).
    ``expect``: the alarms a sick case must raise; ``healthy_subjects``: subjects a sick case keeps healthy (an
    alarm of one of ``kinds`` on one of them is false)."""

    key: str
    number: str
    title: str
    healthy: bool
    kinds: tuple[str, ...]
    build: Callable[[int], Setup]
    premise: Callable[[Setup], Premise]
    expect: tuple[Expect, ...] = ()
    healthy_subjects: tuple[str, ...] = ()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(10_000 + seed)


def _spectrum_monitor(**kwargs):
    from lightning_recanalysis import EmbeddingSpectrumMonitor

    return EmbeddingSpectrumMonitor(histograms=False, images=False, **kwargs)


def _conflict_monitor():
    from lightning_recanalysis import GradientConflictMonitor

    return GradientConflictMonitor(every_n_steps=1, field_dims={"user": USERS, "item": ITEMS})


# 1a / 5 / 8: DCN with a cross layer ---------------------------------------------------------------------------
DCN_DIMS = (6, 12, 40, 120)  # 1a: small fields among larger ones
FULL_DIMS = (3, 128, 256, 512)  # 5, with K = FULL_K: a 3-row field and tall ones, all well spread at init
FULL_K = 16
HELD_DIMS = (64, 64, 64, 64)  # 8
DCN_K = 8


def _build_dcn(seed: int, *, steps: int | None, epochs: int, held: int | None = None, dims=DCN_DIMS,
               width: int = DCN_K, names: Sequence[str] | None = None, lr: float = 0.01) -> Setup:
    data = ctr_data(dims, (steps or 16) * 64, _generator(seed))
    module = PanelDCN(dims, width, lr=lr, held_field=held)
    init = module.embedding.weight.detach().clone()
    field_dims = dict(zip(names, dims)) if names else list(dims)
    return Setup(module, _loader(data, 64), [_spectrum_monitor(field_dims=field_dims, cross_layer="cross")], epochs,
                 {"init": init, "names": list(names or [f"field_{i}" for i in range(len(dims))])})


def _dcn_ia(setup: Setup, weight: torch.Tensor) -> dict[str, tuple[float, int, int]]:
    out, lo = {}, 0
    for name, d in zip(setup.context["names"], setup.module.field_dims):
        ia, rank = numpy_information_abundance(weight[lo:lo + d])
        out[name] = (ia, rank, min(d, weight.shape[1]))
        lo += d
    return out


def _premise_barely_trained_dcn(setup: Setup) -> Premise:
    p = Premise()
    now = _dcn_ia(setup, setup.module.embedding.weight)
    init = _dcn_ia(setup, setup.context["init"])
    p.numbers["optimizer_steps"] = setup.context["global_step"]
    p.numbers["ia_over_ceiling"] = {n: round(v[0] / v[2], 3) for n, v in now.items()}
    p.numbers["ia_over_init"] = {n: round(now[n][0] / init[n][0], 4) for n in now}
    p.check("at most 3 optimizer steps", setup.context["global_step"] <= 3)
    p.check("every field's numpy IA within 5% of its IA at init", all(abs(r - 1) <= 0.05
                                                                       for r in p.numbers["ia_over_init"].values()))
    return p


def _premise_full_rank_dcn(setup: Setup) -> Premise:
    p = Premise()
    now = _dcn_ia(setup, setup.module.embedding.weight)
    init = _dcn_ia(setup, setup.context["init"])
    p.numbers["ia"] = {n: round(v[0], 2) for n, v in now.items()}
    p.numbers["ia_over_ceiling"] = {n: round(v[0] / v[2], 3) for n, v in now.items()}
    p.numbers["ia_over_init"] = {n: round(now[n][0] / init[n][0], 3) for n in now}
    p.numbers["train_loss_drop"] = setup.context.get("loss_drop")
    p.check("every field's numpy IA >= 0.6 min(cardinality, K)", min(p.numbers["ia_over_ceiling"].values()) >= 0.6)
    p.check("the model trained (last-epoch loss below the first batch's)", (setup.context.get("loss_drop") or 0) > 0)
    return p


HELD_NAMES = ("a", "b", "c", "d")
HELD_FIELD = 2  # "c"


def _premise_collapsed_partner(setup: Setup) -> Premise:
    p = Premise()
    module = setup.module
    now = _dcn_ia(setup, module.embedding.weight)
    matrix = numpy_interaction_matrix(module.embedding.weight, module.field_dims, module.cross.weight)
    held = HELD_NAMES[HELD_FIELD]
    p.numbers["ia"] = {n: round(v[0], 2) for n, v in now.items()}
    p.numbers["rank"] = {n: v[1] for n, v in now.items()}
    p.numbers["interaction_row_mean_ia"] = dict(zip(HELD_NAMES, np.round(matrix.mean(1), 2).tolist()))
    p.numbers["interaction_matrix"] = np.round(matrix, 2).tolist()
    p.check(f"held field {held}: numpy IA <= 2.5", now[held][0] <= 2.5)
    p.check(f"held field {held}: rank 2", now[held][1] == 2)
    p.check("the other fields: numpy IA >= 0.6 min(cardinality, K)",
            all(v[0] / v[2] >= 0.6 for n, v in now.items() if n != held))
    p.check(f"interaction: {held}'s sub-embeddings (its row) have IA <= 2.5 for every partner",
            matrix[HELD_FIELD].max() <= 2.5)
    others = [i for i in range(len(HELD_NAMES)) if i != HELD_FIELD]
    p.check(f"interaction: every other field's row mean IA is above {held}'s",
            matrix[others].mean(1).min() > matrix[HELD_FIELD].mean())
    return p


# 6: per-field tables, one frozen at rank 2 ---------------------------------------------------------------------
PER_FIELD = {"f0": 128, "f1": 128, "f2": 128, "f3": 128}
PER_FIELD_K = 16
FROZEN = "f2"


def _build_frozen(seed: int) -> Setup:
    data = ctr_data(list(PER_FIELD.values()), 1024, _generator(seed))
    module = PanelPerField(PER_FIELD, PER_FIELD_K, frozen=FROZEN)
    monitor = _spectrum_monitor(cross_layer=None)
    return Setup(module, _loader(data, 64), [monitor], 3, {"frozen_init": module.tables[FROZEN].weight.clone()})


def _premise_frozen(setup: Setup) -> Premise:
    p = Premise()
    tables = setup.module.tables
    stats = {n: numpy_information_abundance(t.weight) for n, t in tables.items()}
    ceiling = min(PER_FIELD_K, next(iter(PER_FIELD.values())))
    p.numbers["ia"] = {n: round(s[0], 2) for n, s in stats.items()}
    p.numbers["rank"] = {n: s[1] for n, s in stats.items()}
    p.numbers["ceiling"] = ceiling
    p.check(f"{FROZEN}: numpy IA <= 2.5", stats[FROZEN][0] <= 2.5)
    p.check(f"{FROZEN}: rank 2", stats[FROZEN][1] == 2)
    p.check(f"{FROZEN}: unchanged by training", torch.equal(tables[FROZEN].weight, setup.context["frozen_init"]))
    p.check("the other tables: numpy IA >= 0.6 min(cardinality, K)",
            all(s[0] / ceiling >= 0.6 for n, s in stats.items() if n != FROZEN))
    return p


# 1b / 2 / 3 / 4 / 7: two tasks ---------------------------------------------------------------------------------
USERS, ITEMS = 30, 20


def _build_two_task(seed: int, *, mode: str, towers: str, reads=None, n: int = 1024, epochs: int = 4,
                    lr: float = 0.02) -> Setup:
    data = two_task_data(USERS, ITEMS, n, _generator(seed), mode)
    module = PanelTwoTask(USERS, ITEMS, towers=towers, reads=reads, lr=lr)
    return Setup(module, _loader(data, 64), [_conflict_monitor()], epochs,
                 {"batches": _batches(data, 64), "data": data})


def _label_checks(setup: Setup, p: Premise, relation: str) -> None:
    """Measure how the two tasks' labels relate in the training data."""
    a, b = setup.context["data"]["a"], setup.context["data"]["b"]
    r = float(np.corrcoef(a.numpy(), b.numpy())[0, 1])
    p.numbers["label_correlation"] = round(r, 3)
    if relation == "same":
        p.check("b's label equals a's on every sample", torch.equal(a, b))
    elif relation == "opposite":
        p.check("b's label is 1 - a's on every sample", torch.equal(b, 1 - a))
    else:
        p.check("the labels are uncorrelated (|Pearson r| <= 0.2)", abs(r) <= 0.2)


def _premise_cosines(setup: Setup, p: Premise) -> dict:
    cos = gradient_cosines(setup.module, setup.context["batches"])
    p.numbers["cosine_mean"] = {k: (None if v is None else round(v, 3)) for k, v in cos["mean"].items()}
    p.numbers["negative_share_whole"] = round(float(np.mean([c < 0 for c in cos["per_batch"]["whole"]
                                                            if c is not None])), 3) \
        if any(c is not None for c in cos["per_batch"]["whole"]) else None
    return cos


def _premise_barely_two_task(setup: Setup) -> Premise:
    p = Premise()
    cos = _premise_cosines(setup, p)
    p.numbers["optimizer_steps"] = setup.context["global_step"]
    p.check("at most 3 optimizer steps", setup.context["global_step"] <= 3)
    _label_checks(setup, p, "independent")
    p.check("no systematic direction: |mean gradient cosine| <= 0.2 on the table and every field",
            all(v is not None and abs(v) <= 0.2 for v in cos["mean"].values()))
    return p


def _premise_same(setup: Setup) -> Premise:
    return _premise_agree(setup, "same")


def _premise_opposite_towers(setup: Setup) -> Premise:
    return _premise_agree(setup, "opposite")


def _premise_agree(setup: Setup, relation: str) -> Premise:
    p = Premise()
    _label_checks(setup, p, relation)
    cos = _premise_cosines(setup, p)
    p.check("mean whole-table gradient cosine > 0.3", (cos["mean"]["whole"] or -1) > 0.3)
    p.check("mean gradient cosine > 0 on every field", all((cos["mean"][n] or -1) > 0 for n in PanelTwoTask.field_names))
    return p


def _premise_disjoint(setup: Setup) -> Premise:
    p = Premise()
    _label_checks(setup, p, "independent")
    cos = _premise_cosines(setup, p)
    p.numbers["rows_touched_by_both"] = max(cos["overlap"])
    p.check("no row gets a gradient from both tasks (zero overlap)", max(cos["overlap"]) == 0)
    p.check("whole-table cosine exactly 0 on every batch", all(c == 0 for c in cos["per_batch"]["whole"]))
    p.check("per-field cosines undefined (one task's gradient is zero)",
            all(c is None for n in PanelTwoTask.field_names for c in cos["per_batch"][n]))
    return p


def _premise_opposite_shared(setup: Setup) -> Premise:
    p = Premise()
    _label_checks(setup, p, "opposite")
    cos = _premise_cosines(setup, p)
    p.check("mean whole-table gradient cosine < -0.5", (cos["mean"]["whole"] or 1) < -0.5)
    p.check("mean gradient cosine < -0.5 on every field",
            all((cos["mean"][n] or 1) < -0.5 for n in PanelTwoTask.field_names))
    return p


# 9: sequences with a decaying own-category signal, a model without position information -------------------------
SEQ_C, SEQ_L, SEQ_N = 8, 8, 8192
SEQ_TARGETS = (0, 1)


def _build_no_position(seed: int) -> Setup:
    from lightning_recanalysis import FeatureCorrelationMonitor

    data = sequence_data(SEQ_C, SEQ_L, SEQ_N, _generator(seed))
    module = PanelDIN(SEQ_C)
    monitor = FeatureCorrelationMonitor(category_embedding="category", representation="behavior", images=False,
                                        target_categories=list(SEQ_TARGETS), num_behavior_categories=SEQ_C,
                                        num_positions=SEQ_L)
    return Setup(module, _loader(data, 512), [monitor], 3, {"data": data})


def _learned_map_by_hand(category: torch.Tensor, target: int, positions: int) -> np.ndarray:
    """The learned map [C, P] (METHODS.md section 2, DIN: r = e, no position term) by numpy."""
    e = np.repeat(np.asarray(category.detach(), dtype=np.float64)[:, None, :], positions, axis=1)
    v = np.asarray(category.detach()[target], dtype=np.float64)
    logits = e @ v
    z = (logits - logits.mean()) / logits.std()
    w = np.exp(z - z.max())
    score = w / w.sum() * np.linalg.norm(e, axis=-1)
    return (score - score.min()) / (score.max() - score.min())


def _premise_no_position(setup: Setup) -> Premise:
    p = Premise()
    data = setup.context["data"]
    for t in SEQ_TARGETS:
        mi = counted_same_category_mi(data, t)
        row_sums = [counted_same_category_mi(data, t, c).sum() for c in range(SEQ_C)]
        n_t = int((data["target_category"] == t).sum())
        noise = 1 / (2 * n_t * np.log(2))  # plug-in MI of independent variables: about chi2(1) / (2 N ln 2)
        learned = _learned_map_by_hand(setup.module.category.weight, t, SEQ_L)
        p.numbers[f"target_{t}"] = {"samples": n_t, "mi_bits_by_position": np.round(mi, 4).tolist(),
                                    "noise_floor_bits": round(noise, 5),
                                    "mi_vs_position_spearman": round(_spearman(mi, np.arange(1, SEQ_L + 1)), 3),
                                    "learned_own_row": np.round(learned[t], 4).tolist()}
        p.numbers[f"target_{t}"]["next_row_mi_over_own"] = round(sorted(row_sums)[-2] / row_sums[t], 3)
        p.check(f"target {t}: MI at p=1 >= 20x the noise floor", mi[0] >= 20 * noise)
        p.check(f"target {t}: its own category is the most informative row (counted MI summed over positions)",
                int(np.argmax(row_sums)) == t)
        p.check(f"target {t}: MI decays (p=1 >= 10x p={SEQ_L}, Spearman vs position <= -0.8)",
                mi[0] >= 10 * mi[-1] and _spearman(mi, np.arange(1, SEQ_L + 1)) <= -0.8)
        p.check(f"target {t}: the learned own-category row is flat in position (max - min == 0)",
                np.ptp(learned[t]) == 0)
    return p


def _dcn_case(key, number, title, healthy, premise, build, expect=(), healthy_subjects=()):
    return Case(key, number, title, healthy, ("collapse", "interaction_collapse"), build, premise, expect,
                healthy_subjects)


def _conflict_case(key, number, title, healthy, premise, build, expect=()):
    return Case(key, number, title, healthy, ("conflict",), build, premise, expect)


_WHOLE = "embedding/(whole view)/a_vs_b"

CASES: dict[str, Case] = {c.key: c for c in [
    _dcn_case("barely_trained_dcn", "1a", "DCN with a cross layer, 3 optimizer steps", True,
              _premise_barely_trained_dcn, lambda s: _build_dcn(s, steps=3, epochs=1)),
    _conflict_case("barely_trained_two_task", "1b", "two tasks, independent labels, 3 optimizer steps", True,
                   _premise_barely_two_task,
                   lambda s: _build_two_task(s, mode="independent", towers="linear", n=192, epochs=1)),
    _conflict_case("same_label", "2", "two tasks with the same label, a linear head each", True, _premise_same,
                   lambda s: _build_two_task(s, mode="same", towers="linear")),
    _conflict_case("disjoint_fields", "3", "task a reads only user, task b only item", True, _premise_disjoint,
                   lambda s: _build_two_task(s, mode="disjoint", towers="linear", reads={"a": (0,), "b": (1,)})),
    _conflict_case("opposite_labels_towers", "4", "b = 1 - a, an MLP tower per task", True,
                   _premise_opposite_towers,
                   lambda s: _build_two_task(s, mode="opposite", towers="mlp", epochs=6)),
    _dcn_case("full_rank_dcn", "5", "trained DCN, fields keep their dimensions", True, _premise_full_rank_dcn,
              lambda s: _build_dcn(s, steps=None, epochs=3, dims=FULL_DIMS, width=FULL_K)),
    Case("frozen_low_rank_field", "6", f"per-field tables, {FROZEN} frozen at rank 2 of K={PER_FIELD_K}", False,
         ("collapse",), _build_frozen, _premise_frozen,
         (Expect(f"collapse on {FROZEN}", (("collapse", f"tables/{FROZEN}"),)),),
         tuple(f"tables/{n}" for n in PER_FIELD if n != FROZEN)),
    _conflict_case("opposite_labels_shared", "7", "b = 1 - a through one shared logit", False,
                   _premise_opposite_shared, lambda s: _build_two_task(s, mode="opposite", towers="shared"),
                   tuple(Expect(f"conflict on {f}", (("conflict", f"embedding/{f}/a_vs_b"), ("conflict", _WHOLE)))
                         for f in PanelTwoTask.field_names)),
    _dcn_case("collapsed_partner_dcn", "8", "DCN, field c held at rank 2, partner of the others", False,
              _premise_collapsed_partner,
              lambda s: _build_dcn(s, steps=None, epochs=3, held=HELD_FIELD, dims=HELD_DIMS, names=HELD_NAMES),
              (Expect("collapse on c or interaction collapse", (("collapse", "embedding/c"),
                                                               ("interaction_collapse", "embedding"))),),
              tuple(f"embedding/{n}" for n in HELD_NAMES if n != "c")),
    Case("no_position_sequence", "9", "decaying own-category signal, model without position information", False,
         ("missed_correlation",), _build_no_position, _premise_no_position,
         tuple(Expect(f"missed correlation on target {t}", (("missed_correlation", f"target_{t}"),))
               for t in SEQ_TARGETS)),
]}


# ---- running ---------------------------------------------------------------------------------------------------

@dataclass
class CaseRun:
    """One case at one seed: its premise, its findings and alarms, what was missed and what was false."""

    case: Case
    seed: int
    seconds: float
    premise: Premise
    findings: list
    alarms: list
    misses: list[Expect]
    false_alarms: list
    source: str = ""

    def describe(self) -> str:
        lines = [(f"case {self.case.number} {self.case.key} seed {self.seed}: premise "
                 f"{'holds' if self.premise.ok else 'FAILS: ' + '; '.join(self.premise.failed)}")]
        lines += [f"  missed: {e.label}" for e in self.misses]
        lines += [f"  false alarm [{a.kind} on {a.subject}]: {a.text}" for a in self.false_alarms]
        if self.misses:
            lines += [f"  finding [{f.verdict} {f.kind} on {f.subject}]: {f.text}" for f in self.findings]
        return "\n".join(lines)


class _LossTracker(pl.Callback):
    def __init__(self) -> None:
        self.first: float | None = None
        self.epoch_losses: list[float] = []
        self._sum, self._n = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        if self.first is None:
            self.first = loss
        self._sum, self._n = self._sum + loss, self._n + 1

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_losses.append(self._sum / max(self._n, 1))
        self._sum, self._n = 0.0, 0


def run_case(case: Case, seed: int, workdir: str | Path | None = None) -> CaseRun:
    """Train ``case`` at ``seed`` (deterministic: the model, data and Lightning are seeded) with its monitors and
    an AnalysisReport writing into ``workdir`` (a temporary directory by default), then measure its premise and
    read its alarms."""
    from lightning_recanalysis import AnalysisReport

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"panel_{case.key}_{seed}_"))
        start = time.perf_counter()
        pl.seed_everything(seed, verbose=False)
        setup = case.build(seed)
        report, losses = AnalysisReport(out_dir=workdir, dashboard=False), _LossTracker()
        trainer = pl.Trainer(max_epochs=setup.max_epochs, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             deterministic=True, callbacks=[*setup.monitors, losses, report])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(setup.module, setup.train)
        if "summary" not in report.paths and getattr(report, "findings", None) is None:
            said = [str(w.message) for w in caught if "AnalysisReport" in str(w.message)]
            raise RuntimeError(f"case {case.key}, seed {seed}: the report was not written: {said}")
        setup.context["global_step"] = trainer.global_step
        if losses.first is not None and losses.epoch_losses:
            setup.context["loss_drop"] = losses.first - losses.epoch_losses[-1]
        setup.module.eval()
        premise = case.premise(setup)
        findings, source = read_findings(report)
        raised = [f for f in findings if f.verdict == "problem"]
        seconds = time.perf_counter() - start
    if case.healthy:
        misses, false = [], raised
    else:
        misses = [e for e in case.expect if not any(e.met_by(a) for a in raised)]
        false = [a for a in raised if a.kind in case.kinds and a.subject in case.healthy_subjects]
    return CaseRun(case, seed, seconds, premise, findings, raised, misses, false, source)


def run_panel(cases: Sequence[Case] | None = None, seeds: Sequence[int] = SEEDS,
              progress: Callable[[CaseRun], None] | None = None) -> list[CaseRun]:
    """Every case at every seed, in order."""
    runs = []
    for case in cases or list(CASES.values()):
        for seed in seeds:
            run = run_case(case, seed)
            runs.append(run)
            if progress is not None:
                progress(run)
    return runs


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners (GPU available, seed set, ...)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ---- the table -------------------------------------------------------------------------------------------------

@dataclass
class PanelRow:
    """One line of the panel's table: a case and an alarm kind, over its runs (seeds)."""

    case: Case
    kind: str
    runs: int
    false_alarms: int = 0
    misses: int = 0
    failing_seeds: list[int] = field(default_factory=list)


def panel_rows(runs: Sequence[CaseRun]) -> list[PanelRow]:
    """Per case and kind: false alarms (every alarm of a healthy case; an alarm on a subject a sick case keeps
    healthy) and misses (an expected alarm a sick case did not raise), with the seeds where any occurred."""
    rows: dict[tuple[str, str], PanelRow] = {}
    by_case: dict[str, list[CaseRun]] = {}
    for run in runs:
        by_case.setdefault(run.case.key, []).append(run)

    def row(case: Case, kind: str, n: int) -> PanelRow:
        return rows.setdefault((case.key, kind), PanelRow(case, kind, n))

    for case_runs in by_case.values():
        case, n = case_runs[0].case, len(case_runs)
        if case.healthy:
            for kind in case.kinds:
                row(case, kind, n)
        for expect in case.expect:
            row(case, "|".join(dict.fromkeys(k for k, _ in expect.alternatives)), n)
        for run in case_runs:
            for alarm in run.false_alarms:
                r = row(case, alarm.kind, n)
                r.false_alarms += 1
                if run.seed not in r.failing_seeds:
                    r.failing_seeds.append(run.seed)
            for expect in run.misses:
                r = row(case, "|".join(dict.fromkeys(k for k, _ in expect.alternatives)), n)
                r.misses += 1
                if run.seed not in r.failing_seeds:
                    r.failing_seeds.append(run.seed)
    return list(rows.values())


def panel_table(runs: Sequence[CaseRun]) -> str:
    """The panel as a plain-text table, its totals and the seeds."""
    headers = ["case", "model", "expect", "kind", "runs", "false alarms", "misses", "failing seeds"]
    lines = []
    for r in panel_rows(runs):
        lines.append([r.case.number, r.case.key, "no alarm" if r.case.healthy else "alarm", r.kind, r.runs,
                      r.false_alarms, "-" if r.case.healthy else r.misses,
                      ",".join(map(str, sorted(r.failing_seeds))) or "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    seeds = sorted({run.seed for run in runs})
    premise_failures = [run for run in runs if not run.premise.ok]
    total_false = sum(len(run.false_alarms) for run in runs)
    total_misses = sum(len(run.misses) for run in runs)
    out = [fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, lines), "",
           (f"total: {len(runs)} runs ({len({r.case.key for r in runs})} cases x seeds {seeds}); "
           f"false alarms {total_false} (on healthy cases "
           f"{sum(len(r.false_alarms) for r in runs if r.case.healthy)}), misses {total_misses}; "
           f"premises failed: {len(premise_failures)}")]
    return "\n".join(out)
