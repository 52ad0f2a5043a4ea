"""Convolutions (conv1d, conv2d, conv_transpose2d): geometry, shape rules, numpy references."""
from __future__ import annotations

import numpy as np
import sympy
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ModelError
from ..node import Node, TensorType
from ..shapes import conv_out, conv_transpose_out, resolve_padding
from .core import ANCHOR, Attr, OpDef, _nd_check, ints_or_int, is_int, padding_ok, pos_int, register, window_fits


# ---------------------------------------------------------------------------------------------
# convolution
def conv_geometry(node: Node, in_type: TensorType) -> dict:
    """Kernel, stride, dilation, per-dimension (lo, hi) padding and groups of a conv-like node."""
    w = node.params["weight"]
    nd = w.ndim - 2
    kernel = tuple(int(k) for k in w.shape[2:])
    stride = _nd_check(node, "stride", nd, node.op)
    dilation = _nd_check(node, "dilation", nd, node.op)
    pads = resolve_padding(node.attrs["padding"], in_type.shape[2:], kernel, stride, dilation,
                           node=node.name, op=node.op)
    geo = {"nd": nd, "kernel": kernel, "stride": stride, "dilation": dilation, "pads": pads,
           "groups": int(node.attrs["groups"])}
    if "output_padding" in node.attrs:          # conv_transpose2d
        geo["output_padding"] = _nd_check(node, "output_padding", nd, node.op)
    return geo


def pointwise(node: Node, in_type: TensorType) -> bool:
    """A 1x1 (x1) convolution with stride 1, dilation 1 and no padding: every output position
    reads its own input position only (any groups)."""
    geo = conv_geometry(node, in_type)
    return (all(k == 1 for k in geo["kernel"]) and all(s == 1 for s in geo["stride"])
            and all(d == 1 for d in geo["dilation"]) and all(tuple(p) == (0, 0) for p in geo["pads"]))


def _conv_shape(nd: int):
    def shape(node: Node, ins: list[TensorType]):
        x = ins[0]
        w = node.params["weight"]
        if x.rank != nd + 2:
            raise ModelError(f"expects a rank-{nd + 2} input (N, C, {'spatial, ' * nd}...), got {x.shape}",
                             node=node.name, op=node.op)
        if w.ndim != nd + 2:
            raise ModelError(f"weight must have rank {nd + 2} (out, in/groups, kernel...), got {w.shape}",
                             node=node.name, op=node.op, attr="weight")
        g = conv_geometry(node, x)
        c_in = x.shape[1]
        groups = g["groups"]
        if sympy.sympify(c_in).is_number and int(c_in) != w.shape[1] * groups:
            raise ModelError(f"channel mismatch: input has {c_in} channels, weight expects "
                             f"{w.shape[1]} x {groups} groups = {w.shape[1] * groups}",
                             node=node.name, op=node.op, attr="in_channels",
                             fix="make the layer's in_channels equal the previous layer's out_channels")
        if w.shape[0] % groups:
            raise ModelError(f"out_channels {w.shape[0]} is not divisible by groups {groups}",
                             node=node.name, op=node.op, attr="groups",
                             fix="groups must divide both the input and the output channels")
        if "bias" in node.params and node.params["bias"].shape != (w.shape[0],):
            raise ModelError(f"bias has shape {node.params['bias'].shape}, expected ({w.shape[0]},)",
                             node=node.name, op=node.op, attr="bias")
        window_fits(node, x, g, "kernel", "use a smaller kernel, more padding, or remove a downsampling layer before it")
        spatial = []
        for i in range(nd):
            n = x.shape[2 + i]
            lo, hi = g["pads"][i]
            spatial.append(conv_out(n, g["kernel"][i], g["stride"][i], lo, hi, g["dilation"][i]))
        return (x.shape[0], w.shape[0], *spatial)
    return shape


def _conv_flops(node, ins, out):
    w = node.params["weight"]
    macs = out.numel() * int(np.prod(w.shape[1:]))
    return 2 * macs + (out.numel() if "bias" in node.params else 0)


