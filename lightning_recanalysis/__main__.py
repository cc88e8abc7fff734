"""``python -m lightning_recanalysis``: the command line of :mod:`lightning_recanalysis.cli`.

    python -m lightning_recanalysis report RUN_DIR [--out DIR] [thresholds...]
    python -m lightning_recanalysis compare RUN_A RUN_B [...] --out DIR
"""

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
