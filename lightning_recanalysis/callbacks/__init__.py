"""Lightning callbacks: each decides when to run an analysis and where to log it; the maths is in ``functional``.

The end-of-run report and its callback, :class:`~lightning_recanalysis.AnalysisReport`, sit one layer above,
in :mod:`lightning_recanalysis.report`: nothing here imports the report."""

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".base": ("AnalysisCallback",),
    ".correlation": ("FeatureCorrelationMonitor",),
    ".conflict": ("GradientConflictMonitor",),
    ".entanglement": ("EntanglementMonitor",),
    ".field_pair": ("FieldPairCorrelationMonitor",),
    ".spectrum": ("EmbeddingSpectrumMonitor",),
})
