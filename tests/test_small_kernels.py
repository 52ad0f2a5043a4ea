"""The small-layer kernels (codegen/c_small.py, templates/c/conv_rowblock.c.j2, dense_gemv.c.j2)
against the reference: the rowblock and pixblock convolutions with the awkward geometries (output channels not a
multiple of the channel block, odd widths and widths over a vector, stride 2 through the column
phases, dilation, padding, several column blocks written last-first, fused max / average /
overlapping pools, an epilogue with a residual operand before a pool, a ceil-mode window past the
plane, two vectors of channels) and the gemv dense layer
(inputs not a multiple of the accumulator sets, a partial output block, softmax and log_softmax
tails, every tile height from batch 1, 3 and 5), planned for AVX-512 and 8-wide vectors from one
graph each."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import cnncc
from cnncc.codegen import c_conv, c_small
from cnncc.codegen.target import CTarget
from cnncc.frontends import dsl
from cnncc.ir import N
from cnncc.passes import fuse
from cnncc.runtime.cpu import host_target
from helpers import assert_matches_reference
from test_codegen_c_conv import isa  # noqa: F401  (fixture)

pytestmark = [pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                 reason="no C compiler"),
              pytest.mark.usefixtures("shared_kernel_cache")]


def small_zoo():
    """One graph: convolutions with few output channels (rowblock) and small dense layers (gemv)."""
    x = dsl.input("x", (N, 3, 15, 19))
    r = dsl.input("r", (N, 5, 15, 19), like=x)
    outs = []
    # 5 channels (a partial block wherever the block is not 5), 'same' padding, residual add then
    # a 2x2 average pool in ceil mode: the epilogue runs on the band before the pool
    a = dsl.conv2d(x, 5, 3, padding=1, name="ra")
    outs.append(dsl.avg_pool2d(dsl.add(a, r, name="ra_add"), 2, ceil_mode=True, name="ra_pool"))
    # LeNet's first layer shape: 5x5, relu, 2x2 max pool; stride 2 with dilation 2 and padding, tanh
    outs.append(dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 6, 5, name="rl"), name="rl_relu"), 2, name="rl_pool"))
    outs.append(dsl.tanh(dsl.conv2d(x, 7, 3, stride=2, dilation=2, padding=(2, 1, 1, 3), name="rs"),
                         name="rs_act"))
    # overlapping 3x3/2 max pool with padding (bands recompute the rows they share); the C target
    # fuses it after a 3x3 over 1 channel, not 3 (passes/fuse.py BALANCE): the test weighs as the GPU
    outs.append(dsl.max_pool2d(dsl.conv2d(x, 4, 3, name="ro"), 3, stride=2, padding=1, name="ro_pool"))
    # a row wider than two vectors of 16 (several column blocks) with no epilogue
    w = dsl.input("w", (N, 2, 4, 37), like=x)
    outs.append(dsl.conv2d(w, 3, (3, 2), padding=(1, 0), name="rw"))
    # pixblock: 16 channels, a narrow plane, max pool in ceil mode (the last window's second row is
    # past the plane); 32 channels (two vectors), stride 2, relu before a 2x2 average pool
    v = dsl.input("v", (N, 4, 9, 11), like=x)
    outs.append(dsl.max_pool2d(dsl.relu(dsl.conv2d(v, 16, 3, padding=1, name="pa"), name="pa_relu"), 2,
                               ceil_mode=True, name="pa_pool"))
    outs.append(dsl.avg_pool2d(dsl.relu(dsl.conv2d(v, 32, 3, stride=2, padding=(0, 1), name="pb"), name="pb_relu"),
                               2, name="pb_pool"))
    # gemv: 90 inputs (not a multiple of 4 accumulator sets), 21 outputs + relu, then
    # 100 outputs (a partial second block on 8-wide vectors), softmax; 3 outputs, log_softmax
    f = dsl.flatten(dsl.max_pool2d(x, 3, stride=3, name="fp"), name="flat")
    h = dsl.relu(dsl.dense(f, 21, name="d1"), name="d1_relu")
    outs.append(dsl.softmax(dsl.dense(h, 100, name="d2"), name="d2_sm"))
    outs.append(dsl.log_softmax(dsl.dense(f, 3, bias=False, name="d3"), name="d3_lsm"))
    return dsl.graph(*outs, name="small_zoo")


CONVS = {"ra", "rl", "rs", "ro", "rw"}
POOL_BAND = {"pa", "pb"}


@pytest.mark.parametrize("vec_regs", [(16, 32), (8, 16)], ids=["avx512-plan", "avx2-plan"])
def test_small_kinds_match_reference(isa, vec_regs, monkeypatch):  # noqa: F811
    isa(vec_regs)
    monkeypatch.setitem(fuse.BALANCE, "c", fuse.BALANCE["cuda"])   # "ro" + its overlapping pool: one kernel
    if vec_regs == (16, 32):   # bands of a few rows: their seams (and pooled windows across them) are checked
        monkeypatch.setattr(c_small, "BAND_FLOATS", 200)
    g = small_zoo()
    mod = cnncc.compile(g, "c", 2)
    plans = {k.name: c_conv.plan(k, host_target()) for k in mod.program.kernels}
    conv = {name: b for name, b in plans.items() if any(name.startswith(c) for c in CONVS)}
    rowblock = sum(b.kind == "rowblock" for b in conv.values())   # 8-wide: channels wins some (c_small.MARGIN)
    assert len(conv) == len(CONVS) and rowblock >= (len(CONVS) if vec_regs == (16, 32) else 2), \
        {n: b.kind for n, b in conv.items()}
    band = [b.kind for name, b in plans.items() if name[:2] in POOL_BAND]
    assert band == (["pixblock"] * 2 if vec_regs == (16, 32) else ["channels", "pixblock"]), band   # 8-wide: 22 pixels > 13
    dense = [b for k, b in zip(mod.program.kernels, plans.values()) if k.family == "dense"]
    assert len(dense) == 3 and all(b.kind == "gemv" for b in dense)
    if vec_regs == (16, 32):   # the shapes meant to reach the awkward paths really do
        assert any(b.NCOL > 1 for b in conv.values()) and any(b.NBAND > 1 for b in conv.values())
    else:
        assert any(b.NCB > 1 and k.geometry["M"] % b.COB for k, b in zip(mod.program.kernels, plans.values())
                   if k.family == "dense")
    for (name, text, _), b in zip(mod.kernels, plans.values()):   # no OpenMP region unless the batch pays for it
        if b is not None and b.kind in c_small.KINDS:
            assert "omp parallel if" not in text and "/* the calling thread alone */" in text, name
    assert_matches_reference(g, mod, (1, 3, 5), against=(mod.report["graph"],))


def test_lenet5_gets_the_small_kinds():
    """On AVX-512: the first conv rowblock (6 channels would idle 10 of 16 lanes), the
    second pixblock (16 channels in the lanes, one pooled row's 2x10 pixels in registers), every
    dense layer gemv."""
    from cnncc.codegen.lower import lower_program

    g = cnncc.optimize(cnncc.load_model(__import__("pathlib").Path(__file__).parent.parent / "examples" / "lenet5.py"))
    target = CTarget("avx512", 16, 32, threads=2)
    kinds = [c_conv.plan(k, target).kind for k in lower_program(g).kernels if k.family in ("conv", "dense")]
    assert kinds == ["rowblock", "pixblock", "gemv", "gemv", "gemv"]


def test_small_packing_holds_the_layer_weights():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((7, 3, 2, 5)).astype(np.float32)
    b = c_small.SmallPlan("rowblock", 16, 3, 3, 1, RT=2)
    packed = c_small.pack(w, b)
    assert packed.shape == (3, 3, 2, 5, 3)
    for co in range(7):
        np.testing.assert_array_equal(packed[co // 3, ..., co % 3], w[co])
    assert not packed[2, ..., 1:].any()
    b = c_small.SmallPlan("pixblock", 4, 4, 2, 1, RT=2)     # [block][kh][kw][ci][channel]
    packed = c_small.pack(w[:, :, :, :], b)
    assert packed.shape == (2, 2, 5, 3, 4)
    np.testing.assert_array_equal(packed[1, :, :, :, 2], w[6].transpose(1, 2, 0))
    assert not packed[1, ..., 3:].any()
    d = rng.standard_normal((21, 90)).astype(np.float32)
    b = c_small.SmallPlan("gemv", 16, 16, 2, 1, NR=1, KS=(4,))
    packed = c_small.pack(d, b)
    assert packed.shape == (2, 90, 16)
    np.testing.assert_array_equal(packed.transpose(0, 2, 1).reshape(32, 90)[:21], d)
    assert not packed[1, :, 5:].any()
