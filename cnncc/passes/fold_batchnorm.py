"""fold_batchnorm: an inference batch norm is a per-channel affine map y = x * s + t with
s = gamma / sqrt(var + eps) and t = beta - mean * s.

After a conv / transposed conv / dense layer that nothing else reads, the map folds into that
layer's weights and bias (W' = W * s per output channel, b' = b * s + t): the BN costs nothing.
Any other BN becomes a ``scale_shift`` node (same name) that fuses as an epilogue or into an
elementwise group. Arithmetic is done in float64 and rounded once, to stay within 1e-5 of the
unfolded graph.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import ops
from ..contracts import NodeOrigin
from ..ir import Graph, Node
from .base import bypass, note, register_pass


def folds_into(op: str) -> bool:
    """A batch norm folds into an anchor with a weight per output channel (conv, conv_transpose,
    dense; not matmul, whose second operand is a tensor)."""
    opdef = ops.REGISTRY.get(op)
    return opdef is not None and opdef.has(ops.ANCHOR) and "weight" in opdef.params


def bn_affine(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 of an inference batch norm."""
    p = {k: v.astype(np.float64) for k, v in bn.params.items()}
    scale = p["weight"] / np.sqrt(p["var"] + float(bn.attrs.get("eps", 1e-5)))
    return scale, p["bias"] - p["mean"] * scale


def scaled_weight(producer: Node, scale: np.ndarray) -> np.ndarray:
    """The producer's weight with output channel c multiplied by scale[c] (its own layout)."""
    w = producer.params["weight"]
    scale = scale.astype(np.float32)   # one fp32 multiply per weight is exactly rounded
    if producer.op == "conv_transpose2d":
        groups = int(producer.attrs.get("groups", 1))
        cin, cout_g = w.shape[:2]
        wg = w.reshape(groups, cin // groups, cout_g, *w.shape[2:])
        s = scale.reshape(groups, 1, cout_g, *([1] * (w.ndim - 2)))
        return (wg * s).reshape(w.shape)
    return w * scale.reshape((-1,) + (1,) * (w.ndim - 1))


def _can_fold(graph: Graph, bn: Node) -> Node | None:
    if not bn.inputs:
        return None
    producer = graph[bn.inputs[0]]
    if not folds_into(producer.op) or producer.name in graph.outputs:
        return None
    if len(graph.consumers(producer.name)) != 1:
        return None
    if producer.op == "dense" and (bn.type is None or bn.type.rank != 2):
        return None  # BN normalizes axis 1, which is a dense layer's feature axis only at rank 2
    return producer


@register_pass("fold_batchnorm")
def fold_batchnorm(graph: Graph) -> Graph:
    for bn in list(graph):
        if bn.op != "batch_norm":
            continue
        scale, shift = bn_affine(bn)
        producer = _can_fold(graph, bn)
        if producer is not None:
            bias = producer.params.get("bias")
            bias = np.zeros_like(scale) if bias is None else bias.astype(np.float64)
            producer.params = dict(producer.params, weight=scaled_weight(producer, scale).astype(np.float32, copy=False),
                                   bias=(bias * scale + shift).astype(np.float32))
            bypass(graph, bn, producer.name)
            note(graph, f"{bn.name} folded into {producer.name}'s weights and bias",
                 count="batch norms folded into weights")
        else:
            graph.replace_node(Node(bn.name, "scale_shift", list(bn.inputs), {},
                                    {"scale": scale.astype(np.float32),
                                     "shift": shift.astype(np.float32)}, bn.type,
                                    origin=replace(bn.origin or NodeOrigin(), was="batch_norm")))
            why = "its input has other readers" if bn.inputs and folds_into(graph[bn.inputs[0]].op) \
                else "no conv/dense before it"
            note(graph, f"{bn.name} -> scale_shift ({why})", count="batch norms to scale_shift")
    return graph
