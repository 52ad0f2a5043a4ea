"""Acceptance: every CUDA kernel of every example compiles with NVRTC for sm_90 (one NVRTC call
per model, the same include flags CuPy's RawModule adds) with no local-memory spills and within
the sm_90 limits; nvcc -cubin agrees on a couple of models. No GPU needed.

Each model goes through ``cnncc.runtime.cache.build_cached`` with the CUDA backend, whose build
fails on any ptxas problem: a cache hit therefore means this exact source already passed these
checks with this NVRTC, so re-runs stay fast while any template change recompiles."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("cupy")
import cnncc  # noqa: E402
from cnncc import names  # noqa: E402
from cnncc.codegen import cuda as cuda_codegen  # noqa: E402
from cnncc.codegen.lower import lower_program  # noqa: E402
from cnncc.errors import CompileError  # noqa: E402
from cnncc.runtime import cache, nvrtc  # noqa: E402
from cnncc.runtime.cuda import CudaBackend, launch_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if "def model" in p.read_text())


def example_graph(path: Path):
    """The example at a small input size (the kernel count and code do not depend on it)."""
    from test_codegen_c import example_graph as small_example

    return small_example(path)


def render(path: Path, opt: int = 2) -> tuple[str, list]:
    program = lower_program(cnncc.optimize(example_graph(path), opt))
    source, kernels = cuda_codegen.render(program)
    return source, kernels


#: models whose ptxas report the tests below read: compiled fresh (not from the cache)
REPORTED = ("lenet5", "unet", "resnet18")


@pytest.fixture(scope="module")
def built():
    """example name -> (source, kernels, cubin bytes, ptxas report or None), two models at a time."""
    def one(path):
        source, kernels = render(path)
        if path.stem in REPORTED:
            table = launch_table(source)   # keyed by the kernels' function names (names.ident(.., "k"))
            result = nvrtc.compile_checked(source, threads={k: v[1][0] for k, v in table.items()}, expect=list(table))
            return path.stem, (source, kernels, result.cubin, result.kernels)
        return path.stem, (source, kernels, cache.build_cached(CudaBackend(), source).read_bytes(), None)

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, EXAMPLES))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_kernel_compiles_for_sm90_without_spills(built, path):
    source, kernels, cubin, _ = built[path.stem]
    assert cubin[:4] == b"\x7fELF"
    table = launch_table(source)
    # the launch table names every kernel's function, in order
    assert list(table) == [names.ident(k[0], "k") for k in kernels]
    for name, _, launch in kernels:
        grid, block, args = cuda_codegen.parse_launch(launch)
        assert (grid, block, args) == table[names.ident(name, "k")] and args[-1] == "W"
        assert args[0] == "N" or args[0].isdigit()   # a static kernel (after RoI pooling: K rows) gets its rows
        assert block[0] <= 1024 and grid[0](1) >= 1


def test_resource_report_is_parsed_and_enforced():
    """The ptxas report is read per kernel, and spills or oversized blocks fail the build."""
    src = """
    extern "C" __global__ void __launch_bounds__(128) fine(float* x) {
        __shared__ float s[128]; s[threadIdx.x] = x[threadIdx.x]; __syncthreads(); x[threadIdx.x] = s[127 - threadIdx.x]; }
    extern "C" __global__ void __launch_bounds__(1024, 2) squeezed(const float* x, float* y) {
        float a[96];
    #pragma unroll
        for (int i = 0; i < 96; ++i) a[i] = x[i * 1024 + threadIdx.x];
        float s = 0.f;
    #pragma unroll
        for (int i = 0; i < 96; ++i) for (int j = 0; j <= i; ++j) s += a[i] * a[j];
        y[threadIdx.x] = s; }
    """
    result = nvrtc.compile_cubin(src)
    fine, squeezed = result.kernels["fine"], result.kernels["squeezed"]
    assert fine.smem_bytes == 512 and fine.barriers == 1 and fine.registers > 0 and fine.spills == 0
    assert squeezed.registers <= 32 and squeezed.spills > 0          # 64K registers / 2048 threads
    with pytest.raises(CompileError, match="squeezed: .* bytes spill stores"):
        nvrtc.compile_checked(src)
    problems = nvrtc.check_resources({"fine": fine}, threads={"fine": 2048})
    assert problems and "threads per block" in problems[0]


def test_compile_errors_carry_the_nvrtc_log():
    with pytest.raises(CompileError, match="undefined_thing"):
        nvrtc.compile_cubin('extern "C" __global__ void k(float* x) { x[0] = undefined_thing; }')


@pytest.mark.skipif(nvrtc.nvcc_path() is None, reason="nvcc not installed")
@pytest.mark.parametrize("name", ["lenet5", "unet"])
def test_nvcc_cross_check_agrees_with_nvrtc(built, name):
    """The offline compiler sees the same kernels, the same shared memory, no spills, and
    registers within a few of NVRTC's (the two front ends differ slightly)."""
    source, _, _, ours = built[name]
    theirs = nvrtc.nvcc_cubin(source).kernels
    assert set(ours) == set(theirs) == set(launch_table(source))
    for k in ours:
        assert theirs[k].spills == 0
        assert ours[k].smem_bytes == theirs[k].smem_bytes, k
        assert abs(ours[k].registers - theirs[k].registers) <= 8, (k, ours[k], theirs[k])


