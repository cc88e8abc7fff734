"""torchmetrics ``Metric`` classes that accumulate analysis state over batches and sum it across processes."""

from .behavior_target import BehaviorTargetCounts

__all__: list[str] = ["BehaviorTargetCounts"]
