"""Analysing a model already trained: a module in a notebook, a checkpoint, a series of checkpoints.

- :func:`analyze`: one call on a ``LightningModule`` or a plain ``nn.Module``, over a dataloader or none;
- :func:`analyze_checkpoints`: a Lightning checkpoint (through its module's class), a directory of checkpoints
  (the trajectory, each at its saved epoch and global step), or a plain state dict (spectra of its tables);
  ``python -m lightning_recanalysis analyze`` is its command line.

Both run the monitors through ``trainer.validate`` (or ``trainer.test``), as a live run would analyse the same
weights at the end of an epoch (:mod:`lightning_recanalysis.callbacks.evaluation`), and write the event files and
the report that ``report`` and ``compare`` read like any run's.
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".session": ("AnalysisResult", "AnalysisSession", "analyze"),
    ".checkpoints": ("analyze_checkpoints", "checkpoint_files", "default_monitors", "import_object"),
    ".modules": ("PlainModule", "module_from_state_dict"),
})
