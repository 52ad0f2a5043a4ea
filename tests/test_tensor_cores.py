"""Tensor-core convolutions (precision tf32 / fp16 / bf16) verified without a GPU.

* the emulator's pieces against numpy: FP16/BF16 round-to-nearest-even, TF32 rounding, WMMA
  whole-tile load/mma/store, cp.async that lands only at __pipeline_wait_prior, alignment checks;
* the generated WMMA kernels (the exact source NVRTC compiles) on cuda-emu against the FP32
  reference within each precision's documented tolerance (cnncc.compiler.TOLERANCE), on a graph
  that takes every path of the template (vector and scalar copies, fused pools with and without
  overlap, residual epilogue, groups) and on a subset of the examples (the emulation of every
  example at three more precisions would take minutes; see docs/gpu.md);
* which layers take the tensor-core kernel, and the errors for unsupported combinations.
NVRTC compilation of every example at every precision is in tests/test_nvrtc.py."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc.compiler import TOLERANCE
from cnncc.frontends import dsl
from cnncc.ir import N
from helpers import assert_matches_reference, rel_err
from cnncc.reference import random_inputs
from cnncc.runtime import emu

LOW = ("tf32", "fp16", "bf16")


def check(g, mod, precision, batches=(1, 3), seed=0) -> float:
    """``mod`` on seeded random inputs against the FP32 reference at the precision's tolerance, or,
    where the model itself amplifies the rounding past it, against the precision-aware reference
    at 1e-4 (cnncc.bench.harness.check_outputs). Returns the worst error against the oracle used."""
    if precision == "fp32":
        return assert_matches_reference(g, mod, batches, rtol=TOLERANCE[precision], seed=seed, what=f"{precision} ")
    from cnncc.bench.harness import check_outputs, describe_check

    rng = np.random.default_rng(seed)
    worst = 0.0
    for b in batches:
        feeds = random_inputs(g, b, rng)
        y = mod(feeds)
        for k, v in (y if isinstance(y, dict) else {g.outputs[0]: y}).items():
            assert v.dtype != np.float32 or np.isfinite(v).all(), f"{precision} batch {b}, output {k}: values never written"
        verdict = check_outputs(g, feeds, y, mod)
        assert verdict["passed"], f"{precision} batch {b}: {describe_check(verdict)}"
        pa = verdict.get("precision_aware")
        worst = max(worst, pa["max_rel_err"] if pa else verdict["max_rel_err"])
    return worst


# ---------------------------------------------------------------------------------------------
# the emulator's primitives
PRIMITIVES = r"""
#include <mma.h>
#include <cuda_pipeline.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
using namespace nvcuda;

extern "C" __global__ void convert(const float* x, float* half_out, float* bf16_out, float* tf32_out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    half_out[i] = __half2float(__float2half_rn(x[i]));
    bf16_out[i] = __bfloat162float(__float2bfloat16_rn(x[i]));
    tf32_out[i] = wmma::__float_to_tf32(x[i]);
}

// one warp: D = A (16 x 8, row-major) * B (8 x 16, col-major) + C, TF32 operands
extern "C" __global__ void mma_tf32(const float* a, const float* b, const float* c, float* d) {
    __shared__ __align__(32) float sa[16 * 8], sb[8 * 16], sc[16 * 16];
    for (int i = threadIdx.x; i < 128; i += 32) { sa[i] = a[i]; sb[i] = b[i]; }
    for (int i = threadIdx.x; i < 256; i += 32) sc[i] = c[i];
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc;
    wmma::load_matrix_sync(fa, sa, 8);
    wmma::load_matrix_sync(fb, sb, 8);
    wmma::load_matrix_sync(fc, sc, 16, wmma::mem_col_major);
    for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
    for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
    wmma::mma_sync(fc, fa, fb, fc);
    __syncthreads();
    wmma::store_matrix_sync(sc, fc, 16, wmma::mem_row_major);
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += 32) d[i] = sc[i];
}

// one warp: D = A (16 x 16) * B (16 x 16) with FP16 operands
extern "C" __global__ void mma_fp16(const float* a, const float* b, float* d) {
    __shared__ __align__(32) __half sa[256], sb[256];
    __shared__ __align__(32) float sd[256];
    for (int i = threadIdx.x; i < 256; i += 32) { sa[i] = __float2half_rn(a[i]); sb[i] = __float2half_rn(b[i]); }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, sa, 16);
    wmma::load_matrix_sync(fb, sb, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(sd, fc, 16, wmma::mem_row_major);
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += 32) d[i] = sd[i];
}

