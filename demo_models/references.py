"""The single-task references of the entanglement monitor's conflict subsets: a Shared-Bottom on each task alone.

Pan et al. (KDD 2024) find the pairs two tasks disagree on with one single-task model per task. For the
multi-task demos, ``python -m demo_models`` first trains these (same data split, same table layout, one task's
labels each) and hands their run directories to :class:`~lightning_recanalysis.EntanglementMonitor`, which
reads each one's checkpoint once.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

#: The demos that take references; the references themselves are Shared-Bottoms.
MULTITASK_MODELS = ("shared_bottom", "mmoe", "ple", "stem")
#: The references' Adam learning rate: 5 times the demos' own, so that their user-item geometry settles within
#: the demo's few epochs (on the synthetic data, 4 epochs: the conflict subset's precision against the planted
#: pairs rises from 0.2 at 2e-3 to about 0.45).
REFERENCE_LR = 1e-2


def train_references(data: str, seed: int, out: Path, epochs: int | None = None, quiet: bool = True,
                     accelerator: str = "cpu", n_samples: int | None = None) -> dict[str, Path]:
    """Train one single-task Shared-Bottom per task of ``data``; returns ``{task: its run directory}``."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from .data.multitask import SYNTHETIC_TASKS, CENSUS_TASKS
    from .multitask import build
    from .progress import EpochLines, log_every, say

    tasks = SYNTHETIC_TASKS if data.startswith("synthetic") else CENSUS_TASKS
    runs = {}
    for task in tasks:
        say(f"single-task reference for '{task}' on {data} (for the conflict subsets): building and training")
        pl.seed_everything(seed, workers=True, verbose=False)
        experiment = build("shared_bottom", data, seed, monitors=False, n_samples=n_samples, task=task,
                           lr=REFERENCE_LR)
        logger = TensorBoardLogger(str(out), name=f"reference_{task}-{data}", version="single-task",
                                   default_hp_metric=False)
        if Path(logger.log_dir).is_dir():  # a fresh fit, as for the demos themselves
            shutil.rmtree(logger.log_dir)
        trainer = pl.Trainer(max_epochs=epochs or experiment.max_epochs, logger=logger, accelerator=accelerator,
                             devices=1, enable_progress_bar=not quiet and sys.stderr.isatty(),
                             enable_model_summary=False,
                             callbacks=[EpochLines(f"reference '{task}'")],
                             log_every_n_steps=log_every(experiment.train_loader),
                             deterministic=True if accelerator == "cpu" else "warn")
        start = time.perf_counter()
        trainer.fit(experiment.module, experiment.train_loader, experiment.val_loader)
        say(f"single-task reference for '{task}' on {data}: {experiment.description}; trained in "
            f"{time.perf_counter() - start:.1f} s -> {logger.log_dir}")
        runs[task] = Path(logger.log_dir)
    return runs


def existing_references(data: str, root: Path) -> dict[str, Path]:
    """The single-task references that an earlier call of the demo trained under ``root`` (``--out`` then), as
    ``{task: run directory}``; a clear error if one is missing."""
    from .data.multitask import SYNTHETIC_TASKS, CENSUS_TASKS

    tasks = SYNTHETIC_TASKS if data.startswith("synthetic") else CENSUS_TASKS
    runs = {task: Path(root) / f"reference_{task}-{data}" / "single-task" for task in tasks}
    missing = [str(path) for path in runs.values() if not any(path.rglob("*.ckpt"))] if Path(root).is_dir() else \
        [str(path) for path in runs.values()]
    if missing:
        raise SystemExit(f"--references {root}: no single-task reference checkpoint under {', '.join(missing)}. "
                         f"Train them once with `python -m demo_models MODEL --data {data} --out {root}` (a multi-task "
                         "model with monitors trains them), or leave --references out.")
    return runs
