#!/usr/bin/env bash
# Set up, then train every demo model with the monitors and write TensorBoard logs and reports under runs/.
# Extra arguments go to `python -m demo_models` (e.g. `bash scripts/demo.sh dcnv2 --epochs 3`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ "$#" -eq 0 ]; then set -- all; fi
python -m demo_models "$@" --out runs --quiet  # ends with the reports written and the TensorBoard command
