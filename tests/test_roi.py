"""roi_pool / roi_align: the numpy reference on hand-computed cases (torchvision's documented
semantics; torchvision itself is not a test dependency), against ONNX's reference evaluator and
onnxruntime, and the C / cuda-emu kernels against the reference; the from_torch hook that maps a
custom RoIPool module, and torchvision's own RoIPool/RoIAlign by name."""
from __future__ import annotations

import shutil
import sys
import types

import numpy as np
import pytest

import cnncc
from cnncc import ops
from cnncc.errors import ModelError
from cnncc.frontends import dsl
from cnncc.ir import Node
from cnncc.reference import random_inputs

pytestmark = pytest.mark.usefixtures("shared_kernel_cache")

#: one 6x6 plane whose value is 6*h + w: the max of a window is its bottom-right corner, and a
#: bilinear sample of it is exactly 6*y + x (a linear field)
PLANE = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)


def run(op: str, boxes, x=PLANE, **attrs) -> np.ndarray:
    node = Node("r", op, ["x", "b"], dict(attrs))
    opdef = ops.get(op)
    opdef.check(node)
    return opdef.ref(node, [x, np.asarray(boxes, np.float32)])


# -- roi_pool ------------------------------------------------------------------------------------
def test_roi_pool_bins_are_inclusive_boxes_split_by_floor_and_ceil():
    # box (0,0)-(3,3) inclusive is 4x4: 2x2 bins of 2x2, each max at its bottom-right corner
    y = run("roi_pool", [[0, 0, 0, 3, 3]], output_size=2)
    np.testing.assert_array_equal(y[0, 0], [[7, 9], [19, 21]])
    # 3 wide into 2 bins: bin 1.5 -> [floor(0), ceil(1.5)) = [0, 2) and [floor(1.5), ceil(3)) = [1, 3): they overlap
    y = run("roi_pool", [[0, 0, 0, 2, 0]], output_size=(1, 2))
    np.testing.assert_array_equal(y[0, 0], [[1, 2]])


def test_roi_pool_rounds_halves_away_from_zero_and_scales():
    # x1 = 2.5 * 0.5... : corners x spatial_scale = (1.25, 0.5, 2.5, 2.5) -> round -> (1, 1, 3, 3)
    # (numpy's round-half-even would give y1 = 0 and x2 = y2 = 2)
    y = run("roi_pool", [[0, 2.5, 1, 5, 5]], output_size=1, spatial_scale=0.5)
    assert y[0, 0, 0, 0] == 6 * 3 + 3
    y = run("roi_pool", [[0, 0, 1, 0, 1]], output_size=1, spatial_scale=0.5)   # (0, 0.5) -> row 1
    assert y[0, 0, 0, 0] == 6


def test_roi_pool_empty_bins_are_zero_and_malformed_boxes_one_pixel():
    y = run("roi_pool", [[0, 10, 10, 12, 12]], output_size=2)          # clipped to nothing
    np.testing.assert_array_equal(y, 0)
    y = run("roi_pool", [[0, 4, 2, 1, 1]], output_size=1)              # x2 < x1, y2 < y1: 1x1 at (2, 4)
    assert y[0, 0, 0, 0] == 6 * 2 + 4
    x = -np.ones((1, 1, 6, 6), np.float32)
    y = run("roi_pool", [[0, 0, 0, 0, 0]], x=x, output_size=2)         # 1x1 box, bins of 0.5: ceil(0.5) = 1,
    np.testing.assert_array_equal(y[0, 0], [[-1, -1], [-1, -1]])       # every bin sees pixel (0, 0)
    y = run("roi_pool", [[0, 4, 4, 7, 7]], x=x, output_size=2)         # half outside: clipped bins are empty
    np.testing.assert_array_equal(y[0, 0], [[-1, 0], [0, 0]])          # -> 0, not -FLT_MAX nor -1


def test_roi_pool_picks_the_image_of_each_box_and_checks_the_batch_index():
    x = np.stack([PLANE[0], PLANE[0] + 100])
    y = run("roi_pool", [[1, 0, 0, 5, 5], [0.7, 0, 0, 5, 5]], x=x, output_size=1)   # 0.7 truncates to 0
    np.testing.assert_array_equal(y[:, 0, 0, 0], [135, 35])
    with pytest.raises(ModelError, match="batch index 2.0, outside 0..1"):
        run("roi_pool", [[2, 0, 0, 5, 5]], x=x, output_size=1)


# -- roi_align -------------------------------------------------------------------------------------
def test_roi_align_samples_bilinearly_at_subgrid_centres():
    # box (0,0)-(2,2), one bin, 2x2 samples at 0.5 and 1.5: the average of a linear field is its value at (1, 1)
    y = run("roi_align", [[0, 0, 0, 2, 2]], output_size=1, sampling_ratio=2)
    assert y[0, 0, 0, 0] == pytest.approx(7.0)
    # aligned shifts the box by half a pixel: samples at 0 and 1 -> (0.5, 0.5)
    y = run("roi_align", [[0, 0, 0, 2, 2]], output_size=1, sampling_ratio=2, aligned=True)
    assert y[0, 0, 0, 0] == pytest.approx(3.5)
    # one sample per bin, 2x2 bins of a 4x4 box: centres (1, 1), (1, 3), (3, 1), (3, 3)
    y = run("roi_align", [[0, 0, 0, 4, 4]], output_size=2, sampling_ratio=1)
    np.testing.assert_allclose(y[0, 0], [[7, 9], [19, 21]], rtol=1e-6)


