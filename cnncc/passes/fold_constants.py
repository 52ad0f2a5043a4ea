"""fold_constants: evaluate, once at compile time, every operator whose inputs are all constants.

The numpy reference computes the value, so folding can never disagree with the interpreter.
"""
from __future__ import annotations

import numpy as np

from ..interpreter import Interpreter
from ..ir import Graph, Node
from ..reference import run_node
from .base import note, register_pass


class _Folder(Interpreter):
    """Values: a constant's array, or None for what is known only at run time. An operator whose
    inputs are all known is computed and replaced by a constant node of the same name."""

    def run_node(self, node: Node, args: list) -> np.ndarray | None:
        if node.op == "constant":
            return node.params["value"]
        if not node.inputs or any(a is None for a in args):
            return None
        value = np.asarray(run_node(node, args))
        folded = Node(node.name, "constant", [], {}, {"value": value}, node.type, origin=node.origin)
        self.graph.replace_node(folded)
        note(self.graph, f"{node.name} ({node.op}) -> constant {tuple(value.shape)}", count="operators folded")
        return value

    def run_fused(self, node: Node, args: list) -> None:
        return None


@register_pass("fold_constants")
def fold_constants(graph: Graph) -> Graph:
    _Folder(graph).run({name: None for name in graph.inputs})
    # constants nobody reads any more are removed by eliminate_dead
    return graph