def conv_ref(x, w, b, stride, pads, dilation, groups):
    """Direct convolution in numpy: pad, take dilated strided windows, one einsum per group."""
    nd = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [tuple(int(v) for v in p) for p in pads])
    k = w.shape[2:]
    eff = [dilation[i] * (k[i] - 1) + 1 for i in range(nd)]
    win = sliding_window_view(x, eff, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, stride[i]) for i in range(nd)) \
        + tuple(slice(None, None, dilation[i]) for i in range(nd))
    win = win[sl]                                            # (N, C, *out, *k)
    n, c = x.shape[:2]
    o = w.shape[0]
    out_sp = win.shape[2:2 + nd]
    win = win.reshape(n, groups, c // groups, *out_sp, *k)
    wg = w.reshape(groups, o // groups, c // groups, *k)
    s = "xyz"[:nd]
    kk = "ijk"[:nd]
    y = np.einsum(f"ngc{s}{kk},goc{kk}->ngo{s}", win, wg, optimize=True).reshape(n, o, *out_sp)
    if b is not None:
        y = y + b.reshape((1, o) + (1,) * nd)
    return y.astype(np.float32, copy=False)


def _conv_ref(node, xs):
    x = xs[0]
    g = conv_geometry(node, TensorType(x.shape))
    return conv_ref(x, node.params["weight"], node.params.get("bias"), g["stride"], g["pads"], g["dilation"],
                    g["groups"])


CONV_ATTRS = {
    "stride": Attr(1, ints_or_int(), "a positive int or one per spatial dimension"),
    "padding": Attr(0, padding_ok, "an int, a tuple (per dimension or begins+ends), 'same', 'valid' or 'full'"),
    "dilation": Attr(1, ints_or_int(), "a positive int or one per spatial dimension"),
    "groups": Attr(1, pos_int, "a positive int dividing in and out channels"),
}

for _nd in (1, 2):
    register(OpDef(f"conv{_nd}d", (1, 1), _conv_shape(_nd), _conv_ref, attrs=dict(CONV_ATTRS),
                   params=("weight", "bias"), required_params=("weight",), flops=_conv_flops,
                   traits=frozenset({ANCHOR}), doc=f"{_nd}-D convolution, NC{'HW' if _nd == 2 else 'L'} layout",
                   kernel="conv"))


# ---------------------------------------------------------------------------------------------
# transposed convolution
def _int_pads_ok(v) -> bool:
    """Transposed conv padding: an int or a tuple of non-negative ints (no 'same' strings)."""
    return not isinstance(v, str) and padding_ok(v)


def _conv_transpose_shape(node: Node, ins: list[TensorType]):
    x = ins[0]
    w = node.params["weight"]
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 input (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    if w.ndim != 4:
        raise ModelError(f"weight must have rank 4 (in, out/groups, kH, kW), got {w.shape}",
                         node=node.name, op=node.op, attr="weight")
    g = conv_geometry(node, x)
    groups = g["groups"]
    c_in = sympy.sympify(x.shape[1])
    if c_in.is_number and int(c_in) != w.shape[0]:
        raise ModelError(f"channel mismatch: input has {c_in} channels, weight expects {w.shape[0]}",
                         node=node.name, op=node.op, attr="in_channels",
                         fix="make the layer's in_channels equal the previous layer's out_channels")
    if w.shape[0] % groups:
        raise ModelError(f"in_channels {w.shape[0]} is not divisible by groups {groups}",
                         node=node.name, op=node.op, attr="groups")
    c_out = w.shape[1] * groups
    if "bias" in node.params and node.params["bias"].shape != (c_out,):
        raise ModelError(f"bias has shape {node.params['bias'].shape}, expected ({c_out},)",
                         node=node.name, op=node.op, attr="bias")
    spatial = []
    for i in range(2):
        op_i, s_i, d_i = g["output_padding"][i], g["stride"][i], g["dilation"][i]
        if op_i >= max(s_i, d_i):
            raise ModelError(f"output_padding {op_i} must be smaller than the stride {s_i} or the dilation {d_i}",
                             node=node.name, op=node.op, attr="output_padding",
                             fix="output_padding only picks among the sizes a strided convolution maps to one size")
        lo, hi = g["pads"][i]
        spatial.append(conv_transpose_out(x.shape[2 + i], g["kernel"][i], s_i, lo, hi, d_i, op_i))
    return (x.shape[0], c_out, *spatial)


def conv_transpose_ref(x, w, b, stride, pads, dilation, groups, output_padding):
    """Transposed convolution as a scatter: every input pixel adds w[c, :, i, j] * x at
    (h*s + i*d, w*s + j*d) of the uncropped output, which is then cropped by the padding."""
    n, cin, h, wd = x.shape
    k = w.shape[2:]
    cout_g = w.shape[1]
    xg = x.astype(np.float64).reshape(n, groups, cin // groups, h, wd)
    wg = w.astype(np.float64).reshape(groups, cin // groups, cout_g, *k)
    full = [(h - 1) * stride[0] + dilation[0] * (k[0] - 1) + 1, (wd - 1) * stride[1] + dilation[1] * (k[1] - 1) + 1]
    out = [full[i] - pads[i][0] - pads[i][1] + output_padding[i] for i in range(2)]
    y = np.zeros((n, groups, cout_g, max(full[0], pads[0][0] + out[0]), max(full[1], pads[1][0] + out[1])))
    for i in range(k[0]):
        for j in range(k[1]):
            contrib = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j])
            y[:, :, :, i * dilation[0]: i * dilation[0] + (h - 1) * stride[0] + 1: stride[0],
              j * dilation[1]: j * dilation[1] + (wd - 1) * stride[1] + 1: stride[1]] += contrib
    y = y.reshape(n, groups * cout_g, *y.shape[3:])
    y = y[:, :, pads[0][0]: pads[0][0] + out[0], pads[1][0]: pads[1][0] + out[1]]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def _conv_transpose_ref(node, xs):
    g = conv_geometry(node, TensorType(xs[0].shape))
    return conv_transpose_ref(xs[0], node.params["weight"], node.params.get("bias"), g["stride"], g["pads"],
                              g["dilation"], g["groups"], g["output_padding"])


def _conv_transpose_flops(node, ins, out):
    w = node.params["weight"]
    macs = ins[0].numel() * int(np.prod(w.shape[1:]))       # each input pixel meets (out/g) x k x k weights
    return 2 * macs + (out.numel() if "bias" in node.params else 0)


register(OpDef("conv_transpose2d", (1, 1), _conv_transpose_shape, _conv_transpose_ref,
               attrs={"stride": Attr(1, ints_or_int(), "a positive int or one per spatial dimension"),
                      "padding": Attr(0, _int_pads_ok, "an int, one per dimension, or begins+ends (4 ints)"),
                      "output_padding": Attr(0, ints_or_int(lambda v: is_int(v) and v >= 0),
                                             "a non-negative int smaller than the stride or dilation"),
                      "dilation": Attr(1, ints_or_int(), "a positive int or one per spatial dimension"),
                      "groups": Attr(1, pos_int, "a positive int dividing in and out channels")},
               params=("weight", "bias"), required_params=("weight",), flops=_conv_transpose_flops,
               traits=frozenset({ANCHOR}),
               doc="2-D transposed convolution (PyTorch ConvTranspose2d); weight is (in, out/groups, kH, kW)",
               kernel="conv_transpose"))