#: every example at the three reduced precisions: 48 NVRTC builds (about as long as the fp32 set
#: three times over; cached by source, so a re-run is instant). The `slow` mark lets a quick run
#: deselect them (-m "not slow"); the subset below always runs.
REDUCED = ("tf32", "fp16", "bf16")
QUICK = ("resnet18",)


def _render_at(path: Path, precision: str):
    """(source, [(CUDA function name, kernel source, launch)]): named as ptxas and the launch table name them."""
    program = lower_program(cnncc.optimize(example_graph(path), 2))
    program.precision = precision
    source, kernels = cuda_codegen.render(program)
    return source, [(spec.cname, text, launch) for spec, (_, text, launch) in zip(program.kernels, kernels)]


@pytest.mark.slow
@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem not in QUICK], ids=lambda p: p.stem)
def test_every_example_compiles_at_every_precision(path, precision):
    source, kernels = _render_at(path, precision)
    cubin = cache.build_cached(CudaBackend(), source)   # the CUDA build fails on any ptxas problem
    assert cubin.read_bytes()[:4] == b"\x7fELF" and list(launch_table(source)) == [k[0] for k in kernels]


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("name", QUICK)
def test_tensor_core_kernels_compile_without_spills(name, precision):
    """The ptxas report of the WMMA kernels: no spills, no stack, static shared memory within
    48 KB, registers within the launch bound, and an occupancy that keeps the SM busy."""
    from cnncc.gpu_predict import occupancy

    source, kernels = _render_at(ROOT / "examples" / f"{name}.py", precision)
    report = nvrtc.compile_checked(source, threads={k: v[1][0] for k, v in launch_table(source).items()},
                                   expect=[k[0] for k in kernels], allow_stack=True).kernels
    threads = {k: v[1][0] for k, v in launch_table(source).items()}
    tc = [k for k, text, _ in kernels if "wmma::mma_sync" in text]
    assert len(tc) >= 19   # every 3x3 and 1x1 convolution but the 7x7 stem... which has K = 147: it too
    for k in tc:
        r = report[k]
        assert r.spills == 0 and r.stack_bytes == 0, (k, r)
        assert r.smem_bytes <= 48 * 1024 and r.registers * threads[k] <= 65536, (k, r)
        assert occupancy(r.registers, r.smem_bytes, threads[k]).fraction >= 0.125, (k, r)


@pytest.mark.parametrize("precision", REDUCED)
def test_dense_and_matmul_wmma_compile_without_spills(precision):
    """dense_wmma.cu.j2 and matmul_wmma.cu.j2 (their shared main loop, every copy width, batched
    and broadcast matrices) for sm_90: no spills, no stack, static shared memory within 48 KB."""
    from test_tensor_cores import tc_dense_graph

    program = lower_program(cnncc.optimize(tc_dense_graph(), 2))
    program.precision = precision
    source, kernels = cuda_codegen.render(program)
    threads = {k: v[1][0] for k, v in launch_table(source).items()}
    report = nvrtc.compile_checked(source, threads=threads, expect=list(threads), allow_stack=True).kernels
    tc = [spec.cname for spec, (_, text, _) in zip(program.kernels, kernels) if "wmma::mma_sync" in text]
    assert len(tc) == 4, tc      # two dense layers, two matmuls
    for k in tc:
        r = report[k]
        assert r.spills == 0 and r.stack_bytes == 0 and r.smem_bytes <= 48 * 1024, (k, r)
        assert r.registers * threads[k] <= 65536, (k, r)


def test_resnet18_conv_figures(built):
    """Register and shared-memory figures of ResNet-18's convolutions stay sane for sm_90."""
    source, _, _, kernels = built["resnet18"]
    threads = {k: v[1][0] for k, v in launch_table(source).items()}
    convs = {k: v for k, v in kernels.items() if "conv" in k or "downsample" in k}
    assert len(convs) == 20
    for k, r in convs.items():
        assert r.registers * threads[k] <= 65536 and r.registers <= cuda_codegen.MAX_GEMM_REGISTERS + 40, (k, r)
        assert r.smem_bytes <= 48 * 1024 and r.spills == 0
