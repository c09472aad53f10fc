#!/usr/bin/env bash
# The survey's comparison, measured: `make reproduce` (PROFILE=cpu, about 2.3 hours on 2 CPU cores with the SNF paper table),
# `make reproduce PROFILE=gpu` (images at GPU size on one CUDA device, 2D runs at the paper's size on the machine's CPU
# cores beside it; planned for 60 minutes of one H200 with 16 cores) or `make reproduce PROFILE=full` (the experiments as
# shipped, paper-sized, with no time limits: hours).
#
# Short windows: WINDOW_MIN=N stops this script after N minutes (every run in flight gets SIGTERM, checkpoints and
# stops; exit code 3); the same command later continues where it stopped. Run it again until it exits 0.
#
# Writes runs/reproduce/$PROFILE/{runs/<experiment>, sweeps/<name>, ablations.json, commands.sh}, then
# `relaxflow report` turns that folder into notebooks-export/survey-comparison.{md,ipynb}.
# Resumable: finished runs are kept, interrupted ones continue from their checkpoint; run it again after a stop.
set -euo pipefail

PROFILE=${1:-cpu}
BIN=${BIN:-target/release/relaxflow}
# Sweeps run this many trainings at once, one thread each (small 2D models are bound by per-operation overhead).
JOBS=${JOBS:-$(nproc)}
DIR=runs/reproduce/$PROFILE
mkdir -p "$DIR/runs" "$DIR/sweeps"
CMDS=$DIR/commands.sh
[ -f "$CMDS" ] || printf '#!/usr/bin/env bash\n# Commands that made %s (profile %s), in order.\n' "$DIR" "$PROFILE" > "$CMDS"

case $PROFILE in
  cpu) CPU=1; GPU=0 ;;
  gpu) CPU=0; GPU=1 ;;
  full) CPU=0; GPU=0 ;;
  *) echo "unknown PROFILE=$PROFILE (cpu, gpu or full)" >&2; exit 2 ;;
esac
if [ "$GPU" = 1 ] && ! "$BIN" info 2>/dev/null | grep -q "cuda available: true"; then
  echo "PROFILE=gpu needs a CUDA device (relaxflow info finds none); PROFILE=cpu is the CPU profile" >&2
  [ "${ALLOW_NO_GPU:-0}" = 1 ] || exit 2
fi

# WINDOW_MIN: this invocation's deadline (seconds since the epoch), or none.
DEADLINE=
if [ -n "${WINDOW_MIN:-}" ]; then
  WINDOW_S=$(awk -v m="$WINDOW_MIN" 'BEGIN { if (!(m + 0 > 0)) exit 1; printf "%d", m * 60 }') \
    || { echo "WINDOW_MIN must be a positive number of minutes, got '$WINDOW_MIN'" >&2; exit 2; }
  DEADLINE=$(( $(date +%s) + WINDOW_S ))
fi
# window_left: seconds left in the window (a large number without one); exits 3 when the window is over.
window_left() {
  if [ -z "$DEADLINE" ]; then echo 1000000000; return; fi
  local left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -le 5 ]; then
    echo "window of ${WINDOW_MIN} minutes over: run the same command again to continue ($DIR)" >&2
    exit 3
  fi
  echo "$left"
}

# log_run CMD...: record the command (once), then run it (inside the window: SIGTERM at its end, exit 3).
log_run() {
  grep -qxF "$*" "$CMDS" || echo "$*" >> "$CMDS"
  local left rc=0
  left=$(window_left) || exit 3
  timeout --signal=TERM --kill-after=300 "$left" "$@" || rc=$?
  if [ "$rc" = 124 ] || { [ -n "$DEADLINE" ] && [ "$rc" = 143 ]; }; then
    echo "window of ${WINDOW_MIN} minutes over during: $* (checkpointed; run the same command again to continue)" >&2
    exit 3
  fi
  return "$rc"
}

