"""The numpy interpreter: the oracle every pass and backend is checked against.

It walks the graph in topological order (an Interpreter, cnncc/interpreter.py) calling each
OpDef's reference. A fused group runs its members one by one, so every snapshot of the pass
pipeline is executable.
"""
from __future__ import annotations

from dataclasses import replace
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


# -- reduced-precision operands (what a tensor core multiplies) -----------------------------------
def round_operand(x: np.ndarray, precision: str) -> np.ndarray:
    """float32 ``x`` rounded as the CUDA kernels round a tensor-core operand, returned as float32:
    "tf32" as ``wmma::__float_to_tf32`` (cvt.rna.tf32.f32: 10 mantissa bits, nearest, ties away
    from zero), "fp16" as ``__float2half_rn`` and "bf16" as ``__float2bfloat16_rn`` (nearest, ties
    to even; fp16 overflows to inf past 65504). Inf and NaN pass through; "fp32" is the identity."""
    x = np.asarray(x, dtype=np.float32)
    if precision == "fp32":
        return x
    if precision == "fp16":
        return x.astype(np.float16).astype(np.float32)
    b = x.view(np.uint32)
    finite = (b & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    if precision == "tf32":
        r = (b + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    elif precision == "bf16":
        r = ((b.astype(np.uint64) + 0x7FFF + ((b >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    else:
        raise ModelError(f"precision must be one of fp32, tf32, fp16, bf16, got {precision!r}")
    return np.where(finite, r, b).view(np.float32)


class RoundingInterpreter(NumpyInterpreter):
    """The reference of a reduced-precision module: the nodes named in ``rounded`` (node name ->
    precision: those whose multiplies run on tensor cores) see their float inputs and their
    ``weight`` rounded by :func:`round_operand` first, then compute in float32 as everywhere else
    (the kernels accumulate in FP32 and products of rounded operands are exact in FP32). Every
    other node, and the bias of a rounded one, is the plain reference."""

    def __init__(self, graph: Graph, rounded: Mapping[str, str]):
        super().__init__(graph)
        self.rounded = dict(rounded)
        self._weights: dict[str, Node] = {}

    def run_node(self, node: Node, args: list[np.ndarray]) -> np.ndarray:
        p = self.rounded.get(node.name)
        if p is None:
            return run_node(node, args)
        if node.name not in self._weights:      # round each weight once per walk, not per call
            params = dict(node.params)
            if "weight" in params:
                params["weight"] = round_operand(params["weight"], p)
            self._weights[node.name] = replace(node, params=params)
        args = [round_operand(a, p) if getattr(a, "dtype", None) == np.float32 else a for a in args]
        return run_node(self._weights[node.name], args)


def reference(graph: Graph, inputs, *, keep_all: bool = False, rounded: Mapping[str, str] | None = None):
    """Run the graph in numpy. Returns the output array (a dict when there are several outputs,
    or every tensor when ``keep_all``). ``rounded`` ({node name: "tf32" | "fp16" | "bf16"}) rounds
    those nodes' multiply operands as tensor cores do (:class:`RoundingInterpreter`); which nodes
    those are is the CUDA target's choice: ``cnncc.precision_reference`` asks it."""
    walker = RoundingInterpreter(graph, rounded) if rounded else NumpyInterpreter(graph)
    env = walker.run(bind_inputs(graph, inputs))
    if keep_all:
        return env
    if len(graph.outputs) == 1:
        return env[graph.outputs[0]]
    return {o: env[o] for o in graph.outputs}
