"""eliminate_dead: drop what inference does not need: dropout and identity (they return their
input), and every node no graph output depends on (unused branches, orphaned constants)."""
from __future__ import annotations


from .. import ops
from ..ir import Graph
from .base import bypass, note, register_pass


@register_pass("eliminate_dead")
def eliminate_dead(graph: Graph) -> Graph:
    for node in list(graph):
        if node.op == "fused" or node.op not in ops.REGISTRY:
            continue
        if ops.get(node.op).has(ops.IDENTITY) and node.inputs:
            src = node.inputs[0]
            if node.name in graph.outputs and graph[src].op == "input":
                continue  # an output that is an input verbatim keeps its own node
            bypass(graph, node, src)
            note(graph, f"{node.name} ({node.op}) bypassed", count=f"{node.op} removed")
    live = set(graph.outputs)
    for out in graph.outputs:
        live |= graph.ancestors(out)
    for node in reversed(list(graph)):
        if node.name in live or node.op == "input":
            continue
        graph.remove(node.name)
        note(graph, f"{node.name} ({node.op}) unused", count="unused nodes removed")
    return graph