# DEVICE: --device of every run (PROFILE=gpu: cuda for images, cpu for the 2D lane); empty: relaxflow's default.
DEVICE=${DEVICE:-}
# train NAME [ARGS...]: one run folder DIR/runs/NAME; kept when finished, resumed when interrupted.
train() {
  local name=$1; shift
  local out=$DIR/runs/$name
  local dev=()
  if [ -n "$DEVICE" ]; then dev=(--device "$DEVICE"); fi
  if [ -f "$out/summary.json" ]; then echo "kept $out"; return; fi
  if [ -f "$out/config.toml" ]; then log_run "$BIN" train --resume "$out" "${dev[@]}"; return; fi
  log_run "$BIN" train "$name" --out "$out" "${dev[@]}" "$@"
}

# cpu ARGS...: the arguments only in the CPU profile (shorter runs, smaller networks).
cpu() { if [ "$CPU" = 1 ]; then echo "$@"; fi; }
# gpu MINUTES [ARGS...]: in the GPU profile, a training-time budget (train.time_limit_min) and the other arguments.
gpu() { if [ "$GPU" = 1 ]; then local m=$1; shift; echo --set train.time_limit_min=$m "$@"; fi; }

CLF_MNIST=$DIR/runs/mnist-classifier
CLF_FASHION=$DIR/runs/fashion-classifier

# 1. The classifiers that score image samples (before the image models, which look them up).
classifiers() {
  train mnist-classifier $(cpu --steps 1500)
  train fashion-classifier $(cpu --steps 1500)
}

# 2. The section 7 comparison on the checkerboard (sharp edges, entropy ln 32) and on the rings.
# Periodic test NLL (on 1000 points) for the families whose shipped configs only evaluate at the end, so that
# "steps to within 0.05 nats of the best" is measured for every family.
EVERY=$(cpu --set eval.every=500 --set eval.n_eval=1000)
DF_CPU=$(cpu --set model.net.hidden=[64,64] --set model.steps=30 --set train.batch_size=512 --set train.lr=5e-3 --steps 1500 --set eval.every=250 --set eval.n_eval=1000)
two_d() {
  train realnvp-checkerboard $(cpu --steps 5000)
  train nsf-checkerboard $(cpu --steps 3000)
  train augmented-flow-checkerboard $(cpu --steps 3000)
  train vae-checkerboard $(cpu --steps 3000)
  train ddpm-checkerboard $(cpu --steps 4000) $EVERY
  train score-checkerboard $(cpu --steps 4000) $EVERY
  [ "$GPU" = 1 ] || train diffflow-checkerboard $DF_CPU
  train cnf-checkerboard
  train realnvp-rings $(cpu --steps 5000)
  train nsf-rings $(cpu --steps 1500)
  train snf-rings $(cpu --steps 1500)
  [ "$GPU" = 1 ] || train diffflow-rings $DF_CPU
  train cnf-rings $(cpu --steps 1500)
  train realnvp-8gaussians $(cpu --steps 5000)
  train planar-8gaussians $(cpu --steps 5000)
  # 3. Figure 3: the double well, a flow against an SNF (minutes as shipped).
  train nf-doublewell
  train snf-doublewell
}

# DiffFlow's 2D runs at the paper's size (batch 5000, 2 x 128-wide networks, N = 30): the GPU lane of PROFILE=gpu.
diffflow_2d_gpu() {
  train diffflow-checkerboard $(gpu 2)
  train diffflow-rings $(gpu 2)
}

