"""lightning_recanalysis: analyse recommendation models while they train.

Callbacks (attach to a ``lightning.pytorch.Trainer``):

- :class:`EmbeddingSpectrumMonitor`: dimensional collapse of embedding tables (``collapse/``).
- :class:`FeatureCorrelationMonitor`: target-behaviour correlation, in the data and as learned (``correlation/``).
- :class:`FieldPairCorrelationMonitor`: field x field correlation with the label, in the data and as learned
  (``correlation/field_pair/``).
- :class:`GradientConflictMonitor`: per-task gradient conflict on shared embeddings (``conflict/``).
- :class:`AnalysisReport`: the dashboard layout at fit start and the end-of-run report.
- :class:`EntanglementMonitor`: each task's embedding view of (user, item) pairs, by label subset, and with
  single-task references the authors' conflict subsets (``entanglement/``).

A model already trained: :func:`analyze` (a module, in a notebook) and :func:`analyze_checkpoints` (a checkpoint,
a directory of them, a state dict; ``python -m lightning_recanalysis analyze``) run the same monitors once.
"""

from ._lazy import lazy_exports
from ._version import __version__

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, _ = lazy_exports(__name__, {
    ".callbacks": (
        "EmbeddingSpectrumMonitor", "FeatureCorrelationMonitor", "EntanglementMonitor", "GradientConflictMonitor",
        "FieldPairCorrelationMonitor"
    ),
    ".report": ("AnalysisReport",),
    ".offline": ("analyze", "analyze_checkpoints"),
    ".model.tables": ("discover_tables",),
})
__all__ = ["AnalysisReport", "EmbeddingSpectrumMonitor", "FeatureCorrelationMonitor", "EntanglementMonitor",
           "GradientConflictMonitor", "FieldPairCorrelationMonitor", "analyze", "analyze_checkpoints", "discover_tables",
           "__version__"]
