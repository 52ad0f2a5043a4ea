"""The C target against the numpy reference: every example (opt 0 and 2), every kernel family,
hand-made fused groups (contract B), kernel counts, batch sizes 1 and 3 from one module."""
from __future__ import annotations

import inspect
import shutil

import numpy as np
import pytest

import cnncc
from cnncc import ops
from cnncc.errors import UnsupportedError
from cnncc.frontends import dsl
from cnncc.ir import N, Graph, Node
from helpers import assert_matches_reference

pytestmark = [pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                 reason="no C compiler"),
              pytest.mark.usefixtures("shared_kernel_cache")]

RTOL = 1e-4


def check(g: Graph, mod, batches=(1, 3), seed=0):
    """Generated code vs the reference of the graph it compiled, and vs the original graph's
    reference: both within RTOL (the passes' own rounding, BN folding, is ~1e-6 on the
    examples)."""
    compiled_graph = mod.report["graph"] if mod.report else g
    assert_matches_reference(g, mod, batches, against=(compiled_graph, g), rtol=RTOL, seed=seed)


# -- examples ---------------------------------------------------------------------------------
SMALL = {"lenet5": None, "unet": 32, "shufflenet_v2": 16, "inception_v3": 75, "inception_v4": 75, "openpose": 16}
#: other model() arguments at the small size (Fast R-CNN: fc6/fc7 narrowed, the 7x7 RoI grid kept);
#: the example tests of other files read it from here
SMALL_KWARGS = {"fast_rcnn": {"hidden": 64}}
#: the literature networks (issue 16): test_zoo_literature.py compiles each once at opt 0 and 2
#: and checks the modules against the reference and PyTorch; they are not compiled again here
COMPILED_ELSEWHERE = {"resnet34", "resnet101", "resnet152", "resnext101_32x8d", "inception_v3", "inception_v4",
                      "deeplabv3_resnet50", "yolov2_tiny", "yolov3_tiny", "openpose"}


def example_graph(path):
    module = dsl.run_model_file(path, "cnncc_example_probe")
    params = inspect.signature(module.model).parameters
    kw = dict(SMALL_KWARGS.get(path.stem, {}))
    if "size" in params:
        default = params["size"].default
        kw["size"] = SMALL.get(path.stem, 32 if default != 32 else None) or default
    for size in (kw.get("size"), 48, 64, 96):
        try:
            return dsl.load_model(path, **{k: v for k, v in kw.items() if k != "size"},
                                  **({"size": size} if "size" in params and size else {}))
        except cnncc.ModelError:
            continue
    return dsl.load_model(path)


def _examples():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "examples"
    # DSL model files define model(); the other examples are usage scripts (import, tracing)
    return sorted(p for p in root.glob("*.py") if "\ndef model(" in p.read_text() and p.stem not in COMPILED_ELSEWHERE)


@pytest.mark.parametrize("opt", [0, 2])
@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.stem)
def test_example_matches_reference(path, opt):
    g = example_graph(path)
    mod = cnncc.compile(g, target="c", opt_level=opt)
    check(g, mod)


def test_lenet5_kernel_counts(examples_dir):
    g = cnncc.load_model(examples_dir / "lenet5.py")
    operators = [n for n in g if n.op not in ("input", "constant")]
    m0 = cnncc.compile(g, target="c", opt_level=0)
    m2 = cnncc.compile(g, target="c", opt_level=2)
    assert [k[0] for k in m0.kernels] == [n.name for n in operators]
    assert len(m2.kernels) <= 5
    for name, source, launch in m2.kernels:
        assert f"kernel {name}" in source and launch
    # the fused conv + relu + max pool applies bias and relu after the max
    first = m2.kernels[0][1]
    assert "after the max" in first and "relu" in first
    assert m2.report["fusion_groups"]


