#!/usr/bin/env bash
# The simulation-based-inference benchmark: `make sbi` trains q(θ | x) on each task (gaussian_linear, two_moons,
# slcp) at sbibm's simulation budgets 10^3, 10^4, 10^5 (BUDGETS=... to choose), into OUT/<task>-<budget>, then writes
# notebooks-export/sbi-benchmark.{md,ipynb} (C2ST and NLL per task and budget beside sbibm's NPE numbers).
# Training steps grow with the budget (2000, 5000, 10000: no early stopping, so a fixed protocol). Finished runs are
# kept, interrupted ones resume; run it again after a stop.
set -euo pipefail
OUT=${1:-runs/sbi}
BIN=${BIN:-target/release/relaxflow}
BUDGETS=${BUDGETS:-1000 10000 100000}
TASKS=${TASKS:-gaussian-linear two-moons slcp}
mkdir -p "$OUT"
steps() { case $1 in 1000) echo 2000 ;; 10000) echo 5000 ;; *) echo 10000 ;; esac; }
for task in $TASKS; do
  for n in $BUDGETS; do
    run=$OUT/${task//-/_}-$n
    if [ -f "$run/summary.json" ]; then echo "kept $run"; continue; fi
    if [ -f "$run/config.toml" ]; then "$BIN" train --resume "$run"; continue; fi
    "$BIN" train "sbi-$task" --steps "$(steps "$n")" --set data.n_train="$n" --out "$run" "${@:2}"
  done
done
"$BIN" sbi-report "$OUT" --out "${REPORT_OUT:-notebooks-export}"
