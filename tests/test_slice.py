"""Slicing runtime tensors: the ``slice`` and ``gather`` operators (DSL slice/split/gather, ONNX
Slice/Split/Gather, torch indexing/chunk/split/narrow/index_select), channel slices as views, and
ShuffleNet-v2 (channel split + shuffle) from the DSL, PyTorch and ONNX."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc.errors import ModelError
from cnncc.frontends import dsl
from helpers import rel_err

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# the operators
@pytest.mark.parametrize("starts, ends, axes, steps, want", [
    ([1], [3], [1], None, np.s_[:, 1:3]),
    ([-3, 1], [2 ** 62, -1], [1, 3], None, np.s_[:, -3:, :, 1:-1]),      # from the end, INT64_MAX-style end
    ([-100], [100], [2], None, np.s_[:, :, :]),                          # clamped on both sides
    ([6, -1], [0, -100], [1, 3], [-2, -3], np.s_[:, 6:0:-2, :, ::-3]),   # backwards, to the front
    ([0], [7], [2], [3], np.s_[:, :, 0:7:3]),
])
def test_slice_reference_is_numpy_slicing(starts, ends, axes, steps, want):
    x = dsl.input("x", (dsl.N, 8, 5, 7))
    g = dsl.graph(dsl.slice(x, starts, ends, axes, steps))
    xv = np.arange(2 * 8 * 5 * 7, dtype=np.float32).reshape(2, 8, 5, 7)
    got = cnncc.reference(g, xv)
    np.testing.assert_array_equal(got, xv[want])
    assert g[g.outputs[0]].type.shape[1:] == xv[want].shape[1:]


def test_dsl_indexing_is_numpy_indexing():
    x = dsl.input("x", (dsl.N, 8, 5, 7))
    outs = [x[:, 2:6], x[..., ::-2], x[:, 3], x[:, -1, 1:4, ::3], x[:, :, -100:100]]
    g = dsl.graph(*outs)
    xv = np.arange(2 * 8 * 5 * 7, dtype=np.float32).reshape(2, 8, 5, 7)
    ys = cnncc.reference(g, xv)
    want = [xv[:, 2:6], xv[..., ::-2], xv[:, 3], xv[:, -1, 1:4, ::3], xv]
    for o, w in zip(g.outputs, want):
        np.testing.assert_array_equal(ys[o], w)
    with pytest.raises(ModelError, match="None"):
        x[:, None]


def test_gather_and_split_reference():
    x = dsl.input("x", (dsl.N, 6, 4))
    parts = dsl.split(x, [1, 2, 3], axis=1)
    chunks = dsl.split(x, 4, axis=1)                                    # torch.chunk: 2, 2, 2
    g = dsl.graph(*parts, *chunks, dsl.gather(x, [[3, -1], [0, 0]], axis=1), dsl.gather(x, -2, axis=2))
    xv = np.random.default_rng(0).standard_normal((2, 6, 4)).astype(np.float32)
    ys = cnncc.reference(g, xv)
    got = [ys[o] for o in g.outputs]
    want = np.split(xv, [1, 3], axis=1) + np.split(xv, 3, axis=1) + [xv[:, [[3, 5], [0, 0]]], xv[:, :, 2]]
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_slice_and_gather_errors_name_the_layer():
    x = dsl.input("x", (dsl.N, 8, 5, 5))
    with pytest.raises(ModelError, match="batch"):
        dsl.slice(x, [0], [1], [0], name="first_item")
    with pytest.raises(ModelError, match="step of 0"):
        dsl.slice(x, [0], [4], [1], [0], name="zero_step")
    with pytest.raises(ModelError, match="out of range"):
        dsl.gather(x, [8], axis=1, name="too_far")
    with pytest.raises(ModelError, match="add up"):
        dsl.split(x, [3, 3], axis=1)


def _slicing_model():
    x = dsl.input("x", (dsl.N, 8, 5, 6))
    a, b = dsl.split(x, 2, name="halves")                            # views of x at opt 2
    b = dsl.relu(dsl.conv2d(b, 4, 3, padding=1, name="conv"), name="relu")
    c = dsl.concat([a, b], name="cat")
    d = dsl.slice(c, [1, -1], [7, -100], axes=[1, 3], steps=[2, -2], name="strided")   # a gather kernel
    e = dsl.gather(c, [3, 0, 3], axis=1, name="pick")
    tail = dsl.slice(c, [3], [8], [1], name="tail")                                   # a view of a concat
    f = dsl.conv2d(tail, 2, 1, name="head")
    # every kernel family reads a view through its batch stride and offset
    readers = [dsl.max_pool2d(a, 2, name="mp"), dsl.global_avg_pool(tail, name="gap"),
               dsl.add(a, dsl.slice(x, [0], [4], [1], name="front"), name="sum_views"),
               dsl.sigmoid(tail, name="sig"), dsl.lrn(tail, 3, name="norm"),
               dsl.dense(dsl.flatten(a, name="flat"), 5, name="fc"), dsl.softmax(a, axis=1, name="sm"),
               dsl.upsample2d(tail, 2, name="up"), dsl.pad(a, 1, name="padded"), dsl.batch_norm(tail, name="bn")]
    return dsl.graph(d, e, f, *readers, name="slicing")


def test_channel_slices_are_views_and_other_slices_kernels():
    opt = cnncc.optimize(_slicing_model(), opt_level=2)
    views = {n.name: (n.placement.view_of, n.placement.view_channel) for n in opt if n.op == "slice"}
    assert views == {"halves_0": ("x", 0), "halves_1": ("x", 4), "strided": (None, 0), "tail": ("cat", 3),
                     "front": ("x", 0)}
    plan = opt.memory_plan
    assert "halves_1" not in plan.lifetimes and plan.aliases["tail"] == "cat"


@pytest.mark.parametrize("target", ["c", "cuda-emu"])
def test_slicing_compiles_and_matches_reference(target, shared_kernel_cache):
    g = _slicing_model()
    xv = np.random.default_rng(1).standard_normal((3, 8, 5, 6)).astype(np.float32)
    ref = cnncc.reference(g, xv)
    for opt in (0, 2):
        ys = cnncc.compile(g, target=target, opt_level=opt)(xv)
        for k in ref:
            assert ys[k].shape == ref[k].shape and rel_err(ys[k], ref[k]) < 1e-5, (target, opt, k)


def test_exporters_spell_slice_and_gather():
    """The peer-benchmark exporters (ONNX for onnxruntime, torch) map slice/gather too."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    import onnxruntime as ort

    from cnncc.codegen.onnx_export import to_onnx
    from cnncc.codegen.torch_export import run_torch

    g = _slicing_model()
    xv = np.random.default_rng(5).standard_normal((2, 8, 5, 6)).astype(np.float32)
    ref = cnncc.reference(g, xv)
    session = ort.InferenceSession(to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    by_ort = dict(zip([o.name for o in session.get_outputs()], session.run(None, {g.inputs[0]: xv})))
    by_torch = run_torch(g, xv)
    for k in g.outputs:
        assert rel_err(by_ort[k], ref[k]) < 1e-5 and rel_err(np.asarray(by_torch[k]), ref[k]) < 1e-5, k


# ---------------------------------------------------------------------------------------------
# ONNX and PyTorch
def test_onnx_split_slice_gather_on_runtime_tensors_match_onnxruntime(shared_kernel_cache):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    def const(name, v):
        return numpy_helper.from_array(np.asarray(v, np.int64), name)

    for opset in (13, 18):
        split = (helper.make_node("Split", ["x"], ["s0", "s1", "s2"], axis=1, num_outputs=3) if opset >= 18
                 else helper.make_node("Split", ["x", "sizes"], ["s0", "s1", "s2"], axis=1))
        nodes = [split,
                 helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["sl"]),
                 helper.make_node("Gather", ["x", "idx"], ["ga"], axis=3),
                 helper.make_node("Relu", ["s1"], ["r1"])]
        inits = [const("sizes", [2, 2, 2]), const("st", [-1, 1]), const("en", [-2 ** 63, 2 ** 63 - 1]),
                 const("ax", [2, 1]), const("sp", [-2, 2]), const("idx", [[2, 0], [1, 1]])]
        graph = helper.make_graph(nodes, "slices", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 5, 3])],
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                   for o in ("s0", "r1", "s2", "sl", "ga")], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        xv = np.random.default_rng(2).standard_normal((2, 6, 5, 3)).astype(np.float32)
        g = cnncc.from_onnx(model)
        ours = cnncc.compile(g, target="c")(xv)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        theirs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": xv})))
        for name, node in g.origin.onnx_outputs.items():
            np.testing.assert_array_equal(ours[node], theirs[name], err_msg=f"opset {opset}: {name}")


