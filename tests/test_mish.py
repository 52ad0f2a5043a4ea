"""mish(x) = x * tanh(softplus(x)): an elementwise activation added as one registry entry
(cnncc/ops/elementwise.py: reference, C/CUDA spelling, ONNX and torch names) plus one line per
frontend (dsl.mish, ONNX Mish, nn.Mish / F.mish). Its NaN/Inf behaviour is covered with every
other activation by tests/test_ieee.py; here: the reference against the formula and PyTorch, the
compiled kernels (alone and fused into a convolution's epilogue) and the frontends and exporters."""
from __future__ import annotations

import numpy as np
import pytest

import cnncc
from cnncc import ops
from cnncc.frontends import dsl
from cnncc.ir import N, Node


def _mish64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x * np.tanh(np.logaddexp(0.0, x))       # softplus without overflow


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def test_reference_is_the_formula():
    x = np.concatenate([np.linspace(-40, 40, 801), np.random.default_rng(0).standard_normal(200) * 3])
    x = x.astype(np.float32)
    y = ops.get("mish").ref(Node("m", "mish", ["x"]), [x])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, _mish64(x), rtol=2e-6, atol=1e-6)
    assert not ops.get("mish").has(ops.MONOTONE)        # mish dips below 0 near x = -1.19
    assert ops.get("mish").has(ops.EPILOGUE) and ops.get("mish").kernel == "elementwise"


def _model():
    x = dsl.input("x", (N, 3, 6, 6))
    c = dsl.mish(dsl.conv2d(x, 4, 3, padding=1, name="conv"), name="act")   # fuses into the conv
    return dsl.graph(c, dsl.mish(x, name="alone"), name="mish_net")       # an elementwise kernel


@pytest.mark.parametrize("target,opt", [("c", 0), ("c", 2), ("cuda-emu", 2)])
def test_compiled_matches_the_reference(shared_kernel_cache, target, opt):
    g = _model()
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32) * 4
    mod = cnncc.compile(g, target=target, opt_level=opt)
    ref, out = cnncc.reference(g, x), mod(x)
    for k in ref:
        assert _rel(out[k], ref[k]) < 1e-5, (target, opt, k)
    fused = [src for _, src, _ in mod.kernels if "conv2d" in src and "tanhf(sp)" in src]
    assert len(fused) == (1 if opt == 2 else 0), [name for name, _, _ in mod.kernels]


def test_onnx_mish_imports_and_exports():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from cnncc.codegen.onnx_export import to_onnx

    node = helper.make_node("Mish", ["x"], ["y"])
    model = helper.make_model(helper.make_graph([node], "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4])]),
                              opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32) * 4
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    g = cnncc.from_onnx(model)
    assert [n.op for n in g if n.op != "input"] == ["mish"]
    assert _rel(cnncc.reference(g, x), want) < 1e-6
    # the exporter reads OpDef.onnx: the graph goes back out as a Mish node onnxruntime runs
    back = to_onnx(g)
    assert [n.op_type for n in back.graph.node] == ["Mish"]
    got = ort.InferenceSession(back.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert _rel(got, want) < 1e-6


def test_from_torch_and_back():
    torch = pytest.importorskip("torch")
    from torch import nn

    from cnncc.codegen.torch_export import run_torch

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.Mish()

        def forward(self, x):
            return torch.nn.functional.mish(self.act(self.conv(x)) - 1.0)

    torch.manual_seed(0)
    net = Net().eval()
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 5)).astype(np.float32) * 3
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    g = cnncc.from_torch(net, torch.from_numpy(x))
    assert sum(n.op == "mish" for n in g) == 2
    assert _rel(cnncc.reference(g, x), want) < 1e-5
    # the torch exporter reads OpDef.torch (torch.nn.functional.mish)
    assert _rel(np.asarray(run_torch(g, x)), want) < 1e-5
