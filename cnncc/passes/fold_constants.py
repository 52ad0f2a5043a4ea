"""fold_constants: evaluate, once at compile time, every operator whose inputs are all constants.

The numpy reference computes the value, so folding can never disagree with the interpreter.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..reference import run_node
from .base import note, register_pass


@register_pass("fold_constants")
def fold_constants(graph: Graph) -> Graph:
    for node in list(graph):
        if node.op in ("input", "constant", "fused") or not node.inputs:
            continue
        producers = [graph[i] for i in node.inputs]
        if not all(p.op == "constant" for p in producers):
            continue
        value = np.asarray(run_node(node, [p.params["value"] for p in producers]))
        folded = Node(node.name, "constant", [], {}, {"value": value}, node.type, origin=node.origin)
        graph.replace_node(folded)
        note(graph, f"{node.name} ({node.op}) -> constant {tuple(value.shape)}", count="operators folded")
    # constants nobody reads any more are removed by eliminate_dead
    return graph
