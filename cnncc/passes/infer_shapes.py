"""infer_shapes: derive every tensor's type with the operators' sympy rules (batch stays N)."""
from __future__ import annotations

from ..ir import Graph
from .base import note, register_pass


@register_pass("infer_shapes")
def infer_shapes(graph: Graph) -> Graph:
    before = {n.name: n.type for n in graph}
    graph.infer_shapes()
    changed = [n.name for n in graph if before.get(n.name) != n.type]
    for name in changed:
        note(graph, f"{name}: {graph[name].type}", count="types set")
    return graph
