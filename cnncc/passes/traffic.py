"""The traffic model: bytes moved through memory and FLOPs, per fused group and per model.

For a group, ``bytes_unfused`` is what running each member as its own kernel moves (every
intermediate written once and read back), ``bytes_fused`` what the one fused kernel moves (its
external inputs, its weights, its output). Both are sympy in N and count each tensor once:
caches are assumed to absorb re-reads within a kernel. This is the prediction the fusion
benchmarks are held against. ``flops`` counts the work the fused kernel really does, including
conv outputs recomputed by overlapping pool windows (``group.recompute``). The figures go into
the group's GroupNotes and the model's Traffic record (cnncc/contracts.py).
"""
from __future__ import annotations

from dataclasses import replace

import sympy

from .. import ops
from ..contracts import GroupNotes, Traffic, is_kernel
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
    """Fill the group's notes with bytes_unfused, bytes_fused and flops (sympy in N)."""
    notes = group.group or GroupNotes()
    costs = member_costs(graph, group)
    unfused = sum((c["bytes_read"] + c["bytes_written"] for c in costs), ZERO)
    fused = node_cost(graph, group)
    recompute = sympy.sympify(notes.recompute)
    pool_at = next((i for i, m in enumerate(group.members) if ops.get(m.op).has(ops.POOL)), len(costs))
    flops = sum((c["flops"] * (recompute if i < pool_at else 1) for i, c in enumerate(costs)), ZERO)
    group.group = replace(notes, bytes_unfused=sympy.expand(unfused),
                          bytes_fused=sympy.expand(fused["bytes_read"] + fused["bytes_written"]),
                          flops=sympy.expand(flops))


def node_traffic(graph: Graph, node: Node) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    """(bytes one-kernel-per-operator, bytes as planned, FLOPs as planned) of one node."""
    if node.op == "fused":
        if not annotated(node):
            annotate_group(graph, node)
        return node.group.bytes_unfused, node.group.bytes_fused, node.group.flops
    cost = node_cost(graph, node)
    moved = cost["bytes_read"] + cost["bytes_written"]
    planned = moved if is_kernel(node, graph) else ZERO
    return moved, planned, cost["flops"]


def annotated(node: Node) -> bool:
    return node.group is not None and node.group.bytes_fused is not None


def model_traffic(graph: Graph) -> Traffic:
    """Totals over the graph: bytes unfused vs as planned, FLOPs, number of kernels and groups."""
    total = {"bytes_unfused": ZERO, "bytes_fused": ZERO, "flops": ZERO, "kernels": 0, "groups": 0}
    for node in graph:
        if node.op in ("input", "constant"):
            continue
        unfused, fused, flops = node_traffic(graph, node)
        total["bytes_unfused"] += unfused
        total["bytes_fused"] += fused
        total["flops"] += flops
        total["kernels"] += int(is_kernel(node, graph))
        total["groups"] += int(node.op == "fused")
    for k in ("bytes_unfused", "bytes_fused", "flops"):
        total[k] = sympy.expand(total[k])
    return Traffic(**total)


@register_pass("traffic")
def traffic(graph: Graph) -> Graph:
    """Annotate every group and store the model totals in ``graph.traffic``."""
    for node in graph:
        if node.op == "fused" and not annotated(node):   # a group never changes once made
            annotate_group(graph, node)
    graph.traffic = t = model_traffic(graph)
    from .base import note
    note(graph, f"{t.kernels} kernels, {t.groups} fused groups; bytes {t.bytes_unfused} unfused -> "
                f"{t.bytes_fused} fused; {t.flops} FLOPs")
    return graph
