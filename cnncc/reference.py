"""The numpy interpreter: the oracle every pass and backend is checked against.

It walks the graph in topological order (an Interpreter, cnncc/interpreter.py) calling each
OpDef's reference. A fused group runs its members one by one, so every snapshot of the pass
pipeline is executable.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import sympy

from . import ops
from .errors import ModelError
from .inputs import coerce
from .interpreter import Interpreter
from .ir import N, Graph, Node


def bind_inputs(graph: Graph, inputs) -> dict[str, np.ndarray]:
    """Accept one array (single-input graphs), a sequence, or a {name: array} mapping."""
    if isinstance(inputs, Mapping):
        feeds = dict(inputs)
    elif isinstance(inputs, (list, tuple)) and (len(graph.inputs) > 1 or (
            len(inputs) == 1 and isinstance(inputs[0], np.ndarray))):     # else: one input given as a list
        feeds = dict(zip(graph.inputs, inputs))
    else:
        feeds = {graph.inputs[0]: inputs} if len(graph.inputs) == 1 else None
        if feeds is None:
            raise ModelError(f"the graph has {len(graph.inputs)} inputs ({', '.join(graph.inputs)}); "
                             "pass a dict {name: array}")
    missing = [i for i in graph.inputs if i not in feeds]
    if missing:
        raise ModelError(f"missing input(s): {', '.join(missing)}")
    out = {}
    for name in graph.inputs:
        node = graph[name]
        want = node.type.shape if node.type else node.attrs["shape"]
        batched = bool(want) and not sympy.sympify(want[0]).is_number
        out[name] = coerce(name, feeds[name], node.attrs.get("dtype", "float32"), tuple(want), batched)
    return out


def random_inputs(graph: Graph, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs (zeros for integer ones); the batch symbol N becomes ``batch``.
    An input whose consumer's OpDef has a ``sample_input`` (the boxes of roi_pool/roi_align) gets a
    valid value drawn by it instead."""
    feeds = {}
    for name in graph.inputs:
        t = graph[name].type
        try:
            shape = t.concrete({N: batch})
        except ModelError:
            raise ModelError(f"input '{name}' has symbolic sizes {t.shape} besides the batch; export the model "
                             "with concrete spatial sizes") from None
        drawn = _sampled_input(graph, name, batch, rng)
        if drawn is not None:
            feeds[name] = drawn.astype(t.dtype)
        elif np.dtype(t.dtype).kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(t.dtype)
        else:
            feeds[name] = np.zeros(shape, t.dtype)
    return feeds


def _sampled_input(graph: Graph, name: str, batch: int, rng: np.random.Generator) -> np.ndarray | None:
    for node in graph.consumers(name):
        members = node.members if node.op == "fused" else [node]
        types = {m.name: m.type for m in members}
        for m in members:
            opdef = ops.REGISTRY.get(m.op)
            if opdef is None or opdef.sample_input is None or name not in m.inputs:
                continue
            try:
                shapes = [(types.get(i) or graph[i].type).concrete({N: batch}) for i in m.inputs]
            except ModelError:
                return None
            value = opdef.sample_input(m, m.inputs.index(name), shapes, rng)
            if value is not None:
                return value
    return None


def run_node(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return ops.get(node.op, node=node.name).ref(node, args)


class NumpyInterpreter(Interpreter):
    """The reference: each node's OpDef numpy reference."""

    def run_node(self, node: Node, args: list[np.ndarray]) -> np.ndarray:
        return run_node(node, args)


def reference(graph: Graph, inputs, *, keep_all: bool = False):
    """Run the graph in numpy. Returns the output array (a dict when there are several outputs,
    or every tensor when ``keep_all``)."""
    env = NumpyInterpreter(graph).run(bind_inputs(graph, inputs))
    if keep_all:
        return env
    if len(graph.outputs) == 1:
        return env[graph.outputs[0]]
    return {o: env[o] for o in graph.outputs}
