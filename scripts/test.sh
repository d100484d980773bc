#!/usr/bin/env bash
# Run the whole test suite on CPU (Triton kernels under the interpreter), setting up .venv first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh" test train
cd "$ROOT"
export TRITON_INTERPRET=1
python -m pytest -q -ra --durations=15 tests "$@"
