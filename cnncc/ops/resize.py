"""resize2d: ONNX Resize / F.interpolate (the tables live in cnncc/resize.py)."""
from __future__ import annotations

import math
import numpy as np
import sympy

from .. import resize
from ..errors import ModelError
from ..node import TensorType
from .core import Attr, OpDef, _nd_check, ints_or_int, is_number, register


def _resize_scales(node) -> tuple | None:
    s = node.attrs["scale_factor"]
    if s is None:
        return None
    return tuple(float(v) for v in s) if isinstance(s, (tuple, list)) else (float(s),) * 2


def _resize_sizes(node, x: TensorType) -> list:
    """The output's spatial sizes: ``size``, or floor(input * scale_factor) (ONNX and PyTorch alike)."""
    if node.attrs["size"] is not None:
        return [sympy.Integer(int(v)) for v in _nd_check(node, "size", 2, node.op)]
    out = []
    for n, s in zip(x.shape[2:], _resize_scales(node)):
        n = sympy.sympify(n)
        out.append(sympy.Integer(math.floor(float(n) * s)) if n.is_number
                   else sympy.floor(n * sympy.Rational(repr(s))))
    return out


def _resize_shape(node, ins):
    x, a = ins[0], node.attrs
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 input (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    if a["size"] is None and a["scale_factor"] is None:
        raise ModelError("needs size or scale_factor", node=node.name, op=node.op, attr="scale_factor",
                         fix="give the output size (H, W) or a scale factor")
    if a["antialias"] and a["mode"] not in ("linear", "cubic"):
        raise ModelError(f"antialias applies to modes 'linear' and 'cubic', not '{a['mode']}'", node=node.name,
                         op=node.op, attr="antialias", fix="drop antialias or use mode 'linear'/'cubic'")
    if a["coordinate_mode"] == "tf_crop_and_resize" and a["roi"] is None:
        raise ModelError("coordinate_mode 'tf_crop_and_resize' needs roi", node=node.name, op=node.op, attr="roi",
                         fix="give roi=((h_start, h_end), (w_start, w_end)) in normalized coordinates")
    return (x.shape[0], x.shape[1], *_resize_sizes(node, x))


def resize_tables(node, in_hw, out_hw):
    """The two per-axis filter tables (cnncc/resize.py) of a resize2d node at concrete sizes."""
    a = node.attrs
    scales = _resize_scales(node) or (None, None)
    roi = a["roi"] or ((0.0, 1.0), (0.0, 1.0))
    return tuple(resize.axis_table(int(n_in), int(n_out), sc, mode=a["mode"], coordinate_mode=a["coordinate_mode"],
                                   nearest_mode=a["nearest_mode"], cubic_coeff_a=float(a["cubic_coeff_a"]),
                                   exclude_outside=bool(a["exclude_outside"]), antialias=bool(a["antialias"]),
                                   roi=tuple(float(v) for v in r))
                 for n_in, n_out, sc, r in zip(in_hw, out_hw, scales, roi))


def _resize_ref(node, xs):
    x = xs[0]
    out_hw = [int(v) for v in _resize_sizes(node, TensorType(x.shape))]
    th, tw = resize_tables(node, x.shape[2:], out_hw)
    return resize.apply(x, th, tw, float(node.attrs["extrapolation_value"]))


def _resize_flops(node, ins, out):
    if node.attrs["mode"] == "nearest":
        return 0
    x = ins[0]
    try:
        th, tw = resize_tables(node, [int(d) for d in x.shape[2:]], [int(d) for d in out.shape[2:]])
    except TypeError:                 # symbolic spatial sizes: count a bilinear filter
        return 4 * out.numel()
    return 2 * th.taps * tw.taps * out.numel()


def _pair_of_pairs(v) -> bool:
    return v is None or (len(v) == 2 and all(len(p) == 2 and all(is_number(f) for f in p) for p in v))


register(OpDef("resize2d", (1, 1), _resize_shape, _resize_ref,
               attrs={"size": Attr(None, lambda v: v is None or ints_or_int()(v), "None or (H, W)"),
                      "scale_factor": Attr(None, lambda v: v is None or (is_number(v) and v > 0) or (
                          isinstance(v, (tuple, list)) and len(v) == 2 and all(is_number(s) and s > 0 for s in v)),
                          "a positive number or a pair (output / input)"),
                      "mode": Attr("nearest", lambda v: v in resize.MODES, " or ".join(map(repr, resize.MODES))),
                      "coordinate_mode": Attr("half_pixel", lambda v: v in resize.COORDINATE_MODES,
                                              "one of " + ", ".join(resize.COORDINATE_MODES)),
                      "nearest_mode": Attr("round_prefer_floor", lambda v: v in resize.NEAREST_MODES,
                                           "one of " + ", ".join(resize.NEAREST_MODES)),
                      "cubic_coeff_a": Attr(-0.75, is_number, "a number (-0.75: PyTorch/OpenCV, -0.5: PIL/TF)"),
                      "exclude_outside": Attr(False, lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
                      "antialias": Attr(False, lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
                      "roi": Attr(None, _pair_of_pairs, "None or ((h_start, h_end), (w_start, w_end))"),
                      "extrapolation_value": Attr(0.0, is_number, "a number")},
               flops=_resize_flops,
               doc="ONNX Resize / F.interpolate over H and W: nearest, linear, cubic (antialiased too) or area, "
                   "as a separable filter (cnncc/resize.py)", kernel="resize"))
