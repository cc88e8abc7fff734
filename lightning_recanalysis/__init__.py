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
"""

from ._version import __version__
from .callbacks import EmbeddingSpectrumMonitor, FeatureCorrelationMonitor
from .callbacks import EntanglementMonitor, GradientConflictMonitor
from .callbacks import FieldPairCorrelationMonitor
from .report import AnalysisReport
from .tables import discover_tables

__all__ = ["AnalysisReport", "EmbeddingSpectrumMonitor", "FeatureCorrelationMonitor", "EntanglementMonitor", "GradientConflictMonitor", "FieldPairCorrelationMonitor", "discover_tables", "__version__"]
