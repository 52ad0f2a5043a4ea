"""The CUDA emulator (runtime/cuda_emu.h + runtime/emu.py) on hand-written kernels against numpy.

These kernels exercise exactly what the emulation promises: __syncthreads that really blocks,
__shared__ per block, warp shuffles, atomics, and errors (never a silent wrong answer) for
deadlocks, barriers in direct mode and mistyped launch arguments."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("ctypes")
from cnncc.errors import CompileError  # noqa: E402
from cnncc.runtime import emu  # noqa: E402

SOURCE = r"""
// a shared-memory tree reduction: wrong (and racy) unless __syncthreads blocks every thread
extern "C" __global__ void __launch_bounds__(128) block_sum(const float* __restrict__ x, float* __restrict__ out, int n) {
    __shared__ float partial[128];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    partial[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) partial[t] += partial[t + stride];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = partial[0];
}

#define TILE 8
extern "C" __global__ void tiled_matmul(const float* A, const float* B, float* C, int M, int K, int Ncols) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        As[threadIdx.y][threadIdx.x] = (row < M && k0 + threadIdx.x < K) ? A[row * K + k0 + threadIdx.x] : 0.f;
        Bs[threadIdx.y][threadIdx.x] = (col < Ncols && k0 + threadIdx.y < K) ? B[(k0 + threadIdx.y) * Ncols + col] : 0.f;
        __syncthreads();
        #pragma unroll
        for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    if (row < M && col < Ncols) C[row * Ncols + col] = acc;
}

extern "C" __global__ void warp_sums(const float* x, float* out, int* lanes_seen, float* all_lanes, float* scan) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = x[i];
    float t = v, prefix = v;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);   // butterfly: every lane gets the sum
    for (int o = 1; o < 32; o <<= 1) {                                           // inclusive scan: reads lower lanes
        float up = __shfl_up_sync(0xffffffffu, prefix, o);
        if ((threadIdx.x & 31) >= o) prefix += up;
    }
    all_lanes[i] = t;
    scan[i] = prefix;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    float b = __shfl_sync(0xffffffffu, v, 0);          // broadcast lane 0's total
    unsigned ballot = __ballot_sync(0xffffffffu, x[i] > 0.5f);
    if ((threadIdx.x & 31) == 0) out[i / 32] = v;
    if ((threadIdx.x & 31) == 5) lanes_seen[i / 32] = __popc(ballot);
    if (b != out[i / 32] && (threadIdx.x & 31) == 0) out[i / 32] = -1.0f;
}

extern "C" __global__ void histogram(const int* keys, int* bins, float* total, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { atomicAdd(&bins[keys[i]], 1); atomicAdd(total, 1.0f); }
}

extern "C" __global__ void scale(float* x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * a;
}

__device__ void hidden_barrier() { __syncthreads(); }
extern "C" __global__ void sync_in_device_function(float* x) { hidden_barrier(); x[threadIdx.x] = 1.0f; }

