"""Winograd convolution on the C target (codegen/c_winograd.py + templates/c/conv_winograd.c.j2):
the transforms against a direct convolution, the packed weights, the kernel against the reference
for F(2x2,3x3) and F(4x4,3x3) with every epilogue shape and the fused 2x2 max pool (odd planes,
ceil mode, residual operands, partial channel blocks, planes smaller than a tile) planned for this
machine's vectors and for AVX2's, the per-layer rule and its fallbacks as `cnncc
inspect` shows them, and examples with each conv algorithm forced."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc.cli import main
from cnncc.codegen import c_conv, c_winograd
from cnncc.codegen.lower import lower_program
from cnncc.errors import CnnccError
from cnncc.frontends import dsl
from cnncc.ir import N
from cnncc.runtime.cpu import host_target

from test_codegen_c import check, example_graph
from test_codegen_c_conv import isa  # noqa: F401  (fixture)

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
pytestmark = pytest.mark.usefixtures("shared_kernel_cache")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def direct(x: np.ndarray, w: np.ndarray, padding: int) -> np.ndarray:
    """float64 3x3 stride-1 convolution."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    return sum(np.einsum("nchw,oc->nohw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j].astype(np.float64))
               for i in range(3) for j in range(3))


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("hw,padding", [((7, 9), 1), ((6, 6), 0), ((5, 11), 2), ((3, 3), 0)])
def test_transforms_compute_the_convolution(m, hw, padding):
    rng = np.random.default_rng(m)
    x = rng.standard_normal((2, 5, *hw)).astype(np.float32)
    w = rng.standard_normal((3, 5, 3, 3)).astype(np.float32)
    ref = direct(x, w, padding)
    got = c_winograd.conv2d(x, w, m, padding)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() / np.abs(ref).max() < (1e-6 if m == 2 else 1e-5)


def test_packed_weights_are_the_transformed_weights():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((21, 5, 3, 3)).astype(np.float32)
    b = c_winograd.WinogradPlan(4, 8, 2, 16, 4, 2, 1, 1, 1, 1, 2, 1, False)
    packed = c_winograd.pack(w, b)
    _, G, _ = c_winograd.MATRICES[4]
    assert packed.shape == (2, 36, 5, 16)
    for co in (0, 15, 16, 20):
        for ci in (0, 4):
            u = G @ w[co, ci].astype(np.float64) @ G.T
            np.testing.assert_allclose(packed[co // 16, :, ci, co % 16], u.ravel(), rtol=1e-6)
    assert not packed[1, :, :, 5:].any()      # channels 21.. of the last block are zeros


def wino_zoo():
    """Each output exercises the Winograd kernel in another way; the last two cannot use it."""
    x = dsl.input("x", (N, 20, 11, 13))
    r = dsl.input("r", (N, 24, 11, 13), like=x)
    outs = []
    # residual add + folded BN + relu6 in the epilogue, C_out not a multiple of a vector
    a = dsl.conv2d(x, 24, 3, padding=1, name="w_res")
    outs.append(dsl.relu6(dsl.add(dsl.batch_norm(a, name="w_bn"), r, name="w_add"), name="w_act"))
    # fused 2x2 max pool, ceil mode on an odd plane: bias and relu after the max
    outs.append(dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 33, 3, padding=1, name="w_pool"), name="w_prelu"), 2,
                               ceil_mode=True, name="w_pooled"))
    # fused pool with a residual operand read before the max (floor mode drops the odd row/column)
    outs.append(dsl.max_pool2d(dsl.add(dsl.conv2d(x, 24, 3, padding=1, name="w_rp"), r, name="w_rp_add"), 2,
                               name="w_rp_pool"))
    # asymmetric padding (top, left, bottom, right) and no padding at all
    outs.append(dsl.conv2d(x, 17, 3, padding=(2, 0, 1, 3), name="w_asym"))
    outs.append(dsl.sigmoid(dsl.conv2d(x, 8, 3, name="w_valid"), name="w_sig"))
    # a 1x1 output: smaller than any tile
    outs.append(dsl.conv2d(dsl.max_pool2d(x, 3, stride=4, name="w_small_in"), 40, 3, name="w_1px"))
    # enough output channels for several channel groups per tile chunk (the last one partial on some targets)
    outs.append(dsl.conv2d(x, 200, 3, padding=1, name="w_wide"))
    # not Winograd: stride 2, and a fused average pool
    outs.append(dsl.conv2d(x, 16, 3, stride=2, padding=1, name="w_s2"))
    outs.append(dsl.avg_pool2d(dsl.conv2d(x, 16, 3, padding=1, name="w_avg"), 2, name="w_avg_pool"))
    return dsl.graph(*outs, name="wino_zoo")


