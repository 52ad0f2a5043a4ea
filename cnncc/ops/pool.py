"""Pooling: max/avg/min/sum pools, global pools, Lp, max with indices, unpooling."""
from __future__ import annotations

import numpy as np
import sympy
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ModelError
from ..node import Node, TensorType
from ..shapes import pool_out, resolve_padding
from .core import (
    Attr, OpDef, POOL, REDUCTION, REQUIRED, _dims_equal, _nd_check, ints_or_int, is_int, is_number,
    padding_ok, register, window_fits)


# ---------------------------------------------------------------------------------------------
# pooling
def pool_geometry(node: Node, in_type: TensorType) -> dict:
    nd = in_type.rank - 2
    kernel = _nd_check(node, "kernel_size", nd, node.op)
    stride = _nd_check(node, "stride", nd, node.op) if node.attrs.get("stride") is not None else kernel
    dilation = _nd_check(node, "dilation", nd, node.op)
    pads = resolve_padding(node.attrs["padding"], in_type.shape[2:], kernel, stride, dilation,
                           node=node.name, op=node.op)
    for i, (lo, hi) in enumerate(pads):
        if max(lo, hi) * 2 > kernel[i] and node.attrs["padding"] not in ("same", "full"):
            raise ModelError(f"padding {max(lo, hi)} is more than half the window {kernel[i]}",
                             node=node.name, op=node.op, attr="padding",
                             fix="padding must be at most kernel_size / 2 (PyTorch's rule)")
    return {"nd": nd, "kernel": kernel, "stride": stride, "dilation": dilation, "pads": pads,
            "ceil_mode": bool(node.attrs["ceil_mode"])}


def _pool_shape(nd: int):
    def shape(node, ins):
        x = ins[0]
        if x.rank != nd + 2:
            raise ModelError(f"expects a rank-{nd + 2} input, got {x.shape}", node=node.name, op=node.op)
        g = pool_geometry(node, x)
        window_fits(node, x, g, "window", "use a smaller window or a larger input")
        spatial = []
        for i in range(nd):
            n = x.shape[2 + i]
            lo, hi = g["pads"][i]
            spatial.append(pool_out(n, g["kernel"][i], g["stride"][i], lo, hi, g["dilation"][i], g["ceil_mode"]))
        return (x.shape[0], x.shape[1], *spatial)
    return shape


def pool_ref(x, kind: str, kernel, stride, pads, dilation, ceil_mode, count_include_pad=True, out_sizes=None):
    """max/min/avg/sum pooling with PyTorch semantics (ceil mode, count_include_pad, dilation)."""
    nd = x.ndim - 2
    if out_sizes is None:
        out_sizes = [int(pool_out(x.shape[2 + i], kernel[i], stride[i], pads[i][0], pads[i][1], dilation[i],
                                  ceil_mode)) for i in range(nd)]
    eff = [dilation[i] * (kernel[i] - 1) + 1 for i in range(nd)]
    # extra right padding so the last (ceil-mode) window exists; it never counts as an element
    extra = [max(0, (out_sizes[i] - 1) * stride[i] + eff[i] - (x.shape[2 + i] + pads[i][0] + pads[i][1]))
             for i in range(nd)]
    fill = {"max": -np.inf, "min": np.inf}.get(kind, 0.0)
    width = [(0, 0), (0, 0)] + [(pads[i][0], pads[i][1] + extra[i]) for i in range(nd)]
    xp = np.pad(x, width, constant_values=fill)
    sl = (slice(None), slice(None)) + tuple(slice(None, None, stride[i]) for i in range(nd)) \
        + tuple(slice(None, None, dilation[i]) for i in range(nd))
    cut = (slice(None), slice(None)) + tuple(slice(0, out_sizes[i]) for i in range(nd))
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nd)))[sl][cut]
    axes = tuple(range(2 + nd, 2 + 2 * nd))
    if kind == "max":
        return win.max(axis=axes).astype(np.float32)
    if kind == "min":
        return win.min(axis=axes).astype(np.float32)
    total = win.sum(axis=axes, dtype=np.float32)
    if kind == "sum":
        return total
    # divisor: real elements count 1; declared padding counts when count_include_pad; ceil overflow never
    shape1 = (1, 1) + x.shape[2:]
    ones = np.ones(shape1, np.float32)
    mask = np.pad(ones, [(0, 0), (0, 0)] + [(pads[i][0], pads[i][1]) for i in range(nd)],
                  constant_values=1.0 if count_include_pad else 0.0)
    mask = np.pad(mask, [(0, 0), (0, 0)] + [(0, extra[i]) for i in range(nd)], constant_values=0.0)
    mwin = sliding_window_view(mask, eff, axis=tuple(range(2, 2 + nd)))[sl][cut]
    count = mwin.sum(axis=axes)
    return (total / count).astype(np.float32)


def _pool_ref(kind):
    def ref(node, xs):
        x = xs[0]
        g = pool_geometry(node, TensorType(x.shape))
        return pool_ref(x, kind, g["kernel"], g["stride"], g["pads"], g["dilation"], g["ceil_mode"],
                        node.attrs.get("count_include_pad", True))
    return ref


