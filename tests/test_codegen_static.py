"""Graphs whose tensors do not lead with the batch N (ONNX models with fixed sizes) and operators
that mix their leading dim: concat / softmax along dim 0, transposes and pads that move or grow
it, matmul over literal (broadcast) batch dims, 1-D and 0-D operands. Codegen runs such kernels
over the whole tensors (KernelSpec.batch == 1); checked against the numpy reference on the C
target (opt 0 and 2) and through the CUDA emulation. Also batched matmuls with a constant right
operand of rank 3 (broadcast batch dims) and vectors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import cnncc
from cnncc.codegen.lower import lower
from cnncc.frontends import dsl
from cnncc.ir import N
from helpers import assert_matches_reference

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler")
RTOL = 1e-4


def static_graph():
    x = dsl.input("x", (3, 4, 5))
    y = dsl.input("y", (2, 4, 5), like=x)
    lin = np.linspace(-1, 1, 5 * 6, dtype=np.float32).reshape(5, 6)
    full_bias = np.linspace(-3, 3, 3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6)
    outs = [
        dsl.concat([x, y, x], axis=0, name="cat0"),
        dsl.softmax(x, axis=0, name="sm0"),
        dsl.log_softmax(x, axis=0, name="lsm0"),
        dsl.transpose(x, (2, 0, 1), name="tr201"),
        dsl.transpose(x, name="tr_rev"),
        dsl.pad(x, ((1, 2), (0, 0), (0, 1)), value=0.25, name="pad0"),
        # matmul over the whole tensor with an epilogue that depends on the leading index
        dsl.add(dsl.matmul(x, lin, name="mm_lin"), dsl.constant(x, full_bias, name="full_bias"), name="mm_add"),
        dsl.matmul(x, np.linspace(-2, 2, 5 * 2, dtype=np.float32).reshape(1, 5, 2), name="mm_bcast"),
        dsl.matmul(np.linspace(0, 1, 4, dtype=np.float32), x, name="mm_vec_left"),
        dsl.matmul(x, np.linspace(1, 2, 5, dtype=np.float32), name="mm_vec_right"),
    ]
    return dsl.graph(*outs, name="static")


def scalar_graph():
    a = dsl.input("a", (3,))
    b = dsl.input("b", (3,), like=a)
    return dsl.graph(dsl.matmul(a, b, name="dot"), name="dot")


def batched_matmul_graph():
    x = dsl.input("x", (N, 2, 3, 4))
    v = dsl.input("v", (N, 4), like=x)
    outs = [
        dsl.relu(dsl.matmul(x, np.linspace(-1, 1, 2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5), name="mm_b3"),
                 name="mm_b3_relu"),
        dsl.matmul(x, np.linspace(-1, 1, 4, dtype=np.float32), name="mm_xvec"),
        dsl.matmul(v, np.linspace(-1, 1, 4 * 3, dtype=np.float32).reshape(4, 3), name="mm_rows"),
    ]
    return dsl.graph(*outs, name="batched_mm")


def _check(g, mod, batches=(1,)):
    assert_matches_reference(g, mod, batches, rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize("opt", [0, 2])
def test_static_graph_on_c(opt):
    g = static_graph()
    _check(g, cnncc.compile(g, target="c", opt_level=opt))


def test_static_kernels_run_over_the_whole_tensors():
    specs = {s.name: s for s in lower(cnncc.optimize(static_graph(), opt_level=0))}
    for name in ("cat0", "sm0", "lsm0", "tr201", "tr_rev", "pad0", "mm_lin", "mm_bcast", "mm_vec_left"):
        assert specs[name].batch == 1 and specs[name].geometry["whole"], name
    assert specs["mm_bcast"].geometry["MB"] == 3 and specs["mm_bcast"].geometry["b_off"] == [0, 0, 0]
    fused = {s.name: s for s in lower(cnncc.optimize(static_graph(), opt_level=2))}["mm_lin_mm_add"]
    assert fused.geometry["whole"] and fused.epilogue[0].operand.stride_n == 24   # reads by the leading index


def test_scalar_result_is_0d():
    g = scalar_graph()
    mod = cnncc.compile(g, target="c")
    a, b = np.arange(3, dtype=np.float32), np.ones(3, np.float32)
    y = mod({"a": a, "b": b})
    assert y.shape == () and float(y) == 3.0


@pytest.mark.parametrize("opt", [0, 2])
def test_batched_matmul_broadcast_on_c(opt):
    g = batched_matmul_graph()
    _check(g, cnncc.compile(g, target="c", opt_level=opt), batches=(1, 3))


def test_static_and_batched_matmul_through_cuda_emulation():
    pytest.importorskip("cnncc.runtime.emu")
    if shutil.which("g++") is None:
        pytest.skip("no g++")
    g = batched_matmul_graph()
    _check(g, cnncc.compile(g, target="cuda-emu", opt_level=2), batches=(1, 3))
    g = static_graph()
    _check(g, cnncc.compile(g, target="cuda-emu", opt_level=2))
