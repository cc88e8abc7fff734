"""Where the real sample data sets live: ``$RECANALYSIS_DATA``, else ``../shared/data`` beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    env = os.environ.get("RECANALYSIS_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def dataset_path(name: str, filename: str) -> Path:
    """Path of one file of a sample data set, with an error that says where it was looked for."""
    path = data_root() / name / filename
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the sample data set '{name}' is not there. Point RECANALYSIS_DATA at the folder "
            f"that holds '{name}/', or use the synthetic data (--data synthetic)."
        )
    return path
