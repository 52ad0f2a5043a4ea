"""Elementwise operators: activations, prelu, binary ops with broadcasting, dropout/identity, scale_shift."""
from __future__ import annotations

import math

import numpy as np
import sympy

from ..errors import ModelError
from ..node import Node
from .core import (
    ACTIVATION, COMMUTATIVE, EPILOGUE, Attr, ELEMENTWISE, IDENTITY, MONOTONE, OpDef, REQUIRED, _same_shape,
    c_float, elementwise_flops, is_number, register)


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
    "mish": (lambda x, a, p: x * np.tanh(_softplus(x, {"beta": 1.0, "threshold": 20.0}, p)), False, {}),
    "pow": (lambda x, a, p: np.power(x, np.float32(a["exponent"])), False,
            {"exponent": Attr(REQUIRED, is_number, "a number (the constant exponent)")}),
}



def _clip_c(a):
    lo = f"v = v < {c_float(a['min'])} ? {c_float(a['min'])} : v;" if a["min"] is not None else ""
    hi = f"v = v > {c_float(a['max'])} ? {c_float(a['max'])} : v;" if a["max"] is not None else ""
    return " ".join(s for s in (lo, hi) if s) or "/* clip without bounds */"


def _gelu_c(a):
    if a["approximate"] == "tanh":
        return "v = 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));"
    return "v = 0.5f * v * (1.0f + erff(v * 0.70710678118f));"


# name -> (epilogue spelling in C and CUDA (OpDef.c_expr), ONNX operator, torch.nn.functional name)
# for the ops the exporters map without attributes. Clamps are comparisons and every select lets
# NaN take the branch that keeps v (codegen/templates/common/epilogue.j2, tests/test_ieee.py).
# cnncc_expf is each target's exp: a branch-free polynomial in the C prelude (libm's expf is a call
# per element, which stops gcc vectorizing the loop), CUDA's expf in the CUDA prelude.
SPELLINGS = {
    "relu": ("v = v < 0.0f ? 0.0f : v;", "Relu", "relu"),
    "leaky_relu": ("v = v >= 0.0f ? v : v * {alpha};", None, None),
    "relu6": ("v = v < 0.0f ? 0.0f : v; v = v > 6.0f ? 6.0f : v;", None, None),
    "clip": (_clip_c, None, None),
    "sigmoid": ("v = 1.0f / (1.0f + cnncc_expf(-v));", "Sigmoid", "sigmoid"),
    "tanh": ("v = tanhf(v);", "Tanh", "tanh"),
    "elu": ("v = v > 0.0f ? v : {alpha} * expm1f(v);", None, None),
    "selu": ("v = 1.05070098736f * (v > 0.0f ? v : 1.67326324235f * expm1f(v));", "Selu", "selu"),
    "hardswish": ("{{ float t = v + 3.0f; t = t < 0.0f ? 0.0f : t; t = t > 6.0f ? 6.0f : t; v = v * t / 6.0f; }}",
                  "HardSwish", "hardswish"),
    "hardsigmoid": ("v = {alpha} * v + {beta}; v = v < 0.0f ? 0.0f : v; v = v > 1.0f ? 1.0f : v;", None, None),
    "silu": ("v = v / (1.0f + cnncc_expf(-v));", None, "silu"),
    "gelu": (_gelu_c, None, None),
    "softplus": ("v = v * {beta} > {threshold} ? v : log1pf(cnncc_expf(v * {beta})) / {beta};", None, None),
    "mish": ("{{ float sp = v > 20.0f ? v : log1pf(cnncc_expf(v)); v = v * tanhf(sp); }}", "Mish", "mish"),
    "pow": ("v = powf(v, {exponent});", None, None),
}

for _name, (_fn, _mono, _attrs) in ACTIVATIONS.items():
    _traits = {ELEMENTWISE, ACTIVATION, EPILOGUE} | ({MONOTONE} if _mono else set())
    _c, _onnx, _torch = SPELLINGS[_name]
    register(OpDef(_name, (1, 1), _same_shape, _f32(_fn), attrs=dict(_attrs), flops=elementwise_flops(1),
                   traits=frozenset(_traits), doc=f"elementwise {_name}", kernel="elementwise", c_expr=_c,
                   onnx=_onnx, torch=_torch))


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
               flops=elementwise_flops(1), traits=frozenset({ELEMENTWISE, ACTIVATION, EPILOGUE}),
               doc="x if x >= 0 else slope[c] * x (one slope or one per channel)", kernel="elementwise",
               c_expr="v = v >= 0.0f ? v : v * {param[slope]};"))


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
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
for _name, _fn in BINARY.items():
    register(OpDef(_name, (2, 2), _binary_shape,
                   (lambda fn: lambda node, xs: fn(xs[0], xs[1]).astype(np.float32))(_fn),
                   flops=elementwise_flops(1),
                   traits=frozenset({ELEMENTWISE, EPILOGUE} | ({COMMUTATIVE} if _name in ("add", "mul") else set())),
                   doc=f"elementwise {_name} with numpy broadcasting", kernel="elementwise",
                   c_expr=f"v = {{lhs}} {_SYMBOL[_name]} {{rhs}};"))


register(OpDef("dropout", (1, 1), _same_shape, lambda node, xs: xs[0],
               attrs={"p": Attr(0.5, lambda v: is_number(v) and 0 <= v < 1, "a probability in [0, 1)")},
               traits=frozenset({IDENTITY, ELEMENTWISE}), doc="identity at inference", kernel="elementwise",
               c_expr="", onnx="Identity"))
register(OpDef("identity", (1, 1), _same_shape, lambda node, xs: xs[0],
               traits=frozenset({IDENTITY, ELEMENTWISE}), doc="identity", kernel="elementwise", c_expr="",
               onnx="Identity"))


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
               required_params=("scale", "shift"), flops=elementwise_flops(2),
               traits=frozenset({ELEMENTWISE, EPILOGUE}), kernel="elementwise",
               doc="per-channel x * scale[c] + shift[c] (what a batch norm folds to without a producer)",
               c_expr="v = v * {param[scale]} + {param[shift]};"))
