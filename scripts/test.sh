#!/usr/bin/env bash
# Run the whole test suite on CPU (Triton kernels under the interpreter), setting up .venv first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh" test train
cd "$ROOT"
PY="${RSTFAST_VENV:-$ROOT/.venv}/bin/python"
export PATH="$(dirname "$PY"):$PATH"   # ninja for the C++ extension
export TRITON_INTERPRET=1
"$PY" -m pytest -q -ra --durations=15 tests "$@"
