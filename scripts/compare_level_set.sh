#!/usr/bin/env bash
# teleport=none vs the preset's group teleport vs teleport=slp, paired seeds, then teleport-report per problem.
# Usage: scripts/compare_level_set.sh [OUT]   (default outputs/compare_level_set; MNIST needs the data files)
set -euo pipefail
OUT=${1:-outputs/compare_level_set}
train() { python -m teleport_runner.train -m logger=jsonl plots=false hydra.callbacks.report.figures=false "$@"; }
compare() {  # name, group-teleport preset, slp preset, seeds, extra overrides...
  local name=$1 preset=$2 slp=$3 seeds=$4; shift 4
  train "experiment=$preset,$slp" "seed=$seeds" "$@" "hydra.sweep.dir=$OUT/$name/teleport"
  train "experiment=$preset" teleport=none "seed=$seeds" "$@" "hydra.sweep.dir=$OUT/$name/none"
  python -m teleport_runner.reporting "$OUT/$name" --no-figures --out "$OUT/$name"
}
compare rosenbrock paper_rosenbrock slp_rosenbrock 0,1,2,3,4 dtype=float64
compare booth paper_booth slp_booth 0,1,2,3,4 dtype=float64
compare ellipse ellipse slp_ellipse 0,1,2,3,4 dtype=float64
compare regression paper_regression slp_regression 0,1,2,3,4
compare regression_adagrad paper_regression_adagrad slp_regression_adagrad 0,1,2,3,4
compare mnist followup_mnist slp_mnist 0,1,2 epochs=4