# 4. Images: bits/dim with kinds beside the published numbers, and sample quality with the classifiers.
# PROFILE=gpu: the shipped (GPU-size) networks, each with a training-time budget; 61 minutes planned in all with the
# evaluations (not yet measured on an H200: see docs/gpu/README.md).
IMG_CPU_FLOW=$(cpu --set model.hidden_channels=32 --set train.batch_size=32 --set eval.n_final=2000)
images() {
  train realnvp-mnist $IMG_CPU_FLOW $(cpu --steps 800) $(gpu 4) --set eval.classifier=\"$CLF_MNIST\"
  train glow-mnist $IMG_CPU_FLOW $(cpu --set model.steps=2 --steps 4000) $(gpu 10) --set eval.classifier=\"$CLF_MNIST\"
  train vae-mnist $(cpu --steps 1500 --set eval.n_final=2000) $(gpu 2) --set eval.classifier=\"$CLF_MNIST\"
  train vae-binary-mnist $(cpu --steps 3000 --set eval.n_final=2000) $(gpu 1) --set eval.classifier=\"$CLF_MNIST\"
  if [ "$GPU" = 1 ]; then
    train iwae-binary-mnist $(gpu 2) --set eval.classifier=\"$CLF_MNIST\"
    train survae-maxpool-mnist $(gpu 2) --set eval.classifier=\"$CLF_MNIST\"
    train scoresde-mnist $(gpu 3) --set eval.classifier=\"$CLF_MNIST\"
  else
    train glow-fashion $IMG_CPU_FLOW $(cpu --set model.steps=2 --steps 4000) --set eval.classifier=\"$CLF_FASHION\"
  fi
  if [ "$CPU" = 0 ]; then
    train maf-mnist $(gpu 2) --set eval.classifier=\"$CLF_MNIST\"
    train ddpm-mnist $(gpu 6) --set eval.classifier=\"$CLF_MNIST\"
    train diffflow-mnist $(gpu 9) --set eval.classifier=\"$CLF_MNIST\"
    train cnf-mnist $(gpu 3) --set eval.classifier=\"$CLF_MNIST\"
  fi
}

# 4b. CIFAR-10, when data/cifar10 holds it (`make data CIFAR10=...`; never downloaded here). PROFILE=gpu: every image
# family at 3x32x32 with a training-time budget each (35 minutes in all with the classifier, beyond the 61 above; not yet measured on a
# GPU). PROFILE=cpu: a 16x16 centre crop with small networks, so the report shows the colour pipeline working.
CIFAR_CPU=$(cpu --set data.image_size=16 --set train.batch_size=32 --set eval.n_final=500)
cifar10() {
  [ -f data/cifar10/cifar-10-batches-bin/test_batch.bin ] || { echo "no data/cifar10: the CIFAR-10 runs are skipped (make data CIFAR10=...)" >&2; return 0; }
  # The classifier first (at the runs' image size): its features score every run's samples.
  train cifar10-classifier $(cpu --set data.image_size=16 --set model.channels=[32,64] --steps 1500) $(gpu 3)
  local clf="--set eval.classifier=\"$DIR/runs/cifar10-classifier\""
  train glow-cifar10 $CIFAR_CPU $(cpu --set model.hidden_channels=32 --set model.steps=2 --steps 1500) $(gpu 8) $clf
  train ddpm-cifar10 $CIFAR_CPU $(cpu --set model.net.unet_ch=32 --set model.net.unet_groups=8 --steps 2000) $(gpu 8) $clf
  if [ "$CPU" = 0 ]; then
    train realnvp-cifar10 $(gpu 4) $clf
    train survae-maxpool-cifar10 $(gpu 3) $clf
    train vae-cifar10 $(gpu 2) $clf
    train scoresde-cifar10 $(gpu 3) $clf
    train diffflow-cifar10 $(gpu 4) $clf
  fi
}

