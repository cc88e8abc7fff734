"""lightning_recanalysis: analyse recommendation models while they train.

Callbacks (attach to a ``lightning.pytorch.Trainer``):

- :class:`EmbeddingSpectrumMonitor`: dimensional collapse of embedding tables (``collapse/``).
"""

from .callbacks import EmbeddingSpectrumMonitor
from .tables import discover_tables

__version__ = "0.1.0"

__all__ = ["EmbeddingSpectrumMonitor", "discover_tables", "__version__"]