// cp.async lands at the wait: `early` reads the stage before waiting (stale), `late` after
extern "C" __global__ void pipeline(const float* x, float* early, float* late, float* zero) {
    __shared__ __align__(16) float s[64];
    s[threadIdx.x] = -1.0f;
    __syncthreads();
    if (threadIdx.x < 16) __pipeline_memcpy_async(&s[threadIdx.x * 4], &x[threadIdx.x * 4], 16);
    __pipeline_commit();
    early[threadIdx.x] = s[(threadIdx.x % 16) * 4];   // (threads < 16: their own chunk; the others race)
    __pipeline_wait_prior(0);
    __syncthreads();
    late[threadIdx.x] = s[threadIdx.x];
    __syncthreads();
    __pipeline_memcpy_async(&s[threadIdx.x], x, 4, 4);   // zero-fill: nothing read
    __pipeline_commit();
    __pipeline_wait_prior(0);
    zero[threadIdx.x] = s[threadIdx.x];
}

extern "C" __global__ void misaligned(const float* x, float* y) {
    __shared__ __align__(16) float s[8];
    __pipeline_memcpy_async(&s[1], &x[1], 16);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    y[0] = s[1];
}
"""


@pytest.fixture(scope="module")
def primitives():
    return emu.EmuProgram(PRIMITIVES, name="tc_primitives")


def _bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest, ties to even) in numpy."""
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


def _tf32(x: np.ndarray) -> np.ndarray:
    """cvt.rna.tf32.f32: nearest, ties away from zero, 10 mantissa bits."""
    b = x.astype(np.float32).view(np.uint32)
    return ((b + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def test_half_bfloat16_and_tf32_rounding(primitives):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(3000).astype(np.float32) * 10.0 ** rng.integers(-9, 6, 3000),
                        np.float32([0.0, -0.0, 65504.0, 65520.0, 1e6, -1e6, 6e-8, 1e-8, 3e-5,
                                    1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -8])]).astype(np.float32)
    n = x.size
    half, bf, tf = (np.zeros(n, np.float32) for _ in range(3))
    primitives.launch("convert", (n // 128 + 1,), (128,), [x, half, bf, tf, np.int32(n)])
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(half, x.astype(np.float16).astype(np.float32))   # numpy rounds to even
    np.testing.assert_array_equal(bf, _bf16(x))
    np.testing.assert_array_equal(tf, _tf32(x))
    assert half[-3] == 1.0 and half[-2] == 1.0 + 4 * 2.0 ** -11   # ties to even, both ways


def test_wmma_tiles_multiply_with_the_precision_of_their_inputs(primitives):
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((16, 8), (8, 16), (16, 16)))
    d = np.zeros((16, 16), np.float32)
    # B col-major with ldm 8: element (k, n) at n * 8 + k; C loaded col-major
    primitives.launch("mma_tf32", (1,), (32,), [a, np.ascontiguousarray(b.T), np.ascontiguousarray(c.T), d])
    want = _tf32(a).astype(np.float64) @ _tf32(b).astype(np.float64) + c
    assert np.abs(d - want).max() < 1e-5
    assert np.abs(d - (a.astype(np.float64) @ b + c)).max() > 1e-5        # the rounding is really modelled
    a, b = rng.standard_normal((16, 16)).astype(np.float32), rng.standard_normal((16, 16)).astype(np.float32)
    primitives.launch("mma_fp16", (1,), (32,), [a, b, d])
    want = a.astype(np.float16).astype(np.float64) @ b.astype(np.float16).astype(np.float64)
    assert np.abs(d - want).max() < 1e-5


def test_cp_async_lands_at_the_wait_and_zero_fills(primitives):
    x = np.arange(64, dtype=np.float32)
    early, late, zero = (np.full(64, np.nan, np.float32) for _ in range(3))
    primitives.launch("pipeline", (1,), (64,), [x, early, late, zero])
    assert (early[:16] == -1.0).all()     # a thread's own copy is not visible before its wait
    np.testing.assert_array_equal(late, x)
    assert (zero == 0.0).all()


def test_misaligned_cp_async_is_an_error(primitives):
    with pytest.raises(emu.EmulationError, match="misaligned 16-byte cp.async"):
        primitives.launch("misaligned", (1,), (1,), [np.zeros(8, np.float32), np.zeros(1, np.float32)])


# ---------------------------------------------------------------------------------------------
# generated kernels
def tc_graph():
    """Every path of conv_wmma.cu.j2 at a small size."""
    x = dsl.input("x", (N, 24, 8, 8))
    y = dsl.input("y", (N, 7, 8, 8), like=x)
    wide = dsl.concat([x, x, x], axis=1, name="wide")     # 72 channels for the 1x1 path
    outs = [
        dsl.relu(dsl.batch_norm(dsl.conv2d(x, 40, 3, padding=1, bias=False, name="bn_conv"), name="bn"), name="bn_relu"),
        dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 64, 3, padding=1, name="cpool"), name="cpool_relu"), 2, name="cpool_max"),
        dsl.avg_pool2d(dsl.relu(dsl.conv2d(x, 20, 3, name="cavg"), name="cavg_relu"), 3, stride=2, padding=1,
                       name="cavg_pool"),
        dsl.relu(dsl.add(dsl.conv2d(x, 24, 3, padding=1, name="cres"), x, name="cres_add"), name="cres_relu"),
        dsl.conv2d(wide, 80, 1, name="pw"),                                   # 16-byte im2col copies
        dsl.conv2d(x, 48, 3, stride=2, dilation=2, padding=2, groups=2, name="grouped"),
        dsl.conv2d(y, 32, 3, padding=1, name="odd_k"),                        # K = 63: 4-byte weight copies
    ]
    g = dsl.graph(*outs, name="tc")
    # a group the fuse pass's cost model would not form (overlapping 3x3/2 average pool after an
    # epilogue with BN): built by hand, as tests/test_cuda_emu.py's hand_fused_graph does
    from cnncc.ir import Node

    rng = np.random.default_rng(5)
    members = [Node("hc", "conv2d", ["x"], {"padding": 1}, {"weight": rng.standard_normal((32, 24, 3, 3)).astype(np.float32)}),
               Node("hs", "scale_shift", ["hc"], {}, {"scale": np.linspace(0.5, 2, 32, dtype=np.float32),
                                                     "shift": rng.standard_normal(32).astype(np.float32)}),
               Node("hr", "relu", ["hs"]),
               Node("hp", "avg_pool2d", ["hr"], {"kernel_size": 3, "stride": 2, "padding": 1})]
    g.add(Node("hand_avgpool", "fused", ["x"], {"kind": "conv"}, members=members))
    g.outputs = list(g.outputs) + ["hand_avgpool"]
    return g.infer_shapes()


