#!/usr/bin/env bash
# The survey's comparison, measured: `make reproduce` (PROFILE=cpu, about 1.5 hours on 2 CPU cores with the SNF paper table) or
# `make reproduce PROFILE=full` (the experiments as shipped, paper-sized: hours, meant for a GPU).
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
  cpu) CPU=1 ;;
  full) CPU=0 ;;
  *) echo "unknown PROFILE=$PROFILE (cpu or full)" >&2; exit 2 ;;
esac

# log_run CMD...: record the command (once), then run it.
log_run() {
  grep -qxF "$*" "$CMDS" || echo "$*" >> "$CMDS"
  "$@"
}

# train NAME [ARGS...]: one run folder DIR/runs/NAME; kept when finished, resumed when interrupted.
train() {
  local name=$1; shift
  local out=$DIR/runs/$name
  if [ -f "$out/summary.json" ]; then echo "kept $out"; return; fi
  if [ -f "$out/config.toml" ]; then log_run "$BIN" train --resume "$out"; return; fi
  log_run "$BIN" train "$name" --out "$out" "$@"
}

# cpu ARGS...: the arguments only in the CPU profile (shorter runs, smaller networks).
cpu() { if [ "$CPU" = 1 ]; then echo "$@"; fi; }

# 1. The classifiers that score image samples (before the image models, which look them up).
train mnist-classifier $(cpu --steps 1500)
train fashion-classifier $(cpu --steps 1500)
CLF_MNIST=$DIR/runs/mnist-classifier
CLF_FASHION=$DIR/runs/fashion-classifier

# 2. The section 7 comparison on the checkerboard (sharp edges, entropy ln 32) and on the rings.
# Periodic test NLL (on 1000 points) for the families whose shipped configs only evaluate at the end, so that
# "steps to within 0.05 nats of the best" is measured for every family.
EVERY=$(cpu --set eval.every=500 --set eval.n_eval=1000)
DF_CPU=$(cpu --set model.net.hidden=[64,64] --set model.steps=30 --set train.batch_size=512 --set train.lr=5e-3 --steps 1500 --set eval.every=250 --set eval.n_eval=1000)
train realnvp-checkerboard $(cpu --steps 5000)
train nsf-checkerboard $(cpu --steps 3000)
train augmented-flow-checkerboard $(cpu --steps 3000)
train vae-checkerboard $(cpu --steps 3000)
train ddpm-checkerboard $(cpu --steps 4000) $EVERY
train score-checkerboard $(cpu --steps 4000) $EVERY
train diffflow-checkerboard $DF_CPU
train realnvp-rings $(cpu --steps 5000)
train nsf-rings $(cpu --steps 1500)
train snf-rings $(cpu --steps 1500)
train diffflow-rings $DF_CPU
train realnvp-8gaussians $(cpu --steps 5000)
train planar-8gaussians $(cpu --steps 5000)

# 3. Figure 3: the double well, a flow against an SNF (minutes as shipped).
train nf-doublewell
train snf-doublewell

# 4. Images: bits/dim with kinds beside the published numbers, and sample quality with the classifiers.
IMG_CPU_FLOW=$(cpu --set model.hidden_channels=32 --set train.batch_size=32 --set eval.n_final=2000)
train realnvp-mnist $IMG_CPU_FLOW $(cpu --steps 800) --set eval.classifier=\"$CLF_MNIST\"
train glow-mnist $IMG_CPU_FLOW $(cpu --set model.steps=2 --steps 4000) --set eval.classifier=\"$CLF_MNIST\"
train vae-mnist $(cpu --steps 1500 --set eval.n_final=2000) --set eval.classifier=\"$CLF_MNIST\"
train vae-binary-mnist $(cpu --steps 3000 --set eval.n_final=2000) --set eval.classifier=\"$CLF_MNIST\"
train glow-fashion $IMG_CPU_FLOW $(cpu --set model.steps=2 --steps 4000) --set eval.classifier=\"$CLF_FASHION\"
if [ "$CPU" = 0 ]; then
  train maf-mnist --set eval.classifier=\"$CLF_MNIST\"
  train ddpm-mnist --set eval.classifier=\"$CLF_MNIST\"
  train diffflow-mnist --set eval.classifier=\"$CLF_MNIST\"
fi

# 5. The role of stochasticity (survey §7.5): noise ablations on sharp 2D targets, over seeds.
SEEDS=$([ "$CPU" = 1 ] && echo 2 || echo 5)
sweep() {
  local name=$1 exp=$2; shift 2
  log_run "$BIN" sweep "$exp" --seeds "$SEEDS" --jobs "$JOBS" --out "$DIR/sweeps/$name" "$@"
}
for ds in checkerboard rings; do
  sweep "diffflow-g-$ds" "ablation-diffflow-$ds" --set model.g=$([ "$CPU" = 1 ] && echo 0.001,0.2,1.0 || echo 0.001,0.01,0.05,0.2,0.5,1.0)
  sweep "flow-$ds" "ablation-flow-$ds"
done
sweep snf-none-rings ablation-snf-rings --set model.stochastic=\"none\"
sweep snf-mh-steps-rings ablation-snf-rings --set model.mc_steps=$([ "$CPU" = 1 ] && echo 1,10 || echo 1,5,10,20)
sweep snf-langevin-rings ablation-snf-rings --set model.stochastic=\"langevin\" --set model.step_size=$([ "$CPU" = 1 ] && echo 0.003,0.01,0.03 || echo 0.001,0.003,0.01,0.03,0.1)
# The SNF paper's double-well table (Wu et al. 2020, experiment 1): every row trained 10 times at the paper's protocol
# (both profiles: about 20 minutes of 2 CPU cores); the report puts mean ± sd beside the paper's numbers.
for e in snf-paper-rnvp snf-paper-nsf snf-paper-rnvp-mc snf-paper-nsf-mc snf-paper-rnvp-amc snf-paper-rnvp-langevin snf-paper-rnvp-hmc; do
  log_run "$BIN" sweep "$e" --seeds 10 --jobs "$JOBS" --out "$DIR/sweeps/$e"
done
cat > "$DIR/ablations.json" <<JSON
[
  {"title": "DiffFlow on the checkerboard: diffusion coefficient g", "sweep": "sweeps/diffflow-g-checkerboard", "baseline": "sweeps/flow-checkerboard", "xlabel": "g (small g: nearly deterministic)"},
  {"title": "DiffFlow on the rings: diffusion coefficient g", "sweep": "sweeps/diffflow-g-rings", "baseline": "sweeps/flow-rings", "xlabel": "g (small g: nearly deterministic)"},
  {"title": "SNF on the rings: Metropolis steps per block", "sweep": "sweeps/snf-mh-steps-rings", "baseline": "sweeps/snf-none-rings", "xlabel": "MH steps per block (baseline: none)"},
  {"title": "SNF on the rings: Langevin step size", "sweep": "sweeps/snf-langevin-rings", "baseline": "sweeps/snf-none-rings", "xlabel": "Langevin step size (baseline: none)"}
]
JSON

# 6. The report.
log_run "$BIN" report "$DIR" --out notebooks-export
