"""Every CUDA template family, executed on the CPU through the fiber emulation (target
"cuda-emu") against the numpy reference. Outputs and scratch memory start as NaN (EmuRunner
poisons them), so a kernel that skips an element fails. Each graph bundles several families
as separate outputs so one g++ build covers many kernels; every graph runs batch 1 and 3 (and
the dense graph 17, beyond one 16-row tile) from the same compiled module."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnncc
from cnncc.frontends import dsl
from cnncc.ir import N
from helpers import assert_matches_reference, rel_err

RTOL = 1e-4


def check(g, mod, batches=(1, 3), seed=0):
    assert_matches_reference(g, mod, batches, rtol=RTOL, seed=seed)


def kernel_text(mod) -> str:
    return "\n".join(src for _, src, _ in mod.kernels)


def conv_graph():
    x = dsl.input("x", (N, 6, 11, 11))
    outs = [
        dsl.relu(dsl.conv2d(x, 20, 3, padding=1, name="gemm"), name="gemm_relu"),
        dsl.leaky_relu(dsl.batch_norm(dsl.conv2d(x, 12, (3, 5), stride=2, dilation=2, padding=2, groups=2, bias=False,
                                                 name="grouped"), name="grouped_bn"), alpha=0.1, name="grouped_lrelu"),
        dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 10, 3, padding=1, name="cmax"), name="cmax_relu"), 2, name="cmax_pool"),
        dsl.avg_pool2d(dsl.relu(dsl.conv2d(x, 8, 3, name="cavg"), name="cavg_relu"), 3, stride=2, padding=1,
                       name="cavg_pool"),
        dsl.max_pool2d(dsl.conv2d(x, 7, 3, padding=1, name="cover"), 3, stride=2, padding=1, ceil_mode=True,
                       name="cover_pool"),
        dsl.relu(dsl.add(dsl.conv2d(x, 6, 3, padding=1, name="cres"), x, name="cres_add"), name="cres_relu"),
    ]
    return dsl.graph(*outs, name="convs")


def direct_graph():
    x = dsl.input("x", (N, 4, 10, 10))
    img = dsl.input("img", (N, 1, 12, 12), like=x)
    seq = dsl.input("seq", (N, 3, 20), like=x)
    outs = [
        dsl.relu6(dsl.conv2d(x, 4, 3, padding=1, groups=4, name="dw"), name="dw_relu6"),
        dsl.max_pool2d(dsl.relu(dsl.conv2d(img, 5, 5, name="stem"), name="stem_relu"), 2, name="stem_pool"),
        dsl.conv1d(seq, 8, 5, padding=2, name="c1d_direct"),
        dsl.relu(dsl.conv1d(seq, 8, 11, stride=2, name="c1d_gemm"), name="c1d_relu"),
        dsl.relu(dsl.conv_transpose2d(x, 3, 3, stride=2, padding=1, output_padding=1, name="up"), name="up_relu"),
        dsl.conv_transpose2d(x, 4, 4, stride=2, groups=2, bias=False, name="up_grouped"),
    ]
    return dsl.graph(*outs, name="direct")


def dense_graph():
    x = dsl.input("x", (N, 70))
    outs = [dsl.relu(dsl.dense(x, 75, name="fc"), name="fc_relu"),
            dsl.softmax(dsl.dense(x, 10, name="cls"), name="cls_softmax"),
            dsl.log_softmax(dsl.dense(x, 13, name="lcls"), name="lcls_logsoftmax")]
    return dsl.graph(*outs, name="dense")


def misc_graph():
    x = dsl.input("x", (N, 5, 9, 9))
    y = dsl.input("y", (N, 5, 9, 9), like=x)
    scale = np.linspace(0.5, 1.5, 5, dtype=np.float32).reshape(1, 5, 1, 1)
    outs = [
        dsl.max_pool2d(x, 3, stride=2, ceil_mode=True, name="maxp"),
        dsl.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False, name="avgp_excl"),
        dsl.avg_pool2d(x, 2, padding=1, ceil_mode=True, name="avgp_incl"),
        dsl.max_pool2d(x, 2, stride=1, dilation=2, name="maxp_dil"),
        dsl.global_avg_pool(x, name="gap"),
        dsl.global_max_pool(y, name="gmp"),
        dsl.softmax(x, axis=1, name="sm_channels"),
        dsl.log_softmax(y, axis=3, name="lsm_rows"),
        dsl.sigmoid(dsl.add(dsl.mul(x, scale, name="ew_mul"), y, name="ew_add"), name="ew_sigmoid"),
    ]
    return dsl.graph(*outs, name="misc")


def movement_graph():
    """gather (transpose, pad in three modes, depth/space, nearest resize, unpooling), bilinear
    resize, LRN, instance norm, Lp pooling, argmax pooling + max unpooling, matmul."""
    x = dsl.input("x", (N, 4, 6, 6))
    v = dsl.input("v", (N, 3, 5, 7), like=x)
    y, idx = dsl.max_pool2d_with_indices(x, 2, name="mp")
    outs = [
        dsl.transpose(x, (0, 2, 3, 1), name="nhwc"),
        dsl.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)), name="pad_const", value=0.5),
        dsl.pad(x, 2, mode="reflect", name="pad_reflect"),
        dsl.pad(x, 1, mode="edge", name="pad_edge"),
        dsl.depth_to_space(x, 2, name="d2s"),
        dsl.space_to_depth(x, 2, mode="CRD", name="s2d"),
        dsl.upsample2d(v, 2, name="up_nearest"),
        dsl.upsample2d(v, 2, mode="bilinear", name="up_bilinear"),
        dsl.upsample2d(v, size=(8, 9), mode="bilinear", align_corners=True, name="up_corners"),
        dsl.unpool_nearest2d(v, 2, name="unpool_nn"),
        dsl.lrn(x, 3, alpha=0.5, beta=0.75, k=2.0, name="norm"),
        dsl.instance_norm(v, name="inorm"),
        dsl.lp_pool2d(x, 2.0, 2, name="lp2"),
        dsl.lp_pool2d(x, 3.0, 3, stride=2, ceil_mode=True, name="lp3"),
        idx,
        dsl.max_unpool2d(y, idx, 2, name="unpool_max"),
        dsl.relu(dsl.matmul(v, np.linspace(-1, 1, 7 * 4, dtype=np.float32).reshape(7, 4), name="mm_const"),
                 name="mm_relu"),
        dsl.matmul(x, dsl.transpose(x, (0, 1, 3, 2), name="xt"), name="mm_batched"),
    ]
    return dsl.graph(*outs, name="movement")


@pytest.mark.parametrize("make, batches", [(conv_graph, (1, 3)), (direct_graph, (1, 3)), (dense_graph, (1, 17)),
                                           (misc_graph, (1, 3)), (movement_graph, (1, 3))],
                         ids=["conv", "direct", "dense", "misc", "movement"])
def test_template_families_match_reference(make, batches):
    g = make()
    mod = cnncc.compile(g, target="cuda-emu", opt_level=2)
    check(g, mod, batches)


def test_fused_variants_are_the_ones_exercised():
    """The conv graph really goes through the GEMM, fused pooling and residual paths."""
    mod = cnncc.compile(conv_graph(), target="cuda-emu", opt_level=2)
    text = kernel_text(mod)
    assert text.count("implicit GEMM") == 6 and "groups 2" in text
    assert "fused max pool 2x2" in text and "after the max" in text     # bias + relu after the max
    assert "cres_add" in text                                            # residual add in the epilogue
    direct = kernel_text(cnncc.compile(direct_graph(), target="cuda-emu", opt_level=2))
    assert direct.count("direct convolution") == 3 and direct.count("transposed convolution") == 2


def hand_fused_graph():
    """Fused groups built by hand (contract B) for the paths the fuse pass's cost model avoids:
    overlapping pool windows on the GEMM and the direct convolution, a pool after a residual
    add (epilogue before the pool), a transposed convolution with a pool, dense + softmax."""
    from cnncc.ir import Graph, Node

    rng = np.random.default_rng(5)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    g = Graph("hand_fused")
    g.add(Node("x", "input", [], {"shape": (N, 6, 9, 9)}))
    g.add(Node("skip", "sigmoid", ["x"]))
    groups = {
        "gemm_maxpool": [Node("c1", "conv2d", ["x"], {"padding": 1}, {"weight": f32(10, 6, 3, 3), "bias": f32(10)}),
                         Node("s1", "scale_shift", ["c1"], {}, {"scale": np.linspace(0.5, 2, 10, dtype=np.float32),
                                                              "shift": f32(10)}),
                         Node("r1", "relu", ["s1"]),
                         Node("p1", "max_pool2d", ["r1"], {"kernel_size": 3, "stride": 2, "padding": 1})],
        "gemm_res_avgpool": [Node("c2", "conv2d", ["x"], {"padding": 1}, {"weight": f32(6, 6, 3, 3)}),
                             Node("a2", "add", ["c2", "skip"]),
                             Node("r2", "relu", ["a2"]),
                             Node("p2", "avg_pool2d", ["r2"], {"kernel_size": 3, "stride": 2, "ceil_mode": True})],
        "direct_maxpool": [Node("c3", "conv2d", ["x"], {"groups": 6, "padding": 2}, {"weight": f32(6, 1, 5, 5),
                                                                                    "bias": f32(6)}),
                           Node("r3", "relu6", ["c3"]),
                           Node("p3", "max_pool2d", ["r3"], {"kernel_size": 3, "stride": 2, "ceil_mode": True})],
        "deconv_maxpool": [Node("c4", "conv_transpose2d", ["x"], {"stride": 2}, {"weight": f32(6, 4, 3, 3),
                                                                                 "bias": f32(4)}),
                           Node("r4", "tanh", ["c4"]),
                           Node("p4", "min_pool2d", ["r4"], {"kernel_size": 2})],
    }
    for name, members in groups.items():
        external = ["x"] + (["skip"] if any("skip" in m.inputs for m in members) else [])
        kind = "conv_transpose" if members[0].op == "conv_transpose2d" else "conv"
        g.add(Node(name, "fused", external, {"kind": kind}, members=members))
    g.add(Node("flat", "flatten", ["direct_maxpool"]))
    g.add(Node("head", "fused", ["flat"], {"kind": "dense"},
               members=[Node("fc", "dense", ["flat"], {}, {"weight": f32(7, 6 * 16), "bias": f32(7)}),
                        Node("sm", "softmax", ["fc"])]))
    g.outputs = list(groups) + ["head"]
    return g.infer_shapes()


def test_hand_fused_groups():
    g = hand_fused_graph()
    mod = cnncc.compile(g, target="cuda-emu", opt_level=0)
    kinds = {k.name: k for k in mod.program.kernels}
    assert kinds["gemm_maxpool"].pool.post_epilogue and not kinds["gemm_res_avgpool"].pool.post_epilogue
    text = kernel_text(mod)
    assert text.count("overlapping windows recompute") == 2 and "softmax over the 7 outputs" in text
    check(g, mod)


def test_opt0_one_kernel_per_operator_with_copy_and_concat():
    x = dsl.input("x", (N, 3, 6, 6))
    a = dsl.relu(x, name="a")
    b = dsl.sigmoid(x, name="b")
    c = dsl.concat([a, b], axis=1, name="cat")
    out = dsl.dense(dsl.flatten(c, name="flat"), 5, name="head")
    g = dsl.graph(out, name="opt0")
    mod = cnncc.compile(g, target="cuda-emu", opt_level=0)
    families = " ".join(src.splitlines()[-1] if False else src for _, src, _ in mod.kernels)
    assert "concat:" in families
    check(g, mod)


def test_lenet5_kernel_counts_and_batches(examples_dir):
    g = cnncc.load_model(examples_dir / "lenet5.py")
    mod2 = cnncc.compile(g, target="cuda-emu", opt_level=2)
    assert len(mod2.kernels) <= 5
    check(g, mod2, (1, 3))
    mod0 = cnncc.compile(g, target="cuda-emu", opt_level=0)
    assert len(mod0.kernels) > len(mod2.kernels)
    check(g, mod0, (2,))


@pytest.mark.parametrize("name", ["segnet", "fast_rcnn"])
def test_unpooling_and_roi_pooling_examples(name, examples_dir):
    """SegNet (max pooling indices -> max unpooling) and Fast R-CNN (roi_pool over a second input
    of fixed size, a static (K, ...) tail of dense layers) at 32x32, fused; one batch each (the
    emulation runs SegNet's 26 convolutions slowly): Fast R-CNN's 2, so boxes name either image."""
    from test_codegen_c import example_graph

    g = example_graph(examples_dir / f"{name}.py")
    check(g, cnncc.compile(g, target="cuda-emu", opt_level=2), (1,) if name == "segnet" else (2,))


def test_kernels_read_like_the_graph():
    mod = cnncc.compile(dense_graph(), target="cuda-emu", opt_level=2)
    name, src, launch = mod.kernels[0]
    assert src.startswith(f"// ---- kernel {name} ----")
    assert "fc" in src and "(N, 75)" in src and "launch: grid" in src
    assert launch.startswith("grid (") and "args (N, " in launch


def test_save_and_load_round_trip(tmp_path):
    g = dense_graph()
    mod = cnncc.compile(g, target="cuda-emu", opt_level=2)
    mod.save(tmp_path / "m")
    assert (tmp_path / "m" / "kernels.cu").is_file()
    again = cnncc.load(tmp_path / "m")
    x = np.random.default_rng(3).standard_normal((2, 70)).astype(np.float32)
    a, b = mod(x), again(x)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


ASAN_SCRIPT = textwrap.dedent("""
    import numpy as np, cnncc, sys
    sys.path.insert(0, {tests!r})
    from test_cuda_emu import hand_fused_graph, check
    g = hand_fused_graph()
    check(g, cnncc.compile(g, target="cuda-emu", opt_level=0), (2,))
    print("ASAN-OK")
""")


def test_generated_kernels_under_address_sanitizer():
    """GEMM and direct convolutions with fused pools, transposed convolution, dense + softmax,
    built with -fsanitize=address, every arena slot its own allocation: no out-of-bounds access."""
    from cnncc.runtime import emu

    script = ASAN_SCRIPT.format(tests=os.path.dirname(__file__))

    env = emu.asan_environment()   # the sanitized build has its own cache key (flags are in the toolchain)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ASAN-OK" in proc.stdout, proc.stderr[-4000:]


def test_static_kernels_run_their_literal_rows():
    """A graph whose shapes do not lead with N (fixed-size ONNX style): kernels take the literal
    row count where N goes, and the launch grid is constant."""
    x = dsl.input("x", (3, 4, 5))
    g = dsl.graph(dsl.softmax(dsl.relu(dsl.mul(x, 2.0, name="m"), name="r"), axis=2, name="sm"), name="static")
    mod = cnncc.compile(g, target="cuda-emu", opt_level=2)
    assert all(launch.split("args (")[1].startswith("3, ") and "N" not in launch for _, _, launch in mod.kernels)
    xx = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    assert rel_err(mod(xx), cnncc.reference(g, xx)) <= RTOL
