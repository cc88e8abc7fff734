"""torchmetrics ``Metric`` classes that accumulate analysis state over batches and sum it across processes."""

__all__: list[str] = []
