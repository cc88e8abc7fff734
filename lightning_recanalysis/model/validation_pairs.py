"""The (user, item) pairs of :class:`~lightning_recanalysis.callbacks.entanglement.EntanglementMonitor`, read from
the lookups the model makes in ``validation_step``.

During an analysed validation epoch the user's and the item's embedding modules carry forward hooks that keep
each call's ids and the rows it returned: the embeddings the model used, read without touching the weight, which a
sharding strategy may hold in pieces (a DTensor) outside the forward pass. At the end of each batch every sample's
one user row and one item row give its distance in every view, beside the tasks' labels and scores that
``validation_step`` returned. One pair is one row of ``[views + 2 T + 2]`` float64 numbers (:data:`PAIR_LAYOUT`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..parallel.mesh_groups import local_value
from .tables import EmbeddingTable, Field
from .multitask import protocol_error

__all__ = ["PAIR_LAYOUT", "View", "field_rows", "PairCollector"]

#: The columns of one pair's row: its distance in each view, each task's label, each task's score, then the user's
#: and the item's id within their fields.
PAIR_LAYOUT = "distance per view, label per task, score per task, user id, item id"

#: A view of the pairs: its name and the columns of the user's and of the item's row it compares.
View = tuple[str, slice, slice]


def field_rows(calls: list[tuple[torch.Tensor, torch.Tensor]], fld: Field, batch_size: int,
               role: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's one id in ``fld`` and its embedding row (``[batch]``, ``[batch, width]``), as the lookups of
    this batch were called and returned it."""
    calls = [(ids, rows) for ids, rows in calls if ids.dim() >= 1 and ids.shape[0] == batch_size]
    if not calls:
        raise ValueError(f"the {role} embedding was not called on a [batch, ...] input in validation_step "
                         f"(batch size {batch_size})")
    ids = torch.cat([c.reshape(batch_size, -1) for c, _ in calls], dim=1)
    rows = torch.cat([r.reshape(batch_size, -1, r.shape[-1]) for _, r in calls], dim=1)
    inside = (ids >= fld.start) & (ids < fld.stop)
    per_sample = inside.sum(dim=1)
    if not bool((per_sample == 1).all()):
        raise ValueError(f"every sample must look up exactly one row of field '{fld.name}' (rows {fld.start}-"
                         f"{fld.stop - 1}), but samples look up {sorted(set(per_sample.tolist()))} of them")
    return ids[inside], rows[inside]  # row-major: one per sample, in sample order


class PairCollector:
    """The first ``max_pairs`` validation pairs of an epoch on this rank, one row each (see :data:`PAIR_LAYOUT`)."""

    def __init__(self, owner: str, max_pairs: int) -> None:
        self.owner, self.max_pairs = owner, max_pairs
        self.tasks: list[str] = []
        self.user: tuple[EmbeddingTable, Field] | None = None
        self.item: tuple[EmbeddingTable, Field] | None = None
        self.views: list[View] = []
        self._handles: list[Any] = []
        self._calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"user": [], "item": []}
        self._rows: list[torch.Tensor] = []
        self._kept = 0

    def configure(self, tasks: Sequence[str], user: tuple[EmbeddingTable, Field], item: tuple[EmbeddingTable, Field],
                  views: list[View]) -> None:
        self.tasks, self.user, self.item, self.views = list(tasks), user, item, views

    @property
    def width(self) -> int:
        return len(self.views) + 2 * len(self.tasks) + 2

    # ---- hooks, present during an analysed validation epoch ------------------------------------------------
    def _hook(self, role: str):
        def capture(module, args, kwargs, output):
            # TorchRec's EmbeddingCollection calls its tables with `input=` as a keyword.
            # Under tensor parallelism the ids (and an output left distributed) are DTensors: plain ones here.
            ids = local_value(args[0] if args else kwargs["input"])
            self._calls[role].append((ids, local_value(output.detach())))
        return capture

    def start(self, pl_module: nn.Module) -> None:
        """Hook the user and item modules and start an epoch's pairs."""
        self.stop()
        self._rows, self._kept = [], 0
        for role, (table, _) in (("user", self.user), ("item", self.item)):
            for name in [table.name, *table.aliases]:
                module = pl_module.get_submodule(name)
                self._handles.append(module.register_forward_hook(self._hook(role), with_kwargs=True))

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def new_batch(self) -> None:
        self._calls = {"user": [], "item": []}

    # ---- one batch ---------------------------------------------------------------------------------------
    def collect(self, outputs: Any) -> None:
        """Add this batch's pairs from the lookups it made and what ``validation_step`` returned."""
        owner = self.owner
        if not isinstance(outputs, Mapping) or not isinstance(outputs.get("task_scores"), Mapping) \
                or not isinstance(outputs.get("task_labels"), Mapping):
            raise ValueError(protocol_error(owner, "validation_step must return a dict with `task_scores` and "
                                                   f"`task_labels` mappings, got {type(outputs).__name__}"))
        scores, labels = outputs["task_scores"], outputs["task_labels"]
        missing = [t for t in self.tasks if t not in scores or t not in labels]
        if missing:
            raise ValueError(protocol_error(owner, f"validation_step's task_scores/task_labels lack tasks {missing}"))
        y = torch.stack([labels[t].detach().reshape(-1).to(torch.float64) for t in self.tasks], dim=1)
        s = torch.stack([scores[t].detach().reshape(-1).to(torch.float64) for t in self.tasks], dim=1)
        batch_size = y.shape[0]
        (_, u_field), (_, i_field) = self.user, self.item
        user_ids, users = field_rows(self._calls["user"], u_field, batch_size, "user")
        item_ids, items = field_rows(self._calls["item"], i_field, batch_size, "item")
        take = min(batch_size, self.max_pairs - self._kept)
        if take <= 0:
            return
        with torch.no_grad():
            distances = [
                torch.linalg.vector_norm(users[:take, us].to(torch.float64) - items[:take, its].to(torch.float64),
                                         dim=1)
                for _, us, its in self.views
            ]
        ids = torch.stack([user_ids[:take] - u_field.start, item_ids[:take] - i_field.start], dim=1)  # in the fields
        self._rows.append(torch.cat([torch.stack(distances, dim=1), y[:take].to(distances[0].device),
                                     s[:take].to(distances[0].device), ids.to(distances[0])], dim=1).cpu())
        self._kept += take

    def take_rows(self) -> torch.Tensor:
        """This rank's pairs of the epoch ``[pairs, width]`` (CPU, float64); the collector starts empty again."""
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, self.width, dtype=torch.float64)
        self._rows, self._kept = [], 0
        return rows
