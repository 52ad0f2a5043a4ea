"""plan_memory: place every intermediate tensor in one arena, reusing memory whose tensor is dead.

Execution order is the graph's topological order. A buffer lives from the step that first writes
it to the last step that reads it (or any view/slice aliasing it). Views share their source's
buffer, producers placed by eliminate_concat share the concat's buffer, and an elementwise
kernel may write over an operand that dies at that very step (in place: same size, each output
element read before written by the same thread; never over a conv group's own input, whose
neighbours are still needed). Buffers are then placed greedy-by-size (largest first, lowest
offset free during its whole life: the TFLite "greedy by size" planner).

Sizes are sympy in N. Every size proportional to N is planned per sample and scaled by N, so the
offsets stay exact for any batch; others get their own space after the shared part.
Graph inputs, outputs and weights are not in the arena.
"""
from __future__ import annotations

import sympy

from .. import ops
from ..contracts import MemoryPlan, is_kernel
from ..ir import N, Graph, Node
from .base import note, register_pass

ALIGN = 64   # bytes per sample; offsets are multiples of ALIGN * N


def _align(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


def inplace_candidates(graph: Graph, node: Node) -> list[str]:
    """Operands this node may overwrite: read at the same index as it writes, same shape."""
    if not is_kernel(node, graph) or node.placement.write_into or node.op == "concat":
        return []
    same = [i for i in node.inputs if graph[i].type is not None and graph[i].type.shape == node.type.shape
            and graph[i].type.dtype == node.type.dtype
            and graph.layout.block(i) == graph.layout.block(node.name)]   # same index only in the same layout
    if node.op == "fused":
        if node.attrs.get("kind") == "elementwise":
            return same
        if any(ops.get(m.op).has(ops.POOL) for m in node.members):
            return []
        anchor_reads = set(node.members[0].inputs)
        return [i for i in same if i not in anchor_reads]
    opdef = ops.REGISTRY.get(node.op)
    if opdef is not None and opdef.has(ops.ELEMENTWISE) and not opdef.has(ops.IDENTITY):
        return same
    return []


def greedy_by_size(sizes: dict[str, int], life: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Offsets (same unit as sizes) such that buffers alive at the same time never overlap."""
    offsets: dict[str, int] = {}
    for b in sorted(sizes, key=lambda b: (-sizes[b], life[b][0], b)):
        lo, hi = life[b]
        busy = sorted((offsets[o], offsets[o] + sizes[o]) for o in offsets
                      if not (life[o][1] < lo or hi < life[o][0]))
        at = 0
        for start, end in busy:
            if at + sizes[b] <= start:
                break
            at = max(at, end)
        offsets[b] = at
    return offsets


def plan(graph: Graph) -> MemoryPlan:
    """The memory plan of contract C (docs/DESIGN.md), plus lifetimes, aliases and in-place decisions."""
    order = {n.name: i for i, n in enumerate(graph)}
    outside = set(graph.inputs) | set(graph.outputs) | {n.name for n in graph if n.op == "constant"}
    alias: dict[str, str] = {}

    def buffer_of(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    for node in graph:
        if node.placement.view_of:
            alias[node.name] = node.placement.view_of
        elif node.placement.write_into:
            alias[node.name] = node.placement.write_into.tensor
    life: dict[str, list[int]] = {}
    naive = sympy.Integer(0)
    for node in graph:
        if node.name in outside:
            continue
        if not node.placement.view_of:
            naive += node.type.nbytes()
        b = buffer_of(node.name)
        if b in outside:
            continue
        step = order[node.name]
        last = max([order[c.name] for c in graph.consumers(node.name)] + [step])
        span = life.setdefault(b, [step, last])
        span[0], span[1] = min(span[0], step), max(span[1], last)
    inplace: dict[str, str] = {}
    for node in graph:
        name = node.name
        if name not in life or buffer_of(name) != name:
            continue
        step = order[name]
        for src in inplace_candidates(graph, node):
            sb = buffer_of(src)
            if sb in life and life[sb][1] == step and not graph[sb].placement.eliminated \
                    and graph[sb].type.nbytes() == node.type.nbytes():
                alias[name] = sb
                inplace[name] = src
                life[sb][1] = life.pop(name)[1]
                break
    sizes = {b: graph[b].type.nbytes() for b in life}
    per_sample = {b: sympy.simplify(s / N) for b, s in sizes.items()}
    shared = {b: _align(int(q)) for b, q in per_sample.items() if q.is_number}
    spans = {b: tuple(v) for b, v in life.items()}
    offsets_ps = greedy_by_size(shared, spans)
    shared_end = max((offsets_ps[b] + shared[b] for b in shared), default=0)
    offsets: dict[str, sympy.Expr] = {b: offsets_ps[b] * N for b in shared}
    tail = shared_end * N
    for b in sizes:
        if b not in shared:
            offsets[b] = tail
            tail = tail + sizes[b]
    for node in graph:
        b = buffer_of(node.name)
        if node.name not in outside and b in offsets:
            offsets[node.name] = offsets[b]
    peak_live = 0
    for step in range(len(order)):
        live = sum(shared[b] for b in shared if spans[b][0] <= step <= spans[b][1])
        peak_live = max(peak_live, live)
    return MemoryPlan(offsets=offsets, arena_bytes=sympy.expand(tail), naive_bytes=sympy.expand(naive),
                      peak_live_bytes=peak_live * N, lifetimes=spans, sizes=sizes,
                      aliases={t: buffer_of(t) for t in alias}, inplace=inplace)


@register_pass("plan_memory")
def plan_memory(graph: Graph) -> Graph:
    graph.memory_plan = mp = plan(graph)
    note(graph, f"arena {mp.arena_bytes} bytes vs naive {mp.naive_bytes}; {len(mp.lifetimes)} buffers, "
                f"{len(mp.inplace)} in place")
    return graph