def _pool_flops(node, ins, out):
    g = pool_geometry(node, ins[0])
    return out.numel() * int(np.prod(g["kernel"]))


POOL_ATTRS = {
    "kernel_size": Attr(REQUIRED, ints_or_int(), "a positive int or one per spatial dimension"),
    "stride": Attr(None, lambda v: v is None or ints_or_int()(v), "a positive int (default: kernel_size)"),
    "padding": Attr(0, padding_ok, "an int or a tuple, at most half the window"),
    "dilation": Attr(1, ints_or_int(), "a positive int"),
    "ceil_mode": Attr(False, lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
}

for _kind in ("max", "avg", "min", "sum"):
    for _nd in (1, 2):
        _attrs = dict(POOL_ATTRS)
        if _kind == "avg":
            _attrs["count_include_pad"] = Attr(True, lambda v: isinstance(v, (bool, np.bool_)), "True or False")
        _traits = {POOL, REDUCTION}
        register(OpDef(f"{_kind}_pool{_nd}d", (1, 1), _pool_shape(_nd), _pool_ref(_kind), attrs=_attrs,
                       flops=_pool_flops, traits=frozenset(_traits), doc=f"{_kind} pooling, {_nd}-D",
                       kernel="pool"))


def _global_shape(node, ins):
    x = ins[0]
    if x.rank < 3:
        raise ModelError(f"expects (N, C, spatial...), got {x.shape}", node=node.name, op=node.op)
    return (x.shape[0], x.shape[1]) + (1,) * (x.rank - 2)


for _kind, _fn in (("avg", np.mean), ("max", np.max)):
    register(OpDef(f"global_{_kind}_pool", (1, 1), _global_shape,
                   (lambda fn: lambda node, xs: fn(xs[0], axis=tuple(range(2, xs[0].ndim)), keepdims=True)
                    .astype(np.float32))(_fn),
                   flops=lambda node, ins, out: ins[0].numel(), traits=frozenset({REDUCTION}),
                   doc=f"global {_kind} pooling to (N, C, 1, 1)", kernel="global_pool"))


# ---------------------------------------------------------------------------------------------
# more pooling: Lp, max with indices, unpooling
def _lp_pool_ref(node, xs):
    x = xs[0]
    g = pool_geometry(node, TensorType(x.shape))
    p = float(node.attrs["p"])
    powered = np.abs(x.astype(np.float64)) ** p
    total = pool_ref(powered, "sum", g["kernel"], g["stride"], g["pads"], g["dilation"], g["ceil_mode"])
    return (total.astype(np.float64) ** (1.0 / p)).astype(np.float32)


register(OpDef("lp_pool2d", (1, 1), _pool_shape(2), _lp_pool_ref,
               attrs={**POOL_ATTRS, "p": Attr(2.0, lambda v: is_number(v) and v > 0, "a positive number (the norm)")},
               flops=lambda node, ins, out: 2 * out.numel() * int(np.prod(pool_geometry(node, ins[0])["kernel"])),
               traits=frozenset({REDUCTION}),
               doc="Lp pooling: (sum over the window of |x|^p)^(1/p) (ONNX LpPool; PyTorch LPPool2d for even p "
                   "or non-negative x)", kernel="pool"))


def max_pool_indices_ref(x, kernel, stride, pads, dilation, ceil_mode):
    """Flat index h*W + w (per (n, c) plane, of the unpadded input) of each window's first maximum."""
    nd = x.ndim - 2
    out_sizes = [int(pool_out(x.shape[2 + i], kernel[i], stride[i], pads[i][0], pads[i][1], dilation[i],
                              ceil_mode)) for i in range(nd)]
    eff = [dilation[i] * (kernel[i] - 1) + 1 for i in range(nd)]
    extra = [max(0, (out_sizes[i] - 1) * stride[i] + eff[i] - (x.shape[2 + i] + pads[i][0] + pads[i][1]))
             for i in range(nd)]
    width = [(pads[i][0], pads[i][1] + extra[i]) for i in range(nd)]
    xp = np.pad(x, [(0, 0), (0, 0)] + width, constant_values=-np.inf)
    flat = np.pad(np.arange(int(np.prod(x.shape[2:])), dtype=np.int64).reshape(x.shape[2:]), width,
                  constant_values=-1)
    sl = tuple(slice(None, None, stride[i]) for i in range(nd)) + tuple(slice(None, None, dilation[i])
                                                                        for i in range(nd))
    cut = tuple(slice(0, out_sizes[i]) for i in range(nd))
    axes = tuple(range(2, 2 + nd))
    win = sliding_window_view(xp, eff, axis=axes)[(slice(None), slice(None)) + sl][(slice(None), slice(None)) + cut]
    iwin = sliding_window_view(flat, eff, axis=tuple(range(nd)))[sl][cut]
    win = win.reshape(*win.shape[:2 + nd], -1)
    iwin = iwin.reshape(*iwin.shape[:nd], -1)
    arg = np.argmax(win, axis=-1)                                       # first maximum, like PyTorch
    idx = np.take_along_axis(np.broadcast_to(iwin, win.shape), arg[..., None], axis=-1)[..., 0]
    return np.ascontiguousarray(idx, dtype=np.int64)


def _max_indices_ref(node, xs):
    g = pool_geometry(node, TensorType(xs[0].shape))
    return max_pool_indices_ref(xs[0], g["kernel"], g["stride"], g["pads"], g["dilation"], g["ceil_mode"])


register(OpDef("max_pool2d_indices", (1, 1), _pool_shape(2), _max_indices_ref, attrs=dict(POOL_ATTRS),
               flops=_pool_flops, traits=frozenset({REDUCTION}), dtype=lambda node, ins: "int64",
               doc="argmax of each max_pool2d window as PyTorch's flat per-plane index h*W + w (int64)",
               kernel="pool"))


def _unpool_geometry(node, x: TensorType):
    kernel = _nd_check(node, "kernel_size", 2, node.op)
    stride = _nd_check(node, "stride", 2, node.op) if node.attrs.get("stride") is not None else kernel
    padding = _nd_check(node, "padding", 2, node.op)
    default = [(x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + kernel[i] for i in range(2)]
    size = node.attrs.get("output_size")
    if size is None:
        return default
    size = list(size)[-2:]
    for i in range(2):
        lo, hi = sympy.sympify(default[i] - stride[i]), sympy.sympify(default[i] + stride[i])
        if lo.is_number and hi.is_number and not lo < size[i] < hi:
            raise ModelError(f"output_size {tuple(size)} is not within ({lo}, {hi}) in dimension {i}",
                             node=node.name, op=node.op, attr="output_size",
                             fix="give the size of the tensor that was max-pooled, or leave output_size unset")
    return size


def _max_unpool_shape(node, ins):
    x, idx = ins
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 input (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    if idx.rank != 4 or not all(_dims_equal(a, b) for a, b in zip(x.shape, idx.shape)):
        raise ModelError(f"indices have shape {idx.shape}, expected the input's shape {x.shape}",
                         node=node.name, op=node.op,
                         fix="pass the indices of the max_pool2d whose output is being unpooled")
    if not np.issubdtype(np.dtype(idx.dtype), np.integer):
        raise ModelError(f"indices must be integers, got {idx.dtype}", node=node.name, op=node.op,
                         fix="use the max_pool2d_indices output (int64)")
    return (x.shape[0], x.shape[1], *_unpool_geometry(node, x))


def _max_unpool_ref(node, xs):
    x, idx = xs
    hw = [int(d) for d in _unpool_geometry(node, TensorType(x.shape))]
    n, c = x.shape[:2]
    idx = idx.astype(np.int64).reshape(n, c, -1)
    if idx.size and (idx.min() < 0 or idx.max() >= hw[0] * hw[1]):
        raise ModelError(f"an index lies outside the {hw[0]}x{hw[1]} output", node=node.name, op=node.op,
                         attr="output_size")
    y = np.zeros((n, c, hw[0] * hw[1]), np.float32)
    np.put_along_axis(y, idx, x.reshape(n, c, -1).astype(np.float32), axis=2)
    return y.reshape(n, c, *hw)


register(OpDef("max_unpool2d", (2, 2), _max_unpool_shape, _max_unpool_ref,
               attrs={"kernel_size": Attr(REQUIRED, ints_or_int(), "a positive int or a pair"),
                      "stride": Attr(None, lambda v: v is None or ints_or_int()(v),
                                     "a positive int (default: kernel_size)"),
                      "padding": Attr(0, ints_or_int(lambda v: is_int(v) and v >= 0), "a non-negative int or a pair"),
                      "output_size": Attr(None, lambda v: v is None or (isinstance(v, (tuple, list))
                                                                         and len(v) in (2, 4)),
                                          "None, (H, W) or (N, C, H, W)")},
               dtype=lambda node, ins: ins[0].dtype,
               doc="'bed of nails' unpooling: scatter x to the positions max_pool2d_indices recorded, zeros elsewhere",
               kernel="unpool"))


def _nearest_unpool_shape(node, ins):
    x = ins[0]
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 input (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    s = _nd_check(node, "scale", 2, node.op)
    return (x.shape[0], x.shape[1], x.shape[2] * s[0], x.shape[3] * s[1])


def _nearest_unpool_ref(node, xs):
    s = _nd_check(node, "scale", 2, node.op)
    return np.repeat(np.repeat(xs[0], s[0], axis=2), s[1], axis=3)


register(OpDef("unpool_nearest2d", (1, 1), _nearest_unpool_shape, _nearest_unpool_ref,
               attrs={"scale": Attr(2, ints_or_int(), "a positive int or a pair")},
               doc="nearest-neighbour unpooling: every value becomes a scale x scale block", kernel="gather"))
