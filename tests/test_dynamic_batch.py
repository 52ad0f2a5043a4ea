"""Any batch for fixed-batch models: ``from_onnx(path, batch="N")``, ``from_torch(..., batch="N")``
and ``--dynamic-batch`` make a batch-1 export's leading dimension the symbolic N, restating
batch-literal reshape targets ([1, -1] -> [N, -1]) and refusing, by node, what mixes the batch in."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnncc  # noqa: E402
from cnncc.cli import main  # noqa: E402
from cnncc.errors import ModelError  # noqa: E402
from helpers import rel_err  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def per_item_onnxruntime(model, x: np.ndarray) -> np.ndarray:
    """onnxruntime on a batch-1 model, one item at a time (what batch='N' must equal)."""
    s = ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString(),
                             providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(len(x))])


def tiny_model(reshape_to, *, extra=()):
    """Conv (1, 3, 6, 6) -> (1, 4, 6, 6), then Reshape to ``reshape_to`` (a batch-1 literal target)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array(reshape_to, np.int64), "target")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Reshape", ["c", "target"], ["y"], name="head_reshape"), *extra]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], [w, shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("target, want", [([1, -1], (144,)), ([1, 4, 36], (4, 36)), ([-1, 144], (144,)),
                                          ([0, 2, 72], (2, 72))])
def test_batch_literal_reshape_targets_become_N(target, want):
    model = tiny_model(target)
    g = cnncc.from_onnx(model, batch="N")
    assert g[g.inputs[0]].type.shape[0] == cnncc.N
    assert g[g.outputs[0]].type.shape == (cnncc.N, *want) and g.origin.exported_batch == 1
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(cnncc.reference(g, x), per_item_onnxruntime(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", [[4, 36], [4, -1], [-1], [2, 2, 36]])
def test_reshape_that_mixes_the_batch_is_refused_by_name(target):
    model = tiny_model(target)
    cnncc.from_onnx(model)                                      # fine at the exported batch
    with pytest.raises(ModelError, match="head_reshape.*batch"):
        cnncc.from_onnx(model, batch="N")


def test_squeezing_and_flattening_the_batch_are_refused():
    squeeze = helper.make_node("Squeeze", ["y", "ax"], ["z"], name="drop_batch")
    model = tiny_model([1, 4, 36], extra=[squeeze])
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "ax"))
    with pytest.raises(ModelError, match="drop_batch.*batch"):
        cnncc.from_onnx(model, batch="N")
    flat = tiny_model([1, 4, 36], extra=[helper.make_node("Flatten", ["y"], ["z"], axis=0, name="flat0")])
    with pytest.raises(ModelError, match="flat0.*batch"):
        cnncc.from_onnx(flat, batch="N")
    with pytest.raises(ModelError, match="batch='N'"):
        cnncc.from_onnx(flat, batch=8)


def test_resize_sizes_written_for_batch_1_follow_N():
    model = tiny_model([1, 4, 6, 6], extra=[helper.make_node("Resize", ["y", "", "", "sizes"], ["z"], mode="nearest",
                                                              name="up")])
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 4, 12, 12], np.int64), "sizes"))
    g = cnncc.from_onnx(model, batch="N")
    assert g[g.outputs[0]].type.shape == (cnncc.N, 4, 12, 12)
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(cnncc.reference(g, x), per_item_onnxruntime(model, x), rtol=1e-5, atol=1e-5)


def test_resnet18_batch1_export_runs_at_batch_8(tmp_path, shared_kernel_cache):
    """The acceptance case: a batch-1 ResNet-18 export with batch='N' at batch 8 matches
    onnxruntime on the same network re-exported at batch 8."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "tests"))
    from torch_zoo import ResNet

    torch.manual_seed(0)
    m = ResNet("basic", (2, 2, 2, 2)).eval()
    size = 16
    one, eight = tmp_path / "resnet18_b1.onnx", tmp_path / "resnet18_b8.onnx"
    torch.onnx.export(m, (torch.zeros(1, 3, size, size),), str(one), dynamo=False, input_names=["x"])
    torch.onnx.export(m, (torch.zeros(8, 3, size, size),), str(eight), dynamo=False, input_names=["x"])
    assert onnx.load(str(one)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    g = cnncc.from_onnx(one, batch="N")
    x = np.random.default_rng(2).standard_normal((8, 3, size, size)).astype(np.float32)
    got = cnncc.compile(g, target="c")(x)
    want = ort.InferenceSession(str(eight), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == (8, 1000) and rel_err(got, want) < 1e-4


def test_from_torch_batch_N_restates_batch_literal_views():
    torch = pytest.importorskip("torch")

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4 * 4 * 4, 5)

        def forward(self, x):
            return self.fc(self.conv(x).view(1, -1))          # written for batch 1

    m = Head().eval()
    g = cnncc.from_torch(m, torch.zeros(1, 3, 6, 6), batch="N")
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        want = torch.cat([m(x[i:i + 1]) for i in range(4)]).numpy()
    np.testing.assert_allclose(cnncc.reference(g, x.numpy()), want, rtol=1e-5, atol=1e-5)

    class Mixer(torch.nn.Module):
        def forward(self, x):
            return x.view(-1)

    with pytest.raises(ModelError, match="batch"):
        cnncc.from_torch(Mixer().eval(), torch.zeros(1, 3, 2, 2), batch="N")


def test_cli_dynamic_batch(tmp_path, capsys, shared_kernel_cache):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model([1, -1]), str(path))
    assert main(["summary", str(path), "--dynamic-batch"]) == 0
    assert "(N, 144)" in capsys.readouterr().out
    assert main(["verify", str(path), "--dynamic-batch", "--batch", "3"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["summary", str(path)]) == 0
    assert "(1, 144)" in capsys.readouterr().out
