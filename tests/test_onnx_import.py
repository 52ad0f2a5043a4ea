"""from_onnx on whole models: zoo-era graphs written with onnx.helper, and torch exporter output checked
against onnxruntime through `cnncc verify`."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnncc  # noqa: E402
from cnncc.cli import main  # noqa: E402
from cnncc.errors import UnsupportedError  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def run_both(model, feeds: dict, target="c"):
    """cnncc (compiled) and onnxruntime on the same feeds -> (ours, theirs) keyed by ONNX output name."""
    g = cnncc.from_onnx(model)
    mod = cnncc.compile(g, target=target)
    ours = mod({g.origin.onnx_inputs[k]: v for k, v in feeds.items()})
    ours = ours if isinstance(ours, dict) else {g.outputs[0]: ours}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    theirs = dict(zip(names, session.run(None, feeds)))
    return {k: ours[v] for k, v in g.origin.onnx_outputs.items()}, theirs, g


def zoo_era_model(opset: int = 7):
    """A 2017-style exporter graph: initializers listed as inputs, a weight built by ConstantOfShape,
    a Shape/Gather/Unsqueeze/Concat/Reshape flatten, Sum residual, LRN, BatchNormalization,
    Dropout, Gemm with transB=0 / alpha / beta, and opset < 13 Softmax on the flattened tail."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    bn = [np.abs(rng.standard_normal(8)).astype(np.float32) + 0.5, rng.standard_normal(8).astype(np.float32),
          rng.standard_normal(8).astype(np.float32) * 0.1, np.abs(rng.standard_normal(8)).astype(np.float32) + 0.5]
    gemm_b = rng.standard_normal((8 * 4 * 4, 10)).astype(np.float32) * 0.1       # (in, out): transB = 0
    gemm_c = rng.standard_normal(10).astype(np.float32)
    inits = [init("w1", w1), init("b1", b1), init("w2", w2), init("gamma", bn[0]), init("beta", bn[1]),
             init("mean", bn[2]), init("var", bn[3]), init("gemm_b", gemm_b), init("gemm_c", gemm_c),
             init("scale_shape", np.array([1, 8, 1, 1], np.int64))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("LRN", ["r1"], ["n1"], size=5, alpha=1e-3, beta=0.75, bias=2.0, name="norm1"),
        helper.make_node("Conv", ["n1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("BatchNormalization", ["c2", "gamma", "beta", "mean", "var"], ["bn2"], epsilon=1e-5,
                         name="bn2"),
        # a per-channel scale computed at load time: ConstantOfShape(1,8,1,1) * 0.5
        helper.make_node("ConstantOfShape", ["scale_shape"], ["ones"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]), name="halves")
        if opset >= 9 else      # opset 7 had no ConstantOfShape: a Constant node carries the weight
        helper.make_node("Constant", [], ["ones"], name="halves",
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1, 8, 1, 1], [0.5] * 8)),
        helper.make_node("Mul", ["bn2", "ones"], ["scaled"], name="scale2"),
        helper.make_node("Sum", ["scaled", "n1", "r1"], ["res"], name="residual"),
        helper.make_node("MaxPool", ["res"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Dropout", ["p"], ["d"], ratio=0.5, name="drop"),
        helper.make_node("Shape", ["d"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0, name="gather"),
        helper.make_node("Unsqueeze", ["batch"], ["batch1"], axes=[0], name="unsq"),
        helper.make_node("Concat", ["batch1", "minus1"], ["flat_shape"], axis=0, name="cat_shape"),
        helper.make_node("Reshape", ["d", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "gemm_b", "gemm_c"], ["logits"], alpha=0.5, beta=2.0, name="fc"),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1, name="softmax"),
    ]
    inits += [init("zero", np.array(0, np.int64)), init("minus1", np.array([-1], np.int64))]
    # old exporters listed every initializer among the graph inputs
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])]
    inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    graph = helper.make_graph(nodes, "zoo_era", inputs, [helper.make_tensor_value_info("prob", TensorProto.FLOAT,
                                                                                       ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    return model


@pytest.mark.parametrize("opset", [7, 9])
def test_zoo_era_graph_matches_onnxruntime(opset):
    model = zoo_era_model(opset)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ours, theirs, g = run_both(model, {"x": x})
    np.testing.assert_allclose(ours["prob"], theirs["prob"], rtol=RTOL, atol=ATOL)
    assert g[g.inputs[0]].type.shape[0] == cnncc.N                  # 'batch' became N
    ops_used = {n.op for n in g}
    assert {"lrn", "batch_norm", "dense", "softmax", "add"} <= ops_used
    assert "shape" not in ops_used and len(g.inputs) == 1         # folded; initializers are not inputs


def test_softmax_opset_below_13_flattens_the_tail():
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    for opset, axis in ((11, 1), (13, 1)):
        node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
        graph = helper.make_graph([node], "sm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        g = cnncc.from_onnx(model)
        y = cnncc.reference(g, x)
        want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("trans_a,trans_b,alpha,beta,c_shape", [
    (0, 0, 1.0, 1.0, (4,)), (0, 1, 0.5, 2.0, (1, 4)), (1, 0, 2.0, 0.5, (3, 4)), (0, 0, 1.0, 0.0, (4,))])
def test_gemm_normalisation(trans_a, trans_b, alpha, beta, c_shape):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 3) if trans_a else (3, 5)).astype(np.float32)
    b = rng.standard_normal((4, 5) if trans_b else (5, 4)).astype(np.float32)
    c = rng.standard_normal(c_shape).astype(np.float32)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
                              [init("b", b), init("c", c)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = cnncc.from_onnx(model)
    want = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b)) + beta * c
    np.testing.assert_allclose(cnncc.reference(g, a), want, rtol=RTOL, atol=ATOL)


def test_three_unsupported_operators_reported_in_one_error():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("NonZero", ["a"], ["b"], name="first_bad"),
             helper.make_node("Relu", ["a"], ["c"], name="ok2"),
             helper.make_node("Erf", ["c"], ["d"], name="second_bad"),
             helper.make_node("TopK", ["d", "k"], ["e", "f"], name="third_bad")]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 2]),
                               helper.make_tensor_value_info("b", TensorProto.INT64, None)],
                              [init("k", np.array([2], np.int64))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedError) as info:
        cnncc.from_onnx(model)
    text = str(info.value)
    for name, op in (("first_bad", "NonZero"), ("second_bad", "Erf"), ("third_bad", "TopK")):
        assert f"{name} ({op})" in text
    assert "opset 17" in text and "3 node(s)" in text


