"""The one protocol by which a multi-task LightningModule tells the monitors its tasks, losses and predictions.

A multi-task module

1. names its tasks in ``task_names`` (two or more, in a fixed order);
2. in ``training_step``, stores each task's loss, *before* returning the total, in ``self.task_losses``
   (read by :class:`~lightning_recanalysis.callbacks.conflict.GradientConflictMonitor` just before backward,
   while the step's graph is still alive; a callback never sees ``training_step``'s return value that early);
3. in ``validation_step``, returns ``{"task_scores": {task: [B] scores or logits},
   "task_labels": {task: [B] 0/1 labels}}`` (read by
   :class:`~lightning_recanalysis.callbacks.entanglement.EntanglementMonitor`; other keys are allowed);
4. to analyse a trained model (``trainer.validate``/``trainer.test``), stores each task's loss in
   ``self.task_losses`` in ``validation_step`` (``test_step``) too, as in ``training_step``: the gradient probe
   then runs on evaluation batches (and ``test_step`` returns what ``validation_step`` returns, for a test).

A module that leaves out (1) or declares no ``task_losses`` gets an error at ``setup`` with the lines to add.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["PROTOCOL_EXAMPLE", "protocol_error", "resolve_tasks", "check_lookups_still_called",
           "validation_loop_problem"]

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
            self.task_losses = {"click": loss_click, "purchase": loss_purchase}  # to analyse a checkpoint
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


def check_lookups_still_called(pl_module, modules: dict[str, object], owner: str) -> None:
    """At fit start: every embedding module hooked by name at setup is still the model's module of that name.

    Both multi-task monitors read the lookups the model makes (forward hooks on its ``nn.Embedding`` modules).
    A ``configure_model`` that hands the tables to an engine of its own (TorchRec's ``DistributedModelParallel``:
    fused kernels look the rows up, the modules found at setup are never called again) would leave them without a
    single lookup, so that is an error here, before the first step, naming the table. FSDP2 and DDP keep the
    modules (and their lookups) as they are.
    """
    for name, module in modules.items():
        try:
            current = pl_module.get_submodule(name)
        except AttributeError:
            current = None
        if current is not module:
            raise ValueError(
                f"{owner}: the embedding module `{name}` found at setup is "
                f"{'gone' if current is None else 'replaced by a ' + type(current).__name__} at fit start: "
                "configure_model handed it to another engine (TorchRec's DistributedModelParallel looks rows up in "
                "fused kernels), so its lookups cannot be read. Exclude it with exclude=[...], or shard the model "
                "with FSDP2, whose modules keep their lookups.")


def validation_loop_problem(trainer, pl_module) -> str | None:
    """Why ``trainer`` will run no validation batch for ``pl_module`` this fit, or None if it will (as far as the
    trainer can tell before its first validation: a loader that turns out empty is seen only then)."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if getattr(trainer, "limit_val_batches", 1) == 0:
        return "the Trainer has limit_val_batches=0: give it validation batches"
    if not is_overridden("validation_step", pl_module):
        return f"{type(pl_module).__name__} defines no validation_step"
    try:  # Lightning's own record of whether validation data were given (fit(val_dataloaders=...) or the module's)
        source = trainer.fit_loop.epoch_loop.val_loop._data_source
        if not source.is_defined():
            return "no validation data (pass val_dataloaders= to fit, or define val_dataloader)"
    except AttributeError:  # another Lightning version: nothing to tell before the first validation
        pass
    return None