@pytest.fixture(scope="module")
def tc_modules(shared_kernel_cache):
    g = tc_graph()
    return g, {p: cnncc.compile(g, target="cuda-emu", precision=p) for p in LOW}


@pytest.mark.parametrize("precision", LOW)
def test_tensor_core_convolutions_match_reference(tc_modules, precision):
    g, mods = tc_modules
    worst = check(g, mods[precision], precision)
    assert worst > 1e-5   # the reduced precision is really used (fp32 FMAs would match to ~1e-6)
    assert_rounds_like_precision_reference(g, mods[precision])


def assert_rounds_like_precision_reference(g, mod, batch=3):
    """The kernels round exactly the operands cnncc.precision_reference rounds: the two agree
    to FP32 summation order (measured ~1e-7), far inside the precision's tolerance."""
    feeds = random_inputs(g, batch, np.random.default_rng(7))
    err = rel_err(mod(feeds), cnncc.precision_reference(g, feeds, module=mod))
    assert err <= TOLERANCE["fp32"], f"{mod.program.precision}: {err:.2e} from the precision-aware reference"


def test_every_template_path_is_exercised(tc_modules):
    _, mods = tc_modules
    texts = {n: s for n, s, _ in mods["fp16"].kernels}
    tc = {n: s for n, s, _ in mods["fp16"].kernels if "tensor cores" in s}
    assert len(tc) == 8, sorted(texts)
    joined = "\n".join(tc.values())
    assert "16-byte im2col" in joined and "4-byte im2col" in joined
    assert "16-byte weight" in joined and "4-byte weight" in joined
    assert "fused max pool 2x2" in joined and "fused avg pool 3x3" in joined and "overlapping windows" in joined
    assert "cres_add" in joined and "groups 2" in joined
    assert "__float2half_rn" in joined and "wmma::__float_to_tf32" in "\n".join(s for _, s, _ in mods["tf32"].kernels)
    assert "__float2bfloat16_rn" in "\n".join(s for _, s, _ in mods["bf16"].kernels)