def test_torch_indexing_and_splits_map_to_slice_and_gather():
    torch = pytest.importorskip("torch")

    class Slicer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("order", torch.tensor([3, 1, 1, 0]))

        def forward(self, x):
            a, b = torch.split(x, [2, 4], dim=1)
            c = x.chunk(3, dim=1)[2]
            d = x[:, 1:5, ::2, -2]
            e = x[..., 1:]
            f = torch.narrow(x, 2, 1, 3)
            g = x.index_select(1, self.order)
            return a, b * 2, c, d, e, f, g

    m = Slicer().eval()
    x = torch.randn(2, 6, 5, 4)
    g = cnncc.from_torch(m, x)
    assert {n.op for n in g} >= {"slice", "gather"}
    ours = cnncc.reference(g, x.numpy())
    want = [t.numpy() for t in m(x)]
    for name, w in zip(g.outputs, want):
        np.testing.assert_array_equal(ours[name], w)


# ---------------------------------------------------------------------------------------------
# ShuffleNet-v2
SIZE = 16


@pytest.fixture(scope="module")
def shufflenet():
    return dsl.load_model(ROOT / "examples" / "shufflenet_v2.py", size=SIZE)


def test_shufflenet_channel_splits_are_views(shufflenet):
    """(The example compiled at opt 0 and 2 against the reference: test_codegen_c's
    test_example_matches_reference[shufflenet_v2-*], which covers every example.)"""
    fused = cnncc.optimize(shufflenet, opt_level=2)
    splits = [n for n in fused if n.op == "slice"]
    assert len(splits) == 2 * (3 + 7 + 3) and all(n.placement.view_of for n in splits)


@pytest.fixture(scope="module")
def shufflenet_torch():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "tests"))
    from torch_zoo import ShuffleNetV2

    torch.manual_seed(0)
    m = ShuffleNetV2().eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m, torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))


def test_shufflenet_from_torch_matches_pytorch(shufflenet_torch):
    import torch

    m, x = shufflenet_torch
    g = cnncc.from_torch(m, x)
    with torch.no_grad():
        want = m(x).numpy()
    assert rel_err(cnncc.reference(g, x.numpy()), want) < 1e-4       # kernels: the DSL test above


def test_shufflenet_torchscript_onnx_export_matches_onnxruntime(shufflenet_torch, tmp_path, shared_kernel_cache):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import torch

    m, x = shufflenet_torch
    path = tmp_path / "shufflenet.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    g = cnncc.from_onnx(path)
    assert {n.op for n in g} >= {"slice", "transpose", "concat"}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert rel_err(cnncc.reference(g, x.numpy()), want) < 1e-4