WINOGRAD_KERNELS = 7


@needs_cc
@pytest.mark.parametrize("algorithm,vec_regs", [("winograd2", None), ("winograd4", None), ("winograd", (8, 16))],
                         ids=["F2-native", "F4-native", "winograd-avx2-plan"])
def test_winograd_kernel_matches_reference(isa, algorithm, vec_regs, monkeypatch):  # noqa: F811
    isa(vec_regs)
    if vec_regs:   # 3 F(4x4) tiles per task (C_in 20): chunks start and end inside tile rows
        monkeypatch.setattr(c_winograd, "BUFFER_BYTES", 3 * 36 * 20 * 4)
    g = wino_zoo()
    mod = cnncc.compile(g, "c", 2, conv_algorithm=algorithm)
    plans = [c_conv.plan(k, host_target(), algorithm) for k in mod.program.kernels if k.family == "conv"]
    wino = [p for p in plans if p.kind == "winograd"]
    assert len(wino) == WINOGRAD_KERNELS and sum(p.pooled for p in wino) == 2
    avg = next(k for k in mod.program.kernels if k.pool is not None and k.pool.kind == "avg")
    assert "falls back: fused avg pool 2x2/2" in c_winograd.choose(avg, algorithm).reason
    m = 2 if algorithm == "winograd2" else 4
    f2 = 1 if algorithm == "winograd" else 0    # "winograd" keeps F(2x2) for the 1x1 plane (under a 4x4 tile)
    assert sum(p.m == m for p in wino) == WINOGRAD_KERNELS - f2
    assert mod.source.count(f"Winograd F({m}x{m},3x3)") == WINOGRAD_KERNELS - f2
    assert any(".c_winograd" in k for k in mod.program.blob_layout)
    if vec_regs:
        assert any(p.TB == 3 and p.TW == 4 for p in wino)
    assert any(p.NCG > 1 for p in wino)
    check(g, mod)


@needs_cc
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the numpy reference on NaN/Inf inputs
@pytest.mark.parametrize("algorithm,layout,items", [("winograd2", "nchw", 1), ("winograd4", "blocked", 2)])
def test_whole_planes_in_three_steps_match_the_reference(algorithm, layout, items, monkeypatch):
    """WinogradPlan.planes: every tile row of ``items`` items transformed into one V, the GEMMs
    per (position, block), the output transforms per (item, block, tile) -- with the zoo's
    epilogues, pools and edge tiles, and NaN/Inf inputs (a shared flag, reduced over the first
    step's tasks); passes of two items over three end on a short one."""
    from test_ieee import assert_ieee_equal, special_input

    monkeypatch.setattr(c_winograd, "planes_pay", lambda g, m: True)
    monkeypatch.setattr(c_winograd, "PLANES_MAX_ITEMS", items)
    g = wino_zoo()
    mod = cnncc.compile(g, "c", 2, conv_algorithm=algorithm, layout=layout)
    wino = [p for p in (c_conv.plan(k, host_target(), algorithm) for k in mod.program.kernels if k.family == "conv")
            if p.kind == "winograd"]
    assert len(wino) == WINOGRAD_KERNELS and all(p.planes and p.NCH == 1 and p.IB == items for p in wino)
    assert ("2 items at a time" if items == 2 else "item by item") + ", in three steps split over the threads" \
        in mod.source
    check(g, mod)
    xx = special_input((3, 20, 11, 13), seed=5)
    xx[2] = np.random.default_rng(6).standard_normal((20, 11, 13))          # item 2 finite: the flag resets per pass
    feeds = {"x": xx, "r": np.random.default_rng(7).standard_normal((3, 24, 11, 13)).astype(np.float32)}
    ref, out = cnncc.reference(g, feeds), mod(feeds)
    for k in ref:
        assert_ieee_equal(out[k], ref[k], f"{algorithm}, output {k}")


