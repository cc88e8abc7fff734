#!/usr/bin/env bash
# Create .venv (if needed) and install the project with its test extras. The CPU build of torch 2.13.0 goes in
# first: asked for by a range, pip would otherwise fetch a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_START=$SECONDS
step() { echo "[setup] $*"; }  # one line per step: the slow ones (torch, the project) say what they wait for
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
# What is installed below depends on pyproject.toml, this script and the Python alone: once a set-up from the same
# ones has completed in this .venv (the stamp is written last), everything is there and the installs are skipped
# (pip would only find every requirement satisfied, after a resolver pass and torchrec's import check: about 20 s).
# SETUP_FORCE=1 installs again.
STAMP=.venv/.setup-stamp
INPUTS=$({ python --version; cat pyproject.toml scripts/setup.sh; } | sha256sum | cut -d" " -f1)
if [ "${SETUP_FORCE:-0}" = 0 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$INPUTS" ]; then
    step "installed already from this pyproject.toml and setup.sh (.venv/.setup-stamp; SETUP_FORCE=1 installs again)"
else
    rm -f "$STAMP"
    step "updating pip"
    python -m pip install --quiet --upgrade pip
    if ! python -c "import torch" 2>/dev/null; then
        step "installing torch 2.13.0, the CPU build (about 200 MB; a minute or more)"
        python -m pip install --quiet "torch==2.13.0"
    fi
    step "installing the project with its test extras (pip install -e \".[test]\")"
    # setuptools reports every editable install with an "Editable installation." warning (information only, its
    # own words); it is not the project's to fix, so it is kept off the demo's stderr.
    PYTHONWARNINGS="ignore:Editable installation" python -m pip install --quiet -e ".[test]"
    # TorchRec, for the tests of its EmbeddingBagCollection / EmbeddingCollection layouts: torchrec 1.8.0 with the
    # CPU build of fbgemm 1.8.0 loads on torch 2.13.0 on a CPU (1.9.x does not). torchrec's metadata asks for the GPU
    # build of fbgemm, so every package here goes in with --no-deps (nothing may replace the CPU torch), with what
    # torchrec imports; then the pinned torch is checked.
    step "installing torchrec 1.8.0 and the CPU build of fbgemm (the TorchRec tests)"
    python -m pip install --quiet --no-deps "torchrec==1.8.0" "fbgemm-gpu-cpu==1.8.0" "tensordict==0.15.3" \
        "pyvers==0.2.3" "cloudpickle==3.1.3" "orjson==3.13.0" "pyre-extensions==0.0.32" "typing-inspect==0.9.0" \
        "mypy-extensions==1.2.0"
    python -c "import torch, torchrec; assert torch.__version__.startswith('2.13.0'), torch.__version__"
    echo "$INPUTS" > "$STAMP"
fi
# Bytecode of the package and the demos, as a regular (non-editable) install writes it: where
# PYTHONDONTWRITEBYTECODE is set, as on this project's machines, every process would otherwise compile each module
# it imports from source (about 30 ms for a multi-task run's monitors). Python ignores bytecode older than its source.
step "writing the bytecode of the package and the demos"
python -m compileall -q lightning_recanalysis demo_models > /dev/null
# The compiled counting loops (numba, cache=True) compile on their first call and keep their machine code beside
# their module: compiled here, once, the first run that counts loads them (under a second) instead of compiling
# them (several seconds).
step "compiling the counting loops (numba's cache)"
python -c "from lightning_recanalysis.metrics.warm_up import warm_up; warm_up()"

# ---- Browser for tests/browser/ (headless Chromium renders a demo report) --------------------------------------
# Debian's chromium and chromium-driver, installed when missing and apt-get can (as root); otherwise those tests
# skip and say why. SETUP_BROWSER=0 leaves the browser out.
if [ "${SETUP_BROWSER:-1}" != 0 ] && ! command -v chromium >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    step "installing chromium and chromium-driver for tests/browser (apt-get)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
            > /tmp/setup-chromium.log 2>&1; then
        step "could not install chromium (see /tmp/setup-chromium.log): tests/browser will skip"
    fi
fi
# ----------------------------------------------------------------------------------------------------------------
step "ready in $((SECONDS - SETUP_START)) s"
