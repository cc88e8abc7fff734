"""Multi-task recommendation models: Shared-Bottom, MMoE, PLE and STEM, on one data pipeline.

All four read the same input, ``x = [e_1, ..., e_N]``, the embeddings of N categorical fields from one
concatenated table (field i's value v is row ``offsets[i] + v``), and give one logit per task:

- **Shared-Bottom** (Caruana, "Multitask Learning", 1997): ``y_t = tower_t(bottom(x))``.
- **MMoE** (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
  KDD 2018): experts ``f_i(x)`` shared by all tasks, one softmax gate per task,
  ``y_t = tower_t(sum_i g_t(x)_i f_i(x))``, ``g_t(x) = softmax(W_t x)``.
- **PLE** (Tang et al., "Progressive Layered Extraction", RecSys 2020): stacked CGC layers, each with
  task-specific experts and shared experts; task t's gate mixes its own and the shared experts, the shared gate
  (in every layer but the last) mixes all of them.
- **STEM** (Su et al., "STEM: Unleashing the Power of Embeddings for Multi-task Recommendation", AAAI 2024):
  the table is ``(T + 1)`` chunks wide, ``[task 1 | ... | task T | shared]``. Task t's specific experts read its
  own chunk, the shared experts the shared chunk; task t's gate reads its own and the shared chunk and mixes all
  experts, with the *other* tasks' specific experts detached ("all forward, task-specific backward"), so task
  t's loss only ever trains its own chunk, its own experts and the shared ones.

The monitors' protocol (:mod:`lightning_recanalysis.model.multitask`): ``task_names``, ``self.task_losses``
filled in ``training_step`` (and in ``validation_step``, for an offline analysis of a checkpoint), and
``task_scores``/``task_labels`` returned by ``validation_step``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torchmetrics
from torch import nn

from .common import Experiment, synthetic_size
from .data.batches import batch_loader, split
from .data.multitask import load, synthetic_two_task

#: Logit shift of the synthetic demo's planted disagreeing user-item pairs (``synthetic_two_task(pair_conflict=)``).
DEMO_PAIR_CONFLICT = 4.0
#: Rows of the ``synthetic`` demo (743 training batches of 256 an epoch). At 50,000 rows the planted ``creative``
#: conflict read inconclusive on Shared-Bottom, PLE and STEM, and the monitors' costs per epoch weighed 4 to 6% of
#: the fit (docs/benchmarks.md).
SYNTHETIC_ROWS = 200_000
#: Of which validation rows: the entanglement analysis reads every validation pair each epoch, and 10,000 pairs
#: (as many as 50,000 rows gave before) fill its label subsets.
SYNTHETIC_VALIDATION_ROWS = 10_000
#: Gradient probes an epoch: the conflict findings pool the probes of the last four epochs, 32 here.
PROBES_PER_EPOCH = 8


def mlp(in_dim: int, dims: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers, width = [], in_dim
    for hidden in dims:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*layers)


class Tower(nn.Sequential):
    """A task's head: an MLP and one logit."""

    def __init__(self, in_dim: int, dims: tuple[int, ...], dropout: float) -> None:
        super().__init__(mlp(in_dim, dims, dropout), nn.Linear(dims[-1] if dims else in_dim, 1))


