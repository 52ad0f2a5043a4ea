"""A node's cost in its graph: FLOPs, bytes read and written, parameters (sympy in N).

The per-operator formulas live on each OpDef (cnncc.ops); this module adds what needs the
surrounding graph: the input types of a node and the members of a fused group. It sits below
cnncc.ir (``Graph.flops`` and the summary table call it), so ``graph`` is read only through
``graph[name].type``: any cnncc.ir.Graph, without importing it.
"""
from __future__ import annotations

import sympy

from . import ops
from .node import N, Node, TensorType


def node_cost(graph, node: Node) -> dict[str, sympy.Expr]:
    """FLOPs, bytes read (inputs + weights), bytes written, parameters — sympy in N."""
    if node.op == "fused":
        total = {"flops": sympy.Integer(0), "bytes_read": sympy.Integer(0),
                 "bytes_written": sympy.Integer(0), "params": sympy.Integer(0)}
        for m in node.members:
            in_types = [_member_type(graph, node, i) for i in m.inputs]
            c = ops._cost(m, in_types, m.type)
            total["flops"] += c["flops"]
            total["params"] += c["params"]
        ext = [graph[i].type for i in node.inputs]
        total["bytes_read"] = sum((t.nbytes() for t in ext), sympy.Integer(0)) + sum(
            (int(p.nbytes) for m in node.members for p in m.params.values()), 0)
        total["bytes_written"] = node.type.nbytes()
        return total
    return ops._cost(node, [graph[i].type for i in node.inputs], node.type)


def _member_type(graph, fused: Node, name: str) -> TensorType:
    for m in fused.members:
        if m.name == name:
            return m.type
    return graph[name].type


def node_work(opt_graph, node: Node, batch: int) -> tuple[float, float]:
    """(FLOPs, bytes moved) of one kernel at ``batch``, from the cost model."""
    c = node_cost(opt_graph, node)
    sub = {N: batch}
    noted = node.group.flops if node.group is not None else None    # a fused group's, recomputation included
    flops = float(sympy.sympify(c["flops"] if noted is None else noted).subs(sub))
    nbytes = float(sympy.sympify(c["bytes_read"] + c["bytes_written"]).subs(sub))
    return flops, nbytes
