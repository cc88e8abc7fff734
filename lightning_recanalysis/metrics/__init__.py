"""torchmetrics ``Metric`` classes that accumulate analysis state over batches and sum it across processes."""

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".behavior_target": ("BehaviorTargetCounts",),
    ".field_pair": ("FieldPairCounts",),
})
