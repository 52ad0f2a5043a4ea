"""eliminate_concat: producers write straight into their channel slice of a concat's buffer,
and flatten/reshape and channel slices become views of their input (docs/DESIGN.md, contract C).

A channel concat (axis 1, NCHW) copies every input once more than needed. If each input is a
kernel's output (not a graph input, constant, view or graph output), that kernel can write its
result at channel offset ``o`` of the concat's buffer instead, and the concat costs nothing.
Concats nested in concats (``concat(concat(a, b), c)``) and DenseNet's prefix concats
(``concat(x0, n1)``, ``concat(x0, n1, n2)``, ...) resolve to ONE root buffer: concats are
visited last-first, so each input is placed in the outermost buffer; a concat whose inputs
already sit consecutively in a root becomes a slice of it too. Readers of a placed tensor read
its channel slice (stride ``channels_total``). Decisions go into each node's Placement record
(cnncc/contracts.py): ``view_of``/``view_channel``, ``write_into``, ``eliminated``.
"""
from __future__ import annotations

from dataclasses import replace

import sympy

from ..contracts import WhyNot, WriteInto, is_kernel
from ..ir import N, Graph, Node
from .base import note, register_pass

VIEWS = ("flatten", "reshape")


def _channels(node: Node) -> int | None:
    c = sympy.sympify(node.type.shape[1]) if node.type and node.type.rank >= 2 else None
    return int(c) if c is not None and c.is_number else None


def _placeable(graph: Graph, node: Node) -> bool:
    return is_kernel(node, graph) and node.name not in graph.outputs and node.op not in VIEWS


def _plan_concat(graph: Graph, concat: Node, place: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]] | str:
    """Placements for the inputs of ``concat``, or why it must stay a copy."""
    if concat.name in graph.outputs:
        return "it is a graph output"
    if concat.type is None or concat.type.rank < 2 or int(concat.attrs.get("axis", 1)) % concat.type.rank != 1:
        return "it does not join channels (axis 1)"
    widths = [_channels(graph[i]) for i in concat.inputs]
    if None in widths:
        return "an input's channel count is not a number"
    if len(set(concat.inputs)) != len(concat.inputs):
        return "it reads one input twice"
    root, base = place.get(concat.name, (concat.name, 0))
    want: dict[str, tuple[str, int]] = {}
    offset = base
    for name, width in zip(concat.inputs, widths):
        target = (root, offset)
        offset += width
        if place.get(name) == target:
            continue
        if name in place:
            return f"{name} already writes into {place[name][0]}"
        if not _placeable(graph, graph[name]):
            return f"{name} is a graph input, constant, view or graph output"
        want[name] = target
    return want


def _prefix_of_root(graph: Graph, concat: Node, place: dict) -> tuple[str, int] | None:
    """If every input already sits consecutively in one root, the concat is that slice."""
    spots = [place.get(i) for i in concat.inputs]
    if concat.name in graph.outputs or None in spots or len({r for r, _ in spots}) != 1:
        return None
    offset = spots[0][1]
    for name, (root, off) in zip(concat.inputs, spots):
        width = _channels(graph[name])
        if width is None or off != offset:
            return None
        offset += width
    return spots[0]


def channel_slice_start(graph: Graph, node: Node) -> int | None:
    """The first channel of a slice that keeps N and every axis but the channel one whole, with
    step 1: each batch item of it is one contiguous run of its input's item, so readers can take
    it in place (pointer + start * H * W, the input's batch stride). None when it is not such a
    slice."""
    from .. import ops

    if node.op != "slice" or node.name in graph.outputs or node.type.rank < 2:
        return None
    src = graph[node.inputs[0]]
    if N not in sympy.sympify(src.type.shape[0]).free_symbols:
        return None
    bounds = ops.slice_bounds(node, src.type.shape)
    for i, b in enumerate(bounds):
        if i != 1 and b is not None and b != (0, int(src.type.shape[i]), 1):
            return None
    if bounds[1] is None:
        return 0
    start, _, step = bounds[1]
    return start if step == 1 else None


@register_pass("eliminate_concat")
def eliminate_concat(graph: Graph) -> Graph:
    place: dict[str, tuple[str, int]] = {}
    eliminated: list[str] = []
    copies: dict[str, str] = {}        # concat -> why it stays a copy
    for node in graph:                 # channel slices first: a concat never writes into a view
        start = channel_slice_start(graph, node)
        if start is not None:
            node.placement = replace(node.placement, view_of=node.inputs[0], view_channel=start)
            note(graph, f"{node.name} (slice) is a view of {node.inputs[0]} from channel {start}",
                 count="channel slices as views")
    for node in reversed(list(graph)):
        if node.op != "concat":
            continue
        if node.name not in place:
            spot = _prefix_of_root(graph, node, place)
            if spot is not None:
                place[node.name] = spot
                eliminated.append(node.name)
                continue
        want = _plan_concat(graph, node, place)
        if isinstance(want, str):
            note(graph, f"{node.name} stays a copy: {want}")
            copies[node.name] = want
            continue
        place.update(want)
        eliminated.append(node.name)
    roots = {r for r, _ in place.values()}
    for name, (root, offset) in place.items():
        node = graph[name]
        node.placement = replace(node.placement, write_into=WriteInto(root, offset, _channels(graph[root])))
    for name in eliminated:
        node = graph[name]
        node.placement = replace(node.placement, eliminated=True)
        where = node.placement.write_into
        note(graph, f"{name}: inputs write in place" + (f" (slice of {where.tensor})" if where else ""),
             count="concats eliminated")
    assert all(graph[r].placement.eliminated for r in roots)
    for node in graph:
        src = graph[node.inputs[0]] if node.inputs else None
        keeps_batch = src is not None and src.type.rank and node.type.rank \
            and sympy.simplify(src.type.shape[0] - node.type.shape[0]) == 0 \
            and N in sympy.sympify(node.type.shape[0]).free_symbols   # N stays the leading dim (codegen's rule)
        if node.op in VIEWS and keeps_batch and node.name not in graph.outputs and src.placement.write_into is None \
                and node.placement.write_into is None:
            node.placement = replace(node.placement, view_of=node.inputs[0])
            note(graph, f"{node.name} ({node.op}) is a view of {node.inputs[0]}", count="flatten/reshape as views")
    _explain_copies(graph, set(eliminated), copies)
    return graph


def _explain_copies(graph: Graph, eliminated: set[str], copies: dict[str, str]) -> None:
    """fuse explained every unfused edge before this pass removed copies: an edge into an
    eliminated concat or into a view costs nothing, so its reason says that instead; an edge
    into a concat that stays a copy says why it stays one."""
    def reason(p: str, c: str, why: str) -> str:
        if c in copies:
            return f"{why}; {c} stays a copy: {copies[c]}"
        if c in eliminated:
            return f"{c} is eliminated: {p} is written straight into its channels of {c} (no copy left to fuse)"
        if c in graph and graph[c].placement.view_of:      # its one input: p, or p's fused group
            return f"{c} ({graph[c].op}) is a view of {p} (no copy left to fuse)"
        return why

    if graph.fusion is not None and graph.fusion.why_not:
        graph.fusion = replace(graph.fusion, why_not=tuple(WhyNot(p, c, reason(p, c, why))
                                                           for p, c, why in graph.fusion.why_not))