# 5. The role of stochasticity (survey §7.5): noise ablations on sharp 2D targets, over seeds (the GPU profile keeps
# the CPU profile's seeds and grids: they run on the CPU cores beside the GPU).
SEEDS=$([ "$CPU" = 1 ] || [ "$GPU" = 1 ] && echo 2 || echo 5)
SMALL=$([ "$CPU" = 1 ] || [ "$GPU" = 1 ] && echo 1 || echo 0)
sweep_dev() { if [ -n "$DEVICE" ]; then echo --device "$DEVICE"; fi; }
sweep() {
  local name=$1 exp=$2; shift 2
  log_run "$BIN" sweep "$exp" --seeds "$SEEDS" --jobs "$JOBS" $(sweep_dev) --out "$DIR/sweeps/$name" "$@"
}
sweeps() {
  for ds in checkerboard rings; do
    sweep "diffflow-g-$ds" "ablation-diffflow-$ds" --set model.g=$([ "$SMALL" = 1 ] && echo 0.001,0.2,1.0 || echo 0.001,0.01,0.05,0.2,0.5,1.0)
    sweep "flow-$ds" "ablation-flow-$ds"
  done
  sweep snf-none-rings ablation-snf-rings --set model.stochastic=\"none\"
  sweep snf-mh-steps-rings ablation-snf-rings --set model.mc_steps=$([ "$SMALL" = 1 ] && echo 1,10 || echo 1,5,10,20)
  sweep snf-langevin-rings ablation-snf-rings --set model.stochastic=\"langevin\" --set model.step_size=$([ "$SMALL" = 1 ] && echo 0.003,0.01,0.03 || echo 0.001,0.003,0.01,0.03,0.1)
  # The SNF paper's double-well table (Wu et al. 2020, experiment 1): every row trained 10 times at the paper's protocol
  # (every profile: about 20 minutes of 2 CPU cores); the report puts mean ± sd beside the paper's numbers.
  for e in snf-paper-rnvp snf-paper-nsf snf-paper-rnvp-mc snf-paper-nsf-mc snf-paper-rnvp-amc snf-paper-rnvp-langevin snf-paper-rnvp-hmc; do
    log_run "$BIN" sweep "$e" --seeds 10 --jobs "$JOBS" $(sweep_dev) --out "$DIR/sweeps/$e"
  done
}

if [ "$GPU" = 1 ]; then
  # Three lanes at once: the GPU trains the image models (and DiffFlow's 2D runs) while the CPU cores train the 2D
  # models (faster there: a small 2D flow's step is ~700 kernel launches) and the sweeps. Lane logs: DIR/lane-*.log.
  CORES=$(nproc)
  SWEEP_JOBS=${SWEEP_JOBS:-$(( CORES > 8 ? CORES - 6 : 1 ))}
  ( export DEVICE=cpu OMP_NUM_THREADS=4; two_d ) > "$DIR/lane-2d.log" 2>&1 &
  LANE_2D=$!
  ( export DEVICE=cpu OMP_NUM_THREADS=1 JOBS=$SWEEP_JOBS; sweeps ) > "$DIR/lane-sweeps.log" 2>&1 &
  LANE_SWEEPS=$!
  echo "2D runs and sweeps on the CPU cores: $DIR/lane-2d.log, $DIR/lane-sweeps.log" >&2
  ( export DEVICE=cuda; classifiers; diffflow_2d_gpu; images; cifar10 ) &
  LANE_GPU=$!
  rc=0
  for lane in "$LANE_GPU" "$LANE_2D" "$LANE_SWEEPS"; do
    wait "$lane" || { s=$?; [ "$rc" != 0 ] || rc=$s; }
  done
  if [ "$rc" != 0 ]; then
    tail -n 5 "$DIR/lane-2d.log" "$DIR/lane-sweeps.log" >&2
    exit "$rc"
  fi
else
  classifiers
  two_d
  images
  cifar10
  sweeps
fi

cat > "$DIR/ablations.json" <<JSON
[
  {"title": "DiffFlow on the checkerboard: diffusion coefficient g", "sweep": "sweeps/diffflow-g-checkerboard", "baseline": "sweeps/flow-checkerboard", "xlabel": "g (small g: nearly deterministic)"},
  {"title": "DiffFlow on the rings: diffusion coefficient g", "sweep": "sweeps/diffflow-g-rings", "baseline": "sweeps/flow-rings", "xlabel": "g (small g: nearly deterministic)"},
  {"title": "SNF on the rings: Metropolis steps per block", "sweep": "sweeps/snf-mh-steps-rings", "baseline": "sweeps/snf-none-rings", "xlabel": "MH steps per block (baseline: none)"},
  {"title": "SNF on the rings: Langevin step size", "sweep": "sweeps/snf-langevin-rings", "baseline": "sweeps/snf-none-rings", "xlabel": "Langevin step size (baseline: none)"}
]
JSON

# 6. The report (the GPU profile's beside the committed CPU one).
log_run "$BIN" report "$DIR" --out "$([ "$GPU" = 1 ] && echo notebooks-export/gpu || echo notebooks-export)"
