#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv (or $RSTFAST_VENV) and install rstfast into it,
# with extras "$@". Installs the local CPU wheel torch==2.13.0 where it exists (seconds), otherwise
# whatever pip resolves. Usage: `bash scripts/setup_env.sh train && .venv/bin/python -m rstfast.train ...`
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RSTFAST_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
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
EXTRAS=$(IFS=,; echo "$*")
SPEC="$ROOT"; [ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
echo "[setup] installing rstfast${EXTRAS:+[$EXTRAS]} (editable)"
"$PY" -m pip install -q -e "$SPEC"