def test_symbolic_dims_become_symbols():
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "sym", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["batch", 3, "height", "width"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "height", "width"])])
    g = cnncc.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    shape = g[g.inputs[0]].type.shape
    assert shape[0] == cnncc.N and str(shape[2]) == "height" and str(shape[3]) == "width"


# -- current exporter output ------------------------------------------------------------------------
torch = None


def export(name: str, tmp_path, dynamo: bool = False):
    global torch
    torch = pytest.importorskip("torch")
    import torch_zoo

    factory, shape = torch_zoo.zoo()[name]
    torch.manual_seed(0)
    module = factory()
    path = tmp_path / f"{name}.onnx"
    x = torch.randn(2, *shape[1:])
    if dynamo:
        pytest.importorskip("onnxscript")
        program = torch.onnx.export(module, (x,), dynamo=True, input_names=["image"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        program.save(str(path))
    else:
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["image"], output_names=["out"],
                          dynamic_axes={"image": {0: "batch"}, "out": {0: "batch"}})
    return path


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "unet"])
def test_torch_exported_model_verifies_against_onnxruntime(name, tmp_path, capsys):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(name, tmp_path)
    code = main(["verify", str(path), "--target", "c", "--batch", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS" in out and "onnxruntime" in out


def test_dynamo_exporter_output_imports_and_matches(tmp_path, capsys):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export("resnet18", tmp_path, dynamo=True)
    code = main(["verify", str(path), "--batch", "3"])
    out = capsys.readouterr().out
    assert code == 0, out


def test_verify_fails_with_exit_1_on_a_wrong_result(tmp_path, capsys, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(zoo_era_model(9), str(path))
    import cnncc.frontends.onnx as frontend

    real = frontend.from_onnx

    def tampered(model, **kw):                       # corrupt one weight after import
        g = real(model, **kw)
        for n in g:
            if n.op == "dense":
                n.params["weight"] = n.params["weight"] * 1.5      # (a uniform shift would cancel in softmax)
        return g

    monkeypatch.setattr(frontend, "from_onnx", tampered)
    assert main(["verify", str(path)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_example_from_onnx_runs(examples_dir, capsys):
    pytest.importorskip("torch")
    import runpy

    runpy.run_path(str(examples_dir / "from_onnx.py"), run_name="__main__")
    assert "max abs difference to onnxruntime" in capsys.readouterr().out
