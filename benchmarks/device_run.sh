#!/usr/bin/env bash
# One prepared GPU run (issue 14): the `gpu` tests, the same tests under compute-sanitizer's
# memcheck, and the precision benchmark, each writing JSON/XML under $OUT, in under 8 minutes.
#
#   OUT=/tmp/out bash benchmarks/device_run.sh          # from the repository root
#
# Needs a Python with cnncc's `cuda` and `dev` extras ($PYTHON, default python3) and an sm_90 GPU.
# Each step has its own time limit (seconds: TESTS_S, MEMCHECK_S, BENCH_S; defaults 100 + 130 +
# 210 = 440 s plus start-up), so one slow step cannot eat the others' time; a step that runs out
# is recorded as rc 124. The summary is $OUT/device_run.json; every step's output is in $OUT/*.log.
set -u
OUT=${OUT:-$(pwd)/device_out}
PYTHON=${PYTHON:-python3}
TESTS_S=${TESTS_S:-100}
MEMCHECK_S=${MEMCHECK_S:-130}
BENCH_S=${BENCH_S:-210}
mkdir -p "$OUT"
export CNNCC_CACHE_DIR=${CNNCC_CACHE_DIR:-$OUT/cache}   # NVRTC builds shared by the three steps
SUMMARY="$OUT/device_run.json"
STEPS=()

step() {   # step NAME LIMIT_S COMMAND...: run, time, record rc
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    local t1=$(date +%s)
    STEPS+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((t1 - t0)), \"limit_s\": $limit}")
    echo "$name: rc $rc ($((t1 - t0)) s)"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$OUT/gpu.csv" 2>&1

# 1. every gpu-marked test: examples and template families on the GPU, tensor cores at each precision
step gpu_tests "$TESTS_S" "$PYTHON" -m pytest -q -m gpu tests/test_cuda.py tests/test_tensor_cores.py \
    --junitxml="$OUT/gpu_tests.xml" -p no:cacheprovider

# 2. the same kernels under memcheck (out-of-bounds and misaligned accesses, cp.async included);
#    the template families and the tensor-core graph cover every template, the whole zoo would not fit
if command -v compute-sanitizer >/dev/null 2>&1; then
    step memcheck "$MEMCHECK_S" compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 \
        "$PYTHON" -m pytest -q -m gpu tests/test_cuda.py tests/test_tensor_cores.py \
        -k "template_family or tensor_core" --junitxml="$OUT/memcheck_tests.xml" -p no:cacheprovider
else
    STEPS+=("{\"step\": \"memcheck\", \"rc\": null, \"skipped\": \"compute-sanitizer not on PATH\"}")
fi

# 3. the targets first: the fused layer at batch 32, ResNet-50 at 32, ResNet-18 at 1
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
} >"$SUMMARY"
echo "wrote $SUMMARY"