def nhwc_graph():
    """Chains of tensor-core convolutions that pass channels-last tensors (codegen/cuda_wmma.py
    channels_last): NCHW in / NHWC out, NHWC in with 16-byte copies along channels, a fused pool
    writing NHWC, a 1x1 and a grouped conv reading NHWC, channels not a multiple of 4 (4-byte
    copies); and the tensors that must stay NCHW: one read as a residual operand, one read by an
    FP32 kernel, the graph outputs."""
    x = dsl.input("x", (N, 24, 8, 8))
    a = dsl.relu(dsl.conv2d(x, 32, 3, padding=1, name="a"), name="a_relu")
    b = dsl.relu(dsl.conv2d(a, 32, 3, padding=1, name="b"), name="b_relu")
    c = dsl.max_pool2d(dsl.relu(dsl.conv2d(b, 48, 3, padding=1, name="c"), name="c_relu"), 2, name="c_pool")
    d = dsl.conv2d(c, 64, 1, name="d")
    e = dsl.conv2d(c, 40, 3, stride=2, padding=1, groups=2, name="e")
    f = dsl.relu(dsl.add(dsl.conv2d(a, 32, 3, padding=1, name="f"), b, name="f_add"), name="f_relu")
    odd = dsl.conv2d(dsl.conv2d(x, 18, 3, padding=1, name="odd1"), 16, 3, padding=1, name="odd2")
    narrow = dsl.conv2d(dsl.conv2d(x, 16, 3, padding=1, name="wide1"), 8, 3, padding=1, name="narrow")
    # a residual block whose add is written in place of its operand (MobileNet-v2's pattern): the
    # output, though only a tensor-core conv reads it, must stay NCHW, or the write races the read
    skip = dsl.conv2d(x, 24, 1, name="skip")
    res = dsl.relu(dsl.add(dsl.conv2d(x, 24, 3, padding=1, name="res"), skip, name="res_add"), name="res_relu")
    after = dsl.conv2d(res, 32, 3, padding=1, name="after")
    return dsl.graph(d, e, f, odd, narrow, after, name="nhwc").infer_shapes()


@pytest.mark.parametrize("precision", LOW)
def test_channels_last_between_tensor_core_convolutions(shared_kernel_cache, precision):
    g = nhwc_graph()
    mod = cnncc.compile(g, target="cuda-emu", precision=precision)
    layout = {}
    for n, s, _ in mod.kernels:
        line = next((ln for ln in s.splitlines() if ln.startswith("// Layout:")), "")
        layout[n] = ("nhwc" if "input channels-last" in line else "nchw") + "/" + \
            ("nhwc" if "output channels-last" in line else "nchw")
    assert layout == {"a_a_relu": "nchw/nhwc", "b_b_relu": "nhwc/nchw", "c_c_relu_c_pool": "nchw/nhwc",
                      "d": "nhwc/nchw", "e": "nhwc/nchw", "f_f_add_f_relu": "nhwc/nchw", "odd1": "nchw/nhwc",
                      "odd2": "nhwc/nchw", "wide1": "nchw/nchw", "narrow": "nchw/nchw", "skip": "nchw/nchw",
                      "res_res_add_res_relu": "nchw/nchw", "after": "nchw/nchw"}, layout
    res = next(k for k in mod.program.kernels if k.name == "res_res_add_res_relu")
    skip = next(k for k in mod.program.kernels if k.name == "skip").output
    assert (res.output.arena_a, res.output.arena_b) == (skip.arena_a, skip.arena_b)   # in place indeed
    text = {n: s for n, s, _ in mod.kernels}
    assert "16-byte im2col copies along channels" in text["b_b_relu"] and "16-byte im2col copies along" in text["e"]
    assert "4-byte im2col copies along channels" in text["odd2"]
    assert "16-byte weight copies" in text["d"] and "4-byte weight copies" in text["b_b_relu"]   # 1x1: same k order
    worst = check(g, mod, precision, batches=(1, 3))
    assert worst > 1e-5
    # fp32 keeps every kernel NCHW
    fp32 = cnncc.compile(g, target="cuda-emu")
    assert not any("channels-last" in s for _, s, _ in fp32.kernels)


def tc_dense_graph():
    """Every path of dense_wmma.cu.j2: 16-byte and 4-byte copies (K = 64 / 70), a partial last
    feature block, a fused ReLU, and a softmax tail that keeps the FP32 rowwise kernel; and of
    matmul_wmma.cu.j2 (the same GEMM main loop, templates/cuda/wmma_gemm.cu.j2): 3 matrices per
    item against a shared constant (16-byte copies, fused ReLU, a partial column tile), 2 x 3
    broadcast batched matrices (K = 70, M = 33: 4-byte copies, partial tiles everywhere), and a
    (N, K) @ (K, M) product (one row per item) that keeps the FP32 kernel."""
    x = dsl.input("x", (N, 70))
    x2 = dsl.input("x2", (N, 64), like=x)
    a = dsl.input("a", (N, 3, 40, 36), like=x)
    c = dsl.input("c", (N, 2, 1, 18, 70), like=x)
    d = dsl.input("d", (N, 1, 3, 70, 33), like=x)
    rng = np.random.default_rng(11)
    shared = rng.standard_normal((36, 24)).astype(np.float32)
    outs = [dsl.relu(dsl.dense(x, 75, name="fc"), name="fc_relu"), dsl.dense(x2, 40, name="fc_aligned"),
            dsl.softmax(dsl.dense(x, 10, name="cls"), name="cls_softmax"),
            dsl.relu(dsl.matmul(a, shared, name="mm"), name="mm_relu"), dsl.matmul(c, d, name="bmm"),
            dsl.matmul(x2, rng.standard_normal((64, 20)).astype(np.float32), name="rowmm")]
    return dsl.graph(*outs, name="tc_dense").infer_shapes()


