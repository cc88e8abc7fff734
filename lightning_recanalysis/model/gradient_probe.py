"""The gradient probe of :class:`~lightning_recanalysis.callbacks.conflict.GradientConflictMonitor`: one probed
training step, from the forward hooks on the embedding modules to each view's per-task gradient Gram.

Between the start of a probed batch and its backward the embedding modules carry forward hooks that keep each
lookup's ids and output (:class:`Lookup`). Just before the backward, each usable task's loss is differentiated
with respect to those outputs (``torch.autograd.grad``, ``retain_graph=True``; no parameter gradient, nothing
into ``.grad``), and the looked-up rows' gradients wait in a stash. :meth:`GradientProbe.flush` (at the epoch's
end, or when the stash holds :data:`STASH_BYTES`) sums them per unique id and probe (the table's gradient on those
rows) and gives each view's float64 Gram ``[fields + 1, T, T]`` per probe
(:mod:`lightning_recanalysis.functional.conflict`), all probes in one pass.

Bad input of the multi-task protocol (a task missing from ``task_losses``, a non-finite or detached loss, a loss
that reaches no table) is counted and warned once per kind (:class:`ProblemLog`); training goes on.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..parallel.agreement import all_true
from ..functional.conflict import embedding_row_gradients, field_gradient_gram, looked_up_row_gradients, view_grams
from ..parallel.mesh_groups import local_value
from .tables import EmbeddingTable
from .multitask import protocol_error

__all__ = ["STASH_BYTES", "GradientProbe", "Lookup", "ProblemLog"]

#: The row gradients the probe stashes before the caller flushes them into Grams (:meth:`GradientProbe.flush`):
#: an epoch's small probes then share one pass of sorts and sums; once a probe brings the stash to this size,
#: everything stashed is flushed.
STASH_BYTES = 32 << 20


@dataclass
class Lookup:
    """One call of an embedding module during a probed step: its ids and its output (the looked-up rows)."""

    module: nn.Module
    ids: torch.Tensor
    output: torch.Tensor
    offsets: torch.Tensor | None = None
    per_sample_weights: torch.Tensor | None = None


class ProblemLog:
    """Bad input met in an epoch, by kind, each kind warned once per fit (the counts go into the epoch's record)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.counts: dict[str, int] = {}
        self._warned: set[str] = set()

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"{self.owner}: {message} (counted in the epoch's history record; warned once, training "
                          "goes on)", RuntimeWarning, stacklevel=3)


