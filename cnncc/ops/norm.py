"""Normalization: batch_norm, softmax/log_softmax, instance_norm, lrn."""
from __future__ import annotations

import numpy as np
import sympy
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ModelError
from .core import (
    GROUP_TAIL, Attr, OpDef, REDUCTION, REQUIRED, _axis_check, _same_shape, elementwise_flops, is_int, is_number,
    pos_int, register)


# ---------------------------------------------------------------------------------------------
# normalization

def _bn_ref(node, xs):
    x = xs[0]
    p = node.params
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = (p["weight"] / np.sqrt(p["var"] + np.float32(node.attrs["eps"]))).astype(np.float32)
    return ((x - p["mean"].reshape(shape)) * inv.reshape(shape) + p["bias"].reshape(shape)).astype(np.float32)


register(OpDef("batch_norm", (1, 1), _same_shape, _bn_ref,
               attrs={"eps": Attr(1e-5, lambda v: is_number(v) and v >= 0, "a non-negative float")},
               params=("weight", "bias", "mean", "var"), required_params=("weight", "bias", "mean", "var"),
               flops=elementwise_flops(2), doc="inference batch norm over channel axis 1", kernel="elementwise",
               # the lowering hands the kernel mean, inv = weight / sqrt(var + eps) and bias
               c_expr="v = (v - {param[mean]}) * {param[inv]} + {param[bias]};"))


# ---------------------------------------------------------------------------------------------
# softmax family
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
                   traits=frozenset({REDUCTION, GROUP_TAIL}), doc=f"{_name} along one axis", kernel="softmax"))


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
               doc="normalize each (n, c) plane by its own mean and (biased) variance, then weight[c], bias[c]",
               kernel="instance_norm"))


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
               doc="local response normalization across channels (AlexNet; PyTorch LocalResponseNorm)",
               kernel="lrn"))
