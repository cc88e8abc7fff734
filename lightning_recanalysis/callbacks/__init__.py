"""Lightning callbacks: each decides when to run an analysis and where to log it; the maths is in ``functional``.

The end-of-run report and its callback, :class:`~lightning_recanalysis.AnalysisReport`, sit one layer above,
in :mod:`lightning_recanalysis.report`: nothing here imports the report."""

from .base import AnalysisCallback
from .correlation import FeatureCorrelationMonitor
from .conflict import GradientConflictMonitor
from .entanglement import EntanglementMonitor
from .field_pair import FieldPairCorrelationMonitor
from .spectrum import EmbeddingSpectrumMonitor

__all__ = ["AnalysisCallback", "FeatureCorrelationMonitor", "EntanglementMonitor", "GradientConflictMonitor", "EmbeddingSpectrumMonitor", "FieldPairCorrelationMonitor"]
