"""The one protocol by which a multi-task LightningModule tells the monitors its tasks, losses and predictions.

A multi-task module

1. names its tasks in ``task_names`` (two or more, in a fixed order);
2. in ``training_step``, stores each task's loss, *before* returning the total, in ``self.task_losses``
   (read by :class:`~lightning_recanalysis.callbacks.conflict.GradientConflictMonitor` just before backward,
   while the step's graph is still alive; a callback never sees ``training_step``'s return value that early);
3. in ``validation_step``, returns ``{"task_scores": {task: [B] scores or logits},
   "task_labels": {task: [B] 0/1 labels}}`` (read by
   :class:`~lightning_recanalysis.callbacks.entanglement.EntanglementMonitor`; other keys are allowed).

A module that leaves out (1) or declares no ``task_losses`` gets an error at ``setup`` with the lines to add.
"""

from __future__ import annotations

from typing import Sequence

PROTOCOL_EXAMPLE = """\
    class MyMultiTaskModel(LightningModule):
        task_names = ("click", "purchase")            # two tasks or more, fixed order

        def __init__(self):
            super().__init__()
            self.task_losses = {}                     # filled by every training_step
            ...

        def training_step(self, batch, batch_idx):
            ...
            self.task_losses = {"click": loss_click, "purchase": loss_purchase}
            return loss_click + loss_purchase

        def validation_step(self, batch, batch_idx):
            ...
            return {"task_scores": {"click": logit_click, "purchase": logit_purchase},
                    "task_labels": {"click": y_click, "purchase": y_purchase}}"""


def protocol_error(owner: str, problem: str) -> str:
    return f"{owner}: {problem}. The multi-task protocol of lightning_recanalysis is:\n\n{PROTOCOL_EXAMPLE}\n"


def resolve_tasks(pl_module, tasks: Sequence[str] | None, owner: str) -> list[str]:
    """The tasks to analyse: ``tasks`` if given, else the module's ``task_names``; two or more, all known."""
    declared = getattr(pl_module, "task_names", None)
    if declared is None and tasks is None:
        raise ValueError(protocol_error(owner, f"{type(pl_module).__name__} has no `task_names` attribute"))
    if declared is not None and (isinstance(declared, str) or not isinstance(declared, Sequence)):
        raise ValueError(protocol_error(owner, f"`task_names` must be a sequence of task names, got {declared!r}"))
    chosen = [str(t) for t in (tasks if tasks is not None else declared)]
    if len(chosen) < 2:
        raise ValueError(
            f"{owner} needs two tasks or more: it compares tasks with each other, and this model has "
            f"{len(chosen)} ({chosen}). For a single-task model use the collapse and correlation monitors instead."
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{owner}: task names must be unique, got {chosen}")
    if declared is not None and tasks is not None:
        unknown = [t for t in chosen if t not in list(declared)]
        if unknown:
            raise ValueError(f"{owner}: tasks {unknown} are not among the module's task_names {list(declared)}")
    return chosen
