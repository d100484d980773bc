#!/usr/bin/env bash
# Every GPU path in one call: first `python -m rstfast.check` (every backend and dtype on the
# device against the float64 reference and the original's golden data; its table and JSON in
# $RESULTS), then the method table of benchmarks/gpu.py (paper layers and training
# steps at batch 128 for the original algorithm, expand + cuDNN with TF32 off/on, and every kernel
# backend; JSON rewritten after every row), then the backend-contract, Triton and C++/CUDA tests
# on the GPU. Results go to $OUT when set (the device tool), else benchmarks/results/.
# Extra arguments go to benchmarks/gpu.py.
# Dry run without a GPU:  TRITON_INTERPRET=1 bash benchmarks/gpu_check.sh --device cpu --tiny
# (without a GPU and without --device cpu it stops with one line on stderr and exit code 2)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
case " $* " in
    *" --device cpu "*|*" --device=cpu "*) ;;
    *) if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
           echo "gpu_check.sh: error: no CUDA GPU here (torch.cuda.is_available() is not True with $PY);" \
                "dry run on the CPU: TRITON_INTERPRET=1 bash benchmarks/gpu_check.sh --device cpu --tiny" >&2
           exit 2
       fi ;;
esac
$PY -c "import importlib.util, torch; print('torch', torch.__version__, 'triton', \
__import__('triton').__version__ if importlib.util.find_spec('triton') else 'not installed', \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
status=0
DEVICE=cuda
case " $* " in *" --device cpu "*|*" --device=cpu "*) DEVICE=cpu ;; esac
$PY -m rstfast.check --device "$DEVICE" --json "$RESULTS/check_$DEVICE.json" 2>&1 \
    | tee "$RESULTS/check_$DEVICE.txt" || status=1
$PY -m benchmarks.gpu --out "$RESULTS/gpu.json" "$@" || status=1
if $PY -c "import pytest" 2>/dev/null; then
    $PY -m pytest tests/test_backend_contract.py tests/test_triton_kernels.py tests/test_csrc.py \
        -q -p no:cacheprovider --durations=5 2>&1 | tee "$RESULTS/gpu_tests.txt" || status=1
else
    echo "pytest not installed: tests skipped (benchmarks/gpu.py still reports the errors)" \
        | tee "$RESULTS/gpu_tests.txt"
fi
exit $status