# -- every kernel family, unfused and fused -----------------------------------------------------
def zoo() -> Graph:
    x = dsl.input("x", (N, 4, 12, 12))
    a = dsl.conv2d(x, 8, 3, padding=1, name="c_same")
    a = dsl.batch_norm(a, name="bn")
    a = dsl.leaky_relu(a, alpha=0.1)
    b = dsl.conv2d(x, 8, 3, stride=2, padding=1, groups=4, name="c_grouped")
    b = dsl.upsample2d(b, scale_factor=2, mode="nearest")
    s = dsl.add(a, b, name="residual")
    s = dsl.max_pool2d(s, 3, stride=2, padding=1, ceil_mode=True)
    dw = dsl.conv2d(s, 8, 3, padding=2, dilation=2, groups=8, name="depthwise")
    dw = dsl.hardswish(dw)
    t = dsl.conv_transpose2d(dw, 4, 3, stride=2, padding=1, output_padding=1, name="deconv")
    t = dsl.sigmoid(t)
    t = dsl.avg_pool2d(t, 3, stride=2, padding=1, count_include_pad=False)
    t = dsl.lrn(t, size=3)
    t = dsl.pad(t, 1, mode="reflect")
    t = dsl.instance_norm(t)
    u = dsl.upsample2d(t, scale_factor=2, mode="bilinear", align_corners=False)
    u = dsl.depth_to_space(dsl.conv2d(u, 8, 1, name="expand"), 2, mode="CRD")
    u = dsl.space_to_depth(u, 2)
    u = dsl.lp_pool2d(u, 2.0, 2)
    u = dsl.transpose(u, (0, 1, 3, 2))
    cat = dsl.concat([u, dsl.elu(u), dsl.constant(u, np.float32(0.5)) * u], axis=1)
    gp = dsl.global_avg_pool(cat)
    f = dsl.flatten(gp)
    f = dsl.tanh(dsl.dense(f, 10, name="fc"))
    f = dsl.softmax(f)
    m = dsl.global_max_pool(cat)
    m = dsl.log_softmax(dsl.flatten(m))
    return dsl.graph(f, m, name="zoo")


@pytest.mark.parametrize("opt", [0, 1, 2])
def test_every_family(opt):
    g = zoo()
    mod = cnncc.compile(g, target="c", opt_level=opt)
    families = {k.family for k in mod.program.kernels}
    if opt == 0:
        assert {"conv", "conv_transpose", "dense", "pool", "global_pool", "softmax", "elementwise", "lrn",
                "gather", "resize", "instance_norm", "concat"} <= families
    check(g, mod)
    assert isinstance(mod(np.zeros((2, 4, 12, 12), np.float32)), dict)


@pytest.mark.parametrize("k,s,pad,outpad,groups,extra", [
    (2, 2, 0, 0, 1, "relu"),       # U-Net's up-convolution: kernel == stride, phase planes
    (2, 2, 1, 1, 2, "add"),        # cropped by padding, grown by output_padding, grouped, residual
    (1, 2, 0, 1, 1, None),         # kernel < stride: the gaps get only the bias
    (3, 3, (1, 0, 2, 1), 0, 1, None),   # asymmetric padding (ONNX pads)
    (2, 3, 0, 2, 1, "relu"),
    (3, 2, 1, 1, 1, "relu"),       # kernel > stride: the scatter path
])
def test_transposed_convolution_geometries(k, s, pad, outpad, groups, extra):
    x = dsl.input("x", (N, 4, 5, 6))
    y = dsl.conv_transpose2d(x, 6, k, stride=s, padding=pad, output_padding=outpad, groups=groups, name="up")
    if extra == "relu":
        y = dsl.relu(y)
    elif extra == "add":
        y = dsl.add(y, dsl.conv_transpose2d(x, 6, k, stride=s, padding=pad, output_padding=outpad, name="other"))
    g = dsl.graph(y)
    for opt in (0, 2):
        check(g, cnncc.compile(g, target="c", opt_level=opt), batches=(2,))


def test_indices_unpool_matmul_and_1d():
    x = dsl.input("x", (N, 3, 8, 8))
    p = dsl.max_pool2d_with_indices(x, 2)
    pooled, idx = (p if isinstance(p, tuple) else (dsl.max_pool2d(x, 2), p))
    un = dsl.max_unpool2d(pooled, idx, 2)
    near = dsl.unpool_nearest2d(pooled, 2)
    both = dsl.add(un, near)
    r = dsl.reshape(both, (N, 3, 64))
    w = dsl.constant(r, np.random.default_rng(1).standard_normal((64, 5)).astype(np.float32))
    mm = dsl.relu(dsl.matmul(r, w))
    c1 = dsl.conv1d(mm, 6, 3, padding=1, name="c1d")
    c1 = dsl.max_pool1d(dsl.relu(c1), 2, ceil_mode=True)
    g = dsl.graph(c1, idx if not isinstance(p, tuple) else p[1], name="misc")
    for opt in (0, 2):
        check(g, cnncc.compile(g, target="c", opt_level=opt))


# -- fused groups made by hand (contract B), independent of the fuse pass ------------------------
def fused_graph(with_pool: str, negative_scale: bool) -> Graph:
    """conv -> scale_shift -> relu -> add(residual) -> pool as one fused node."""
    g = dsl.graph(_plain(with_pool, negative_scale))
    members = [g[n] for n in ("conv", "ss", "act", "res", "pool")]
    res = g["res"]
    fused = Node("conv_ss_act_res_pool", "fused", ["x", "skip"], {"kind": "conv"},
                 members=[_copy(m) for m in members])
    out = Graph("hand_fused")
    for n in g:
        if n.op in ("input",):
            out.add(_copy(n))
    out.add(_copy(g["skip"]))
    out.add(fused)
    out.outputs = [fused.name]
    del res
    return out.infer_shapes()