class GradientProbe:
    """Hooks the embedding modules of a probed batch and turns its lookups into each view's gradient Gram.

    ``tables`` and ``modules`` (each table's module and aliases) are the discovered tables; ``parts`` lists, per
    view, the (table, column group) pairs its Gram is assembled from; ``tasks`` the compared tasks in order.
    """

    def __init__(self, owner: str, problems: ProblemLog) -> None:
        self.owner, self.problems = owner, problems
        self.tables: list[EmbeddingTable] = []
        self.modules: list[list[nn.Module]] = []
        self.parts: list[list[tuple[int, int]]] = []
        self.tasks: list[str] = []
        self._handles: list[Any] = []
        self._captures: dict[int, list[Lookup]] = {}
        self._last_losses: list[weakref.ref] = []
        self.pending = False
        self._stash: list[dict[str, Any]] = []  # the measured probes' row gradients, until flush()
        self._stash_bytes = 0

    def configure(self, tables: list[EmbeddingTable], modules: list[list[nn.Module]],
                  parts: list[list[tuple[int, int]]], tasks: list[str]) -> None:
        self.tables, self.modules, self.parts, self.tasks = tables, modules, parts, tasks
        self.clear_stash()

    # ---- hooks, present from the start of a probed batch to its backward -----------------------------------
    def _hook(self, table_index: int):
        def capture(module, args, kwargs, output):
            # Under tensor parallelism the ids reach this hook as a replicated DTensor (the module's input hook
            # made them one): plain tensors from here on. The output stays as the graph holds it (the losses
            # were computed from it); its gradients are made plain in the probe.
            ids = local_value(args[0] if args else kwargs["input"])
            offsets = local_value(args[1] if len(args) > 1 else kwargs.get("offsets"))
            weights = local_value(args[2] if len(args) > 2 else kwargs.get("per_sample_weights"))
            self._captures.setdefault(table_index, []).append(Lookup(module, ids, output, offsets, weights))
        return capture

    def arm(self) -> None:
        """Hook every embedding module until :meth:`take` or :meth:`release`."""
        self.release()
        for index, modules in enumerate(self.modules):
            for module in modules:
                self._handles.append(module.register_forward_hook(self._hook(index), with_kwargs=True))
        self.pending = True

    def release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._captures = {}
        self.pending = False

    def take(self) -> dict[int, list[Lookup]]:
        """The lookups captured in this batch, by table; the hooks are removed (the backward must see an unhooked
        model)."""
        captures = self._captures
        self.release()
        return captures

    # ---- the probe, just before the backward --------------------------------------------------------------
    def _task_loss_tensors(self, pl_module: nn.Module) -> dict[str, torch.Tensor]:
        """This step's usable task losses; missing, non-finite and detached ones are counted and skipped."""
        owner = self.owner
        losses = getattr(pl_module, "task_losses", None)
        if not isinstance(losses, Mapping):
            raise TypeError(protocol_error(owner, f"`task_losses` must be a mapping task -> loss, got {type(losses).__name__}"))
        if losses and self._last_losses and all(ref() is losses.get(t) for t, ref in zip(self.tasks, self._last_losses)):
            raise RuntimeError(protocol_error(owner, "`task_losses` holds the previous probed step's losses: the "
                                                     "training_step must store this step's losses in it"))
        usable = {}
        for task in self.tasks:
            loss = losses.get(task)
            if loss is None:
                self.problems.add(f"missing:{task}", f"task '{task}' is missing from task_losses in this batch")
                continue
            if not torch.is_tensor(loss) or loss.numel() != 1:
                raise TypeError(protocol_error(owner, f"task_losses['{task}'] must be a one-element tensor, got {loss!r}"))
            if not loss.requires_grad:
                self.problems.add(f"unreached:{task}", f"the loss of task '{task}' does not require grad, so it "
                                                       "cannot reach the embeddings")
                continue
            if not bool(torch.isfinite(loss.detach()).all()):
                self.problems.add(f"nonfinite:{task}", f"the loss of task '{task}' is NaN or infinite in this batch")
                continue
            usable[task] = loss.reshape(())
        self._last_losses = [weakref.ref(losses[t]) if torch.is_tensor(losses.get(t)) else (lambda: None)
                             for t in self.tasks]
        return usable

    def measure(self, pl_module: nn.Module, captures: dict[int, list[Lookup]]) -> bool:
        """Whether the step measured two tasks or more: then its row gradients are stashed, and :meth:`flush`
        gives its Grams; False, and the caller counts it as skipped, when it did not."""
        error: Exception | None = None
        try:
            losses = self._task_loss_tensors(pl_module)
        except Exception as err:  # raised after the agreement below, which every rank must reach
            losses, error = {}, err
        lookups = [(ti, lk) for ti in sorted(captures) for lk in captures[ti] if lk.output.requires_grad]
        # Under FSDP2 and tensor parallelism each autograd.grad below makes collectives: every rank probes the
        # tasks usable on every rank, or none (a loss NaN or missing on one rank alone would leave the others
        # waiting in a gradient all-gather).
        agreed = all_true([t in losses for t in self.tasks] + [bool(lookups), error is None], device=pl_module.device)
        if error is not None:
            raise error
        if not agreed[-1]:  # this step's task losses were unreadable on another rank (warned there)
            return False
        losses = {t: losses[t] for t, usable in zip(self.tasks, agreed) if usable}
        if not agreed[-2]:
            if not lookups:
                self.problems.add("no-lookup", "no embedding lookup that requires grad happened in a probed "
                                               "training step")
            return False
        outputs = [lk.output for _, lk in lookups]
        grads: dict[str, tuple] = {}
        for task, loss in losses.items():
            # retain_graph: the training's own backward runs on this graph right after. Only the looked-up rows
            # are inputs, so autograd computes no parameter gradient and accumulates nothing into .grad.
            result = torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)
            if all(g is None for g in result):
                self.problems.add(f"unreached:{task}", f"the loss of task '{task}' does not reach any embedding table")
                continue
            for ti in {ti for ti, _ in lookups}:
                if all(g is None for (tj, _), g in zip(lookups, result) if tj == ti):
                    self.problems.add(f"unreached:{task}:{self.tables[ti].name}",
                                      f"the loss of task '{task}' does not reach table '{self.tables[ti].name}'; its "
                                      "gradient there is zero")
            grads[task] = result
        if len(grads) < 2:
            return False
        with torch.no_grad():
            self._stash_probe(lookups, grads)
        return True

    # ---- the stash: the probes' row gradients, their Grams formed together ------------------------------------
    def _stash_probe(self, lookups: list[tuple[int, Lookup]], grads: dict[str, tuple]) -> None:
        """Keep this probe's row gradients per table, ``[T, n, K]`` (zeros for a task not measured, whose Gram
        entries :meth:`flush` makes NaN)."""
        tables = {}
        for ti in sorted({ti for ti, _ in lookups}):
            ids, row_grads = [], []
            for j in (j for j, (tj, _) in enumerate(lookups) if tj == ti):
                lk = lookups[j][1]
                per_task = torch.stack([
                    local_value(grads[t][j]) if t in grads and grads[t][j] is not None
                    else torch.zeros(lk.output.shape, dtype=lk.output.dtype, device=lk.ids.device)
                    for t in self.tasks])
                flat_ids, flat_grads = looked_up_row_gradients(
                    lk.module, lk.ids, per_task, offsets=lk.offsets, per_sample_weights=lk.per_sample_weights)
                ids.append(flat_ids)
                row_grads.append(flat_grads)
            tables[ti] = (torch.cat(ids), torch.cat(row_grads, dim=1))
            self._stash_bytes += sum(t.numel() * t.element_size() for t in tables[ti])
        self._stash.append({"present": [self.tasks.index(t) for t in grads], "tables": tables})

    @property
    def stash_full(self) -> bool:
        """Whether the stashed row gradients passed :data:`STASH_BYTES` (the caller then flushes)."""
        return self._stash_bytes >= STASH_BYTES

    def clear_stash(self) -> None:
        self._stash, self._stash_bytes = [], 0

    def flush(self) -> list[torch.Tensor | None]:
        """The Grams of the stashed probes, in probe order, and the stash emptied: per view ``[P_v, fields + 1, T,
        T]`` float64 on the CPU (the probes that looked the view up; None if none did).

        All probes at once: per table one sort of ``(probe, row)`` keys and one scatter of the per-row Grams
        (:func:`~lightning_recanalysis.functional.conflict.field_gradient_gram` with ``probes``), and one copy
        to the host, where each probe alone would pay every small operation (and a device sync) again."""
        stash, n_tasks = self._stash, len(self.tasks)
        self.clear_stash()
        if not stash:
            return [None] * len(self.parts)
        n = len(stash)
        present = torch.zeros(n, n_tasks, dtype=torch.bool)
        for p, entry in enumerate(stash):
            present[p, entry["present"]] = True
        parts: dict[tuple[int, int], torch.Tensor] = {}  # (table, column group) -> [P, fields, T, T]
        looked_up: dict[int, torch.Tensor] = {}  # table -> [P], the probes that looked it up
        for ti, table in enumerate(self.tables):
            entries = [(p, e["tables"][ti]) for p, e in enumerate(stash) if ti in e["tables"]]
            if not entries:
                continue
            ids = torch.cat([ids for _, (ids, _) in entries]).long()  # int32 ids would overflow the keys below
            probe_of_id = torch.cat([torch.full_like(ids, p) for p, (ids, _) in entries])
            span = int(ids.max()) + 1 if ids.numel() else 1
            # One key per (probe, row), so that a row looked up in two probes is summed within each, not across.
            rows, summed = embedding_row_gradients(probe_of_id * span + ids,
                                                   torch.cat([g for _, (_, g) in entries], dim=1))
            looked = looked_up[ti] = torch.zeros(n, dtype=torch.bool)
            looked[[p for p, _ in entries]] = True
            starts = [f.start for f in table.fields]
            for gi, group in enumerate(table.column_groups):
                gram = field_gradient_gram(rows % span, summed, starts, columns=slice(group.start, group.stop),
                                           probes=rows // span, num_probes=n).cpu()
                gram[~looked] = float("nan")  # not looked up in that probe: not measured there
                parts[(ti, gi)] = gram
        grams: list[torch.Tensor | None] = []
        for keys in self.parts:
            found = [parts.get(key) for key in keys]
            if all(part is None for part in found):
                grams.append(None)
                continue
            gram = view_grams(found, present)
            measured = torch.stack([looked_up[ti] for ti in {ti for ti, _ in keys} if ti in looked_up]).any(0)
            grams.append(gram[measured] if bool(measured.any()) else None)
        return grams
