"""Region-of-interest pooling: roi_pool, roi_align."""
from __future__ import annotations

import math
import numpy as np
import sympy

from ..errors import ModelError
from ..node import Node
from .core import Attr, OpDef, REQUIRED, _dims_equal, _nd_check, ints_or_int, is_int, is_number, register


# ---------------------------------------------------------------------------------------------
# region-of-interest pooling (Fast R-CNN's RoIPool, Mask R-CNN's RoIAlign)
#
# Boxes are a runtime input of a fixed count K, as torchvision's Tensor[K, 5] form: one row
# [batch_index, x1, y1, x2, y2] per box, in input-image coordinates (spatial_scale maps them onto
# the feature map), float32. The output is (K, C, out_h, out_w): its leading dim is K, not the
# batch N. A batch index is truncated toward zero as torchvision does; one outside 0..N-1 is an
# error in the reference (the C/CUDA kernels write NaN for that box). ONNX MaxRoiPool uses this
# form as is; ONNX RoiAlign's (rois (K, 4), batch_indices (K,) int64) pair is accepted as a
# third input instead: (x, rois, batch_indices) means the boxes [batch_indices, rois].
def _roi_shape(node, ins):
    x, boxes = ins[:2]
    cols = 5 if len(ins) == 2 else 4
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 feature map (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    k = sympy.sympify(boxes.shape[0]) if boxes.rank == 2 else None
    if boxes.rank != 2 or not _dims_equal(boxes.shape[1], cols):
        raise ModelError(f"boxes have shape {boxes.shape}, expected (K, {cols}): "
                         f"[{'batch_index, ' if cols == 5 else ''}x1, y1, x2, y2] per box",
                         node=node.name, op=node.op,
                         fix="give one row [batch_index, x1, y1, x2, y2] per box (torchvision's Tensor[K, 5] form)")
    if not k.is_number:
        raise ModelError(f"the box count {k} must be a fixed number", node=node.name, op=node.op,
                         fix="give the boxes input a concrete leading size K (pad with dummy boxes if needed)")
    if np.dtype(boxes.dtype).kind != "f":
        raise ModelError(f"boxes must be float32, got {boxes.dtype}", node=node.name, op=node.op,
                         fix="cast the boxes (batch index included) to float32")
    if len(ins) == 3 and (ins[2].rank != 1 or not _dims_equal(ins[2].shape[0], k)):
        raise ModelError(f"batch indices have shape {ins[2].shape}, expected ({k},): one per box",
                         node=node.name, op=node.op, fix="give one batch index per row of the boxes")
    oh, ow = _nd_check(node, "output_size", 2, node.op)
    return (int(k), x.shape[1], oh, ow)


def _roi_batch_index(node, value, k: int, n: int) -> int:
    """torchvision's ``int roi_batch_ind = rois[0]`` (truncation), checked against the batch."""
    if not (np.isfinite(value) and -1 < value < n):
        raise ModelError(f"box {k} has batch index {value}, outside 0..{n - 1}", node=node.name, op=node.op,
                         attr="boxes", fix="each box's first value must name an image of the batch")
    return int(value)


def _round_half_away(v: np.float32) -> int:
    """C's round(): halves away from zero (numpy's round goes to even)."""
    v = float(v)
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _roi_boxes(xs: list[np.ndarray]) -> np.ndarray:
    """The (K, 5) form: boxes as given, or ONNX's rois (K, 4) with batch_indices (K,) in front."""
    if len(xs) == 2:
        return xs[1]
    return np.concatenate([xs[2].astype(np.float32).reshape(-1, 1), xs[1].astype(np.float32)], axis=1)


def roi_pool_ref(node: Node, x: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """torchvision.ops.roi_pool (CPU kernel): box corners scaled and rounded to integers, the box
    (at least 1x1, both ends inclusive) split into out_h x out_w bins [floor(i*bin), ceil((i+1)*bin))
    in float32, clipped to the map; the max of each bin, 0 for an empty bin. NaN propagates."""
    n, c, h, w = x.shape
    oh, ow = _nd_check(node, "output_size", 2, node.op)
    s = np.float32(node.attrs["spatial_scale"])
    y = np.zeros((boxes.shape[0], c, oh, ow), np.float32)
    for k, b in enumerate(boxes.astype(np.float32)):
        img = x[_roi_batch_index(node, b[0], k, n)]
        x1, y1, x2, y2 = (_round_half_away(b[i] * s) for i in range(1, 5))
        bin_h = np.float32(max(y2 - y1 + 1, 1)) / np.float32(oh)
        bin_w = np.float32(max(x2 - x1 + 1, 1)) / np.float32(ow)
        for ph in range(oh):
            hs = min(max(int(np.floor(np.float32(ph) * bin_h)) + y1, 0), h)
            he = min(max(int(np.ceil(np.float32(ph + 1) * bin_h)) + y1, 0), h)
            for pw in range(ow):
                ws = min(max(int(np.floor(np.float32(pw) * bin_w)) + x1, 0), w)
                we = min(max(int(np.ceil(np.float32(pw + 1) * bin_w)) + x1, 0), w)
                if he > hs and we > ws:
                    y[k, :, ph, pw] = img[:, hs:he, ws:we].max(axis=(1, 2))
    return y


def roi_align_geometry(node: Node, box: np.ndarray) -> dict:
    """One box's sampling grid, in float32 like torchvision's kernel: start, bin size and samples
    per bin along each axis, and the divisor of the average."""
    a = node.attrs
    oh, ow = _nd_check(node, "output_size", 2, node.op)
    s = np.float32(a["spatial_scale"])
    off = np.float32(0.5 if a["aligned"] else 0.0)
    x1, y1, x2, y2 = (np.float32(box[i]) * s - off for i in range(1, 5))
    rw, rh = np.float32(x2 - x1), np.float32(y2 - y1)
    if not a["aligned"]:                      # force malformed boxes to 1x1
        rw, rh = max(rw, np.float32(1)), max(rh, np.float32(1))
    sr = int(a["sampling_ratio"])
    gh = sr if sr > 0 else int(np.ceil(rh / np.float32(oh)))
    gw = sr if sr > 0 else int(np.ceil(rw / np.float32(ow)))
    return {"start": (y1, x1), "bin": (np.float32(rh / np.float32(oh)), np.float32(rw / np.float32(ow))),
            "grid": (gh, gw), "count": max(gh * gw, 1)}


def _bilinear_axis(start, bin_size, grid: int, out: int, size: int):
    """Sample positions of one axis (out bins x grid samples, float32) -> (low, high, weight low,
    weight high, inside), with torchvision's bilinear_interpolate clamping."""
    i = np.arange(out, dtype=np.float32)[:, None]
    j = np.arange(max(grid, 0), dtype=np.float32)[None, :]
    p = (start + i * bin_size) + (j + np.float32(0.5)) * bin_size / np.float32(max(grid, 1))
    p = p.reshape(-1).astype(np.float32)
    inside = (p >= -1.0) & (p <= size)
    p = np.maximum(p, np.float32(0))
    lo = np.minimum(p.astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    p = np.where(p.astype(np.int64) >= size - 1, lo.astype(np.float32), p)
    frac = (p - lo.astype(np.float32)).astype(np.float32)
    return lo, hi, (np.float32(1) - frac) * inside, frac * inside


def roi_align_ref(node: Node, x: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """torchvision.ops.roi_align (= ONNX RoiAlign, mode avg): per bin, grid_h x grid_w bilinear
    samples at the centres of a regular sub-grid (sampling_ratio per axis, or ceil(box/out) when
    it is <= 0), averaged; samples more than one pixel outside the map count 0. ``aligned``
    shifts the box by -0.5 pixel (ONNX half_pixel) and lets it be smaller than 1x1. Mode max
    (ONNX only): the max over samples of the max of the four weighted corners."""
    n, c, h, w = x.shape
    oh, ow = _nd_check(node, "output_size", 2, node.op)
    y = np.zeros((boxes.shape[0], c, oh, ow), np.float32)
    for k, b in enumerate(boxes.astype(np.float32)):
        img = x[_roi_batch_index(node, b[0], k, n)].astype(np.float64)
        geo = roi_align_geometry(node, b)
        (gh, gw), count = geo["grid"], geo["count"]
        if gh <= 0 or gw <= 0:
            continue                                       # no samples: the bin stays 0
        ylo, yhi, wy0, wy1 = _bilinear_axis(geo["start"][0], geo["bin"][0], gh, oh, h)
        xlo, xhi, wx0, wx1 = _bilinear_axis(geo["start"][1], geo["bin"][1], gw, ow, w)
        corners = [(img[:, ylo][:, :, xlo], wy0[:, None] * wx0[None, :]),
                   (img[:, ylo][:, :, xhi], wy0[:, None] * wx1[None, :]),
                   (img[:, yhi][:, :, xlo], wy1[:, None] * wx0[None, :]),
                   (img[:, yhi][:, :, xhi], wy1[:, None] * wx1[None, :])]
        if node.attrs["mode"] == "avg":
            v = sum(wt.astype(np.float32) * val for val, wt in corners)
            y[k] = v.reshape(c, oh, gh, ow, gw).sum(axis=(2, 4)) / count
        else:
            v = np.maximum.reduce([wt.astype(np.float32) * val for val, wt in corners])
            y[k] = v.reshape(c, oh, gh, ow, gw).max(axis=(2, 4))
    return y


def _roi_flops(per_sample: int):
    """An upper bound: every box covers the whole feature map (the boxes are only known at run time)."""
    def flops(node, ins, out):
        x = ins[0]
        oh, ow = _nd_check(node, "output_size", 2, node.op)
        if node.op == "roi_align" and int(node.attrs["sampling_ratio"]) > 0:
            samples = int(node.attrs["sampling_ratio"]) ** 2
        else:
            samples = sympy.ceiling(sympy.sympify(x.shape[2]) / oh) * sympy.ceiling(sympy.sympify(x.shape[3]) / ow)
        return per_sample * out.numel() * samples
    return flops


def _sample_boxes(node: Node, index: int, in_shapes: list[tuple], rng: np.random.Generator) -> np.ndarray | None:
    """Valid random boxes for ``random_inputs``: batch indices within the batch, corners inside
    the image the feature map was computed from (its size / spatial_scale)."""
    if index == 0:
        return None
    (n, _, h, w), (k, cols) = in_shapes[:2]
    if index == 2:
        return rng.integers(0, n, k).astype(np.int64)
    s = float(node.attrs["spatial_scale"])
    img_h, img_w = h / s, w / s
    xs = np.sort(rng.uniform(0, img_w - 1, (k, 2)), axis=1)
    ys = np.sort(rng.uniform(0, img_h - 1, (k, 2)), axis=1)
    boxes = np.stack([rng.integers(0, n, k).astype(np.float64), xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]],
                     axis=1).astype(np.float32)
    return boxes if cols == 5 else boxes[:, 1:]


_ROI_ATTRS = {"output_size": Attr(REQUIRED, ints_or_int(), "a positive int or (out_h, out_w)"),
              "spatial_scale": Attr(1.0, lambda v: is_number(v) and v > 0,
                                    "a positive number (feature map size / image size, e.g. 1/16)")}
register(OpDef("roi_pool", (2, 3), _roi_shape, lambda node, xs: roi_pool_ref(node, xs[0], _roi_boxes(xs)),
               attrs=dict(_ROI_ATTRS), flops=_roi_flops(1), dtype=lambda node, ins: ins[0].dtype,
               sample_input=_sample_boxes,
               doc="max pooling of each box (torchvision roi_pool, ONNX MaxRoiPool): x (N, C, H, W), "
                   "boxes (K, 5) [batch_index, x1, y1, x2, y2] (or ONNX's rois (K, 4), batch_indices (K,)) "
                   "-> (K, C, out_h, out_w)", kernel="roi"))
register(OpDef("roi_align", (2, 3), _roi_shape, lambda node, xs: roi_align_ref(node, xs[0], _roi_boxes(xs)),
               attrs={**_ROI_ATTRS,
                      "sampling_ratio": Attr(-1, is_int, "an int: samples per bin and axis, <= 0 for adaptive"),
                      "aligned": Attr(False, lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
                      "mode": Attr("avg", lambda v: v in ("avg", "max"), "'avg' (torchvision) or 'max' (ONNX)")},
               flops=_roi_flops(8), dtype=lambda node, ins: ins[0].dtype, sample_input=_sample_boxes,
               doc="bilinear average of each box's bins (torchvision roi_align, ONNX RoiAlign): x (N, C, H, W), "
                   "boxes (K, 5) [batch_index, x1, y1, x2, y2] (or ONNX's rois (K, 4), batch_indices (K,)) "
                   "-> (K, C, out_h, out_w)", kernel="roi"))