def _copy(n: Node) -> Node:
    import copy

    return copy.deepcopy(n)


def _plain(pool: str, negative_scale: bool):
    x = dsl.input("x", (N, 3, 10, 10))
    c = dsl.conv2d(x, 6, 3, padding=1, name="conv")
    scale = np.linspace(-1 if negative_scale else 0.5, 2, 6).astype(np.float32)
    c = dsl.scale_shift(c, scale, np.linspace(-0.2, 0.3, 6).astype(np.float32), name="ss")
    c = dsl.relu(c, name="act")
    skip = dsl.sigmoid(x, name="skip")
    skip = dsl.conv2d(skip, 6, 1, name="skipconv") if False else dsl.add(dsl.conv2d(skip, 6, 1, name="proj"), 0.0,
                                                                          name="skip_out")
    c = dsl.add(c, skip, name="res")
    c = getattr(dsl, f"{pool}_pool2d")(c, 2, name="pool")
    return c


@pytest.mark.parametrize("pool,negative", [("max", False), ("max", True), ("avg", False)])
def test_hand_fused_conv_group(pool, negative):
    x = dsl.input("x", (N, 3, 10, 10))
    skip = dsl.relu(dsl.conv2d(x, 6, 1, name="proj"), name="skip")
    g = dsl.graph(skip, name="base")
    conv_w = np.random.default_rng(2).standard_normal((6, 3, 3, 3)).astype(np.float32)
    scale = np.linspace(-1 if negative else 0.5, 2, 6).astype(np.float32)
    members = [
        Node("conv", "conv2d", ["x"], {"padding": 1}, {"weight": conv_w, "bias": np.arange(6, dtype=np.float32) / 7}),
        Node("ss", "scale_shift", ["conv"], {}, {"scale": scale, "shift": np.linspace(-0.2, 0.3, 6).astype(np.float32)}),
        Node("act", "relu", ["ss"]),
        Node("res", "add", ["act", "skip"]),
        Node("pool", f"{pool}_pool2d", ["res"], {"kernel_size": 2}),
    ]
    g.add(Node("conv_ss_act_res_pool", "fused", ["x", "skip"], {"kind": "conv"}, members=members))
    g.outputs = ["conv_ss_act_res_pool"]
    g.infer_shapes()
    mod = cnncc.compile(g, target="c", opt_level=0)
    fused = [k for k in mod.program.kernels if k.name == "conv_ss_act_res_pool"][0]
    assert fused.pool is not None and not fused.pool.post_epilogue   # a residual add never commutes
    check(g, mod)


def test_hand_fused_post_pool_epilogue_and_dense_softmax():
    x = dsl.input("x", (N, 2, 8, 8))
    g = dsl.graph(dsl.identity(x, name="xi"), name="base")
    w = np.random.default_rng(3).standard_normal((4, 2, 3, 3)).astype(np.float32)
    for scale_sign, expect_post in ((1, True), (-1, False)):
        h = Graph("post")
        h.add(Node("x", "input", [], {"shape": (N, 2, 8, 8)}))
        members = [Node("conv", "conv2d", ["x"], {}, {"weight": w, "bias": np.ones(4, np.float32) * 0.1}),
                   Node("bn", "scale_shift", ["conv"], {}, {"scale": np.full(4, scale_sign, np.float32),
                                                          "shift": np.zeros(4, np.float32)}),
                   Node("act", "relu6", ["bn"]),
                   Node("pool", "max_pool2d", ["act"], {"kernel_size": 2, "stride": 2, "padding": 1})]
        h.add(Node("grp", "fused", ["x"], {"kind": "conv"}, members=members))
        dense_members = [Node("flat", "flatten", ["grp"]) ]
        h.add(dense_members[0])
        fc = [Node("fc", "dense", ["flat"], {}, {"weight": np.random.default_rng(4).standard_normal((5, 64)).astype(np.float32)}),
              Node("sm", "log_softmax", ["fc"])]
        h.add(Node("fc_sm", "fused", ["flat"], {"kind": "dense"}, members=fc))
        h.outputs = ["fc_sm"]
        h.infer_shapes()
        mod = cnncc.compile(h, target="c", opt_level=0)
        grp = mod.program.kernels[0]
        assert grp.pool.post_epilogue is expect_post
        assert mod.program.kernels[-1].tail == "log_softmax"
        check(h, mod)
    del g


def test_symbolic_spatial_size_is_refused():
    g = cnncc.load_model(__import__("pathlib").Path(__file__).parent.parent / "examples" / "lenet5.py",
                         symbolic="H,W")
    with pytest.raises(UnsupportedError, match="concrete"):
        cnncc.compile(g, target="c", opt_level=0)
