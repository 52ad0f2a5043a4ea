"""resize2d (ONNX Resize/Upsample, F.interpolate): the numpy reference against PyTorch and ONNX's own
reference implementation over a grid of every mode, and the C / cuda-emu kernels against the reference.

ONNX's node cases for Resize/Upsample run in tests/test_onnx_conformance.py."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import cnncc
from cnncc import ops, resize
from cnncc.errors import CnnccError, ModelError, UnsupportedError
from cnncc.frontends import dsl
from cnncc.ir import N, Node, TensorType

RTOL, ATOL = 1e-4, 1e-5


def run(attrs: dict, x: np.ndarray) -> np.ndarray:
    node = Node("r", "resize2d", ["x"], dict(attrs))
    opdef = ops.get("resize2d")
    opdef.check(node)
    node.type = opdef.infer(node, [TensorType(x.shape)])
    return opdef.ref(node, [x])


def randn(seed: int, *shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- the reference against PyTorch -------------------------------------------------------------------
TORCH_SPECS = [dict(size=(9, 4)), dict(size=(3, 11)), dict(size=(1, 1)), dict(scale_factor=1.7),
               dict(scale_factor=(0.6, 2.5)), dict(scale_factor=0.5), dict(scale_factor=3.0),
               dict(scale_factor=1.5, recompute_scale_factor=True)]


def _torch_cases():
    for mode in ("nearest", "nearest-exact", "bilinear", "bicubic", "area"):
        for spec in TORCH_SPECS:
            for align in ((None, True) if mode in ("bilinear", "bicubic") else (None,)):
                for aa in ((False, True) if mode in ("bilinear", "bicubic") and not align else (False,)):
                    yield pytest.param(mode, spec, align, aa, id=f"{mode}-{spec}-ac{align}-aa{aa}")


@pytest.mark.parametrize("mode,spec,align,aa", list(_torch_cases()))
def test_reference_matches_torch_interpolate(mode, spec, align, aa):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    for seed, (h, w) in enumerate([(5, 7), (8, 3)]):
        x = randn(seed, 2, 3, h, w)
        want = F.interpolate(torch.from_numpy(x), mode=mode, align_corners=align, antialias=aa, **spec).numpy()
        if aa and 1 in want.shape[2:]:
            # PyTorch's separable antialias kernel repeats the first row when an output axis has size 1
            # (onnxruntime and ONNX's reference agree with cnncc there): skip that one comparison
            continue
        attrs = resize.interpolate_attrs((h, w), spec.get("size"), spec.get("scale_factor"), mode, align,
                                         spec.get("recompute_scale_factor"), aa)
        got = run(attrs, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_torch_nearest_picks_torch_pixels_at_float32_ties():
    """F.interpolate's nearest index is computed in float32 (x * (1/scale)); ONNX's float64 division
    picks other pixels for some sizes. The 'pytorch' nearest rules follow torch exactly."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    for mode in ("nearest", "nearest-exact"):
        for n_in, n_out in itertools.product(range(1, 13), range(1, 64)):
            x = torch.arange(n_in, dtype=torch.float32).reshape(1, 1, 1, n_in)
            want = F.interpolate(x, size=(1, n_out), mode=mode).numpy().ravel().astype(int)
            got = resize.axis_table(n_in, n_out, None, mode="nearest",
                                    nearest_mode="pytorch" if mode == "nearest" else "pytorch_exact").index[:, 0]
            assert np.array_equal(got, want), (mode, n_in, n_out)


# -- the reference against ONNX's reference implementation -------------------------------------------
def _onnx_model(attrs: dict, x_shape, scales=None, sizes=None, roi=None, opset=19, op="Resize"):
    from onnx import TensorProto, helper, numpy_helper

    inits, inputs = [], ["X"]
    if op == "Resize":
        for name, value, dtype in (("roi", roi, np.float32), ("scales", scales, np.float32),
                                   ("sizes", sizes, np.int64)):
            if opset < 11 and name != "scales":
                continue
            if value is None:
                inputs.append("")
                continue
            inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
            inputs.append(name)
        while inputs[-1] == "":
            inputs.pop()
    else:
        inits.append(numpy_helper.from_array(np.asarray(scales, np.float32), "scales"))
        inputs.append("scales")
    node = helper.make_node(op, inputs, ["Y"], **attrs)
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _onnx_cases():
    coords = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]
    shapes = [dict(scales=[1, 1, 0.6, 1.75]), dict(scales=[1, 1, 2.0, 0.5]), dict(sizes=[2, 3, 7, 2]),
              dict(sizes=[2, 3, 1, 9])]
    for coord, rule, shape in itertools.product(coords, ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"],
                                                shapes):
        yield dict(mode="nearest", coordinate_transformation_mode=coord, nearest_mode=rule), shape
    for mode, coord, shape in itertools.product(["linear", "cubic"], coords, shapes):
        yield dict(mode=mode, coordinate_transformation_mode=coord), shape
        yield dict(mode=mode, coordinate_transformation_mode=coord, antialias=1), shape
    for shape in shapes:
        yield dict(mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1), shape
        yield dict(mode="cubic", antialias=1, exclude_outside=1, cubic_coeff_a=-0.6), shape
    crop = dict(coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-3.0)
    for mode in ("nearest", "linear", "cubic"):
        yield dict(mode=mode, **crop), dict(sizes=[2, 3, 6, 5], roi=[0, 0, -0.3, 0.2, 1, 1, 0.9, 1.4])
        yield dict(mode=mode, axes=[3, 2], **crop), dict(scales=[1.5, 0.8], roi=[0.1, 0.2, 0.7, 1.1])
    for policy in ("not_larger", "not_smaller"):
        yield dict(mode="linear", keep_aspect_ratio_policy=policy, axes=[2, 3]), dict(sizes=[7, 13])
        yield dict(mode="nearest", keep_aspect_ratio_policy=policy, axes=[2, 3]), dict(sizes=[3, 3])


