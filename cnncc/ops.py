"""The operator registry: one OpDef per operator, the single place an operator is defined.

An OpDef carries its attributes (defaults + validation), its sympy shape rule, its cost
(FLOPs = 2 x MACs, bytes, parameters), traits that passes read, and its numpy reference
(float32, PyTorch/ONNX semantics). Frontends map onto these names; codegen maps each name to
one template or one epilogue macro.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import sympy
from numpy.lib.stride_tricks import sliding_window_view

from .errors import ModelError
from . import resize
from .node import Node, TensorType
from .shapes import conv_out, conv_transpose_out, pool_out, resolve_padding

REQUIRED = object()

# traits
ELEMENTWISE = "elementwise"   # out[i] depends on in[i] only (with broadcasting)
REDUCTION = "reduction"       # reduces over some axes
MONOTONE = "monotone"         # non-decreasing scalar function: commutes with max pooling
ANCHOR = "anchor"             # heavy op that can absorb an epilogue (conv, dense, ...)
POOL = "pool"                 # windowed pooling that may fuse after an anchor
ACTIVATION = "activation"     # unary elementwise activation
VIEW = "view"                 # changes only how memory is indexed (flatten, reshape)
IDENTITY = "identity"         # returns its input unchanged at inference


@dataclass
class Attr:
    default: Any = REQUIRED
    check: Callable[[Any], bool] | None = None
    expect: str = ""          # the expected form, for error messages


@dataclass
class OpDef:
    name: str
    arity: tuple[int, int | None]                       # (min, max); max None = variadic
    shape: Callable[[Node, list[TensorType]], tuple]     # -> output shape (sympy)
    ref: Callable[[Node, list[np.ndarray]], np.ndarray]  # numpy reference
    attrs: dict[str, Attr] = field(default_factory=dict)
    params: tuple[str, ...] = ()                         # weight arrays the op may carry
    required_params: tuple[str, ...] = ()
    flops: Callable[[Node, list[TensorType], TensorType], sympy.Expr] | None = None
    traits: frozenset = frozenset()
    dtype: Callable[[Node, list[TensorType]], str] | None = None
    doc: str = ""
    #: (node, input index, concrete input shapes, rng) -> a valid random value for that input, or
    #: None for a plain standard normal draw (roi boxes must name an image of the batch)
    sample_input: Callable[[Node, int, list[tuple], np.random.Generator], np.ndarray | None] | None = None

    def has(self, trait: str) -> bool:
        return trait in self.traits

    def check(self, node: Node) -> None:
        """Fill defaults, reject unknown or malformed attributes, check arity and weights."""
        lo, hi = self.arity
        n = len(node.inputs)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'any'}"
            raise ModelError(f"takes {want} inputs, got {n}", node=node.name, op=self.name)
        for key in node.attrs:
            if key not in self.attrs:
                known = ", ".join(sorted(self.attrs)) or "none"
                raise ModelError(f"unknown attribute '{key}' (known: {known})", node=node.name, op=self.name,
                                 attr=key, fix=f"remove '{key}' or use one of: {known}")
        for key, spec in self.attrs.items():
            if key not in node.attrs:
                if spec.default is REQUIRED:
                    raise ModelError("is required", node=node.name, op=self.name, attr=key,
                                     fix=f"give {key} ({spec.expect})" if spec.expect else None)
                node.attrs[key] = spec.default
            value = node.attrs[key]
            if spec.check is not None and not _safe_check(spec.check, value):
                raise ModelError(f"got {value!r}, expected {spec.expect or 'a valid value'}",
                                 node=node.name, op=self.name, attr=key)
        for p in self.required_params:
            if p not in node.params:
                raise ModelError(f"needs the weight array '{p}'", node=node.name, op=self.name,
                                 fix="give weights (DSL initializes them) or load them from an .npz")
        for p in node.params:
            if p not in self.params:
                raise ModelError(f"unexpected weight array '{p}' (expected: {', '.join(self.params) or 'none'})",
                                 node=node.name, op=self.name)

    def infer(self, node: Node, in_types: list[TensorType]) -> TensorType:
        if any(t is None for t in in_types):
            raise ModelError("an input has no shape yet", node=node.name, op=self.name)
        shape = self.shape(node, in_types)
        for d in shape:
            d = sympy.sympify(d)
            if d.is_number and d <= 0:
                raise ModelError(f"output shape {tuple(shape)} has a non-positive size "
                                 f"(input {', '.join(str(t.shape) for t in in_types)})",
                                 node=node.name, op=self.name,
                                 fix="the kernel or window is larger than the (padded) input: reduce it, add padding, or use a larger input")
        dtype = self.dtype(node, in_types) if self.dtype else (in_types[0].dtype if in_types else "float32")
        return TensorType(tuple(shape), dtype)


def _safe_check(fn, value) -> bool:
    try:
        return bool(fn(value))
    except Exception:
        return False


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ValueError(f"operator {opdef.name} registered twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def get(name: str, *, node: str | None = None) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown operator '{name}'", node=node, op=name,
                         fix=f"use one of: {', '.join(sorted(REGISTRY))}") from None


# ---------------------------------------------------------------------------------------------
# attribute checks
def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def pos_int(v) -> bool:
    return is_int(v) and v > 0


def ints_or_int(pred=pos_int):
    return lambda v: pred(v) or (isinstance(v, (tuple, list)) and len(v) > 0 and all(pred(x) for x in v))


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def padding_ok(v) -> bool:
    if isinstance(v, str):
        return v.lower() in ("same", "valid", "full")
    return ints_or_int(lambda x: is_int(x) and x >= 0)(v) or (is_int(v) and v >= 0)


def tup(v, nd: int) -> tuple[int, ...]:
    """An int or a sequence -> a tuple of nd ints."""
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return tuple(int(v[0]) for _ in range(nd))
        if len(v) != nd:
            raise ValueError(f"expected {nd} values, got {v}")
        return tuple(int(x) for x in v)
    return (int(v),) * nd


def _nd_check(node: Node, key: str, nd: int, op: str) -> tuple[int, ...]:
    try:
        return tup(node.attrs[key], nd)
    except (ValueError, TypeError):
        raise ModelError(f"got {node.attrs[key]!r}, expected an int or {nd} ints", node=node.name, op=op,
                         attr=key) from None


# ---------------------------------------------------------------------------------------------
# cost model (per operator; a node's cost in its graph is cnncc.cost.node_cost)
def _cost(node: Node, in_types: list[TensorType], out: TensorType) -> dict[str, sympy.Expr]:
    opdef = get(node.op, node=node.name)
    flops = opdef.flops(node, in_types, out) if opdef.flops else sympy.Integer(0)
    if opdef.has(VIEW) or opdef.has(IDENTITY) or node.op in ("input", "constant"):
        read = written = sympy.Integer(0)
    else:
        read = sum((t.nbytes() for t in in_types), sympy.Integer(0)) + sum(int(p.nbytes) for p in node.params.values())
        written = out.nbytes()
    params = sum(int(np.prod(p.shape)) for p in node.params.values())
    return {"flops": sympy.sympify(flops), "bytes_read": read, "bytes_written": written,
            "params": sympy.Integer(params)}


def elementwise_flops(per: int = 1):
    return lambda node, ins, out: per * out.numel()


# ---------------------------------------------------------------------------------------------
# graph boundary
def _input_shape(node, ins):
    shape = tuple(node.attrs["shape"])
    for axis, d in enumerate(shape):
        ok = is_int(d) and d > 0
        if not ok and isinstance(d, sympy.Expr):
            ok = not d.is_number or (d.is_integer and d > 0)
        if not ok:
            raise ModelError(f"axis {axis} of the input shape {tuple(shape)} is {d!r}; every size must be a "
                             f"positive int (or a size symbol such as N)", node=node.name, op="input", attr="shape",
                             fix="give positive sizes, e.g. (N, 3, 224, 224)")
    return shape


def _no_ref(node, xs):
    raise RuntimeError(f"{node.name}: inputs are fed by the interpreter")


register(OpDef("input", (0, 0), _input_shape, _no_ref,
               attrs={"shape": Attr(REQUIRED, lambda v: isinstance(v, (tuple, list)), "a shape tuple"),
                      "dtype": Attr("float32", lambda v: isinstance(v, str), "a numpy dtype name")},
               dtype=lambda node, ins: node.attrs["dtype"], doc="a graph input"))

register(OpDef("constant", (0, 0), lambda node, ins: node.params["value"].shape,
               lambda node, xs: node.params["value"], params=("value",), required_params=("value",),
               dtype=lambda node, ins: str(node.params["value"].dtype), doc="a constant tensor"))


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
        spatial = []
        for i in range(nd):
            n = x.shape[2 + i]
            lo, hi = g["pads"][i]
            eff = g["dilation"][i] * (g["kernel"][i] - 1) + 1
            if sympy.sympify(n).is_number and int(n) + lo + hi < eff:
                raise ModelError(f"kernel {g['kernel'][i]} (dilation {g['dilation'][i]}) spans {eff} but the padded "
                                 f"input is only {int(n) + lo + hi} wide (size {n}, padding {lo}+{hi})",
                                 node=node.name, op=node.op, attr="kernel_size",
                                 fix="use a smaller kernel, more padding, or remove a downsampling layer before it")
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
                   traits=frozenset({ANCHOR}), doc=f"{_nd}-D convolution, NC{'HW' if _nd == 2 else 'L'} layout"))


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
        spatial = []
        for i in range(nd):
            n = x.shape[2 + i]
            lo, hi = g["pads"][i]
            eff = g["dilation"][i] * (g["kernel"][i] - 1) + 1
            if sympy.sympify(n).is_number and int(n) + lo + hi < eff:
                raise ModelError(f"window {g['kernel'][i]} is larger than the padded input {int(n) + lo + hi}",
                                 node=node.name, op=node.op, attr="kernel_size",
                                 fix="use a smaller window or a larger input")
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
                       flops=_pool_flops, traits=frozenset(_traits), doc=f"{_kind} pooling, {_nd}-D"))


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
                   doc=f"global {_kind} pooling to (N, C, 1, 1)"))


# ---------------------------------------------------------------------------------------------
# dense / matmul
def _dense_shape(node, ins):
    x = ins[0]
    w = node.params["weight"]
    if x.rank < 2:
        raise ModelError(f"expects (N, features), got {x.shape}", node=node.name, op=node.op)
    feat = sympy.sympify(x.shape[-1])
    if feat.is_number and int(feat) != w.shape[1]:
        raise ModelError(f"feature mismatch: input has {feat} features, weight expects {w.shape[1]}",
                         node=node.name, op=node.op, attr="in_features",
                         fix="flatten before the dense layer and set in_features to the flattened size")
    return (*x.shape[:-1], w.shape[0])


register(OpDef("dense", (1, 1), _dense_shape,
               lambda node, xs: (xs[0] @ node.params["weight"].T + (node.params["bias"] if "bias" in node.params
                                                                   else 0)).astype(np.float32),
               params=("weight", "bias"), required_params=("weight",),
               flops=lambda node, ins, out: 2 * out.numel() * node.params["weight"].shape[1]
               + (out.numel() if "bias" in node.params else 0),
               traits=frozenset({ANCHOR}), doc="fully connected: y = x W^T + b, W is (out, in)"))


# ---------------------------------------------------------------------------------------------
# normalization
def _same_shape(node, ins):
    return ins[0].shape


def _bn_ref(node, xs):
    x = xs[0]
    p = node.params
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = (p["weight"] / np.sqrt(p["var"] + np.float32(node.attrs["eps"]))).astype(np.float32)
    return ((x - p["mean"].reshape(shape)) * inv.reshape(shape) + p["bias"].reshape(shape)).astype(np.float32)


register(OpDef("batch_norm", (1, 1), _same_shape, _bn_ref,
               attrs={"eps": Attr(1e-5, lambda v: is_number(v) and v >= 0, "a non-negative float")},
               params=("weight", "bias", "mean", "var"), required_params=("weight", "bias", "mean", "var"),
               flops=elementwise_flops(2), doc="inference batch norm over channel axis 1"))


# ---------------------------------------------------------------------------------------------
# elementwise activations: name -> (numpy function of (x, attrs, params), monotone?, attrs)
def _f32(fn):
    return lambda node, xs: np.asarray(fn(xs[0].astype(np.float32), node.attrs, node.params), np.float32)


def _sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def _softplus(x, a, p):
    b, t = a["beta"], a["threshold"]
    return np.where(x * b > t, x, np.log1p(np.exp(np.minimum(x * b, t))) / b)


def _gelu(x, a, p):
    if a["approximate"] == "tanh":
        return 0.5 * x * (1 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x ** 3)))
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf, otypes=[np.float64])(x.astype(np.float64) / math.sqrt(2)))


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

_float = Attr(0.0, is_number, "a number")
ACTIVATIONS = {
    "relu": (lambda x, a, p: np.maximum(x, 0), True, {}),
    "leaky_relu": (lambda x, a, p: np.where(x >= 0, x, x * np.float32(a["alpha"])), True,
                   {"alpha": Attr(0.01, lambda v: is_number(v) and v >= 0, "a non-negative slope")}),
    "relu6": (lambda x, a, p: np.clip(x, 0, 6), True, {}),
    "clip": (lambda x, a, p: np.clip(x, -np.inf if a["min"] is None else a["min"],
                                     np.inf if a["max"] is None else a["max"]), True,
             {"min": Attr(None, lambda v: v is None or is_number(v), "a number or None"),
              "max": Attr(None, lambda v: v is None or is_number(v), "a number or None")}),
    "sigmoid": (lambda x, a, p: _sigmoid(x), True, {}),
    "tanh": (lambda x, a, p: np.tanh(x), True, {}),
    "elu": (lambda x, a, p: np.where(x > 0, x, np.float32(a["alpha"]) * np.expm1(np.minimum(x, 0))), True,
            {"alpha": Attr(1.0, lambda v: is_number(v) and v >= 0, "a non-negative number")}),
    "selu": (lambda x, a, p: np.float32(SELU_SCALE) * np.where(x > 0, x, np.float32(SELU_ALPHA) * np.expm1(np.minimum(x, 0))),
             True, {}),
    "hardswish": (lambda x, a, p: x * np.clip(x + 3, 0, 6) / 6, False, {}),
    "hardsigmoid": (lambda x, a, p: np.clip(np.float32(a["alpha"]) * x + np.float32(a["beta"]), 0, 1), True,
                    {"alpha": Attr(1 / 6, lambda v: is_number(v) and v >= 0, "a non-negative slope"),
                     "beta": Attr(0.5, is_number, "a number")}),
    "silu": (lambda x, a, p: x * _sigmoid(x), False, {}),
    "gelu": (_gelu, False, {"approximate": Attr("none", lambda v: v in ("none", "tanh"), "'none' or 'tanh'")}),
    "softplus": (_softplus, True, {"beta": Attr(1.0, lambda v: is_number(v) and v > 0, "a positive number"),
                                   "threshold": Attr(20.0, is_number, "a number")}),
    "pow": (lambda x, a, p: np.power(x, np.float32(a["exponent"])), False,
            {"exponent": Attr(REQUIRED, is_number, "a number (the constant exponent)")}),
}

for _name, (_fn, _mono, _attrs) in ACTIVATIONS.items():
    _traits = {ELEMENTWISE, ACTIVATION} | ({MONOTONE} if _mono else set())
    register(OpDef(_name, (1, 1), _same_shape, _f32(_fn), attrs=dict(_attrs), flops=elementwise_flops(1),
                   traits=frozenset(_traits), doc=f"elementwise {_name}"))


def _prelu_ref(node, xs):
    x = xs[0]
    s = node.params["slope"]
    s = s.reshape((1, -1) + (1,) * (x.ndim - 2)) if s.size > 1 else s.reshape(())
    return np.where(x >= 0, x, x * s).astype(np.float32)


def _prelu_shape(node, ins):
    s = node.params["slope"]
    c = sympy.sympify(ins[0].shape[1]) if ins[0].rank > 1 else None
    if s.size != 1 and c is not None and c.is_number and int(c) != s.size:
        raise ModelError(f"slope has {s.size} values but the input has {c} channels", node=node.name,
                         op=node.op, attr="slope", fix="give one slope, or one per channel")
    return ins[0].shape


register(OpDef("prelu", (1, 1), _prelu_shape, _prelu_ref, params=("slope",), required_params=("slope",),
               flops=elementwise_flops(1), traits=frozenset({ELEMENTWISE, ACTIVATION}),
               doc="x if x >= 0 else slope[c] * x (one slope or one per channel)"))


# ---------------------------------------------------------------------------------------------
# binary elementwise with numpy broadcasting
def broadcast_shapes(a: tuple, b: tuple, node: Node) -> tuple:
    out = []
    ra, rb = list(a)[::-1], list(b)[::-1]
    for i in range(max(len(ra), len(rb))):
        x = sympy.sympify(ra[i]) if i < len(ra) else sympy.Integer(1)
        y = sympy.sympify(rb[i]) if i < len(rb) else sympy.Integer(1)
        if x == 1:
            out.append(y)
        elif y == 1 or sympy.simplify(x - y) == 0:
            out.append(x)
        else:
            raise ModelError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast (dimension {x} vs {y})",
                             node=node.name, op=node.op,
                             fix="make the shapes equal, or 1 where one side should be repeated")
    return tuple(out[::-1])


def _binary_shape(node, ins):
    shape = ins[0].shape
    for t in ins[1:]:
        shape = broadcast_shapes(shape, t.shape, node)
    return shape


BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
for _name, _fn in BINARY.items():
    register(OpDef(_name, (2, 2), _binary_shape,
                   (lambda fn: lambda node, xs: fn(xs[0], xs[1]).astype(np.float32))(_fn),
                   flops=elementwise_flops(1), traits=frozenset({ELEMENTWISE}),
                   doc=f"elementwise {_name} with numpy broadcasting"))


# ---------------------------------------------------------------------------------------------
# softmax family
def _axis_check(node, rank):
    ax = node.attrs["axis"]
    if not -rank <= ax < rank:
        raise ModelError(f"axis {ax} is out of range for rank {rank}", node=node.name, op=node.op, attr="axis")
    return ax % rank


def _softmax_ref(log: bool):
    def ref(node, xs):
        x = xs[0].astype(np.float32)
        ax = _axis_check(node, x.ndim)
        m = x.max(axis=ax, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(axis=ax, keepdims=True)
        return ((x - m - np.log(s)) if log else (e / s)).astype(np.float32)
    return ref


def _softmax_shape(node, ins):
    _axis_check(node, ins[0].rank)
    return ins[0].shape


for _name, _log in (("softmax", False), ("log_softmax", True)):
    register(OpDef(_name, (1, 1), _softmax_shape, _softmax_ref(_log),
                   attrs={"axis": Attr(1, is_int, "an int axis")}, flops=elementwise_flops(4),
                   traits=frozenset({REDUCTION}), doc=f"{_name} along one axis"))


# ---------------------------------------------------------------------------------------------
# shape and data movement
def _flatten_shape(node, ins):
    x = ins[0]
    ax = node.attrs["axis"] % max(x.rank, 1) if x.rank else 0
    return (sympy.Mul(*x.shape[:ax]) if ax else 1, sympy.Mul(*x.shape[ax:]))


register(OpDef("flatten", (1, 1), _flatten_shape,
               lambda node, xs: xs[0].reshape(int(np.prod(xs[0].shape[:node.attrs["axis"]])), -1),
               attrs={"axis": Attr(1, is_int, "an int axis")}, traits=frozenset({VIEW}),
               doc="collapse dims [axis:] into one (and [:axis] into one)"))


def _reshape_shape(node, ins):
    x = ins[0]
    spec = list(node.attrs["shape"])
    total = x.numel()
    out = []
    for i, d in enumerate(spec):
        if isinstance(d, int) and d == 0:
            out.append(x.shape[i])
        else:
            out.append(sympy.sympify(d))
    if sum(1 for d in out if d == -1) > 1:
        raise ModelError("at most one dimension may be -1", node=node.name, op=node.op, attr="shape")
    known = sympy.Mul(*[d for d in out if d != -1])
    if any(d == -1 for d in out):
        rest = sympy.simplify(total / known)
        if rest.is_number and rest != int(rest):
            raise ModelError(f"cannot reshape {x.shape} ({total} elements) to {tuple(spec)}",
                             node=node.name, op=node.op, attr="shape")
        out = [rest if d == -1 else d for d in out]
    elif sympy.simplify(known - total) != 0:
        raise ModelError(f"cannot reshape {x.shape} ({total} elements) to {tuple(spec)}",
                         node=node.name, op=node.op, attr="shape",
                         fix="the number of elements must stay the same; use -1 for one inferred dimension")
    return tuple(out)


def _reshape_ref(node, xs):
    x = xs[0]
    spec = [x.shape[i] if (isinstance(d, int) and d == 0) else d for i, d in enumerate(node.attrs["shape"])]
    spec = [x.shape[0] if (isinstance(d, sympy.Basic) and not d.is_number) else int(d) for d in spec]
    return x.reshape(spec)


register(OpDef("reshape", (1, 1), _reshape_shape, _reshape_ref,
               attrs={"shape": Attr(REQUIRED, lambda v: isinstance(v, (tuple, list)),
                                    "a tuple; 0 copies the input dimension, -1 is inferred, N is the batch")},
               traits=frozenset({VIEW}), doc="reshape (row-major)"))


def _concat_shape(node, ins):
    rank = ins[0].rank
    ax = _axis_check(node, rank)
    for t in ins[1:]:
        if t.rank != rank or any(sympy.simplify(a - b) != 0 for i, (a, b) in enumerate(zip(t.shape, ins[0].shape))
                                 if i != ax):
            raise ModelError(f"inputs {[tuple(x.shape) for x in ins]} differ outside the concat axis {ax}",
                             node=node.name, op=node.op, attr="axis")
    return tuple(sum((t.shape[ax] for t in ins), sympy.Integer(0)) if i == ax else d
                 for i, d in enumerate(ins[0].shape))


register(OpDef("concat", (1, None), _concat_shape,
               lambda node, xs: np.concatenate(xs, axis=node.attrs["axis"]),
               attrs={"axis": Attr(1, is_int, "an int axis")}, doc="concatenate along an axis"))

def slice_bounds(node: Node, shape: tuple) -> list[tuple[int, int, int]]:
    """(start, stop, step) per sliced axis after Python/ONNX clamping, as ints; negative starts and
    ends count from the end, out-of-range values clamp, a negative step walks backwards."""
    a = node.attrs
    starts, ends = list(a["starts"]), list(a["ends"])
    axes = list(a["axes"]) if a["axes"] is not None else list(range(len(starts)))
    steps = list(a["steps"]) if a["steps"] is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ModelError(f"starts {starts}, ends {ends}, axes {axes}, steps {steps} differ in length",
                         node=node.name, op=node.op, fix="give one start, end, axis and step per sliced axis")
    rank = len(shape)
    out = {}
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        if not -rank <= ax < rank or ax % rank in out:
            raise ModelError(f"axis {ax} is out of range for rank {rank} or repeated", node=node.name,
                             op=node.op, attr="axes")
        ax %= rank
        if sp == 0:
            raise ModelError("a step of 0", node=node.name, op=node.op, attr="steps", fix="use a non-zero step")
        d = sympy.sympify(shape[ax])
        if not d.is_number:
            if st == 0 and sp == 1 and en >= 2 ** 31:
                continue               # the whole (symbolic) axis: nothing sliced
            raise ModelError(f"slicing axis {ax} of symbolic size {d} (the batch N stays whole)",
                             node=node.name, op=node.op, attr="axes",
                             fix="slice only axes of concrete size; cnncc keeps the batch dimension whole")
        out[ax] = slice(int(st), int(en), int(sp)).indices(int(d))
    return [out.get(i, None) for i in range(rank)]


def _slice_shape(node, ins):
    shape = ins[0].shape
    bounds = slice_bounds(node, shape)
    return tuple(d if b is None else len(range(*b)) for d, b in zip(shape, bounds))


def _slice_ref(node, xs):
    x = xs[0]
    bounds = slice_bounds(node, x.shape)
    # .indices() may give stop -1 for a backwards walk to the front; as a slice that would mean "the end"
    return np.ascontiguousarray(x[tuple(slice(None) if b is None else slice(b[0], b[1] if b[1] >= 0 else None, b[2])
                                        for b in bounds)])


_int_seq = lambda v: isinstance(v, (tuple, list)) and all(is_int(x) for x in v)  # noqa: E731
register(OpDef("slice", (1, 1), _slice_shape, _slice_ref,
               attrs={"starts": Attr(REQUIRED, _int_seq, "a list of ints (negative: from the end)"),
                      "ends": Attr(REQUIRED, _int_seq, "a list of ints (clamped to the axis)"),
                      "axes": Attr(None, lambda v: v is None or _int_seq(v), "a list of axes (default 0, 1, ...)"),
                      "steps": Attr(None, lambda v: v is None or _int_seq(v), "a list of non-zero steps")},
               doc="x[starts:ends:steps] along axes, Python/ONNX clamping (a channel slice is a view)"))


def index_to_slice(index, rank: int) -> tuple[dict, list[int]]:
    """Python indexing ``x[...]`` (ints, slices with int bounds and steps, one Ellipsis) -> the
    ``slice`` attributes and the axes an int index drops (a reshape after the slice). Raises
    ValueError for what a constant slice cannot express (None, tensors, two Ellipses)."""
    index = index if isinstance(index, tuple) else (index,)
    if sum(1 for i in index if i is Ellipsis) > 1 or any(i is None for i in index):
        raise ValueError("indexing with None or more than one Ellipsis")
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (rank - len(index) + 1) + index[at + 1:]
    if len(index) > rank:
        raise ValueError(f"{len(index)} indices for a rank-{rank} tensor")
    attrs = {"starts": [], "ends": [], "axes": [], "steps": []}
    drop = []
    for ax, i in enumerate(index):
        if isinstance(i, slice):
            if i == slice(None):
                continue
            if not all(v is None or is_int(v) for v in (i.start, i.stop, i.step)):
                raise ValueError("slicing with bounds that are not constant ints")
            step = 1 if i.step is None else int(i.step)
            big = 2 ** 62
            start = (0 if step > 0 else big) if i.start is None else int(i.start)
            stop = (big if step > 0 else -big) if i.stop is None else int(i.stop)
        elif is_int(i):
            start, stop, step = int(i), (int(i) + 1 if int(i) != -1 else 2 ** 62), 1
            drop.append(ax)
        else:
            raise ValueError(f"indexing with {type(i).__name__} (constant ints and slices only)")
        for key, v in zip(("starts", "ends", "axes", "steps"), (start, stop, ax, step)):
            attrs[key].append(v)
    return attrs, drop


def gather_indices(node: Node, shape: tuple) -> tuple[int, np.ndarray]:
    """The (axis, indices) of a gather, negative indices resolved; indices out of range are an error."""
    rank = len(shape)
    ax = node.attrs["axis"]
    if not -rank <= ax < rank:
        raise ModelError(f"axis {ax} is out of range for rank {rank}", node=node.name, op=node.op, attr="axis")
    ax %= rank
    d = sympy.sympify(shape[ax])
    if not d.is_number:
        raise ModelError(f"gathering along axis {ax} of symbolic size {d}", node=node.name, op=node.op,
                         attr="axis", fix="gather along an axis of concrete size")
    idx = np.asarray(node.attrs["indices"], dtype=np.int64)
    if idx.size and (idx.min() < -int(d) or idx.max() >= int(d)):
        raise ModelError(f"indices {idx.tolist()} are out of range for axis {ax} of size {d}",
                         node=node.name, op=node.op, attr="indices")
    return ax, np.where(idx < 0, idx + int(d), idx)


def _gather_shape(node, ins):
    shape = ins[0].shape
    ax, idx = gather_indices(node, shape)
    return tuple(shape[:ax]) + tuple(idx.shape) + tuple(shape[ax + 1:])


def _gather_ref(node, xs):
    ax, idx = gather_indices(node, xs[0].shape)
    return np.ascontiguousarray(np.take(xs[0], idx, axis=ax))


register(OpDef("gather", (1, 1), _gather_shape, _gather_ref,
               attrs={"axis": Attr(0, is_int, "an int axis"),
                      "indices": Attr(REQUIRED, lambda v: is_int(v) or (isinstance(v, (tuple, list))
                                                                        and np.asarray(v).dtype.kind == "i"),
                                      "an int or a (nested) list of ints (constant indices)")},
               doc="np.take(x, indices, axis) with constant indices (ONNX Gather, torch index_select)"))

register(OpDef("dropout", (1, 1), _same_shape, lambda node, xs: xs[0],
               attrs={"p": Attr(0.5, lambda v: is_number(v) and 0 <= v < 1, "a probability in [0, 1)")},
               traits=frozenset({IDENTITY, ELEMENTWISE}), doc="identity at inference"))
register(OpDef("identity", (1, 1), _same_shape, lambda node, xs: xs[0],
               traits=frozenset({IDENTITY, ELEMENTWISE}), doc="identity"))


def _scale_shift_ref(node, xs):
    x = xs[0]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x * node.params["scale"].reshape(shape) + node.params["shift"].reshape(shape)).astype(np.float32)


def _scale_shift_shape(node, ins):
    c = sympy.sympify(ins[0].shape[1])
    for p in ("scale", "shift"):
        if c.is_number and node.params[p].shape != (int(c),):
            raise ModelError(f"'{p}' has shape {node.params[p].shape}, expected ({c},)", node=node.name,
                             op=node.op, attr=p)
    return ins[0].shape


register(OpDef("scale_shift", (1, 1), _scale_shift_shape, _scale_shift_ref, params=("scale", "shift"),
               required_params=("scale", "shift"), flops=elementwise_flops(2), traits=frozenset({ELEMENTWISE}),
               doc="per-channel x * scale[c] + shift[c] (what a batch norm folds to without a producer)"))


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
               doc="2-D transposed convolution (PyTorch ConvTranspose2d); weight is (in, out/groups, kH, kW)"))


# ---------------------------------------------------------------------------------------------
# matmul (numpy semantics: 1-D operands are promoted then squeezed, batch dims broadcast)
def _dims_equal(a, b) -> bool:
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


def _matmul_shape(node, ins):
    a, b = list(ins[0].shape), list(ins[1].shape)
    if not a or not b:
        raise ModelError("operands must have rank >= 1", node=node.name, op=node.op)
    drop_m, drop_n = len(a) == 1, len(b) == 1
    if drop_m:
        a = [1] + a
    if drop_n:
        b = b + [1]
    if not _dims_equal(a[-1], b[-2]):
        raise ModelError(f"inner dimensions differ: {tuple(ins[0].shape)} @ {tuple(ins[1].shape)} "
                         f"({a[-1]} vs {b[-2]})", node=node.name, op=node.op,
                         fix="the last dimension of A must equal the second-to-last of B")
    batch = broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]), node)
    return tuple(batch) + (() if drop_m else (a[-2],)) + (() if drop_n else (b[-1],))


register(OpDef("matmul", (2, 2), _matmul_shape,
               lambda node, xs: np.matmul(xs[0].astype(np.float64), xs[1].astype(np.float64)).astype(np.float32),
               flops=lambda node, ins, out: 2 * out.numel() * ins[0].shape[-1], traits=frozenset({ANCHOR}),
               doc="matrix product with numpy/ONNX semantics (batched, broadcasting)"))


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
                   "or non-negative x)"))


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
               doc="argmax of each max_pool2d window as PyTorch's flat per-plane index h*W + w (int64)"))


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
               doc="'bed of nails' unpooling: scatter x to the positions max_pool2d_indices recorded, zeros elsewhere"))


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
               doc="nearest-neighbour unpooling: every value becomes a scale x scale block"))


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
                   "-> (K, C, out_h, out_w)"))
register(OpDef("roi_align", (2, 3), _roi_shape, lambda node, xs: roi_align_ref(node, xs[0], _roi_boxes(xs)),
               attrs={**_ROI_ATTRS,
                      "sampling_ratio": Attr(-1, is_int, "an int: samples per bin and axis, <= 0 for adaptive"),
                      "aligned": Attr(False, lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
                      "mode": Attr("avg", lambda v: v in ("avg", "max"), "'avg' (torchvision) or 'max' (ONNX)")},
               flops=_roi_flops(8), dtype=lambda node, ins: ins[0].dtype, sample_input=_sample_boxes,
               doc="bilinear average of each box's bins (torchvision roi_align, ONNX RoiAlign): x (N, C, H, W), "
                   "boxes (K, 5) [batch_index, x1, y1, x2, y2] (or ONNX's rois (K, 4), batch_indices (K,)) "
                   "-> (K, C, out_h, out_w)"))


# ---------------------------------------------------------------------------------------------
# more normalization
def _instance_norm_shape(node, ins):
    x = ins[0]
    if x.rank < 3:
        raise ModelError(f"expects (N, C, spatial...), got {x.shape}", node=node.name, op=node.op)
    c = sympy.sympify(x.shape[1])
    for p in ("weight", "bias"):
        if c.is_number and node.params[p].shape != (int(c),):
            raise ModelError(f"'{p}' has shape {node.params[p].shape}, expected ({c},)", node=node.name,
                             op=node.op, attr=p, fix="give one value per channel")
    return x.shape


def _instance_norm_ref(node, xs):
    x = xs[0].astype(np.float64)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean) / np.sqrt(var + float(node.attrs["eps"]))
    return (y * node.params["weight"].reshape(shape) + node.params["bias"].reshape(shape)).astype(np.float32)


register(OpDef("instance_norm", (1, 1), _instance_norm_shape, _instance_norm_ref,
               attrs={"eps": Attr(1e-5, lambda v: is_number(v) and v >= 0, "a non-negative float")},
               params=("weight", "bias"), required_params=("weight", "bias"), flops=elementwise_flops(5),
               traits=frozenset({REDUCTION}),
               doc="normalize each (n, c) plane by its own mean and (biased) variance, then weight[c], bias[c]"))


def _lrn_ref(node, xs):
    """PyTorch LocalResponseNorm: x / (k + alpha/size * sum of x^2 over channels
    [c - size//2, c + (size-1)//2])^beta."""
    x = xs[0].astype(np.float64)
    a = node.attrs
    size = int(a["size"])
    sq = np.pad(x * x, [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    total = sliding_window_view(sq, size, axis=1).sum(axis=-1)
    return (x / (a["k"] + a["alpha"] / size * total) ** a["beta"]).astype(np.float32)


def _lrn_shape(node, ins):
    if ins[0].rank < 3:
        raise ModelError(f"expects (N, C, spatial...), got {ins[0].shape}", node=node.name, op=node.op)
    return ins[0].shape


register(OpDef("lrn", (1, 1), _lrn_shape, _lrn_ref,
               attrs={"size": Attr(REQUIRED, pos_int, "a positive int (channels in the window)"),
                      "alpha": Attr(1e-4, is_number, "a number"),
                      "beta": Attr(0.75, is_number, "a number"),
                      "k": Attr(1.0, is_number, "a number")},
               flops=lambda node, ins, out: out.numel() * (2 * node.attrs["size"] + 4),
               traits=frozenset({REDUCTION}),
               doc="local response normalization across channels (AlexNet; PyTorch LocalResponseNorm)"))


# ---------------------------------------------------------------------------------------------
# data movement: transpose, pad, upsampling, depth/space rearrangement
def _perm(node, rank: int) -> tuple[int, ...]:
    perm = node.attrs["perm"]
    if perm is None:
        return tuple(range(rank))[::-1]
    perm = tuple(int(p) % rank if -rank <= int(p) < rank else int(p) for p in perm)
    if sorted(perm) != list(range(rank)):
        raise ModelError(f"perm {tuple(node.attrs['perm'])} is not a permutation of the {rank} axes",
                         node=node.name, op=node.op, attr="perm", fix=f"give each of 0..{rank - 1} exactly once")
    return perm


register(OpDef("transpose", (1, 1), lambda node, ins: tuple(ins[0].shape[p] for p in _perm(node, ins[0].rank)),
               lambda node, xs: np.ascontiguousarray(np.transpose(xs[0], _perm(node, xs[0].ndim))),
               attrs={"perm": Attr(None, lambda v: v is None or (isinstance(v, (tuple, list)) and all(map(is_int, v))),
                                   "a permutation of the axes (default: reversed)")},
               doc="permute the axes (ONNX Transpose)"))


def pad_widths(node: Node, rank: int) -> list[tuple[int, int]]:
    """[(before, after)] for every axis from the ``pads`` attribute.

    Accepted forms: an int (every spatial axis, both sides); ONNX order begins..ends over all
    axes (2*rank ints) or over the spatial axes (2*(rank-2) ints); or (before, after) pairs,
    one per axis or one per spatial axis."""
    pads = node.attrs["pads"]
    spatial = rank - 2
    if is_int(pads):
        widths = [(0, 0)] * 2 + [(int(pads), int(pads))] * spatial
    elif all(isinstance(p, (tuple, list)) for p in pads):
        widths = [tuple(int(v) for v in p) for p in pads]
        if any(len(p) != 2 for p in widths) or len(widths) not in (rank, spatial):
            raise ModelError(f"got {len(widths)} pairs {pads}, expected {rank} or {spatial} (before, after) pairs",
                             node=node.name, op=node.op, attr="pads")
        widths = [(0, 0)] * (rank - len(widths)) + widths
    else:
        flat = [int(p) for p in pads]
        if len(flat) not in (2 * rank, 2 * spatial):
            raise ModelError(f"got {len(flat)} values, expected {2 * rank} (ONNX begins then ends for every axis) "
                             f"or {2 * spatial} (spatial axes only)", node=node.name, op=node.op, attr="pads")
        half = len(flat) // 2
        widths = [(0, 0)] * (rank - half) + [(flat[i], flat[i + half]) for i in range(half)]
    if any(v < 0 for p in widths for v in p):
        raise ModelError(f"negative padding {pads} is not supported", node=node.name, op=node.op, attr="pads",
                         fix="crop with a slice before the model, or use non-negative pads")
    return widths


def _pad_shape(node, ins):
    x = ins[0]
    widths = pad_widths(node, x.rank)
    if node.attrs["mode"] == "reflect":
        for i, (lo, hi) in enumerate(widths):
            d = sympy.sympify(x.shape[i])
            if d.is_number and max(lo, hi) >= int(d):
                raise ModelError(f"reflect padding {max(lo, hi)} needs axis {i} longer than that (size {d})",
                                 node=node.name, op=node.op, attr="pads",
                                 fix="reflect padding must be smaller than the padded dimension; use mode 'edge'")
    return tuple(x.shape[i] + lo + hi for i, (lo, hi) in enumerate(widths))


def _pad_ref(node, xs):
    x = xs[0]
    widths = pad_widths(node, x.ndim)
    mode = node.attrs["mode"]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.float32(node.attrs["value"]))
    return np.pad(x, widths, mode=mode)


register(OpDef("pad", (1, 1), _pad_shape, _pad_ref,
               attrs={"pads": Attr(REQUIRED, lambda v: is_int(v) or isinstance(v, (tuple, list)),
                                   "an int, ONNX begins..ends, or (before, after) pairs"),
                      "mode": Attr("constant", lambda v: v in ("constant", "reflect", "edge"),
                                   "'constant', 'reflect' or 'edge'"),
                      "value": Attr(0.0, is_number, "a number (constant mode)")},
               doc="pad with a constant, a mirror image without the edge (reflect), or the edge value"))


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
                   "as a separable filter (cnncc/resize.py)"))


def _block(node) -> int:
    return int(node.attrs["block"])


def _divisible(node, dim, by: int, what: str) -> None:
    d = sympy.sympify(dim)
    if d.is_number and int(d) % by:
        raise ModelError(f"{what} {d} is not divisible by {by}", node=node.name, op=node.op, attr="block",
                         fix=f"use a block size that divides the {what}")


def _d2s_shape(node, ins):
    x, b = ins[0], _block(node)
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 input (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    _divisible(node, x.shape[1], b * b, "channel count")
    return (x.shape[0], x.shape[1] / (b * b), x.shape[2] * b, x.shape[3] * b)


def _d2s_ref(node, xs):
    x, b = xs[0], _block(node)
    n, c, h, w = x.shape
    if node.attrs["mode"] == "DCR":                      # ONNX default: channel = (i*b + j) * C' + c'
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:                                                # CRD = torch.pixel_shuffle: c' * b*b + i*b + j
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(y.reshape(n, c // (b * b), h * b, w * b))


def _s2d_shape(node, ins):
    x, b = ins[0], _block(node)
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 input (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    _divisible(node, x.shape[2], b, "height")
    _divisible(node, x.shape[3], b, "width")
    return (x.shape[0], x.shape[1] * b * b, x.shape[2] / b, x.shape[3] / b)


def _s2d_ref(node, xs):
    x, b = xs[0], _block(node)
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    if node.attrs["mode"] == "DCR":                      # ONNX SpaceToDepth: inverse of DCR depth_to_space
        y = y.transpose(0, 3, 5, 1, 2, 4)
    else:                                                # CRD = torch.pixel_unshuffle
        y = y.transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(y.reshape(n, c * b * b, h // b, w // b))


_MOVE_ATTRS = {"block": Attr(REQUIRED, pos_int, "a positive int"),
               "mode": Attr("DCR", lambda v: v in ("DCR", "CRD"), "'DCR' (ONNX default) or 'CRD' (pixel shuffle)")}
register(OpDef("depth_to_space", (1, 1), _d2s_shape, _d2s_ref, attrs=dict(_MOVE_ATTRS),
               doc="move channel blocks into b x b spatial blocks (ONNX DepthToSpace; CRD = pixel_shuffle)"))
register(OpDef("space_to_depth", (1, 1), _s2d_shape, _s2d_ref, attrs=dict(_MOVE_ATTRS),
               doc="move b x b spatial blocks into channels (ONNX SpaceToDepth; CRD = pixel_unshuffle)"))
