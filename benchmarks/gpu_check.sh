#!/usr/bin/env bash
# Every GPU path in one call: the method table of benchmarks/gpu.py (paper layers and training
# steps at batch 128 for the original algorithm, expand + cuDNN with TF32 off/on, and every kernel
# backend; JSON rewritten after every row), then the backend-contract, Triton and C++/CUDA tests
# on the GPU. Results go to $OUT when set (the device tool), else benchmarks/results/.
# Extra arguments go to benchmarks/gpu.py.
# Dry run without a GPU:  TRITON_INTERPRET=1 bash benchmarks/gpu_check.sh --device cpu --tiny
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
status=0
$PY -m benchmarks.gpu --out "$RESULTS/gpu.json" "$@" || status=1
if $PY -c "import pytest" 2>/dev/null; then
    $PY -m pytest tests/test_backend_contract.py tests/test_triton_kernels.py tests/test_csrc.py \
        -q -p no:cacheprovider --durations=5 2>&1 | tee "$RESULTS/gpu_tests.txt" || status=1
else
    echo "pytest not installed: tests skipped (benchmarks/gpu.py still reports the errors)" \
        | tee "$RESULTS/gpu_tests.txt"
fi
exit $status