extern "C" __global__ void divergent_barrier(float* x) {
    // half a warp shuffles while the other half waits at the block barrier: never completes
    if (threadIdx.x < 16) x[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
    else __syncthreads();
}
"""


@pytest.fixture(scope="module")
def program():
    return emu.EmuProgram(SOURCE, name="emu_selftest")


def test_kernel_discovery_and_fiber_decision(program):
    assert program.kernels == ["block_sum", "tiled_matmul", "warp_sums", "histogram", "scale",
                               "sync_in_device_function", "divergent_barrier"]
    assert program.fibers["block_sum"] and program.fibers["warp_sums"]
    assert not program.fibers["scale"] and not program.fibers["histogram"]
    assert program.signatures["tiled_matmul"] == ["p8", "p8", "p8", "i4", "i4", "i4"]
    assert program.signatures["scale"] == ["p8", "f4", "i4"]


def test_shared_memory_tree_reduction(program):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    out = np.full(8, np.nan, np.float32)
    program.launch("block_sum", (8,), (128,), [x, out, np.int32(1000)])
    expect = np.pad(x, (0, 24)).reshape(8, 128).sum(1)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m,k,n", [(8, 8, 8), (37, 50, 29)])
def test_tiled_matmul(program, m, k, n):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    program.launch("tiled_matmul", ((n + 7) // 8, (m + 7) // 8), (8, 8), [a, b, c, np.int32(m), np.int32(k), np.int32(n)])
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)


def test_warp_shuffles_and_ballot(program):
    rng = np.random.default_rng(2)
    x = rng.random(256).astype(np.float32)
    out = np.full(8, np.nan, np.float32)
    seen = np.zeros(8, np.int32)
    all_lanes = np.full(256, np.nan, np.float32)
    scan = np.full(256, np.nan, np.float32)
    program.launch("warp_sums", (2,), (128,), [x, out, seen, all_lanes, scan])
    np.testing.assert_allclose(out, x.reshape(8, 32).sum(1), rtol=1e-5)
    np.testing.assert_allclose(all_lanes, np.repeat(x.reshape(8, 32).sum(1), 32), rtol=1e-5)
    np.testing.assert_allclose(scan, np.cumsum(x.reshape(8, 32), axis=1).ravel(), rtol=1e-5)
    np.testing.assert_array_equal(seen, (x.reshape(8, 32) > 0.5).sum(1))


def test_atomics_across_parallel_blocks(program):
    keys = np.arange(5000, dtype=np.int32) % 7
    bins = np.zeros(7, np.int32)
    total = np.zeros(1, np.float32)
    program.launch("histogram", (40,), (128,), [keys, bins, total, np.int32(5000)])
    np.testing.assert_array_equal(bins, np.bincount(keys, minlength=7))
    assert total[0] == 5000


def test_direct_mode_scalars(program):
    x = np.arange(300, dtype=np.float32)
    program.launch("scale", (3,), (128,), [x, np.float32(2.0), np.int32(300)])
    np.testing.assert_array_equal(x, np.arange(300, dtype=np.float32) * 2)


def test_launch_argument_types_are_checked(program):
    x = np.zeros(4, np.float32)
    with pytest.raises(emu.EmulationError, match="numpy scalar"):
        program.launch("scale", (1,), (4,), [x, 2.0, np.int32(4)])
    with pytest.raises(emu.EmulationError, match="i4, got numpy int64"):
        program.launch("scale", (1,), (4,), [x, np.float32(2), np.int64(4)])
    with pytest.raises(emu.EmulationError, match="expects a pointer"):
        program.launch("scale", (1,), (4,), [np.float32(1), np.float32(2), np.int32(4)])
    with pytest.raises(emu.EmulationError, match="takes 3"):
        program.launch("scale", (1,), (4,), [x])


def test_barrier_in_direct_mode_is_an_error_not_ignored(program):
    x = np.zeros(64, np.float32)
    assert program.fibers["sync_in_device_function"]  # the scan follows device functions
    with pytest.raises(emu.EmulationError, match="__syncthreads called by a kernel launched in direct mode"):
        program.launch("sync_in_device_function", (1,), (64,), [x], fibers=False)
    program.launch("sync_in_device_function", (1,), (64,), [x], fibers=True)
    assert (x == 1).all()


def test_divergent_barrier_is_reported_as_deadlock(program):
    x = np.zeros(64, np.float32)
    with pytest.raises(emu.EmulationError, match="deadlock"):
        program.launch("divergent_barrier", (1,), (64,), [x])


def test_compile_errors_name_the_line():
    with pytest.raises(CompileError, match=r"broken\.cu:2"):
        emu.EmuProgram('extern "C" __global__ void k(float* x) {\n  x[0] = undefined_name;\n}\n', name="broken")


ASAN_SCRIPT = textwrap.dedent("""
    import numpy as np
    from cnncc.runtime import emu
    src = open({path!r}).read()
    p = emu.EmuProgram(src, name="emu_asan")
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    out = np.full(8, np.nan, np.float32)
    p.launch("block_sum", (8,), (128,), [x, out, np.int32(1000)])
    assert np.allclose(out, np.pad(x, (0, 24)).reshape(8, 128).sum(1), atol=1e-4)
    a = np.ones((9, 9), np.float32); c = np.zeros((9, 9), np.float32)
    p.launch("tiled_matmul", (2, 2), (8, 8), [a, a, c, np.int32(9), np.int32(9), np.int32(9)])
    assert (c == 9).all()
    y = np.ones(4, np.float32)
    if {overflow}:
        p.launch("scale", (1,), (8,), [y, np.float32(2), np.int32(8)])   # writes past the end of y
    print("ASAN-OK")
""")


@pytest.mark.parametrize("overflow", [False, True], ids=["clean", "overflow"])
def test_under_address_sanitizer(tmp_path, overflow):
    """The fiber switches are annotated for ASan: clean kernels run clean, an overflow is caught."""
    src = tmp_path / "kernels.cu"
    src.write_text(SOURCE)
    proc = subprocess.run([sys.executable, "-c", ASAN_SCRIPT.format(path=str(src), overflow=overflow)],
                          env=emu.asan_environment(), capture_output=True, text=True, timeout=300)
    if overflow:
        assert proc.returncode != 0 and "heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]
    else:
        assert proc.returncode == 0 and "ASAN-OK" in proc.stdout, proc.stderr[-3000:]
