"""Resizing as separable per-axis filter tables: the semantics of ONNX Resize/Upsample and of
PyTorch's ``F.interpolate``, resolved to numbers.

Every resize mode cnncc knows (nearest, linear, cubic, antialiased linear/cubic, area) is a
separable filter: output row ``i`` of an axis is ``sum_k weight[i, k] * input[index[i, k]]``.
``axis_table`` computes that table for one axis from the registry attributes of ``resize2d``;
the numpy reference applies the two tables (H then W), and the code generators print the same
tables as literal constants, so a kernel only spells a gather-weighted sum.

The formulas follow ONNX's reference implementation (onnx/reference/ops/op_resize.py: float64
source coordinates, edge padding = clamped indices, ``exclude_outside`` renormalization,
antialias widening the filter by 1/scale when down-scaling) and, for the two ``pytorch``
nearest modes, PyTorch's own float32 index arithmetic (``nearest_idx``/``nearest_exact_idx``),
so an imported model and a traced module pick exactly the pixels their framework picks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODES = ("nearest", "linear", "cubic", "area")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_crop_and_resize", "tf_half_pixel_for_nn")
#: ONNX's four rounding rules; ``simple``: ONNX Upsample / Resize-10 as onnxruntime runs them (truncate when
#: up-scaling, ceil when down-scaling); ``pytorch``/``pytorch_exact``: F.interpolate's 'nearest' and
#: 'nearest-exact' (float32 arithmetic, coordinate_mode ignored)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple", "pytorch", "pytorch_exact")


@dataclass(frozen=True)
class AxisTable:
    """One axis of a resize: output ``i`` = sum_k weight[i, k] * input[index[i, k]], or the
    extrapolation value where ``outside[i]`` (tf_crop_and_resize outside the input)."""

    index: np.ndarray      # (n_out, taps) int64, every entry a valid input index
    weight: np.ndarray     # (n_out, taps) float64
    outside: np.ndarray    # (n_out,) bool

    @property
    def taps(self) -> int:
        return int(self.index.shape[1])


def _identity(n: int) -> AxisTable:
    return AxisTable(np.arange(n, dtype=np.int64)[:, None], np.ones((n, 1)), np.zeros(n, bool))


def source_coords(coordinate_mode: str, n_in: int, n_out: int, scale: float, roi=(0.0, 1.0)) -> np.ndarray:
    """ONNX's coordinate_transformation_mode: output index -> input coordinate (float64)."""
    y = np.arange(n_out, dtype=np.float64)
    length = scale * n_in                     # ONNX's unrounded output length
    if coordinate_mode == "align_corners":
        return np.zeros(n_out) if length == 1 else y * (n_in - 1) / (length - 1)
    if coordinate_mode == "asymmetric":
        return y / scale
    if coordinate_mode == "tf_crop_and_resize":
        lo, hi = float(roi[0]), float(roi[1])
        x = np.full(n_out, (hi - lo) * (n_in - 1) / 2) if length == 1 else y * (hi - lo) * (n_in - 1) / (length - 1)
        return x + lo * (n_in - 1)
    if coordinate_mode == "pytorch_half_pixel":
        return np.full(n_out, -0.5) if length == 1 else (y + 0.5) / scale - 0.5
    if coordinate_mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if coordinate_mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / length)
        return offset + (y + 0.5) / scale - 0.5
    if coordinate_mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    raise ValueError(f"unknown coordinate mode {coordinate_mode!r}")


def _torch_nearest(n_in: int, n_out: int, scale: float | None, exact: bool) -> np.ndarray:
    """PyTorch's nearest_idx / nearest_exact_idx (aten/src/ATen/native/UpSample.h), float32."""
    r = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(np.float32(n_in) / np.float32(n_out))
    dst = np.arange(n_out)
    if exact:     # floorf((dst + 0.5) * scale): the product in double, rounded to float
        src = np.floor(((dst + 0.5) * np.float64(r)).astype(np.float32))
    elif n_out == n_in:
        return dst
    elif n_out == 2 * n_in:
        return dst >> 1
    else:
        src = np.floor(dst.astype(np.float32) * r)
    return np.minimum(src.astype(np.int64), n_in - 1)