@pytest.mark.parametrize("precision", LOW)
def test_dense_and_matmul_on_tensor_cores_match_reference(shared_kernel_cache, precision):
    g = tc_dense_graph()
    mod = cnncc.compile(g, target="cuda-emu", precision=precision)
    tc = {n: s for n, s, _ in mod.kernels if "dense on tensor cores" in s}
    assert sorted(tc) == ["fc_aligned", "fc_fc_relu"], [n for n, _, _ in mod.kernels]
    assert "16-byte weight copies, 16-byte input" in tc["fc_aligned"] and "4-byte input" in tc["fc_fc_relu"]
    mm = {n: s for n, s, _ in mod.kernels if "matmul on tensor cores" in s}
    assert sorted(mm) == ["bmm", "mm_mm_relu"], [n for n, _, _ in mod.kernels]
    assert "16-byte copies of a along k, 16-byte copies of b" in mm["mm_mm_relu"] and "shared" in mm["mm_mm_relu"]
    assert "4-byte copies of a along k, 4-byte copies of b" in mm["bmm"] and "6 x (18 x 70) @ (70 x 33)" in mm["bmm"]
    worst = check(g, mod, precision, batches=(1, 17))      # 17: past one 16-row batch tile
    assert worst > 1e-5   # the reduced precision is really used
    assert_rounds_like_precision_reference(g, mod, batch=17)


def test_dense_and_matmul_stay_fp32_at_fp32():
    from cnncc.codegen import cuda as cg
    from cnncc.codegen.lower import lower_program

    program = lower_program(cnncc.optimize(tc_dense_graph(), 2))
    variants = {k.name: (cg.plan(k, "fp32").variant, cg.plan(k, "fp16").variant) for k in program.kernels}
    assert variants == {"fc_fc_relu": ("dense:tiled", "dense:wmma"), "fc_aligned": ("dense:tiled", "dense:wmma"),
                        "cls_cls_softmax": ("dense:rowwise", "dense:rowwise"),
                        "mm_mm_relu": ("matmul", "matmul:wmma"), "bmm": ("matmul", "matmul:wmma"),
                        "rowmm": ("matmul", "matmul")}


def test_saved_module_keeps_its_precision(tc_modules, tmp_path):
    g, mods = tc_modules
    mods["bf16"].save(tmp_path / "m")
    again = cnncc.load(tmp_path / "m")
    assert again.program.precision == "bf16" and again.source == mods["bf16"].source
    check(g, again, "bf16", batches=(2,))


