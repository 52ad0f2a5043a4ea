"""The peers' exporters (ONNX for onnxruntime, torch.nn.functional for PyTorch) must compute
exactly what cnncc.reference computes: otherwise the benchmark compares different models."""
from __future__ import annotations

import numpy as np
import pytest

import cnncc
from cnncc.frontends import dsl
from cnncc.ir import Node
from helpers import rel_err

RTOL = 1e-4


def _conv_block():
    x = dsl.input("x", (dsl.N, 3, 9, 9))
    a = dsl.conv2d(x, 4, 3, padding=1)
    a = dsl.batch_norm(a)
    a = dsl.relu(a)
    b = dsl.conv2d(x, 4, 2, stride=2, padding=(0, 0, 1, 1), bias=False)  # asymmetric padding
    b = dsl.leaky_relu(b, alpha=0.1)
    a = dsl.max_pool2d(a, 3, stride=2, padding=1, ceil_mode=True)
    c = dsl.concat([a, b])
    c = dsl.conv2d(c, 8, 3, padding=1, groups=2)
    c = dsl.avg_pool2d(c, 2, ceil_mode=True, count_include_pad=False)
    c = dsl.flatten(c)
    c = dsl.dense(c, 6)
    return dsl.graph(dsl.log_softmax(c), name="conv_block")


def _activations():
    x = dsl.input("x", (dsl.N, 4, 5, 5))
    ys = [dsl.relu6(x), dsl.clip(x, min=-0.5, max=0.7), dsl.sigmoid(x), dsl.tanh(x), dsl.elu(x, alpha=0.7),
          dsl.selu(x), dsl.hardswish(x), dsl.hardsigmoid(x), dsl.silu(x), dsl.gelu(x),
          dsl.gelu(x, approximate="tanh"), dsl.softplus(x, beta=2.0, threshold=1.0), dsl.prelu(x),
          dsl.prelu(x, per_channel=False, init=0.2), dsl.dropout(x), dsl.identity(x)]
    acc = ys[0]
    for y in ys[1:]:
        acc = dsl.add(acc, y)
    return dsl.graph(dsl.softmax(acc, axis=1), name="activations")


def _pools_and_binary():
    x = dsl.input("x", (dsl.N, 3, 8, 8))
    p = dsl.min_pool2d(x, 2)
    q = dsl.sum_pool2d(x, 3, stride=2, padding=1)
    r = dsl.max_pool2d(x, 2, dilation=2, stride=2)
    s = dsl.avg_pool2d(x, 3, stride=2, padding=1)
    t = dsl.sub(dsl.mul(p, 0.5), dsl.div(dsl.max_pool2d(x, 2), 2.0))
    u = dsl.add(q, s)
    g = dsl.global_avg_pool(u)
    m = dsl.global_max_pool(t)
    out = dsl.reshape(dsl.add(g, m), (dsl.N, 3))
    return dsl.graph(out, dsl.reshape(u, (dsl.N, -1)), name="pools")


def _one_d():
    x = dsl.input("x", (dsl.N, 2, 16))
    y = dsl.conv1d(x, 4, 3, padding=2, dilation=2)
    y = dsl.max_pool1d(dsl.relu(y), 2)
    y = dsl.avg_pool1d(y, 3, stride=1, padding=1)
    y = dsl.sum_pool1d(y, 2)
    return dsl.graph(dsl.flatten(y), name="one_d")


def _scale_shift():
    x = dsl.input("x", (dsl.N, 3, 4, 4))
    rng = np.random.default_rng(1)
    y = dsl.layer("scale_shift", [x], params={"scale": rng.standard_normal(3).astype(np.float32),
                                               "shift": rng.standard_normal(3).astype(np.float32)})
    return dsl.graph(dsl.relu(y), name="scale_shift")


def _data_movement():
    x = dsl.input("x", (dsl.N, 8, 6, 6))
    t = dsl.conv_transpose2d(x, 4, 3, stride=2, padding=1, output_padding=1)
    t2 = dsl.conv_transpose2d(x, 4, 2, stride=2, padding=(0, 1, 1, 0), groups=2)
    y = dsl.add(t, dsl.pad(t2, ((0, 0), (0, 0), (1, 0), (0, 1)), mode="constant", value=0.5))
    y = dsl.pad(y, 1, mode="reflect")
    y = dsl.pad(y, (1, 0, 0, 1), mode="edge")
    y = dsl.lrn(y, 3)
    y = dsl.instance_norm(y)
    up = dsl.upsample2d(x, 2, mode="bilinear")
    up2 = dsl.upsample2d(x, size=(9, 9), mode="bilinear", align_corners=True)
    up3 = dsl.upsample2d(x, 1.5)
    d = dsl.depth_to_space(x, 2)
    e = dsl.depth_to_space(x, 2, mode="CRD")
    f = dsl.space_to_depth(d, 2)
    h = dsl.space_to_depth(e, 2, mode="CRD")
    m = dsl.matmul(dsl.transpose(x, (0, 1, 3, 2)), x)
    lp = dsl.lp_pool2d(x, 3, 2)
    un = dsl.unpool_nearest2d(x, 2)
    return dsl.graph(y, up, up2, up3, f, h, m, lp, un, name="data_movement")