def mix(gate_logits: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """``sum_i softmax(gate)_i expert_i``: gate logits [B, E], expert outputs [B, E, D] -> [B, D]."""
    return (gate_logits.softmax(dim=-1).unsqueeze(-1) * experts).sum(dim=1)


class MultiTaskModel(pl.LightningModule):
    """What the four models share: the field embedding, one BCE loss per task, the monitors' protocol.

    Subclasses define ``task_logits(e)``: ``e`` is ``[B, N, width]`` (``width = chunks * embed_dim``), the
    result ``[B, T]``.

    ``pair_fields=(u, f)`` adds a metric-learning term (as in CML, Hsieh et al., WWW 2017) to every task's logit:
    ``- alpha_t ||e_u - e_f||^2`` with a learned ``alpha_t`` (initially 5, so that the MLP does not drown it at
    the start), the squared distance taken in the columns task t reads (:meth:`pair_columns`: the whole shared
    embedding; STEM: task t's own chunk). It gives the user-item distance a meaning for the task, which the
    interest-entanglement analysis reads (an MLP on concatenated embeddings leaves that distance unrelated to the
    pair's affinity).
    """

    def __init__(self, field_dims: list[int], tasks: tuple[str, ...], embed_dim: int = 8, chunks: int = 1,
                 lr: float = 2e-3, pair_fields: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.task_names = tuple(tasks)
        self.task_losses: dict[str, torch.Tensor] = {}
        self.embed_dim, self.num_fields, self.lr = embed_dim, len(field_dims), lr
        self.embedding = nn.Embedding(sum(field_dims), chunks * embed_dim)
        nn.init.xavier_uniform_(self.embedding.weight)
        self.register_buffer("offsets", torch.tensor([0, *torch.tensor(field_dims).cumsum(0)[:-1].tolist()]))
        self.val_auroc = nn.ModuleDict({t: torchmetrics.AUROC(task="binary") for t in self.task_names})
        self.pair_fields = tuple(pair_fields) if pair_fields is not None else None
        if self.pair_fields is not None:
            self.pair_alpha = nn.Parameter(torch.full((len(self.task_names),), 5.0))

    def task_logits(self, e: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pair_columns(self, task: int) -> slice:
        """The embedding columns whose user-item distance enters task ``task``'s logit (``pair_fields``)."""
        return slice(None)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        e = self.embedding(features + self.offsets)
        logits = self.task_logits(e)
        if self.pair_fields is None:
            return logits
        u, f = self.pair_fields
        distances = torch.stack([(e[:, u, self.pair_columns(t)] - e[:, f, self.pair_columns(t)]).pow(2).sum(-1)
                                 for t in range(len(self.task_names))], dim=1)
        return logits - self.pair_alpha * distances

    def training_step(self, batch, batch_idx):
        logits, labels = self(batch["features"]), batch["labels"]
        self.task_losses = {
            task: nn.functional.binary_cross_entropy_with_logits(logits[:, t], labels[:, t])
            for t, task in enumerate(self.task_names)
        }
        loss = sum(self.task_losses.values())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits, labels = self(batch["features"]), batch["labels"]
        # As in training_step: the gradient-conflict probe of an offline analysis (trainer.validate) reads them.
        self.task_losses = {task: nn.functional.binary_cross_entropy_with_logits(logits[:, t], labels[:, t])
                            for t, task in enumerate(self.task_names)}
        for t, task in enumerate(self.task_names):
            self.val_auroc[task].update(logits[:, t], labels[:, t].long())
            self.log(f"val/auroc_{task}", self.val_auroc[task], prog_bar=True)
        return {"task_scores": {task: logits[:, t] for t, task in enumerate(self.task_names)},
                "task_labels": {task: labels[:, t] for t, task in enumerate(self.task_names)}}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class SharedBottom(MultiTaskModel):
    def __init__(self, field_dims, tasks, bottom_dims=(64, 32), tower_dims=(16,), dropout=0.0, **kwargs):
        super().__init__(field_dims, tasks, **kwargs)
        self.bottom = mlp(self.num_fields * self.embed_dim, bottom_dims, dropout)
        self.towers = nn.ModuleList(Tower(bottom_dims[-1], tower_dims, dropout) for _ in tasks)

    def task_logits(self, e):
        h = self.bottom(e.flatten(1))
        return torch.cat([tower(h) for tower in self.towers], dim=1)


class MMoE(MultiTaskModel):
    def __init__(self, field_dims, tasks, num_experts=4, expert_dims=(64, 32), tower_dims=(16,), dropout=0.0,
                 **kwargs):
        super().__init__(field_dims, tasks, **kwargs)
        x_dim = self.num_fields * self.embed_dim
        self.experts = nn.ModuleList(mlp(x_dim, expert_dims, dropout) for _ in range(num_experts))
        self.gates = nn.ModuleList(nn.Linear(x_dim, num_experts) for _ in tasks)
        self.towers = nn.ModuleList(Tower(expert_dims[-1], tower_dims, dropout) for _ in tasks)

    def task_logits(self, e):
        x = e.flatten(1)
        experts = torch.stack([f(x) for f in self.experts], dim=1)
        return torch.cat([tower(mix(gate(x), experts)) for gate, tower in zip(self.gates, self.towers)], dim=1)


class CGCLayer(nn.Module):
    """One Customized Gate Control layer of PLE: task-specific and shared experts, task gates, a shared gate."""

    def __init__(self, in_dim, num_tasks, specific, shared, expert_dims, dropout, last: bool) -> None:
        super().__init__()
        self.specific = nn.ModuleList(
            nn.ModuleList(mlp(in_dim, expert_dims, dropout) for _ in range(specific)) for _ in range(num_tasks))
        self.shared = nn.ModuleList(mlp(in_dim, expert_dims, dropout) for _ in range(shared))
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, specific + shared) for _ in range(num_tasks))
        self.shared_gate = None if last else nn.Linear(in_dim, num_tasks * specific + shared)

    def forward(self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor):
        own = [torch.stack([f(x) for f in experts], dim=1) for experts, x in zip(self.specific, task_inputs)]
        common = torch.stack([f(shared_input) for f in self.shared], dim=1)
        task_outputs = [mix(gate(x), torch.cat([mine, common], dim=1))
                        for gate, x, mine in zip(self.task_gates, task_inputs, own)]
        shared_output = None if self.shared_gate is None else mix(self.shared_gate(shared_input),
                                                                  torch.cat([*own, common], dim=1))
        return task_outputs, shared_output


class PLE(MultiTaskModel):
    def __init__(self, field_dims, tasks, levels=2, specific_experts=1, shared_experts=2, expert_dims=(64, 32),
                 tower_dims=(16,), dropout=0.0, **kwargs):
        super().__init__(field_dims, tasks, **kwargs)
        dims = [self.num_fields * self.embed_dim] + [expert_dims[-1]] * (levels - 1)
        self.levels = nn.ModuleList(
            CGCLayer(d, len(tasks), specific_experts, shared_experts, expert_dims, dropout, last=(i == levels - 1))
            for i, d in enumerate(dims))
        self.towers = nn.ModuleList(Tower(expert_dims[-1], tower_dims, dropout) for _ in tasks)

    def task_logits(self, e):
        x = e.flatten(1)
        task_inputs, shared_input = [x] * len(self.task_names), x
        for level in self.levels:
            task_inputs, shared_input = level(task_inputs, shared_input)
        return torch.cat([tower(h) for tower, h in zip(self.towers, task_inputs)], dim=1)


class STEM(MultiTaskModel):
    def __init__(self, field_dims, tasks, specific_experts=1, shared_experts=2, expert_dims=(64, 32),
                 tower_dims=(16,), dropout=0.0, **kwargs):
        super().__init__(field_dims, tasks, chunks=len(tasks) + 1, **kwargs)
        x_dim = self.num_fields * self.embed_dim
        self.specific = nn.ModuleList(
            nn.ModuleList(mlp(x_dim, expert_dims, dropout) for _ in range(specific_experts)) for _ in tasks)
        self.shared = nn.ModuleList(mlp(x_dim, expert_dims, dropout) for _ in range(shared_experts))
        n_experts = len(tasks) * specific_experts + shared_experts
        self.gates = nn.ModuleList(nn.Linear(2 * x_dim, n_experts) for _ in tasks)
        self.towers = nn.ModuleList(Tower(expert_dims[-1], tower_dims, dropout) for _ in tasks)

    def pair_columns(self, task: int) -> slice:
        return slice(task * self.embed_dim, (task + 1) * self.embed_dim)

    def chunk(self, e: torch.Tensor, index: int) -> torch.Tensor:
        """Chunk ``index`` of every field's embedding, flattened: tasks 0..T-1, then the shared chunk (T)."""
        return e[..., index * self.embed_dim : (index + 1) * self.embed_dim].flatten(1)

    def task_logits(self, e):
        num_tasks = len(self.task_names)
        shared_x = self.chunk(e, num_tasks)
        own_x = [self.chunk(e, t) for t in range(num_tasks)]
        specific = [torch.stack([f(x) for f in experts], dim=1) for experts, x in zip(self.specific, own_x)]
        common = torch.stack([f(shared_x) for f in self.shared], dim=1)
        logits = []
        for t, (gate, tower) in enumerate(zip(self.gates, self.towers)):
            # All forward, task-specific backward: task t sees every expert, but trains only its own and the shared.
            experts = torch.cat([s if u == t else s.detach() for u, s in enumerate(specific)] + [common], dim=1)
            logits.append(tower(mix(gate(torch.cat([own_x[t], shared_x], dim=1)), experts)))
        return torch.cat(logits, dim=1)


MODEL_CLASSES = {"shared_bottom": SharedBottom, "mmoe": MMoE, "ple": PLE, "stem": STEM}
DISPLAY_NAMES = {"shared_bottom": "Shared-Bottom", "mmoe": "MMoE", "ple": "PLE", "stem": "STEM"}


def monitors_for(model: str, field_names: list[str], field_dims: list[int], tasks, user_field: str,
                 item_field: str, references=None, **conflict_options) -> list[pl.Callback]:
    """The two multi-task monitors, configured for this model's table (STEM: one view per chunk); with
    ``references`` ({task: single-task model or its run directory}) the entanglement monitor also draws the
    authors' conflict subsets."""
    from lightning_recanalysis import EntanglementMonitor, GradientConflictMonitor

    fields = dict(zip(field_names, field_dims))
    groups = [*tasks, "shared"] if model == "stem" else None
    # A probe every 20 batches unless told (build asks for 8 an epoch): 8 an epoch of 40,000 rows, 32 over the
    # findings' window of 4 epochs, enough for a planted conflict to clear its interval and sign test (the default,
    # 50, gives 12 and reads inconclusive).
    conflict_options.setdefault("every_n_steps", 20)
    return [
        GradientConflictMonitor(field_dims=fields, column_groups=groups, **conflict_options),
        EntanglementMonitor(user_field=user_field, item_field=item_field, field_dims=fields, column_groups=groups,
                            references=references),
    ]


def demo_data(data: str, seed: int, n_samples: int | None = None):
    """The demo's data set: ``synthetic`` (tasks that disagree on the ``creative`` field; :data:`SYNTHETIC_ROWS`
    rows unless ``n_samples``), ``synthetic-pairs`` (the same, and on planted user-item pairs: the conflict subsets'
    demo; the generator's 50,000 rows) or a real one.

    Two synthetic sets, because the planted pairs' opposite residuals, 1/4 of the rows at +-4 on the logits,
    drown the ``creative`` field's gradient conflict (its mean cosine on the Shared-Bottom and MMoE demos goes
    from -0.20..-0.31 to -0.18..+0.08 over seeds 0-2), and a gentler plant is not learnt by the references."""
    size = synthetic_size(data, n_samples)
    if data == "synthetic":
        return synthetic_two_task(seed=seed, **(size or {"n_samples": SYNTHETIC_ROWS}))
    if data == "synthetic-pairs":
        return synthetic_two_task(seed=seed, pair_conflict=DEMO_PAIR_CONFLICT, **size)
    return load(data, seed)


def build(model: str, data: str, seed: int, monitors: bool, n_samples: int | None = None, references=None,
          task: str | None = None, **model_options) -> Experiment:
    """A multi-task demo; ``task`` trains it on that task alone (a single-task reference of the conflict
    subsets); ``references`` ({task: reference}) go to the entanglement monitor."""
    dataset = demo_data(data, seed, n_samples)
    labels = dataset.labels if task is None else dataset.labels[:, [dataset.tasks.index(task)]]
    tasks = dataset.tasks if task is None else (task,)
    fraction = SYNTHETIC_VALIDATION_ROWS / len(labels) if data == "synthetic" and n_samples is None else 0.2
    train, val = split({"features": dataset.features, "labels": labels}, fraction, seed)
    pair_fields = (dataset.field_names.index(dataset.user_field), dataset.field_names.index(dataset.item_field))
    module = MODEL_CLASSES[model](dataset.field_dims, tasks, pair_fields=pair_fields, **model_options)
    train_loader = batch_loader(train, 256, shuffle=True, seed=seed)
    callbacks = []
    if monitors and task is None:
        # PROBES_PER_EPOCH probes an epoch, at most one every 20 batches (small data: as many as the findings need).
        callbacks = monitors_for(model, dataset.field_names, dataset.field_dims, dataset.tasks, dataset.user_field,
                                 dataset.item_field, references=references,
                                 every_n_steps=max(20, len(train_loader) // PROBES_PER_EPOCH))
    return Experiment(
        module=module,
        train_loader=train_loader,
        val_loader=batch_loader(val, 4096, shuffle=False),
        callbacks=callbacks,
        max_epochs=4 if data.startswith("synthetic") else 2,
        description=f"{DISPLAY_NAMES[model]}, tasks {', '.join(tasks)}; {dataset.description}; "
                    f"{len(train['labels'])} training rows",
        extra={"conflict_field": dataset.conflict_field, "field_names": dataset.field_names, "tasks": dataset.tasks},
    )
