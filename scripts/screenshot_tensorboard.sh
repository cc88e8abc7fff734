#!/usr/bin/env bash
# Screenshot TensorBoard tabs over a log directory with headless Chromium (Debian packages chromium and
# chromium-driver): bash scripts/screenshot_tensorboard.sh LOGDIR OUT_DIR [TAB ...]
set -euo pipefail
logdir=$1; out=$2; shift 2
tabs=${*:-custom_scalars images text}
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$(dirname "$0")/../.venv/bin/tensorboard" --logdir "$logdir" --host 127.0.0.1 --port "$port" --load_fast false \
    >/dev/null 2>&1 &
tb=$!
trap 'kill $tb' EXIT
sleep 10
profile=$(mktemp -d)
for tab in $tabs; do
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1400,1000 \
        --virtual-time-budget=15000 --screenshot="$out/tensorboard_$tab.png" "http://127.0.0.1:$port/#$tab" 2>/dev/null
    echo "$out/tensorboard_$tab.png"
done
