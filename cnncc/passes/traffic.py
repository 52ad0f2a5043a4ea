"""The traffic model: bytes moved through memory and FLOPs, per fused group and per model.

For a group, ``bytes_unfused`` is what running each member as its own kernel moves (every
intermediate written once and read back), ``bytes_fused`` what the one fused kernel moves (its
external inputs, its weights, its output). Both are sympy in N and count each tensor once:
caches are assumed to absorb re-reads within a kernel. This is the prediction the fusion
benchmarks are held against. ``flops`` counts the work the fused kernel really does, including
conv outputs recomputed by overlapping pool windows (``meta["recompute"]``).
"""
from __future__ import annotations

import sympy

from .. import ops
from ..cost import node_cost
from ..ir import Graph, Node
from .base import register_pass

ZERO = sympy.Integer(0)


def _member_types(graph: Graph, group: Node, m: Node):
    local = {x.name: x.type for x in group.members}
    return [local[i] if i in local else graph[i].type for i in m.inputs]


def member_costs(graph: Graph, group: Node) -> list[dict]:
    """The cost of each member as if it ran as its own kernel."""
    return [ops._cost(m, _member_types(graph, group, m), m.type) for m in group.members]


def annotate_group(graph: Graph, group: Node) -> None:
    """Fill group.meta with bytes_unfused, bytes_fused and flops (sympy in N)."""
    costs = member_costs(graph, group)
    unfused = sum((c["bytes_read"] + c["bytes_written"] for c in costs), ZERO)
    fused = node_cost(graph, group)
    recompute = sympy.sympify(group.meta.get("recompute", 1))
    pool_at = next((i for i, m in enumerate(group.members) if ops.get(m.op).has(ops.POOL)), len(costs))
    flops = sum((c["flops"] * (recompute if i < pool_at else 1) for i, c in enumerate(costs)), ZERO)
    group.meta["bytes_unfused"] = sympy.expand(unfused)
    group.meta["bytes_fused"] = sympy.expand(fused["bytes_read"] + fused["bytes_written"])
    group.meta["flops"] = sympy.expand(flops)


def node_traffic(graph: Graph, node: Node) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    """(bytes one-kernel-per-operator, bytes as planned, FLOPs as planned) of one node."""
    if node.op == "fused":
        if "bytes_fused" not in node.meta:
            annotate_group(graph, node)
        return node.meta["bytes_unfused"], node.meta["bytes_fused"], node.meta["flops"]
    cost = node_cost(graph, node)
    moved = cost["bytes_read"] + cost["bytes_written"]
    planned = ZERO if node.meta.get("eliminated") or node.meta.get("view_of") else moved
    return moved, planned, cost["flops"]


def model_traffic(graph: Graph) -> dict:
    """Totals over the graph: bytes unfused vs as planned, FLOPs, number of kernels and groups."""
    total = {"bytes_unfused": ZERO, "bytes_fused": ZERO, "flops": ZERO, "kernels": 0, "groups": 0}
    for node in graph:
        if node.op in ("input", "constant"):
            continue
        unfused, fused, flops = node_traffic(graph, node)
        total["bytes_unfused"] += unfused
        total["bytes_fused"] += fused
        total["flops"] += flops
        launches = not (node.meta.get("eliminated") or node.meta.get("view_of"))
        total["kernels"] += int(launches)
        total["groups"] += int(node.op == "fused")
    for k in ("bytes_unfused", "bytes_fused", "flops"):
        total[k] = sympy.expand(total[k])
    return total


@register_pass("traffic")
def traffic(graph: Graph) -> Graph:
    """Annotate every group and store the model totals in graph.meta["traffic"]."""
    for node in graph:
        if node.op == "fused" and "bytes_fused" not in node.meta:   # a group never changes once made
            annotate_group(graph, node)
    graph.meta["traffic"] = t = model_traffic(graph)
    from .base import note
    note(graph, f"{t['kernels']} kernels, {t['groups']} fused groups; bytes {t['bytes_unfused']} unfused -> "
                f"{t['bytes_fused']} fused; {t['flops']} FLOPs")
    return graph