@pytest.mark.parametrize("attrs,inputs", list(_onnx_cases()), ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_import_and_reference_match_onnx_reference(attrs, inputs):
    """Every Resize attribute combination as ONNX's reference implementation (the spec) computes it."""
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    x = randn(3, 2, 3, 5, 4)
    model = _onnx_model(attrs, x.shape, **inputs)
    want = ReferenceEvaluator(model).run(None, {"X": x})[0]
    g = cnncc.from_onnx(model)
    got = cnncc.reference(g, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("op,opset,mode,scales", [
    ("Upsample", 9, "nearest", [1, 1, 2, 3]), ("Upsample", 9, "linear", [1, 1, 2, 1.5]),
    ("Upsample", 7, "nearest", [1, 1, 1.5, 2.5]), ("Resize", 10, "nearest", [1, 1, 0.6, 0.5]),
    ("Resize", 10, "nearest", [1, 1, 1.7, 2]), ("Resize", 10, "linear", [1, 1, 0.6, 2.5])])
def test_old_opsets_match_onnxruntime(op, opset, mode, scales):
    """Upsample (opset 7-9) and Resize-10: asymmetric coordinates; onnxruntime's nearest rounding (its
    reference for these opsets; ONNX's Python reference implements only integer nearest Upsample)."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    x = randn(4, 1, 2, 5, 6)
    if op == "Upsample" and opset == 7:
        from onnx import TensorProto
        node = helper.make_node("Upsample", ["X"], ["Y"], mode=mode, scales=[float(s) for s in scales])
        model = helper.make_model(helper.make_graph(
            [node], "up", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 7)])
    else:
        model = _onnx_model({"mode": mode}, x.shape, scales=scales, opset=opset, op=op)
    model.ir_version = 7
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    got = cnncc.reference(cnncc.from_onnx(model), x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_sizes_with_the_symbolic_batch_match_onnxruntime():
    """Exporters spell sizes as Concat(Shape(x)[:2], (H, W)): with a dynamic batch the folded sizes hold N."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    consts = {"zero": [0], "two": [2], "hw": [7, 6]}
    nodes = [helper.make_node("Shape", ["X"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "two"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["X", "", "", "sizes"], ["Y"], mode="cubic")]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 5, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    g = cnncc.from_onnx(model)
    x = randn(5, 2, 3, 5, 4)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    np.testing.assert_allclose(cnncc.reference(g, x), want, rtol=RTOL, atol=ATOL)


# -- refusals -------------------------------------------------------------------------------------------
def test_refusals_name_node_attribute_and_fix():
    pytest.importorskip("onnx")
    model = _onnx_model({"mode": "linear"}, (1, 3, 4, 4), scales=[1, 2, 2, 2])
    with pytest.raises(UnsupportedError, match=r"Y \(Resize\).*channel axis.*scales\[1\] = 1.0"):
        cnncc.from_onnx(model)
    x = dsl.input("x", (N, 3, 4, 4))
    with pytest.raises(ModelError, match=r"(?s)layer 'up0'.*attribute 'antialias'.*fix:"):
        dsl.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True, antialias=True, name="up0")
    with pytest.raises(ModelError, match=r"attribute 'mode'"):
        dsl.interpolate(x, scale_factor=2, mode="trilinear", name="up1")
    with pytest.raises(ModelError, match=r"(?s)attribute 'roi'.*fix:"):
        dsl.resize2d(x, size=(3, 3), coordinate_mode="tf_crop_and_resize", name="up2")
    with pytest.raises(CnnccError, match="antialias"):
        dsl.resize2d(x, size=(3, 3), mode="nearest", antialias=True, name="up3")


# -- the kernels against the reference --------------------------------------------------------------------
def resize_graph():
    """One model per kernel family: nearest as a gather (with tf_crop_and_resize padding), the separable
    filter with 2, 4 and widened (antialias) taps, area, extrapolation."""
    x = dsl.input("x", (N, 3, 6, 7))
    crop = ((0.13, 0.91), (-0.2, 1.1))     # no source coordinate on a .5 tie (onnxruntime rounds in float32)
    outs = [dsl.interpolate(x, scale_factor=(1.5, 0.5), mode="nearest", name="nn_torch"),
            dsl.resize2d(x, size=(4, 9), mode="nearest", nearest_mode="round_prefer_ceil", name="nn_onnx"),
            dsl.resize2d(x, size=(5, 8), mode="nearest", coordinate_mode="tf_crop_and_resize", roi=crop,
                         extrapolation_value=-2.0, name="nn_crop"),
            dsl.upsample2d(x, 2, mode="bilinear", name="bilinear"),
            dsl.interpolate(x, size=(9, 5), mode="bicubic", align_corners=True, name="bicubic"),
            dsl.interpolate(x, scale_factor=0.4, mode="bicubic", antialias=True, name="bicubic_aa"),
            dsl.interpolate(x, size=(4, 3), mode="area", name="area"),
            dsl.resize2d(x, size=(5, 8), mode="linear", coordinate_mode="tf_crop_and_resize", roi=crop,
                         extrapolation_value=0.5, name="linear_crop")]
    return dsl.graph(*outs, name="resize")


@pytest.mark.parametrize("target", ["c", "cuda-emu"])
def test_kernels_match_reference(target, shared_kernel_cache):
    g = resize_graph()
    mod = cnncc.compile(g, target=target)
    filters = [src for _, src, _ in mod.kernels if "separable filter" in src]
    assert len(filters) == 5 and any("tf_crop_and_resize" in s for s in filters)
    rng = np.random.default_rng(0)
    for batch in (1, 2):
        x = rng.standard_normal((batch, 3, 6, 7)).astype(np.float32)
        got, want = mod(x), cnncc.reference(g, x)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_cuda_kernels_compile_for_sm90(shared_kernel_cache):
    """NVRTC compiles the resize kernels for sm_90 without spills (no GPU needed)."""
    pytest.importorskip("cupy")
    from cnncc.codegen import cuda as cuda_codegen
    from cnncc.codegen.lower import lower_program
    from cnncc.runtime import nvrtc
    from cnncc.runtime.cuda import launch_table

    try:
        nvrtc.nvrtc_version()
    except Exception as e:       # CuPy is installed but cannot load libnvrtc
        pytest.skip(f"NVRTC unavailable: {type(e).__name__}")
    source, kernels = cuda_codegen.render(lower_program(cnncc.optimize(resize_graph(), 2)))
    table = launch_table(source)          # keyed by the kernels' CUDA function names (k_<name>)
    assert len(table) == len(kernels)
    result = nvrtc.compile_checked(source, threads={k: v[1][0] for k, v in table.items()}, expect=list(table))
    assert result.cubin


# -- the PyTorch frontend ------------------------------------------------------------------------------
def test_traced_interpolate_and_upsample_modules_match_torch():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch import nn

    class Resizes(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Upsample(scale_factor=1.5, mode="bicubic", align_corners=False)
            self.bilinear = nn.UpsamplingBilinear2d(size=(9, 4))
            self.nearest = nn.UpsamplingNearest2d(scale_factor=2)

        def forward(self, x):
            return (self.up(x), self.bilinear(x), self.nearest(x),
                    F.interpolate(x, scale_factor=0.6, mode="nearest-exact"),
                    F.interpolate(x, size=(3, 4), mode="area"),
                    F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True),
                    F.interpolate(x, scale_factor=(1.3, 0.7), mode="nearest", recompute_scale_factor=True),
                    F.interpolate(x, size=(4, 5), mode="bicubic", antialias=True),
                    F.upsample_bilinear(x, scale_factor=2), F.upsample_nearest(x, size=(5, 4)),
                    F.adaptive_avg_pool2d(x, (3, 5)))      # unequal windows: an area resize

    x = torch.from_numpy(randn(7, 2, 3, 7, 9))
    g = cnncc.from_torch(Resizes().eval(), x)
    assert sum(n.op == "resize2d" for n in g) == 11
    got = cnncc.reference(g, x.numpy())
    got = list(got.values()) if isinstance(got, dict) else [got]
    with torch.no_grad():
        want = Resizes().eval()(x)
    for y, w in zip(got, want):
        np.testing.assert_allclose(y, w.numpy(), rtol=RTOL, atol=ATOL)


# -- the exporters (the benchmark's peers) -------------------------------------------------------------------
def test_peers_compute_the_reference():
    """The PyTorch peer (F.interpolate where it means the same, tables otherwise) and the ONNX export run
    by onnxruntime compute what the reference computes; 'area' has no ONNX Resize and is refused."""
    pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from cnncc.codegen.onnx_export import to_onnx
    from cnncc.codegen.torch_export import run_torch

    g = resize_graph()
    x = randn(8, 2, 3, 6, 7)
    want = cnncc.reference(g, x)
    got = run_torch(g, [x])
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, err_msg=name)
    with pytest.raises(UnsupportedError, match="'area'"):
        to_onnx(g)
    g.outputs.remove("area")
    g.remove("area")
    sess = ort.InferenceSession(to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    for name, y in zip(g.outputs, sess.run(g.outputs, {g.inputs[0]: x})):
        np.testing.assert_allclose(y, want[name], rtol=RTOL, atol=ATOL, err_msg=name)