@needs_cc
def test_from_a_batch_on_winograd_else_direct(monkeypatch, tmp_path):
    """batch_choice: a layer whose direct kernel wins at batch 1 gets F(4x4) in whole planes from
    min_batch items on -- both kernels compiled, the call picks by N -- each matching the reference."""
    monkeypatch.setattr(c_winograd, "PLANES_MIN_U_BYTES", 0)        # a small layer stands for ResNet's
    monkeypatch.setattr(c_winograd, "BATCH_U_BYTES", 1 << 30)       # -> BATCH_MIN_ITEMS (3) items
    x = dsl.input("x", (N, 64, 6, 6))
    y = dsl.relu(dsl.conv2d(x, 64, 3, padding=1, name="pre"), name="pre_relu")  # NCHW16c / 8c from here on
    g = dsl.graph(dsl.relu(dsl.conv2d(y, 72, 3, padding=1, name="c3"), name="c3_relu"), name="batch_wino")
    mod = cnncc.compile(g, "c", 2, layout="blocked")
    spec = next(k for k in mod.program.kernels if k.name.startswith("c3"))
    choice = c_winograd.choose(spec, "auto")
    assert choice.m == 4 and choice.min_batch == 3 and "at N >= 3, direct below" in choice.text
    assert "from 3 items on F(4x4) in whole planes" in choice.reason
    b = c_conv.plan(spec, host_target(), "auto")
    assert b.kind == "winograd" and b.planes and b.min_batch == 3
    assert f"if (N >= 3) kernel_{spec.cname}_winograd(" in mod.source and f"kernel_{spec.cname}_direct(" in mod.source
    assert "packed_direct" in spec.weights
    for n in (1, 3, 4):
        feeds = {"x": np.random.default_rng(n).standard_normal((n, 64, 6, 6)).astype(np.float32)}
        ref, out = cnncc.reference(g, feeds), mod(feeds)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=f"batch {n}")
    loaded = cnncc.load(mod.save(tmp_path / "m"))          # both kernels' weights travel with a saved module
    np.testing.assert_array_equal(loaded(feeds), out)
    assert c_winograd.choose(spec, "direct").m == 0 and c_winograd.choose(spec, "winograd").min_batch == 0


def test_the_batch_rule_on_resnet_layers():
    """ResNet-50's 256-channel 14x14 layers take Winograd from 3 items on (U 9.4 MB); the 512-channel
    7x7 ones would from 8 (U 37.7 MB), more than BATCH_MAX_ITEMS: no batch form, nor where U stays
    in cache."""
    def spec(c, hw):
        x = dsl.input("x", (N, c, hw, hw))
        y = dsl.relu(dsl.conv2d(x, c, 3, padding=1, name="pre"), name="pre_relu")   # NCHW[V]c from here on
        g = dsl.graph(dsl.conv2d(y, c, 3, padding=1, name="c3"), name="rule")
        return next(k for k in lower_program(cnncc.optimize(g, 2, layout_vector=host_target().vector_floats)).kernels
                    if k.name == "c3")
    assert [c_winograd.choose(spec(c, hw), "auto").min_batch for c, hw in ((256, 14), (512, 7))] == [3, 0]
    assert c_winograd.choose(spec(512, 7), "auto").m == 0
    assert c_winograd.batch_choice(spec(128, 7), "") is None                   # U 2.4 MB stays in cache