# ---------------------------------------------------------------------------------------------
# the precision-aware reference (cnncc.precision_reference)
def test_precision_reference_rounds_exactly_the_tensor_core_operands():
    """No compile: the nodes the CUDA target runs on tensor cores see their input and weight
    rounded as numpy's / ml_dtypes' float16 / bfloat16 (and TF32 nearest, ties away) round them;
    the bias, the FP32 layers (8 output channels, an RGB-like direct conv) and everything else
    are the plain reference."""
    from cnncc.codegen.cuda import tensor_core_nodes
    from cnncc.codegen.lower import lower_program
    from cnncc.ops.conv import conv_ref
    from cnncc.reference import round_operand

    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = dsl.input("x", (N, 24, 6, 6))
    a = dsl.relu(dsl.conv2d(x, 32, 3, padding=1, name="wide"), name="wide_relu")     # tensor cores
    g = dsl.graph(dsl.conv2d(a, 8, 3, padding=1, name="narrow"), name="pr").infer_shapes()   # FP32: 8 channels
    program = lower_program(cnncc.optimize(g, 2))
    program.precision = "bf16"
    assert tensor_core_nodes(program) == {"wide": "bf16"}
    program.precision = "fp32"
    assert tensor_core_nodes(program) == {}

    feeds = random_inputs(g, 2, np.random.default_rng(3))
    w, b = g["wide"].params["weight"], g["wide"].params["bias"]
    w2, b2 = g["narrow"].params["weight"], g["narrow"].params["bias"]
    for p, dtype in (("fp16", np.float16), ("bf16", ml_dtypes.bfloat16)):
        r = lambda v: v.astype(dtype).astype(np.float32)      # noqa: E731
        assert np.array_equal(round_operand(w, p), r(w))
        hidden = np.maximum(conv_ref(r(feeds["x"]), r(w), b, (1, 1), ((1, 1), (1, 1)), (1, 1), 1), 0)
        want = conv_ref(hidden, w2, b2, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        got = cnncc.precision_reference(g, feeds, p)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
        assert rel_err(got, cnncc.reference(g, feeds)) > 1e-5          # the rounding is really there
    np.testing.assert_array_equal(cnncc.precision_reference(g, feeds, "fp32"), cnncc.reference(g, feeds))
    # TF32 is cvt.rna: 10 mantissa bits, ties away from zero; inf and nan pass through
    one = np.float32(1)
    ulp, half = np.float32(2.0 ** -10), np.float32(2.0 ** -11)
    v = np.array([one + half, -(one + half), one + half - np.float32(2.0 ** -23), np.inf, 3.0], np.float32)
    got = round_operand(v, "tf32")
    assert got[:4].tolist() == [one + ulp, -(one + ulp), one, np.inf] and got[4] == 3.0
    assert np.isnan(round_operand(np.array([np.nan], np.float32), "bf16"))[0]


def unpool_graph():
    """SegNet's pattern at its smallest: a tensor-core 1x1 conv, max pool with indices, max
    unpooling, a conv."""
    x = dsl.input("x", (N, 32, 4, 4))
    y, idx = dsl.max_pool2d_with_indices(dsl.conv2d(x, 32, 1, name="enc"), 2, stride=2, name="pool")
    up = dsl.max_unpool2d(y, idx, 2, stride=2, output_size=(4, 4), name="unpool")
    return dsl.graph(dsl.conv2d(up, 16, 3, padding=1, name="dec"), name="unpool").infer_shapes()


UNPOOL_MODEL = """
from cnncc.frontends import dsl


def model(batch=dsl.N):
    x = dsl.input("x", (batch, 32, 4, 4))
    y, idx = dsl.max_pool2d_with_indices(dsl.conv2d(x, 32, 1, name="enc"), 2, stride=2, name="pool")
    up = dsl.max_unpool2d(y, idx, 2, stride=2, output_size=(4, 4), name="unpool")
    return dsl.conv2d(up, 16, 3, padding=1, name="dec")
"""


def test_argmax_unpooling_is_checked_against_the_precision_aware_reference(shared_kernel_cache, tmp_path, capsys):
    """Inputs whose 2x2 windows are near-ties (1e-3 apart, far above FP32's resolution, below
    FP16's): rounding the conv's operands reorders some windows, so the FP32 reference is off by
    O(1) (values unpooled elsewhere) while the precision-aware reference is matched to FP32
    accuracy; check_outputs takes the second only because the first computation with exactly the
    kernels' rounding is itself outside the tolerance."""
    from cnncc.bench.harness import check_outputs, describe_check

    g = unpool_graph()
    mod = cnncc.compile(g, target="cuda-emu", precision="fp16")
    rng = np.random.default_rng(0)
    base = np.repeat(np.repeat(rng.standard_normal((2, 32, 2, 2)), 2, axis=2), 2, axis=3)
    feeds = {"x": (base * (1 + 1e-3 * rng.standard_normal(base.shape))).astype(np.float32)}
    y = mod(feeds)
    verdict = check_outputs(g, feeds, y, mod)
    assert verdict["max_rel_err"] > 0.1, describe_check(verdict)         # the FP32 reference: O(1) off
    pa = verdict["precision_aware"]
    assert verdict["oracle"] == "precision-aware" and verdict["passed"], describe_check(verdict)
    assert pa["max_rel_err"] < 1e-5 and pa["vs_fp32"] > 0.1 and not pa["sensitivity"]["unstable"], pa
    # the precision-aware oracle is specific: bf16 rounding of the same graph is not what fp16 computed
    assert rel_err(y, cnncc.precision_reference(g, feeds, "bf16")) > 1e-2
    # plain random inputs have no near-ties: the FP32 reference within fp16's tolerance decides
    assert check(g, mod, "fp16", batches=(2,)) < TOLERANCE["fp16"]
    # and layer by layer (what the slow SegNet tests check): every operator on its own inputs
    worst, where, compared = layer_by_layer(g, "fp16")
    assert compared == 5 and worst <= TOLERANCE["fp32"], (worst, where)
    # `cnncc run --check` takes the same verdict
    from cnncc.cli import main

    (tmp_path / "unpool.py").write_text(UNPOOL_MODEL)
    np.save(tmp_path / "x.npy", feeds["x"])
    assert main(["run", str(tmp_path / "unpool.py"), "--target", "cuda-emu", "--precision", "fp16",
                 "--input", str(tmp_path / "x.npy"), "--check"]) == 0
    text = capsys.readouterr().out
    assert "relative 4.5" in text and "check passed (against the precision-aware reference" in text, text


def test_layers_with_64_channels_use_tensor_cores_unless_fp32(examples_dir):
    """The rule (codegen/cuda_wmma.py): a GEMM convolution with >= 16 output channels per group
    runs on tensor cores at any precision but fp32; fp32 keeps the exact FMA kernel."""
    from test_codegen_c import example_graph

    from cnncc.codegen import cuda as cg
    from cnncc.codegen.lower import lower_program

    g = example_graph(examples_dir / "resnet18.py")
    program = lower_program(cnncc.optimize(g, 2))
    convs = [k for k in program.kernels if k.family == "conv"]
    wide = [k for k in convs if k.geometry["C_out"] // k.geometry["groups"] >= 64
            and k.geometry["C_in"] * k.geometry["KH"] * k.geometry["KW"] // k.geometry["groups"] > cg.DIRECT_CONV_MAX_K]
    assert len(wide) >= 15
    for k in wide:
        assert cg.plan(k, "fp32").variant == "conv:gemm"
        for p in LOW:
            assert cg.plan(k, p).variant == "conv:wmma", (k.name, p)


def test_c_target_refuses_reduced_precision_and_bad_names():
    g = tc_graph()
    with pytest.raises(cnncc.CnnccError, match="C target computes in float32 only"):
        cnncc.compile(g, target="c", precision="fp16")
    with pytest.raises(cnncc.CnnccError, match="precision must be one of"):
        cnncc.compile(g, target="cuda-emu", precision="fp8")


def test_missing_tensor_core_headers_is_a_clear_error(monkeypatch):
    from cnncc.errors import CompileError
    from cnncc.runtime import nvrtc

    monkeypatch.setattr(nvrtc, "tensor_core_include", lambda refresh=False: None)
    with pytest.raises(CompileError, match="nvidia-cuda-crt"):
        nvrtc.compile_cubin("#include <mma.h>\nextern \"C\" __global__ void k() {}\n")


# every example x every precision through cuda-emu (issue 14's acceptance). The full matrix
# (every model file of examples/ at fp32, tf32, fp16, bf16, batch 1, the small sizes of
# test_codegen_c.example_graph) is marked `slow`: on a shared 2-core machine it takes tens of
# minutes (the emulator computes each 16x16 MMA once per lane). CI runs the subset below: LeNet-5
# at every precision and one reduced precision each for the conv-heavy block types (basic
# residual blocks with in-place adds, fire modules, inverted residuals, channel shuffles, plain
# stacks with fused pools and dense layers). docs/gpu.md records the last full run.
PRECISIONS = ("fp32",) + LOW
EXAMPLES = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "examples").glob("*.py")
                  if "\ndef model(" in p.read_text())