def test_roi_align_adaptive_sampling_is_ceil_of_box_over_bins():
    node = Node("r", "roi_align", ["x", "b"], {"output_size": (2, 3), "sampling_ratio": 0})
    ops.get("roi_align").check(node)
    geo = ops.roi_align_geometry(node, np.array([0, 0, 0, 7, 4.5], np.float32))
    assert geo["grid"] == (3, 3) and geo["count"] == 9                 # ceil(4.5 / 2), ceil(7 / 3)
    geo = ops.roi_align_geometry(node, np.array([0, 0, 0, 0.2, 0.2], np.float32))
    assert geo["grid"] == (1, 1)                                       # not aligned: at least 1x1
    node.attrs["aligned"] = True
    geo = ops.roi_align_geometry(node, np.array([0, 0, 0, 0.2, 0.2], np.float32))
    assert geo["bin"][0] == pytest.approx(0.1) and geo["grid"] == (1, 1)


def test_roi_align_clamps_at_the_edge_and_zeroes_samples_outside():
    # a sample at y = 5.5 (inside, past the last row) reads row 5; one at x = -0.5 reads column 0
    y = run("roi_align", [[0, -1, 5, 0, 6]], output_size=1, sampling_ratio=1)   # sample (5.5, -0.5)
    assert y[0, 0, 0, 0] == pytest.approx(30.0)
    y = run("roi_align", [[0, 8, 8, 10, 10]], output_size=1, sampling_ratio=1)  # (9, 9): > 1 pixel outside
    assert y[0, 0, 0, 0] == 0.0
    y = run("roi_align", [[0, 0, 0, 4, 4]], output_size=1, sampling_ratio=1, mode="max")
    assert y[0, 0, 0, 0] == pytest.approx(14.0)                        # ONNX max: one sample, weight 1