def _nearest(x: np.ndarray, rule: str, scale: float) -> np.ndarray:
    if rule == "round_prefer_floor":       # ties (x.5) go down
        return np.ceil(x - 0.5)
    if rule == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if rule == "floor":
        return np.floor(x)
    if rule == "ceil":
        return np.ceil(x)
    if rule == "simple":
        return np.ceil(x) if scale < 1 else np.trunc(x)
    raise ValueError(f"unknown nearest mode {rule!r}")


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _area(n_in: int, n_out: int) -> AxisTable:
    """Adaptive average pooling (F.interpolate mode='area'): window [floor(i*in/out), ceil((i+1)*in/out))."""
    starts = [(i * n_in) // n_out for i in range(n_out)]
    ends = [-(-((i + 1) * n_in) // n_out) for i in range(n_out)]
    taps = max(e - s for s, e in zip(starts, ends))
    index = np.zeros((n_out, taps), np.int64)
    weight = np.zeros((n_out, taps))
    for i, (s, e) in enumerate(zip(starts, ends)):
        index[i] = s
        index[i, :e - s] = np.arange(s, e)
        weight[i, :e - s] = 1.0 / (e - s)
    return AxisTable(index, weight, np.zeros(n_out, bool))


def axis_table(n_in: int, n_out: int, scale: float | None, *, mode: str = "nearest",
               coordinate_mode: str = "half_pixel", nearest_mode: str = "round_prefer_floor",
               cubic_coeff_a: float = -0.75, exclude_outside: bool = False, antialias: bool = False,
               roi=(0.0, 1.0)) -> AxisTable:
    """The filter table of one axis. ``scale`` is the ONNX scale (output/input, given or derived
    from the sizes; None = n_out / n_in): the coordinate transformation divides by it."""
    if mode == "area":
        return _area(n_in, n_out)
    if mode == "nearest" and nearest_mode in ("pytorch", "pytorch_exact"):
        idx = _torch_nearest(n_in, n_out, scale, nearest_mode == "pytorch_exact")
        return AxisTable(idx[:, None], np.ones((n_out, 1)), np.zeros(n_out, bool))
    s = float(scale) if scale is not None else n_out / n_in
    crop = coordinate_mode == "tf_crop_and_resize"
    if math.isclose(s, 1.0) and n_out == n_in and (not crop or (math.isclose(roi[0], 0) and math.isclose(roi[1], 1))):
        return _identity(n_in)            # ONNX's reference skips an axis that does not change
    x = source_coords(coordinate_mode, n_in, n_out, s, roi)
    outside = (x < 0) | (x > n_in - 1) if crop else np.zeros(n_out, bool)
    if mode == "nearest":
        idx = np.clip(_nearest(x, nearest_mode, s), 0, n_in - 1).astype(np.int64)
        return AxisTable(idx[:, None], np.ones((n_out, 1)), outside)
    x_int = np.floor(x)
    ratio = np.where(x == x_int, 1.0, x - x_int)     # the reference prefers the left pixel: ratio in (0, 1]
    if mode == "linear" and not antialias:
        taps = 2
        weight = np.stack([1 - ratio, ratio], axis=1)
    elif mode == "cubic" and not antialias:
        a = float(cubic_coeff_a)
        weight = _cubic(ratio[:, None] - np.array([-1.0, 0.0, 1.0, 2.0]), a)
        taps = 4
    else:                                             # antialias: the filter widened by 1/scale when down-scaling
        f = min(s, 1.0)
        if mode == "linear":
            start = int(np.floor(-1 / f) + 1)
            taps = 2 - 2 * start
            k = np.arange(start, start + taps, dtype=np.float64)
            weight = np.clip(1 - np.abs((k[None, :] - ratio[:, None]) * f), 0, 1)
        elif mode == "cubic":
            start = int(np.floor(-2 / f) + 1)
            taps = 2 - 2 * start
            k = np.arange(start, start + taps, dtype=np.float64)
            weight = _cubic(f * (k[None, :] - ratio[:, None]), float(cubic_coeff_a))
        else:
            raise ValueError(f"unknown resize mode {mode!r}")
        weight = weight / weight.sum(axis=1, keepdims=True)
    # the taps nearest to x, ties to the smaller index (ONNX's _get_neighbor_idxes; taps is even)
    first = np.where(x == x_int, x_int - taps // 2, x_int - taps // 2 + 1).astype(np.int64)
    index = first[:, None] + np.arange(taps)[None, :]
    if exclude_outside:
        weight = np.where((index < 0) | (index >= n_in), 0.0, weight)
        total = weight.sum(axis=1, keepdims=True)
        weight = weight / np.where(total == 0, 1.0, total)
    return AxisTable(np.clip(index, 0, n_in - 1), weight, outside)


def apply(x: np.ndarray, th: AxisTable, tw: AxisTable, fill: float = 0.0) -> np.ndarray:
    """Resize the last two axes of ``x`` with the two tables (float64 accumulation)."""
    x64 = x.astype(np.float64)
    rows = np.einsum("nchkw,hk->nchw", x64[:, :, th.index, :], th.weight)
    out = np.einsum("nchwk,wk->nchw", rows[:, :, :, tw.index], tw.weight)
    mask = th.outside[:, None] | tw.outside[None, :]
    if mask.any():
        out = np.where(mask, fill, out)
    return out.astype(np.float32)


class InterpolateError(ValueError):
    """An F.interpolate argument cnncc cannot map: ``attr`` names it, ``fix`` says what to do."""

    def __init__(self, message: str, attr: str, fix: str):
        super().__init__(message)
        self.attr, self.fix = attr, fix


def interpolate_attrs(in_hw, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                      recompute_scale_factor=None, antialias: bool = False) -> dict:
    """``F.interpolate``'s arguments as ``resize2d`` attributes (PyTorch semantics).

    ``in_hw`` are the input's spatial sizes (needed when the output size must be computed here:
    recompute_scale_factor, align_corners and area ignore the scale in their coordinates).
    Raises InterpolateError for what PyTorch itself rejects or cnncc cannot express."""
    torch_modes = {"nearest": "nearest", "nearest-exact": "nearest", "bilinear": "linear", "linear": "linear",
                   "bicubic": "cubic", "area": "area"}
    if mode not in torch_modes:
        raise InterpolateError(f"got {mode!r}", "mode", f"use one of {', '.join(map(repr, torch_modes))}")
    if (size is None) == (scale_factor is None):
        raise InterpolateError("give exactly one of size and scale_factor", "scale_factor",
                               "pass size=(H, W) or scale_factor=s, not both")
    if align_corners and mode not in ("bilinear", "linear", "bicubic"):
        raise InterpolateError(f"align_corners only applies to bilinear and bicubic, not {mode!r}", "align_corners",
                               "drop align_corners or use mode='bilinear'")
    if antialias and mode not in ("bilinear", "bicubic"):
        raise InterpolateError(f"antialias only applies to bilinear and bicubic, not {mode!r}", "antialias",
                               "drop antialias or use mode='bilinear'/'bicubic'")
    if antialias and align_corners:
        raise InterpolateError("antialias together with align_corners is not supported (PyTorch centres that "
                               "filter at (i + 0.5) * (in - 1) / (out - 1), which no ONNX coordinate mode "
                               "expresses)", "antialias", "use align_corners=False with antialias")
    attrs: dict = {"mode": torch_modes[mode]}
    if size is not None:
        attrs["size"] = tuple(int(v) for v in (size if isinstance(size, (tuple, list)) else (size, size)))
    else:
        scales = tuple(float(s) for s in (scale_factor if isinstance(scale_factor, (tuple, list))
                                          else (scale_factor, scale_factor)))
        if recompute_scale_factor or align_corners or mode == "area":
            if not all(isinstance(n, (int, np.integer)) or getattr(n, "is_number", False) for n in in_hw):
                raise InterpolateError("scale_factor with recompute_scale_factor, align_corners or area needs "
                                       "concrete spatial sizes", "scale_factor", "give size=(H, W) instead")
            attrs["size"] = tuple(int(math.floor(int(n) * s)) for n, s in zip(in_hw, scales))
        else:
            attrs["scale_factor"] = scales
    if mode == "nearest":
        attrs.update(coordinate_mode="asymmetric", nearest_mode="pytorch")
    elif mode == "nearest-exact":
        attrs.update(coordinate_mode="half_pixel", nearest_mode="pytorch_exact")
    elif mode != "area":
        attrs["coordinate_mode"] = "align_corners" if align_corners else "half_pixel"
        if antialias:     # PIL-style: taps outside the image dropped and the rest renormalized; bicubic a = -0.5
            attrs.update(antialias=True, exclude_outside=True)
            if mode == "bicubic":
                attrs["cubic_coeff_a"] = -0.5
    return attrs
