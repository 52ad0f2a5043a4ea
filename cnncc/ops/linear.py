"""dense and matmul: the anchors that are not convolutions."""
from __future__ import annotations

import numpy as np
import sympy

from ..errors import ModelError
from .core import ANCHOR, OpDef, _dims_equal, register
from .elementwise import broadcast_shapes


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
               traits=frozenset({ANCHOR}), doc="fully connected: y = x W^T + b, W is (out, in)", kernel="dense"))


# ---------------------------------------------------------------------------------------------
# matmul (numpy semantics: 1-D operands are promoted then squeezed, batch dims broadcast)
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
               doc="matrix product with numpy/ONNX semantics (batched, broadcasting)", kernel="matmul"))
