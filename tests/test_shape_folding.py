"""Static shape sub-graphs folded at import: Shape/Gather/Slice/Concat/Unsqueeze/Squeeze/Cast/
Range/Equal/Where/If/ConstantOfShape and integer arithmetic become constants, so classic-exporter
graphs (TorchScript's LocalResponseNorm, flatten through shape arithmetic) import as the operators
they stand for."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnncc  # noqa: E402
from cnncc.errors import ModelError  # noqa: E402


def const(name, v, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(v, dtype), name)


def shape_arithmetic_model(batch):
    """y = Reshape(x, target) where target comes out of every folding operator in turn:
    (B, 4, 3, 2) -> (B, 3, 8) and a Where/If pick between two candidate shapes."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "i0"], ["b"], axis=0),                       # B (scalar)
        helper.make_node("Slice", ["shape", "s1", "e3"], ["c_h"]),                         # [4, 3]
        helper.make_node("Cast", ["c_h"], ["c_h_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["c_h_f"], ["c_h_i"], to=TensorProto.INT64),
        helper.make_node("Range", ["r0", "r3", "r1"], ["ramp"]),                          # [0, 1, 2]
        helper.make_node("ReduceSum", ["ramp"], ["three"], keepdims=0),                    # folded by onnx's reference
        helper.make_node("Unsqueeze", ["c_h_i", "ax0"], ["c_h_row"]),                      # [[4, 3]]
        helper.make_node("Squeeze", ["c_h_row", "ax0"], ["c_h_same"]),                     # [4, 3]
        helper.make_node("Gather", ["c_h_same", "i0"], ["c"], axis=0),                    # 4
        helper.make_node("Mul", ["c", "two"], ["c2"]),                                      # 8
        helper.make_node("Div", ["c2", "one"], ["c2b"]),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
        helper.make_node("Unsqueeze", ["three", "ax0"], ["three1"]),
        helper.make_node("Unsqueeze", ["c2b", "ax0"], ["c21"]),
        helper.make_node("Concat", ["b1", "three1", "c21"], ["target"], axis=0),           # [B, 3, 8]
        helper.make_node("ConstantOfShape", ["three1"], ["minus"], value=helper.make_tensor("v", TensorProto.INT64, [1], [-1])),
        helper.make_node("Equal", ["c", "four"], ["is4"]),
        helper.make_node("Where", ["is4", "target", "minus"], ["picked"]),
        helper.make_node("If", ["is4"], ["final"],
                         then_branch=helper.make_graph([helper.make_node("Identity", ["picked"], ["t_out"])], "then",
                                                       [], [helper.make_tensor_value_info("t_out", TensorProto.INT64, [3])]),
                         else_branch=helper.make_graph([helper.make_node("Identity", ["minus"], ["e_out"])], "else",
                                                       [], [helper.make_tensor_value_info("e_out", TensorProto.INT64, [3])])),
        helper.make_node("Reshape", ["x", "final"], ["y"]),
    ]
    inits = [const("i0", 0), const("s1", [1]), const("e3", [3]), const("r0", 0), const("r3", 3), const("r1", 1),
             const("two", 2), const("one", 1), const("ax0", [0]), const("four", 4)]
    g = helper.make_graph(nodes, "shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 3, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("batch", [2, "N"])
def test_shape_arithmetic_folds_to_one_reshape(batch):
    model = shape_arithmetic_model(batch)
    g = cnncc.from_onnx(model)
    assert [n.op for n in g] == ["input", "reshape"]
    assert g[g.outputs[0]].type.shape[1:] == (3, 8)
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 2)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(cnncc.reference(g, x), want)


def test_if_on_a_runtime_condition_is_reported_not_guessed():
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["pos"]),
             helper.make_node("If", ["pos"], ["y"],
                              then_branch=helper.make_graph([helper.make_node("Relu", ["x"], ["a"])], "t", [],
                                                            [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)]),
                              else_branch=helper.make_graph([helper.make_node("Sigmoid", ["x"], ["b"])], "e", [],
                                                            [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)]))]
    g = helper.make_graph(nodes, "runtime_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    with pytest.raises(cnncc.CnnccError, match="If"):
        cnncc.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


def test_if_on_the_symbolic_batch_is_refused_by_name():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Equal", ["b", "one"], ["single"], name="is_single"),
             helper.make_node("If", ["single"], ["y"],
                              then_branch=helper.make_graph([helper.make_node("Relu", ["x"], ["a"])], "t", [],
                                                            [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)]),
                              else_branch=helper.make_graph([helper.make_node("Sigmoid", ["x"], ["b2"])], "e", [],
                                                            [helper.make_tensor_value_info("b2", TensorProto.FLOAT, None)]))]
    g = helper.make_graph(nodes, "batch_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [const("i0", 0), const("one", 1)])
    with pytest.raises(ModelError, match="is_single.*symbolic size N"):
        cnncc.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


# ---------------------------------------------------------------------------------------------
# classic AlexNet with LocalResponseNorm, exported by the TorchScript exporter
def classic_alexnet():
    """AlexNet's 2012 layout (LRN after the first two conv blocks), narrow for a fast test."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(), nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), nn.LocalResponseNorm(4, alpha=1e-2, beta=0.75, k=1.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(24, 32, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Dropout(), nn.Linear(32 * 3 * 3, 10)).eval()


@pytest.mark.parametrize("batch", [None, "N"])
def test_torchscript_lrn_alexnet_imports_and_matches_pytorch(batch, tmp_path, shared_kernel_cache):
    torch = pytest.importorskip("torch")
    m = classic_alexnet()
    x1 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "alexnet_lrn.onnx"
    torch.onnx.export(m, (x1,), str(path), dynamo=False, input_names=["x"])
    kinds = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"If", "Equal", "Shape", "AveragePool", "Pad", "Pow"} <= kinds        # the classic LRN expansion
    g = cnncc.from_onnx(path, batch=batch)
    assert [n.op for n in g].count("lrn") == 2 and "pow" not in {n.op for n in g}  # the pattern, recognized
    x = torch.randn(1 if batch is None else 3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = m(x).numpy()
    got = cnncc.reference(g, x.numpy()) if batch is None else cnncc.compile(g, target="c")(x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("target", ["c", "cuda-emu"])
def test_window_over_one_axis_of_a_3d_pool_and_pow(target, shared_kernel_cache):
    """The generic pieces of the LRN expansion, outside the recognized pattern: a 3-D AveragePool
    whose window spans only its first axis (a 2-D pool over (D, H*W)) and Pow by a constant
    (an epilogue: powf)."""
    nodes = [helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 1, 1], pads=[1, 0, 0, 1, 0, 0],
                              count_include_pad=1),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Pow", ["b", "e"], ["y"])]
    g = helper.make_graph(nodes, "pool3d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array(0.75, np.float32), "e")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    graph = cnncc.from_onnx(model)
    assert {"avg_pool2d", "pow"} <= {n.op for n in graph}
    x = np.random.default_rng(3).standard_normal((2, 2, 5, 3, 4)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = cnncc.compile(graph, target=target)(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