def test_whole_planes_where_U_outgrows_the_cache():
    """The rule on VGG's layers: 512 -> 512 at 28x28 and 256 -> 256 at 56x56 run in three steps,
    128 -> 128 at 112x112 (U 2.4 MB) and 64 -> 64 at 224x224 stay fused."""
    def geo(c, hw):
        return dict(C_in=c, C_out=c, OH=hw, OW=hw)
    assert c_winograd.planes_pay(geo(512, 28), 4) and c_winograd.planes_pay(geo(256, 56), 4)
    assert not c_winograd.planes_pay(geo(128, 112), 4) and not c_winograd.planes_pay(geo(64, 224), 4)


@needs_cc
def test_nan_and_inf_inputs_give_the_reference_outputs(tmp_path):
    """The transforms would spread a NaN or Inf over whole tiles (an Inf - Inf makes NaN): tasks
    with a non-finite input compute direct sums, so every output is the reference's, NaN for NaN."""
    from test_ieee import assert_ieee_equal, special_input

    x = dsl.input("x", (N, 6, 9, 10))
    g = dsl.graph(dsl.relu(dsl.conv2d(x, 8, 3, padding=1, name="c"), name="c_relu"),
                  dsl.max_pool2d(dsl.conv2d(x, 8, 3, padding=1, name="p"), 2, name="p_pool"), name="wino_ieee")
    xx = special_input((2, 6, 9, 10), seed=3)
    xx[1, :, :5] = np.random.default_rng(4).standard_normal((6, 5, 10))   # item 1's upper tiles stay finite
    ref = cnncc.reference(g, {"x": xx})
    for algorithm in ("winograd2", "winograd4"):
        mod = cnncc.compile(g, "c", 2, conv_algorithm=algorithm)
        assert mod.source.count("Winograd F(") == 2
        out = mod({"x": xx})
        for k in ref:
            assert_ieee_equal(out[k], ref[k], f"{algorithm}, output {k}")
    loaded = cnncc.load(mod.save(tmp_path / "m"))          # the algorithm travels with a saved module
    assert loaded.program.conv_algorithm == "winograd4"
    again = loaded({"x": xx})
    for k in out:
        np.testing.assert_array_equal(again[k], out[k])