def _unpooling():
    x = dsl.input("x", (dsl.N, 3, 7, 7))
    v, idx = dsl.max_pool2d_with_indices(x, 3, stride=2, padding=1)
    return dsl.graph(dsl.max_unpool2d(v, idx, 3, stride=2, padding=1, output_size=(7, 7)), idx, name="unpooling")


MODELS = {"data_movement": _data_movement, "unpooling": _unpooling, "conv_block": _conv_block, "activations": _activations, "pools": _pools_and_binary,
          "one_d": _one_d, "scale_shift": _scale_shift}


def _lenet(examples_dir):
    return cnncc.load_model(examples_dir / "lenet5.py")


def _inputs(g, batch, seed=0):
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal(g[i].type.concrete({cnncc.N: batch})).astype(np.float32) for i in g.inputs}


def _close(got, want):
    err = rel_err(got, want)
    assert err <= RTOL, f"relative error {err:.2e}"


def _as_dict(g, out):
    return out if isinstance(out, dict) else {g.outputs[0]: out}


def _check_torch(g, batch):
    from cnncc.codegen.torch_export import run_torch

    feeds = _inputs(g, batch)
    want = _as_dict(g, cnncc.reference(g, feeds))
    got = _as_dict(g, run_torch(g, [feeds[i] for i in g.inputs]))
    for k in want:
        _close(got[k], want[k])


def _check_onnx(g, batch):
    ort = pytest.importorskip("onnxruntime")
    from cnncc.codegen.onnx_export import to_onnx

    proto = to_onnx(g)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _inputs(g, batch)
    want = _as_dict(g, cnncc.reference(g, feeds))
    got = dict(zip(g.outputs, sess.run(g.outputs, feeds)))
    for k in want:
        _close(got[k], want[k])


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 3])
def test_torch_export_matches_reference(name, batch):
    pytest.importorskip("torch")
    _check_torch(MODELS[name](), batch)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_export_matches_reference(name, batch):
    pytest.importorskip("onnx")
    _check_onnx(MODELS[name](), batch)


def test_lenet_both_peers(examples_dir):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    g = _lenet(examples_dir)
    _check_torch(g, 2)
    _check_onnx(g, 2)


def _hand_fused_lenet(examples_dir):
    """conv1+relu1+pool1 as a contract-B fused node, whether or not the fuse pass exists yet."""
    g = _lenet(examples_dir)
    names = ["conv1", "relu1", "pool1"]
    members = [g[n] for n in names]
    fused = Node("_".join(names), "fused", list(members[0].inputs), {"kind": "conv"}, members=members,
                 type=members[-1].type)
    consumers = [c.name for c in g.consumers("pool1")]
    g.add(fused)
    for c in consumers:
        g.set_inputs(c, [fused.name if i == "pool1" else i for i in g[c].inputs])
    for n in reversed(names):
        g.remove(n)
    return g


def test_fused_groups_export(examples_dir):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    g = _hand_fused_lenet(examples_dir)
    assert any(n.op == "fused" for n in g)
    _check_torch(g, 2)
    _check_onnx(g, 2)


def test_optimized_graph_exports(examples_dir):
    """Whatever the pass pipeline produces at opt 2 stays exportable."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    try:
        from cnncc.passes.manager import optimize  # noqa: F401
    except ImportError:
        pytest.skip("the pass manager is not built yet")
    g = cnncc.optimize(_lenet(examples_dir), opt_level=2)
    _check_torch(g, 2)
    _check_onnx(g, 2)


def test_unmapped_operator_is_named():
    from cnncc.codegen.onnx_export import EMITTERS, to_onnx
    from cnncc.errors import UnsupportedError

    g = _scale_shift()
    saved = EMITTERS.pop("scale_shift")
    try:
        with pytest.raises(UnsupportedError, match="scale_shift"):
            to_onnx(g)
    finally:
        EMITTERS["scale_shift"] = saved
