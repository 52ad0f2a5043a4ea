"""The C target's blocked convolution and dense kernels (codegen/c_conv.py + templates/c/conv*.c.j2,
dense.c.j2) against the reference: every kernel kind (channel-vectorized, 1x1 GEMM, row-vectorized
grouped/depthwise, dense) with the awkward geometries (partial channel blocks and tiles, planes
smaller than a tile, strides, dilation, asymmetric padding, groups), every fused epilogue and pool,
batch 1 and 3 from one module -- planned for this machine's vectors and for AVX-512 and 4-wide
ones (the generated C is generic vectors, so every plan runs correctly here)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import cnncc
from cnncc.reference import random_inputs
from cnncc.codegen import c_conv
from cnncc.runtime.cpu import host_target
from cnncc.frontends import dsl
from cnncc.ir import N
from helpers import assert_matches_reference

pytestmark = [pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                 reason="no C compiler"),
              pytest.mark.usefixtures("shared_kernel_cache")]


@pytest.fixture
def isa(monkeypatch):
    """Plan for a given (floats per vector, registers); restores the probe afterwards."""
    def use(vec_regs):
        if vec_regs is None:
            monkeypatch.delenv("CNNCC_C_VECTOR", raising=False)
        else:
            monkeypatch.setenv("CNNCC_C_VECTOR", f"{vec_regs[0]},{vec_regs[1]}")
        host_target.cache_clear()
    yield use
    host_target.cache_clear()
    monkeypatch.undo()
    host_target.cache_clear()


def conv_zoo():
    """One graph, many outputs: each branch exercises a kernel kind and an awkward geometry."""
    x = dsl.input("x", (N, 20, 11, 13))
    r = dsl.input("r", (N, 24, 11, 13), like=x)
    outs = []
    # channels kind: C_out not a multiple of the block, residual add + relu6, odd plane
    a = dsl.conv2d(x, 24, 3, padding=1, name="c3")
    outs.append(dsl.relu6(dsl.add(dsl.batch_norm(a, name="c3_bn"), r, name="c3_add"), name="c3_act"))
    # stride 2, dilation 2, asymmetric padding (top, left, bottom, right), hardswish
    outs.append(dsl.hardswish(dsl.conv2d(x, 17, 3, stride=2, dilation=2, padding=(2, 1, 0, 3), name="cs"),
                              name="cs_act"))
    # dilated rows only: a window row's (kw, ci) stay adjacent, rows are 2 apart
    outs.append(dsl.conv2d(x, 16, 3, padding=(2, 1), dilation=(2, 1), name="cd"))
    # fused max pool (bias + relu after the max) and avg pool (epilogue before it), ceil mode
    outs.append(dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 33, 3, padding=1, name="cp"), name="cp_relu"), 2,
                               ceil_mode=True, name="cp_pool"))
    outs.append(dsl.avg_pool2d(dsl.sigmoid(dsl.conv2d(x, 8, 2, name="ca"), name="ca_act"), 3, stride=2,
                               padding=1, name="ca_pool"))
    # a residual operand read before a 2x2 average pool (the epilogue runs on each band before the pool)
    outs.append(dsl.avg_pool2d(dsl.add(dsl.conv2d(x, 24, 3, padding=1, name="cr"), r, name="cr_add"), 2,
                               ceil_mode=True, name="cr_pool"))
    # a plane smaller than any tile (1x1 output) and a 5x5 window covering the whole padded input
    outs.append(dsl.relu(dsl.conv2d(dsl.max_pool2d(x, 5, stride=8, name="tiny"), 40, 3, padding=1,
                                    name="c1px"), name="c1px_relu"))
    # grouped with whole vectors of output channels per group
    outs.append(dsl.conv2d(dsl.conv2d(x, 64, 1, name="g_in"), 64, 3, padding=1, groups=2, name="g2"))
    # 1x1 kind: GEMM on the planes, partial channel block, fused max pool, and one with a clamp
    outs.append(dsl.max_pool2d(dsl.conv2d(x, 14, 1, name="pw"), 2, name="pw_pool"))
    outs.append(dsl.clip(dsl.conv2d(x, 30, 1, name="pw2"), min=-0.5, max=0.5, name="pw2_clip"))
    # rows kind: depthwise stride 2 with a fused pool, grouped 4 -> 4 with dilation, stride 3
    d = dsl.conv2d(x, 20, 3, stride=2, padding=1, groups=20, name="dw")
    outs.append(dsl.max_pool2d(dsl.relu6(d, name="dw_act"), 2, ceil_mode=True, name="dw_pool"))
    outs.append(dsl.leaky_relu(dsl.conv2d(x, 20, 3, padding=2, dilation=2, groups=5, name="gr"), alpha=0.1,
                               name="gr_act"))
    outs.append(dsl.conv2d(x, 40, 4, stride=3, padding=(0, 2, 1, 0), groups=20, name="dw3"))
    return dsl.graph(*outs, name="conv_zoo")


def dense_zoo():
    x = dsl.input("x", (N, 1001))
    h = dsl.relu6(dsl.dense(x, 13, name="fc1"), name="fc1_act")       # K not a multiple of a vector
    y = dsl.softmax(dsl.dense(h, 7, name="fc2"), name="fc2_sm")       # fewer rows than a block
    z = dsl.softmax(dsl.dense(x, 1000, bias=False, name="fc3"), name="fc3_sm")   # 1M multiply-adds: not small
    return dsl.graph(y, z, name="dense_zoo")


def check(g, mod, batches=(1, 3)):
    assert_matches_reference(g, mod, batches, against=(mod.report["graph"],))


def kinds(mod) -> set[str]:
    return {c_conv.plan(s, host_target()).kind for s in mod.program.kernels
            if c_conv.plan(s, host_target()) is not None}


@pytest.mark.parametrize("vec_regs", [None, (16, 32), (4, 16)], ids=["native", "avx512-plan", "4wide-plan"])
def test_conv_kinds_match_reference(isa, vec_regs):
    isa(vec_regs)
    g = conv_zoo()
    mod = cnncc.compile(g, "c", 2)
    assert {"channels", "pixels", "rows"} <= kinds(mod) <= {"channels", "pixels", "rows", "rowblock"}   # small: c_small
    source = mod.source
    assert "tile_k_c3_" in source and "fused max pool" in source
    plans = [c_conv.plan(k, host_target()) for k in mod.program.kernels if k.pool is not None]
    banded = [b for b in plans if b is not None and b.kind == "channels"]
    assert banded and all(b.NBAND > 1 for b in banded)   # several bands per plane: their seams are checked
    assert any(k.pool is not None and any(e.operand for e in k.epilogue) for k in mod.program.kernels)
    check(g, mod)


@pytest.mark.parametrize("vec_regs", [None, (16, 32)], ids=["native", "avx512-plan"])
def test_dense_matches_reference(isa, vec_regs):
    isa(vec_regs)
    g = dense_zoo()
    mod = cnncc.compile(g, "c", 2)
    assert kinds(mod) == {"dense", "gemv"}   # fc1, fc2 are small layers (codegen/c_small.py)
    check(g, mod, batches=(1, 2, 3, 9))


def test_opt0_unfused_convs_match_reference():
    g = conv_zoo()
    check(g, cnncc.compile(g, "c", 0), batches=(2,))


def test_packed_weights_hold_the_layer_weights():
    """Every packed block is the PyTorch weight reordered, zeros past the last channel."""
    rng = np.random.default_rng(1)
    for groups, c_out, ci_g in ((1, 24, 5), (2, 64, 3)):
        w = rng.standard_normal((c_out, ci_g, 3, 2)).astype(np.float32)
        b = c_conv.ConvBlocking("channels", 8, 2, 16, 6, groups * -(-c_out // groups // 16), 1)
        packed = c_conv.pack(w, groups, b)
        per_group = b.NCB // groups
        for co in range(c_out):
            grp, j = divmod(co, c_out // groups)
            blk, lane = grp * per_group + j // 16, j % 16
            np.testing.assert_array_equal(packed[blk, :, :, :, lane], w[co].transpose(1, 2, 0))
        if c_out % 16:
            assert not packed[-1, ..., c_out % 16:].any()
    w = rng.standard_normal((30, 7, 1, 1)).astype(np.float32)
    b = c_conv.ConvBlocking("pixels", 8, 2, 6, 16, 5, 1)
    packed = c_conv.pack(w, 1, b)
    np.testing.assert_array_equal(packed.transpose(0, 2, 1).reshape(30, 7), w[:, :, 0, 0])


@pytest.mark.parametrize("vec,regs", [(8, 16), (16, 32), (4, 16), (4, 32)])
def test_tiles_fit_the_register_file(vec, regs):
    """Accumulators + weight vectors + one broadcast never exceed the registers (gcc would
    spill or reload weights on every FMA), and a tile never outgrows the plane."""
    for co_g, plane, groups in ((64, 3136, 1), (512, 49, 1), (6, 784, 1), (1000, 1, 1), (32, 100, 2), (4, 9, 8)):
        choice = c_conv._choose(co_g, plane, groups, vec, regs)
        if choice is None:
            assert groups > 1 and co_g % vec
            continue
        V, P = choice
        assert V * P + V + 1 <= regs - 1 and 1 <= P <= plane
        if groups > 1:
            assert co_g % (V * vec) == 0


def test_saved_module_keeps_packed_weights(tmp_path):
    g = conv_zoo()
    mod = cnncc.compile(g, "c", 2)
    assert any(".weight.c_channels" in k for k in mod.program.blob_layout)
    mod.save(tmp_path / "m")
    loaded = cnncc.load(tmp_path / "m")
    rng = np.random.default_rng(2)
    feeds = random_inputs(g, 2, rng)
    a, b = mod(feeds), loaded(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_packed_program_holds_each_weight_once_and_refuses_other_vectors(isa):
    """A packed convolution's PyTorch-layout copy leaves the blob (it was held and saved twice);
    rendering that Program for another vector width then says to compile again (never a kernel
    reading another layout)."""
    from cnncc.errors import CompileError
    from cnncc.runtime.module import get_backend

    g = conv_zoo()
    mod = cnncc.compile(g, "c", 2)
    packed = [k for k in mod.program.blob_layout if ".c_" in k]
    assert packed
    for key in packed:
        assert key.split(".c_")[0] not in mod.program.blob_layout     # the original is gone
    total = sum(int(np.prod(s)) for _, s in mod.program.blob_layout.values())
    assert mod.program.blob.size < total + 16 * len(mod.program.blob_layout)
    check(g, mod, batches=(2,))
    isa((8, 16) if host_target().vector_floats == 16 else (16, 32))   # whichever this machine is not
    with pytest.raises(CompileError, match="compile the model again"):
        get_backend("c").render(mod.program)


def test_the_channels_copy_strides_pixels_off_a_power_of_two():
    """c_conv.copy_stride: the channels kind's input copy puts pixels 256 / 512 channels apart one
    64-byte line further (2 KiB apart, a tile's pixels had shared one or two L1 sets: ResNeXt's
    grouped 3x3 at 512 channels ran 2.5x slower than at 496); the taps, the copy and the zero
    border all follow the stride, ungrouped ones without merging (kw, ci) into one loop. Checked
    against the reference: grouped stride 2, and ungrouped at opt 0 (NCHW, the channels kind)."""
    assert c_conv.copy_stride(512) == 528 and c_conv.copy_stride(256) == 272
    assert c_conv.copy_stride(496) == 496 and c_conv.copy_stride(64) == 64
    x = dsl.input("x", (N, 256, 9, 9))
    a = dsl.relu(dsl.conv2d(x, 256, 3, stride=2, padding=1, groups=16, name="grouped"), name="gr")
    b = dsl.relu(dsl.conv2d(x, 32, 3, padding=1, name="plain"), name="pr")
    g = dsl.graph(a, b, name="strided_copy")
    for opt in (0, 2):
        mod = cnncc.compile(g, "c", opt)
        plans = [c_conv.plan(k, host_target()) for k in mod.program.kernels if k.family == "conv"]
        if opt == 0:
            assert [p.CS for p in plans if p.kind == "channels"] == [272, 272], plans
            assert mod.rendered.source.count("pixels 272 floats apart") == 2
        check(g, mod)