#: (example, precision) pairs that run in CI
CI_MATRIX = {("lenet5", p) for p in PRECISIONS} | {
    ("squeezenet1_1", "fp16"), ("resnet18", "fp16"), ("mobilenet_v2", "bf16"), ("alexnet", "tf32"),
    ("shufflenet_v2", "tf32")}


#: SegNet's max unpooling puts each value where the argmax of the encoder's pool was; at reduced
#: precision near-ties flip that argmax, values land elsewhere and the decoder spreads it. The
#: precision-aware reference does not rescue it: computed with exactly the kernels' rounding,
#: SegNet (32x32) is itself chaotic -- 1e-6 input noise moves it by 5.0e-2 (tf32) / 1.6e-1 (bf16),
#: with argmaxes flipping at every pool, because rounding turns FP32 summation-order differences
#: into whole TF32/FP16/BF16 steps -- so the module (FP32 reference: 6.0e-2 tf32, 4.4e-2 fp16,
#: 1.4e-1 bf16) misses it too (6.1e-2, 5.1e-2, 9.0e-2). No elementwise verdict is possible; see
#: docs/gpu.md. (The mechanism itself is tested on a small graph above; deep nets amplify any
#: summation-order difference across the rounding steps, so end to end the precision-aware
#: reference is an exact oracle for shallow graphs only: ResNet-18 fp16 is 5.6e-4 from it.
#: SegNet is verified layer by layer instead: test_segnet_layer_by_layer_at_reduced_precision.)
ARGMAX_FLIPS = {("segnet", p) for p in LOW}


def _matrix():
    for name in EXAMPLES:
        for p in PRECISIONS:
            marks = [] if (name, p) in CI_MATRIX else [pytest.mark.slow]
            if (name, p) in ARGMAX_FLIPS:
                marks.append(pytest.mark.xfail(strict=True, reason="argmax unpooling is chaotic at reduced precision, "
                                                                   "against the precision-aware reference too"))
            yield pytest.param(name, p, id=f"{name}-{p}", marks=marks)


def assert_wide_convs_on_tensor_cores(mod, precision: str) -> int:
    """Every GEMM convolution with >= 64 output channels per group runs the WMMA kernel unless
    the precision is fp32 (then none does); returns how many such layers the model has."""
    from cnncc.codegen.cuda import DIRECT_CONV_MAX_K

    wide = 0
    for spec, (name, text, _) in zip(mod.program.kernels, mod.kernels):
        if spec.family != "conv":
            continue
        g = spec.geometry
        if g["C_out"] // g["groups"] >= 64 and g["C_in"] // g["groups"] * g["KH"] * g["KW"] > DIRECT_CONV_MAX_K:
            wide += 1
            assert ("wmma::mma_sync" in text) == (precision != "fp32"), (name, precision)
    return wide


