#!/usr/bin/env bash
# The README's TensorBoard picture (docs/tensorboard-sweep.png): a real sweep, a real TensorBoard server, a headless
# Chromium screenshot of its scalars page. Needs `make test` (tensorboard in .venv) and chromium (Debian: apt-get
# install chromium).
#   bash scripts/tensorboard_screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/tensorboard-sweep.png}
dir=$(mktemp -d)
trap 'kill $tb 2>/dev/null || true; rm -rf "$dir"' EXIT
target/release/relaxflow sweep realnvp-moons --set model.n_layers=2,8 --seeds 2 --steps 1500 --set train.log_every=25 \
  --set eval.every=150 --set eval.n_eval=2000 --set train.sample_every=500 --out "$dir/sweep"
.venv/bin/tensorboard --logdir "$dir/sweep" --port 6123 >"$dir/tb.log" 2>&1 &
tb=$!
sleep 8
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900 --virtual-time-budget=15000 \
  --screenshot="$out" "http://localhost:6123/?darkMode=false#scalars&tagFilter=loss%7Ctest_nll&_smoothingWeight=0"
echo "wrote $out"
