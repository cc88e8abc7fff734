#!/usr/bin/env bash
# Create .venv (if needed) and install the project with its test extras. The CPU build of torch 2.13.0 goes in
# first: asked for by a range, pip would otherwise fetch a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".[test]"
