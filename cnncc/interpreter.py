"""The one graph walk (torch.fx's ``Interpreter``): visit the nodes in topological order, keep an
environment of values by tensor name, and let subclasses say what running a node means.

A value is whatever the subclass computes: numpy arrays (the reference), TensorTypes plus a side
effect (the ONNX and PyTorch exporters emit a node or a step per operator), a constant or None
(constant folding). A fused group runs its members one by one through ``run_node``, so every
snapshot of the pass pipeline can be walked.

    class Count(Interpreter):
        def run_node(self, node, args):
            return 1 + sum(args)
    Count(g).run({name: 0 for name in g.inputs})     # {tensor: operators on its longest path}
"""
from __future__ import annotations

from typing import Any, Mapping

from .ir import Graph, Node


class Interpreter:
    """Override ``run_node`` (a plain operator, and each member of a fused group); override
    ``run_fused`` to treat a group as a whole. ``env`` holds the values computed so far."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.env: dict[str, Any] = {}

    def run(self, feeds: Mapping[str, Any], *, until: str | None = None) -> dict[str, Any]:
        """Walk the graph from ``feeds`` (a value per graph input); returns the environment of
        every tensor. ``until``: stop once that node has run. The walk is over a snapshot of the
        order, so ``run_node`` may replace the node it is given (``graph.replace_node``)."""
        self.env = env = dict(feeds)
        for node in list(self.graph):
            if node.op == "input":
                continue
            args = [env[i] for i in node.inputs]
            env[node.name] = self.run_fused(node, args) if node.op == "fused" else self.run_node(node, args)
            if node.name == until:
                break
        return env

    def run_node(self, node: Node, args: list[Any]) -> Any:
        """The value of ``node`` given the values of its inputs, in order."""
        raise NotImplementedError(f"{type(self).__name__}.run_node")

    def run_fused(self, node: Node, args: list[Any]) -> Any:
        """A fused group: its members through ``run_node`` in order; the group's value is the
        last member's. A member reads earlier members or the group's inputs."""
        local = dict(zip(node.inputs, args))
        for m in node.members:
            local[m.name] = self.run_node(m, [local[i] if i in local else self.env[i] for i in m.inputs])
        return local[node.members[-1].name]
