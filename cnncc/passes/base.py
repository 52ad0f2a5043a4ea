"""The pass registry and the helpers every pass shares.

A pass is a function ``Graph -> Graph`` registered by name. Passes may edit the graph they are
given (the manager hands them a copy) but never modify a weight array in place: snapshots share
weight arrays with the live graph to stay cheap.
"""
from __future__ import annotations

from typing import Callable

from ..ir import Graph, Node

PassFn = Callable[[Graph], Graph]

#: name -> pass function, in registration order
PASSES: dict[str, PassFn] = {}


def register_pass(name: str) -> Callable[[PassFn], PassFn]:
    """Decorator: make ``fn`` available to the manager (and to ``passes=[...]``) as ``name``."""
    def deco(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise ValueError(f"pass {name} registered twice")
        fn.pass_name = name
        PASSES[name] = fn
        return fn
    return deco


def note(graph: Graph, text: str, count: str | None = None) -> None:
    """Record one change a pass made; the manager collects and clears these after each pass."""
    graph.notes.changes.append(text)
    if count:
        graph.notes.counts[count] = graph.notes.counts.get(count, 0) + 1


def rename_output(graph: Graph, old: str, new: str) -> None:
    """Remember that graph output ``old`` is now produced under ``new`` (for comparing outputs)."""
    renamed = dict(graph.renamed)   # a new dict: snapshots share the old one
    graph.renamed = renamed
    for k, v in list(renamed.items()):
        if v == old:
            renamed[k] = new
    if old not in renamed.values():
        renamed[old] = new


def bypass(graph: Graph, node: Node, source: str) -> None:
    """Make every reader of ``node`` read ``source`` instead, then drop ``node``."""
    if node.name in graph.outputs:
        rename_output(graph, node.name, source)
    graph.replace_uses(node.name, source)
    graph.remove(node.name)


def all_nodes(graph: Graph):
    """Every node including the members of fused groups (for weight sharing and lookups)."""
    for node in graph:
        yield node
        for m in node.members or []:
            yield m
