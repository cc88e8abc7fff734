#!/usr/bin/env bash
# Regenerate the documentation's TensorBoard pictures (docs/images/*.png) from a demo run, with headless Chromium
# (Debian packages chromium and chromium-driver) driven by selenium (installed into .venv when missing):
#
#   bash scripts/screenshot_tensorboard.sh [LOGDIR] [OUT_DIR]      # defaults: runs docs/images
#
# LOGDIR is what `bash scripts/demo.sh` (or `python -m demo_models all --out LOGDIR`) wrote. It writes
#   dcnv2_collapse.png            Images tab: the DCNv2 demo's live spectrum heatmap (impossible cells hatched) and
#                                 interaction matrix (field order), at their own size
#   dashboard_custom_scalars.png  Custom Scalars tab: one chart per field, the concatenated and the per-feature DCNv2
#                                 side by side in their run colours
#   entanglement_live.png         Images tab at TensorBoard's default card size: the conflict subsets of MMoE and
#                                 STEM, one mode per image
# and copies the report figures the docs show from the runs' reports (figures/*.png) into OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
logdir=${1:-runs}; out=${2:-docs/images}
mkdir -p "$out"
. .venv/bin/activate
command -v chromium >/dev/null && command -v chromedriver >/dev/null || {
    echo "error: needs chromium and chromedriver (apt-get install chromium chromium-driver)" >&2; exit 1; }
python -c "import selenium" 2>/dev/null || python -m pip install --quiet selenium
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tensorboard --logdir "$logdir" --host 127.0.0.1 --port "$port" --load_fast false >/dev/null 2>&1 &
tb=$!
trap 'kill $tb' EXIT
python - "$port" "$out" <<'EOF'
import shutil, sys, time, urllib.request
from selenium import webdriver

port, out = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
for _ in range(120):  # TensorBoard reads the event files first
    try:
        if urllib.request.urlopen(f"{base}/data/runs", timeout=2).read() not in (b"[]", b""):
            break
    except OSError:
        pass
    time.sleep(1)
options = webdriver.ChromeOptions()
options.binary_location = shutil.which("chromium")
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
             "--hide-scrollbars"):
    options.add_argument(flag)
# TensorBoard's dashboards live in shadow roots: find an element by its tag and text through all of them.
DEEP = """const [tag, text] = arguments; const seen = [];
function walk(root) { for (const el of root.querySelectorAll('*')) {
    if (el.tagName.toLowerCase() === tag && el.textContent.includes(text)) seen.push(el);
    if (el.shadowRoot) walk(el.shadowRoot); } }
walk(document); return seen[0] || null;"""


def shot(name, hash_, actual_size=False, wait=8):
    # A fresh browser a picture: TensorBoard keeps settings such as "Show actual image size" in the profile.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    driver.get(f"{base}/#{hash_}")
    time.sleep(wait)
    if actual_size:
        box = driver.execute_script(DEEP, "paper-checkbox", "Show actual image size")
        if box is not None:
            driver.execute_script("arguments[0].click()", box)
            time.sleep(3)
    driver.save_screenshot(f"{out}/{name}")
    driver.quit()
    print(f"{out}/{name}")


shot("dcnv2_collapse.png", "images&regexInput=%5Edcnv2-synthetic&tagFilter=spectrum_heatmap%7Cinteraction_information",
     actual_size=True)
shot("dashboard_custom_scalars.png", "custom_scalars&regexInput=%5Edcnv2")
shot("entanglement_live.png",  # MMoE's shared table beside STEM's shared chunk, one conflict mode an image
     "images&regexInput=%5E(mmoe%7Cstem)-synthetic&tagFilter=entanglement%2Fconflict%2Fembedding(%5C%5Bshared%5C%5D)%3F%2F")
EOF
# The report figures the docs show, from the same runs' reports.
copy() { if [ -f "$logdir/$1" ]; then cp "$logdir/$1" "$out/$2" && echo "$out/$2"; fi; }
copy dcnv2-synthetic/monitors/figures/collapse_embedding.embedding_spectrum.png collapse_spectrum_heatmap.png
copy dcnv2-synthetic/monitors/figures/collapse_embedding.embedding_ia_vs_init.png collapse_ia_vs_init.png
copy dcnv2-synthetic/monitors/figures/collapse_embedding.embedding_ia_over_time.png collapse_ia_over_time.png
copy dcnv2-synthetic/monitors/figures/collapse_interaction.png collapse_interaction.png
copy dcnv2-synthetic/monitors/figures/field_pair_mutual_information.png field_pair_mutual_information.png
copy dcnv2-synthetic/monitors/figures/field_pair_interaction_information.png field_pair_interaction_information.png
copy dcnv2-synthetic/monitors/figures/field_pair_learned.png field_pair_learned_strength.png
copy dcnv2-synthetic/monitors/figures/field_pair_agreement.png field_pair_agreement.png
copy tin-synthetic/monitors/figures/correlation_agreement.png correlation_agreement.png
copy tin-synthetic/monitors/figures/correlation_same_category.png correlation_same_category.png
copy mmoe-synthetic/monitors/figures/conflict_embedding_cosines.png conflict_cosine_heatmap_mmoe.png
copy mmoe-synthetic/monitors/figures/conflict_trend.png conflict_trend_mmoe.png
copy stem-synthetic/monitors/figures/conflict_embedding_shared_cosines.png conflict_cosine_heatmap_stem_shared.png