def test_the_rule_and_its_fallbacks_in_inspect(capsys, monkeypatch):
    import dataclasses

    from cnncc.runtime import cpu

    host = cpu.host_target()
    full = dataclasses.replace(host, fma_flops=2 * c_winograd.NARROW_FMA_FLOPS)   # a Xeon's two 512-bit FMA units
    monkeypatch.setattr(cpu, "host_target", lambda: full)
    assert main(["inspect", str(EXAMPLES / "vgg16.py"), "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "C convolutions (conv_algorithm='auto')" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("conv")}
    assert "direct" in rows["conv1_1_relu1_1"] and "3 channels" in rows["conv1_1_relu1_1"]
    assert "winograd F(4x4,3x3)" in rows["conv1_2_relu1_2_pool1"]      # 64x64 plane, fused pool
    # blocked layout (opt 2's default): where F(4x4) cannot go at batch 1, the row-tile direct kernel
    # runs below a batch of 3, F(4x4) in whole planes from there (U 4.7 MB read once per pass)
    assert "at N >= 3, direct below" in rows["conv3_1_relu3_1"] and "plane < 28" in rows["conv3_1_relu3_1"] \
        and "from 3 items on" in rows["conv3_1_relu3_1"]
    assert "direct" in rows["conv5_1_relu5_1"] and "too few tiles" in rows["conv5_1_relu5_1"]
    assert "winograd planes / rowtiles" in rows["conv3_2_relu3_2"]
    assert main(["inspect", str(EXAMPLES / "vgg16.py"), "--size", "64", "--layout", "nchw"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("conv")}
    assert "winograd F(2x2,3x3)" in rows["conv3_1_relu3_1"] and "plane < 28" in rows["conv3_1_relu3_1"]
    # FMA units of 32 FLOP/cycle (Zen 4's AVX-512 in 256-bit halves, AVX2): F(4x4) at batch 1 on 16x16 planes too
    monkeypatch.setattr(cpu, "host_target", lambda: dataclasses.replace(full, fma_flops=c_winograd.NARROW_FMA_FLOPS))
    assert main(["inspect", str(EXAMPLES / "vgg16.py"), "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "FMA 32 FLOP/cycle" in next(t for t in out.splitlines() if "C convolutions" in t)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("conv")}
    for name in ("conv3_1_relu3_1", "conv3_2_relu3_2"):
        assert "winograd F(4x4,3x3)" in rows[name] and "N >=" not in rows[name], rows[name]
        assert "FLOP/cycle F(4x4) outruns the row-tile direct kernel" in rows[name]
    assert "direct" in rows["conv5_1_relu5_1"] and "too few tiles" in rows["conv5_1_relu5_1"]
    monkeypatch.setattr(cpu, "host_target", lambda: full)
    # forced: a layer that cannot use Winograd falls back to direct and says so
    assert main(["inspect", str(EXAMPLES / "resnet18.py"), "--size", "32", "--conv-algorithm", "winograd"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "3x3/" in line or "7x7/" in line}
    stem = next(v for k, v in rows.items() if "7x7/2" in v)
    assert "direct" in stem and "falls back: kernel 7x7" in stem
    assert any("3x3/2" in v and "falls back: stride 2x2" in v for v in rows.values())
    assert any("winograd F(4x4,3x3)" in v and "forced" in v for v in rows.values())
    assert all("winograd" in v for v in rows.values() if "3x3/1" in v)
    from cnncc import report        # symbolic spatial sizes do not lower: the table says so

    symbolic = cnncc.optimize(cnncc.load_model(EXAMPLES / "lenet5.py", symbolic="H,W"))
    assert "not shown, the graph does not lower" in report.conv_algorithm_table(symbolic)


def test_f4_accuracy_bound_and_bad_names():
    g = dsl.graph(dsl.conv2d(dsl.input("x", (N, 600, 8, 8)), 64, 3, padding=1, name="wide"))
    spec = next(k for k in lower_program(cnncc.optimize(g)).kernels if k.family == "conv")
    assert c_winograd.choose(spec, "winograd").m == 2            # C_in 600 > F4_MAX_CIN
    assert c_winograd.choose(spec, "winograd4").m == 4           # forced anyway
    assert c_winograd.choose(spec, "direct").m == 0
    with pytest.raises(CnnccError, match="conv_algorithm must be one of"):
        cnncc.compile(g, "c", conv_algorithm="fft")
    with pytest.raises(CnnccError, match="is for the C target"):
        cnncc.compile(g, "cuda-emu", conv_algorithm="winograd")


#: examples compiled in CI with each algorithm forced (the default "auto" is test_codegen_c's);
#: CNNCC_SLOW=1 runs every example
QUICK = ("resnet18",)


def _example_cases():
    for path in sorted(p for p in EXAMPLES.glob("*.py") if "\ndef model(" in p.read_text()):
        for algorithm in ("direct", "winograd"):
            marks = () if path.stem in QUICK else (pytest.mark.slow,)
            yield pytest.param(path, algorithm, id=f"{path.stem}-{algorithm}", marks=marks)


@needs_cc
@pytest.mark.parametrize("path,algorithm", list(_example_cases()))
def test_example_with_each_conv_algorithm(path, algorithm):
    g = example_graph(path)
    mod = cnncc.compile(g, "c", 2, conv_algorithm=algorithm)
    kinds = {c_conv.plan(k, host_target(), algorithm).kind for k in mod.program.kernels if k.family == "conv"}
    assert ("winograd" in kinds) == (algorithm == "winograd" and any(
        c_winograd.why_not(k) is None for k in mod.program.kernels if k.family == "conv"))
    check(g, mod, batches=(2,))
