"""Lightning callbacks: each decides when to run an analysis and where to log it; the maths is in ``functional``."""

from .base import AnalysisCallback
from .correlation import FeatureCorrelationMonitor
from .conflict import GradientConflictMonitor
from .entanglement import EntanglementMonitor
from .field_pair import FieldPairCorrelationMonitor
from .report import AnalysisReport
from .spectrum import EmbeddingSpectrumMonitor

__all__ = ["AnalysisCallback", "AnalysisReport", "FeatureCorrelationMonitor", "EntanglementMonitor", "GradientConflictMonitor", "EmbeddingSpectrumMonitor", "FieldPairCorrelationMonitor"]
