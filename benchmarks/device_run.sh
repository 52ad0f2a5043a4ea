#!/usr/bin/env bash
# One prepared GPU run (issue 14): the `gpu` tests, the same tests under compute-sanitizer's
# memcheck, and the precision benchmark, in under 8 minutes, the results in a few files of $OUT.
#
#   OUT=/tmp/out bash benchmarks/device_run.sh          # from the repository root
#
# Made to run blind through the `device` tool (docs/gpu.md, "The prepared device run"):
#   run(command="bash benchmarks/device_run.sh", timeout_s=540)
# The H200 image has python3 with numpy, sympy, networkx, jinja2, cupy-cuda13x, torch, onnx,
# pytest and nvcc (whose toolkit has mma.h / cuda_pipeline.h for the tensor-core kernels), but not
# cnncc: step 0 installs this checkout editable, offline, without dependencies.
# Each step has its own time limit (seconds: TESTS_S, MEMCHECK_S, BENCH_S; defaults 100 + 130 +
# 210 = 440 s plus start-up), so one slow step cannot eat the others' time; a step that runs out
# is recorded as rc 124. The device tool returns at most 8 files from $OUT, so the work happens
# in $WORK and only these come back:
#   device_run.json   the summary: per step rc, seconds, limit, the tail of its log
#   bench_layer.json, bench_resnet50.json, bench_resnet18.json   benchmarks/gpu_bench.py's results
#   gpu.txt           nvidia-smi, nvcc, python and package versions
#   logs.tar.gz       every step's full log and junit XML
set -u
OUT=${OUT:-$(pwd)/device_out}
WORK=${WORK:-/tmp/cnncc-device-run}
PYTHON=${PYTHON:-python3}
TESTS_S=${TESTS_S:-100}
MEMCHECK_S=${MEMCHECK_S:-130}
BENCH_S=${BENCH_S:-210}
mkdir -p "$OUT" "$WORK"
export CNNCC_CACHE_DIR=${CNNCC_CACHE_DIR:-$WORK/cache}   # NVRTC builds shared by the steps (not in $OUT)
export PYTHONUNBUFFERED=1                                 # a step killed at its limit keeps its log
STEPS=()

step() {   # step NAME LIMIT_S COMMAND...: run, time, record rc and the log's tail
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    local t1=$(date +%s)
    local tail_json
    tail_json=$(tail -c 1500 "$WORK/$name.log" | "$PYTHON" -c 'import json, sys; print(json.dumps(sys.stdin.read()))' 2>/dev/null || echo '""')
    STEPS+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((t1 - t0)), \"limit_s\": $limit, \"log_tail\": $tail_json}")
    echo "$name: rc $rc ($((t1 - t0)) s)"
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    command -v nvcc && nvcc --version | tail -2
    command -v compute-sanitizer || echo "compute-sanitizer: not on PATH"
    "$PYTHON" -c 'import sys, numpy, cupy, torch; print(sys.version); print("numpy", numpy.__version__, "cupy", cupy.__version__, "torch", torch.__version__)'
} >"$WORK/gpu.txt" 2>&1

# 0. cnncc importable (the image has its dependencies; nothing can be fetched there)
if ! "$PYTHON" -c "import cnncc.codegen, cnncc.runtime" >/dev/null 2>&1; then
    step install 120 "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -e .
fi

# 1. every gpu-marked test: examples and template families on the GPU, tensor cores at each precision
step gpu_tests "$TESTS_S" "$PYTHON" -m pytest -q -m gpu tests/test_cuda.py tests/test_tensor_cores.py \
    --junitxml="$WORK/gpu_tests.xml" -p no:cacheprovider

# 2. the same kernels under memcheck (out-of-bounds and misaligned accesses, cp.async included);
#    the template families and the tensor-core graphs cover every template, the whole zoo would not fit
if command -v compute-sanitizer >/dev/null 2>&1; then
    step memcheck "$MEMCHECK_S" compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 \
        "$PYTHON" -m pytest -q -m gpu tests/test_cuda.py tests/test_tensor_cores.py \
        -k "template_family or tensor_core" --junitxml="$WORK/memcheck_tests.xml" -p no:cacheprovider
else
    STEPS+=("{\"step\": \"memcheck\", \"rc\": null, \"skipped\": \"compute-sanitizer not on PATH\"}")
fi

# 3. the issue's targets first: the fused layer at batch 32, ResNet-50 at 32, ResNet-18 at 1
step bench_layer "$((BENCH_S / 4))" "$PYTHON" benchmarks/gpu_bench.py --models conv_relu_pool --batches 32 \
    --precisions fp32,tf32,fp16,bf16 --no-compile --budget-s "$((BENCH_S / 4 - 15))" --json "$OUT/bench_layer.json"
step bench_resnet50 "$((BENCH_S / 2))" "$PYTHON" benchmarks/gpu_bench.py --models resnet50 --batches 32 \
    --precisions fp32,tf32,fp16,bf16 --no-compile --budget-s "$((BENCH_S / 2 - 30))" --json "$OUT/bench_resnet50.json"
step bench_resnet18 "$((BENCH_S / 4))" "$PYTHON" benchmarks/gpu_bench.py --models resnet18 --batches 1 \
    --precisions fp32,fp16 --no-compile --budget-s "$((BENCH_S / 4 - 15))" --json "$OUT/bench_resnet18.json"

{
    echo "{\"steps\": ["
    (IFS=,; echo "${STEPS[*]}")
    echo "]}"
} >"$OUT/device_run.json"
cp "$WORK/gpu.txt" "$OUT/gpu.txt"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude=cache . 2>/dev/null
echo "wrote $OUT/device_run.json (and $(ls "$OUT" | wc -l) files in $OUT)"