@pytest.mark.parametrize("name, precision", list(_matrix()))
def test_every_example_at_every_precision(shared_kernel_cache, examples_dir, name, precision):
    from test_codegen_c import example_graph

    g = example_graph(examples_dir / f"{name}.py")
    mod = cnncc.compile(g, target="cuda-emu", precision=precision)
    if precision != "fp32":
        assert any("wmma::mma_sync" in s for _, s, _ in mod.kernels)
    wide = assert_wide_convs_on_tensor_cores(mod, precision)
    assert wide > 0 or name == "lenet5"     # the rule is exercised by every model but LeNet's 6/16 channels
    worst = check(g, mod, precision, batches=(1,))
    print(f"{name}-{precision}: worst relative error {worst:.2e}")     # `-rP` lists it (docs/gpu.md's table)


def layer_by_layer(g, precision: str, seed: int = 0) -> tuple[float, str, int]:
    """Every operator of ``g`` on cuda-emu at ``precision`` against the precision-aware reference
    of that operator alone, fed the module's own values of its inputs: a build with every tensor
    a graph output (so nothing fuses and every value comes back), then one
    reference.RoundingInterpreter step per node. Returns (worst relative error, its node, nodes
    compared); index outputs count 1.0 when any differs."""
    from cnncc.codegen.cuda import tensor_core_nodes
    from cnncc.reference import RoundingInterpreter

    every = g.copy()
    every.outputs = [n.name for n in every if n.op != "input"]
    every = every.infer_shapes()
    mod = cnncc.compile(every, target="cuda-emu", precision=precision)
    feeds = random_inputs(every, 1, np.random.default_rng(seed))
    got = mod(feeds)
    go = mod.report["graph"]
    step = RoundingInterpreter(go, tensor_core_nodes(mod.program))
    env = {**feeds, **dict(zip(go.outputs, (got[k] for k in every.outputs)))}
    worst, where, compared = 0.0, "", 0
    for node in go:
        for m in (node.members or [node]) if node.op != "input" else ():
            want = step.run_node(m, [env[i] for i in m.inputs])
            if m.name not in env:         # a member the build kept inside a kernel: carry the reference on
                env[m.name] = want
                continue
            compared += 1
            err = rel_err(env[m.name], want)
            if err > worst:
                worst, where = err, m.name
    return worst, where, compared


@pytest.mark.slow
@pytest.mark.parametrize("precision", LOW)
def test_segnet_layer_by_layer_at_reduced_precision(shared_kernel_cache, examples_dir, precision):
    """What can be verified of SegNet at tf32/fp16/bf16 (its end-to-end output is chaotic there,
    see ARGMAX_FLIPS): every layer, argmaxes and unpooling included, computes the precision-aware
    reference of that layer from the module's own inputs, to FP32 summation order (measured
    1.1e-6 - 2.0e-6)."""
    from test_codegen_c import example_graph

    worst, where, compared = layer_by_layer(example_graph(examples_dir / "segnet.py"), precision)
    assert compared > 80 and worst <= TOLERANCE["fp32"], (precision, worst, where)


ASAN_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import cnncc
    from test_tensor_cores import tc_graph, check
    g = tc_graph()
    check(g, cnncc.compile(g, target="cuda-emu", precision="bf16"), "bf16", (2,))
    print("ASAN-OK")
""")


def test_tensor_core_kernels_under_address_sanitizer():
    """The WMMA kernels (every copy path, pools, residual) built with -fsanitize=address, each
    arena slot its own allocation: no out-of-bounds access, cp.async included."""
    script = ASAN_SCRIPT.format(tests=os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "-c", script], env=emu.asan_environment(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0 and "ASAN-OK" in proc.stdout, proc.stderr[-4000:]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", LOW)
def test_tensor_core_convolutions_on_gpu(precision):
    """The same kernels on a real sm_90 GPU (benchmarks/device_run.sh runs this, and under
    compute-sanitizer's memcheck): within the same tolerance as the emulation."""
    g = tc_graph()
    check(g, cnncc.compile(g, target="cuda", precision=precision), precision)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", LOW)
def test_dense_layers_on_tensor_cores_on_gpu(precision):
    """dense_wmma.cu.j2 and matmul_wmma.cu.j2 on a real sm_90 GPU (and under memcheck in
    benchmarks/device_run.sh), past one 16-row batch tile."""
    g = tc_dense_graph()
    check(g, cnncc.compile(g, target="cuda", precision=precision), precision, batches=(1, 17))