def test_roi_align_matches_onnx_reference_evaluator():
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    boxes = np.concatenate([rng.integers(0, 2, (6, 1)), rng.uniform(-3, 14, (6, 4))], 1).astype(np.float32)
    for aligned in (False, True):
        for sr in (0, 2):
            for mode in ("avg", "max"):
                node = helper.make_node("RoiAlign", ["X", "rois", "bi"], ["Y"], output_height=3, output_width=4,
                                        sampling_ratio=sr, spatial_scale=0.5, mode=mode,
                                        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel")
                g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, None),
                                                    helper.make_tensor_value_info("rois", onnx.TensorProto.FLOAT, None),
                                                    helper.make_tensor_value_info("bi", onnx.TensorProto.INT64, None)],
                                      [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
                model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
                want = ReferenceEvaluator(model).run(None, {"X": x, "rois": boxes[:, 1:],
                                                            "bi": boxes[:, 0].astype(np.int64)})[0]
                got = run("roi_align", boxes, x=x, output_size=(3, 4), sampling_ratio=sr, spatial_scale=0.5,
                          aligned=aligned, mode=mode)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_shape_rule_and_errors():
    x = dsl.input("x", (dsl.N, 4, 10, 10))
    b = dsl.input("boxes", (3, 5), like=x)
    assert dsl.roi_align(x, b, (2, 5)).shape == (3, 4, 2, 5)
    with pytest.raises(ModelError, match=r"expected \(K, 5\)"):
        dsl.roi_pool(x, dsl.input("bad", (3, 4), like=x), 2)
    with pytest.raises(ModelError, match="must be a fixed number"):
        dsl.roi_pool(x, dsl.input("nb", (dsl.N, 5), like=x), 2)
    with pytest.raises(ModelError, match="spatial_scale"):
        dsl.roi_pool(x, b, 2, spatial_scale=0)


# -- generated code --------------------------------------------------------------------------------
def roi_graph():
    """Every kernel variant in one graph: roi_pool, roi_align avg/max x aligned x fixed/adaptive
    sampling, and the ONNX (x, rois, batch_indices) form."""
    x = dsl.input("x", (dsl.N, 3, 9, 11))
    b = dsl.input("boxes", (5, 5), like=x)
    r = dsl.input("rois", (4, 4), like=x)
    i = dsl.input("batch_indices", (4,), dtype="int64", like=x)
    outs = [dsl.roi_pool(x, b, (3, 2), 0.5, name="rp"),
            dsl.layer("roi_pool", [x, r, i], {"output_size": 2}, name="rp_onnx"),
            dsl.layer("roi_align", [x, r, i], {"output_size": (2, 2), "sampling_ratio": 0, "aligned": True},
                      name="ra_onnx")]
    for aligned in (False, True):
        for sr in (0, 2):
            outs.append(dsl.roi_align(x, b, (2, 3), 0.5, sr, aligned, name=f"ra_{int(aligned)}_{sr}"))
    outs.append(dsl.roi_align(x, b, 2, 0.5, 2, False, "max", name="ra_max"))
    return dsl.graph(*outs)


def _feeds(g, batch, seed):
    f = random_inputs(g, batch, np.random.default_rng(seed))
    f["boxes"][0, 1:] = [-6, -4, 30, 26]                 # past every edge
    f["boxes"][1, 1:] = [7, 5, 3, 2]                     # malformed
    return f


@pytest.mark.parametrize("target", ["c", "cuda-emu"])
def test_kernels_match_reference(target):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    g = roi_graph()
    mod = cnncc.compile(g, target=target)
    for batch in (1, 3):
        f = _feeds(g, batch, batch)
        y, r = mod(f), cnncc.reference(g, f)
        for k in r:
            np.testing.assert_allclose(y[k], r[k], rtol=1e-5, atol=1e-6, err_msg=f"{target} {k} batch {batch}")
    f["boxes"][2, 0] = 3                                 # no image 3 in a batch of 3: NaN, not a wrong value
    y = mod(f)
    assert np.isnan(y["rp"][2]).all() and np.isnan(y["ra_1_2"][2]).all() and not np.isnan(y["rp"][[0, 1, 3]]).any()


def test_onnx_export_matches_onnxruntime_and_reimports():
    ort = pytest.importorskip("onnxruntime")
    from cnncc.codegen.onnx_export import to_onnx

    g = roi_graph()
    f = _feeds(g, 2, 7)
    session = ort.InferenceSession(to_onnx(g).SerializeToString())
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, f)))
    want = cnncc.reference(g, f)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # MaxRoiPool / RoiAlign with (rois, batch_indices) import back onto the same operators
    x = dsl.input("x", (dsl.N, 3, 9, 11))
    r, i = dsl.input("rois", (4, 4), like=x), dsl.input("batch_indices", (4,), dtype="int64", like=x)
    b = dsl.input("boxes", (5, 5), like=x)
    small = dsl.graph(dsl.roi_pool(x, b, 2, 0.5, name="p"),
                      dsl.layer("roi_align", [x, r, i], {"output_size": 3, "spatial_scale": 0.5, "mode": "max"},
                                name="a"))
    back = cnncc.from_onnx(to_onnx(small))
    assert {n.op for n in back} >= {"roi_pool", "roi_align"}
    f = _feeds(small, 2, 8)
    want, got = cnncc.reference(small, f), cnncc.reference(back, f)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_onnx_import_refuses_unknown_modes():
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    node = helper.make_node("RoiAlign", ["X", "rois", "bi"], ["Y"], coordinate_transformation_mode="asymmetric")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1, 1, 4, 4]),
                                        helper.make_tensor_value_info("rois", onnx.TensorProto.FLOAT, [2, 4]),
                                        helper.make_tensor_value_info("bi", onnx.TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
    with pytest.raises(ModelError, match="coordinate_transformation_mode 'asymmetric'"):
        cnncc.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)]))


# -- PyTorch ---------------------------------------------------------------------------------------
def test_from_torch_maps_registered_and_torchvision_roi_modules(monkeypatch):
    torch = pytest.importorskip("torch")
    import torch_zoo
    from cnncc.frontends import torch as torch_frontend

    torch_zoo.register_with_cnncc()

    class Head(torch.nn.Module):
        def __init__(self, roi):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.roi = roi

        def forward(self, x, boxes):
            return self.roi(torch.relu(self.conv(x)), boxes).flatten(1)

    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 12)
    boxes = torch.tensor([[1, 0, 0, 11, 11], [0, 2.5, 1, 5, 9], [1, 7, 7, 3, 2]], dtype=torch.float32)
    module = Head(torch_zoo.RoIPool((2, 3), 0.5)).eval()
    g = cnncc.from_torch(module, (x, boxes), fixed_inputs=("boxes",))
    assert g["boxes"].type.shape == (3, 5) and any(n.op == "roi_pool" for n in g)
    with torch.no_grad():
        want = module(x, boxes).numpy()
    got = cnncc.reference(g, [x.numpy(), boxes.numpy()])        # conv rounding differs: relative to the max
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * np.abs(want).max()

    # torchvision's modules are recognized by name (a stand-in class here: torchvision is not installed)
    fake = types.ModuleType("torchvision.ops.roi_align")

    class RoIAlign(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned = (2, 2), 0.25, 2, True

        def forward(self, x, boxes):
            raise AssertionError("a leaf module: never traced, never run here")

    RoIAlign.__module__ = fake.__name__
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    g = cnncc.from_torch(Head(RoIAlign()).eval(), (x, boxes), fixed_inputs=(1,))
    node = next(n for n in g if n.op == "roi_align")
    assert node.attrs["sampling_ratio"] == 2 and node.attrs["aligned"] and node.attrs["spatial_scale"] == 0.25
    assert torch_frontend._custom_module(torch.nn.ReLU()) is None
