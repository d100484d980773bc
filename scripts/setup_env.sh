#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv (or $RSTFAST_VENV) and install rstfast into it,
# with extras "$@". Installs the local CPU wheel torch==2.13.0 where it exists (seconds), otherwise
# whatever pip resolves. The word `fashion-mnist` among the arguments is not an extra: it installs
# Debian's dataset-fashion-mnist (apt-get, when run as root; otherwise it prints the command).
# Usage: `bash scripts/setup_env.sh train [fashion-mnist] && .venv/bin/python -m rstfast.train ...`
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RSTFAST_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRA_LIST=()
FASHION=0
for word in "$@"; do
  if [ "$word" = "fashion-mnist" ]; then FASHION=1; else EXTRA_LIST+=("$word"); fi
done
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch"
  "$PY" -m pip install -q "torch==2.13.0" 2>/dev/null || "$PY" -m pip install -q torch
fi
EXTRAS=$(IFS=,; echo "${EXTRA_LIST[*]:-}")
SPEC="$ROOT"; [ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
echo "[setup] installing rstfast${EXTRAS:+[$EXTRAS]} (editable)"
"$PY" -m pip install -q -e "$SPEC"
if [ "$FASHION" = 1 ]; then
  FMNIST_DIR=/usr/share/datasets/fashion-mnist
  if [ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ]; then
    echo "[setup] Fashion-MNIST: $FMNIST_DIR (Debian's dataset-fashion-mnist) is installed"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's dataset-fashion-mnist (30 MB) into $FMNIST_DIR"
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    echo "[setup] Fashion-MNIST is not installed; run as root: apt-get install dataset-fashion-mnist" \
         "(or put its four IDX files in ./datasets/FashionMNIST/raw/)"
  fi
fi
