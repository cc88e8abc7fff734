"""torchmetrics ``Metric`` classes that accumulate analysis state over batches and sum it across processes."""

from .behavior_target import BehaviorTargetCounts
from .field_pair import FieldPairCounts

__all__: list[str] = ["BehaviorTargetCounts", "FieldPairCounts"]
