"""fuse: group each anchor with its epilogue chain, and elementwise chains among themselves.

An anchor (conv1d/conv2d/conv_transpose2d/dense/matmul) absorbs the chain of single readers
after it: scale_shift, any activation, add/sub/mul/div whose other operand is an external tensor
of the same shape (the residual add), then at most one pooling layer, which ends the group;
softmax/log_softmax may end a dense group. Elementwise ops that no anchor absorbed form
"elementwise" groups of two or more. The result follows contract B of docs/DESIGN.md exactly.

Rules that keep results exact and memory honest:
* A tensor leaves its group only as the group's output: a member with a second reader (or a
  graph output) ends the chain, so nothing read outside a group is ever fused away.
* When the chains of two anchors meet at one add (a ResNet downsampling block), the chain
  arriving through the add's FIRST operand keeps it (``add(main_path, shortcut)``).
* sub/div fuse only when the chain is their first operand (they do not commute).

Pooling after a conv, and the recompute rule. The fused kernel computes, for each pooled
output, the conv outputs of its window. With non-overlapping windows (stride >= kernel, as in
LeNet or VGG's 2x2/2) every conv output is computed once and the conv output never reaches
memory: pure gain. Overlapping windows (3x3 stride 2 in ResNet's stem, 3x3 stride 1 in Inception)
recompute each conv output r = prod(kernel / stride) times (2.25x, 9x). We fuse when
  * r <= MAX_RECOMPUTE (4x), and
  * the extra work (r - 1) * F, with F the anchor's FLOPs per conv output, costs no more time
    than the traffic it saves: the conv output written once and read back once, 2 * 4 bytes per
    element, at the target's balance (BALANCE, FLOPs per byte; the pass manager puts it on the
    graph as ``graph.fuse_balance``, compile() and the bench from ``compiler.fuse_balance``):
    - GPU: the H200's ~67 TFLOP/s fp32 / 4.8 TB/s HBM ~ 14. 3x3/2 fuses after anchors of
      F <= 90 FLOPs (a 1x1 conv over <= 44 channels, a 3x3 over 3 input channels).
    - C: 4. The conv plane of one item is written and read back through the caches (ShuffleNetV2's
      conv1 output, 1.2 MB, stays in L2/L3), so the round trip saves little, and a fused kernel
      recomputing 1.25 x 54 FLOPs per output lost on both CPUs measured: ShuffleNetV2's conv1 +
      3x3/2 max pool 0.71-0.77x, SqueezeNet 1.1's 0.92-0.98x of their members apart (Zen 4,
      2 cores, docs/fusion.md). 3x3/2 fuses on C only after anchors of F <= 25 FLOPs.
So 2x2/2 always fuses; 3x3/1 never. Each refusal is recorded with its numbers.

Every producer -> consumer edge left unfused gets its reason in ``graph.fusion.why_not`` as a
(producer, consumer, reason) WhyNot, with the original node names (cnncc/contracts.py).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import sympy

from .. import ops
from ..contracts import FusionNotes, GroupNotes, WhyNot
from ..ir import Graph, Node, external_inputs
from .base import note, register_pass, rename_output
from .traffic import annotate_group


def _has(op: str, trait: str) -> bool:
    """Whether registry operator ``op`` carries ``trait`` (False for "fused" and unknown names)."""
    opdef = ops.REGISTRY.get(op)
    return opdef is not None and opdef.has(trait)


def _is_binary(op: str) -> bool:
    """An epilogue op with a second operand (add/sub/mul/div): it fuses when that operand has the
    group's shape, and through its second operand only when it is COMMUTATIVE."""
    return _has(op, ops.EPILOGUE) and ops.get(op).arity == (2, 2)


MAX_RECOMPUTE = 4.0
#: FLOPs one byte of saved traffic is worth, per target family (the module docstring says why)
BALANCE = {"cuda": 14.0, "c": 4.0}


@dataclass
class Chain:
    """A group being grown: members (graph nodes), which operand each entered through."""

    kind: str
    members: list[Node]
    swapped: set[str] = field(default_factory=set)   # commutative members entered via operand 1
    stop: dict[tuple[str, str], str] = field(default_factory=dict)
    recompute: float = 1.0

    @property
    def last(self) -> Node:
        return self.members[-1]

    @property
    def closed(self) -> str | None:
        op = self.last.op
        if _has(op, ops.POOL):
            return f"the group ends with pool {self.last.name}: nothing fuses after a pool"
        if _has(op, ops.GROUP_TAIL):
            return f"the group ends with {op} {self.last.name}"
        return None


def is_elementwise_member(op: str) -> bool:
    return _has(op, ops.EPILOGUE)


def _shape_eq(a, b) -> bool:
    if tuple(a) == tuple(b):
        return True
    return len(a) == len(b) and all(sympy.simplify(sympy.sympify(x) - sympy.sympify(y)) == 0 for x, y in zip(a, b))


def _fmt(t) -> str:
    return "x".join(str(v) for v in t) if len(set(t)) > 1 else str(t[0])


def pool_recompute(graph: Graph, anchor: Node, producer: Node, pool: Node) -> tuple[float, str | None]:
    """(recompute factor, reason not to fuse or None) for ``pool`` after the chain of ``anchor``."""
    geo = ops.pool_geometry(pool, producer.type)
    r = math.prod(k / s for k, s in zip(geo["kernel"], geo["stride"]))
    if r <= 1:
        return r, None
    where = f"pool kernel {_fmt(geo['kernel'])} stride {_fmt(geo['stride'])}"
    if r > MAX_RECOMPUTE:
        return r, f"{where}: recompute {r:g}x > limit {MAX_RECOMPUTE:g}x"
    in_types = [graph[i].type for i in anchor.inputs]
    cost = ops._cost(anchor, in_types, anchor.type)
    per_output = sympy.simplify(cost["flops"] / anchor.type.numel())
    if not per_output.is_number:
        return r, f"{where}: recompute {r:g}x with a symbolic conv cost"
    extra = (r - 1) * float(per_output)
    saved = 2 * anchor.type.itemsize
    balance = graph.fuse_balance or BALANCE["cuda"]
    if extra > balance * saved:
        return r, (f"{where}: recompute {r:g}x adds {extra:.0f} FLOPs per conv output > "
                   f"{balance * saved:.0f} that the {saved} bytes saved are worth at {balance:g} FLOP/byte")
    return r, None


def member_reason(graph: Graph, chain: Chain, cur: Node, c: Node, anchors_on: bool = True) -> str | None:
    """Why ``c`` cannot join ``chain`` after ``cur`` (None: it can)."""
    if _has(c.op, ops.ANCHOR):
        return f"{c.name} is a {c.op}: every anchor starts its own group"
    if not (is_elementwise_member(c.op) or _has(c.op, ops.POOL) or _has(c.op, ops.GROUP_TAIL)):
        return f"operator {c.op} has no fused form"
    if chain.closed:
        return chain.closed
    if _has(c.op, ops.POOL):
        if chain.kind == "elementwise":
            return (f"anchor fusion is off at this opt level, so {c.name} cannot join a conv group"
                    if not anchors_on else f"{c.op} fuses only at the end of a conv group, not after {cur.op}")
        if chain.kind not in ("conv", "conv_transpose"):
            return f"{c.op} cannot follow a {chain.kind} layer"
        r, reason = pool_recompute(graph, chain.members[0], cur, c)
        return reason
    if _has(c.op, ops.GROUP_TAIL):
        if chain.kind != "dense":
            return f"{c.op} fuses only as the last op after a dense layer"
        axis = int(c.attrs.get("axis", 1)) % max(cur.type.rank, 1)
        if axis != cur.type.rank - 1:
            return f"{c.op} over axis {axis} is not the dense layer's feature axis"
        return None
    if not is_elementwise_member(c.op):
        return f"operator {c.op} has no fused form"
    if _is_binary(c.op):
        a, b = c.inputs
        if a == b:
            return f"{c.name} reads {cur.name} twice"
        if b == cur.name and not _has(c.op, ops.COMMUTATIVE):
            return f"{c.name} ({c.op}) reads {cur.name} as its second operand"
        other = b if a == cur.name else a
        if not _shape_eq(graph[other].type.shape, c.type.shape):
            return f"{c.name}'s other operand {other} is broadcast {tuple(graph[other].type.shape)}"
    if not _shape_eq(c.type.shape, cur.type.shape):
        return f"{c.name} broadcasts {cur.name} to a larger shape"
    return None


def grow(graph: Graph, chain: Chain, claimed: dict[str, int], anchors_on: bool = True) -> Chain:
    """Extend ``chain`` along single readers while member_reason allows; record why it stopped."""
    while True:
        cur = chain.last
        readers = graph.consumers(cur.name)
        if cur.name in graph.outputs:
            for r in readers:
                chain.stop[(cur.name, r.name)] = f"{cur.name} is a graph output (it must reach memory)"
            return chain
        if len(readers) != 1:
            names = ", ".join(r.name for r in readers)
            for r in readers:
                chain.stop[(cur.name, r.name)] = f"{cur.name} feeds {len(readers)} consumers: {names}"
            return chain
        c = readers[0]
        reason = member_reason(graph, chain, cur, c, anchors_on)
        if reason is None and c.name in claimed:
            reason = f"{c.name} already belongs to another group"
        if reason is not None:
            chain.stop[(cur.name, c.name)] = reason
            return chain
        if _has(c.op, ops.COMMUTATIVE) and c.inputs[0] != cur.name:
            chain.swapped.add(c.name)
        chain.members.append(c)


def _truncate(chain: Chain, at: Node, reason: str) -> None:
    i = [m.name for m in chain.members].index(at.name)
    chain.members = chain.members[:i]
    chain.swapped = {s for s in chain.swapped if s in {m.name for m in chain.members}}
    chain.stop = {(chain.last.name, at.name): reason}


def resolve_conflicts(graph: Graph, chains: list[Chain]) -> None:
    """Two anchor chains can reach one binary op through its two operands: operand 0 wins."""
    for node in graph:
        holders = [c for c in chains if any(m.name == node.name for m in c.members)]
        if len(holders) < 2:
            continue
        winner = next(c for c in holders if node.name not in c.swapped)
        for c in holders:
            if c is not winner:
                _truncate(c, node, f"{node.name} joins the group of {winner.members[0].name} "
                                   f"(its first operand {node.inputs[0]})")


def generic_reason(graph: Graph, p: Node, c: Node, anchors_on: bool) -> str:
    """The reason for an edge no chain walk looked at (its producer is in no chain)."""
    readers = graph.consumers(p.name)
    if p.name in graph.outputs:
        return f"{p.name} is a graph output (it must reach memory)"
    if len(readers) > 1:
        names = ", ".join(r.name for r in readers)
        return f"{p.name} feeds {len(readers)} consumers: {names}"
    if _has(c.op, ops.ANCHOR):
        return f"{c.name} is a {c.op}: every anchor starts its own group"
    if not (is_elementwise_member(c.op) or _has(c.op, ops.POOL) or _has(c.op, ops.GROUP_TAIL)):
        return f"operator {c.op} has no fused form"
    if _has(p.op, ops.ANCHOR) and not anchors_on:
        return "anchor fusion (conv/dense epilogues) runs at opt level 2"
    if _has(p.op, ops.POOL):
        return f"{p.name} ({p.op}) is in no conv group; a pool can only end one"
    if _has(p.op, ops.GROUP_TAIL):
        return f"{p.op} ends a group"
    if not is_elementwise_member(p.op) and not _has(p.op, ops.ANCHOR):
        return f"operator {p.op} has no fused form"
    return member_reason(graph, Chain("elementwise", [p]), p, c, anchors_on) or "not fused"


def _chains(graph: Graph, anchors_on: bool) -> list[Chain]:
    claimed: dict[str, int] = {}
    chains: list[Chain] = []
    if anchors_on:
        for node in graph:
            if _has(node.op, ops.ANCHOR):
                chains.append(grow(graph, Chain(ops.get(node.op).kernel, [node]), {}))
        resolve_conflicts(graph, chains)
        for i, ch in enumerate(chains):
            for m in ch.members:
                claimed[m.name] = i
    for node in graph:
        if node.name in claimed or not is_elementwise_member(node.op):
            continue
        ch = grow(graph, Chain("elementwise", [node]), claimed, anchors_on)
        chains.append(ch)
        for m in ch.members:
            claimed[m.name] = len(chains) - 1
    for ch in chains:
        if _has(ch.last.op, ops.POOL):
            ch.recompute = pool_recompute(graph, ch.members[0], ch.members[-2], ch.last)[0]
    return chains


def _member_copy(node: Node, swapped: bool) -> Node:
    m = copy.copy(node)
    m.inputs = list(reversed(node.inputs)) if swapped else list(node.inputs)
    m.attrs = dict(node.attrs)
    return m


def fuse_graph(graph: Graph, anchors_on: bool = True) -> Graph:
    chains = [c for c in _chains(graph, anchors_on)]
    groups = [c for c in chains if len(c.members) >= 2]
    group_of = {m.name: g for g in groups for m in g.members}
    why_not: list[WhyNot] = []
    stops = {e: r for c in chains for e, r in c.stop.items()}
    for p in graph:
        if p.op in ("input", "constant"):
            continue
        for c in graph.consumers(p.name):
            if p.name in group_of and group_of.get(c.name) is group_of[p.name]:
                continue
            reason = stops.get((p.name, c.name)) or generic_reason(graph, p, c, anchors_on)
            why_not.append(WhyNot(p.name, c.name, reason))

    out = Graph(graph.name)
    out.carry_records(graph).notes = graph.notes
    renamed: dict[str, str] = {}
    for node in graph:
        g = group_of.get(node.name)
        if g is None:
            new = copy.copy(node)
            new.inputs = [renamed.get(i, i) for i in node.inputs]
            out.add(new)
            continue
        if node is not g.last:
            continue
        members = [_member_copy(m, m.name in g.swapped) for m in g.members]
        for m in members:
            m.inputs = [renamed.get(i, i) for i in m.inputs]
        name = out.unique_name("_".join(m.name for m in members))   # C spelling: cnncc/names.py
        fused = Node(name, "fused", external_inputs(members), {"kind": g.kind}, {}, members[-1].type, members)
        fused.group = GroupNotes(recompute=g.recompute)
        out.add(fused)
        annotate_group(out, fused)
        renamed[node.name] = name
        note(out, f"{name}: {' + '.join(m.op for m in members)}", count=f"{g.kind} groups")
    out.inputs = list(graph.inputs)
    out.outputs = [renamed.get(o, o) for o in graph.outputs]
    for old in graph.outputs:
        if old in renamed:
            rename_output(out, old, renamed[old])
    out.fusion = FusionNotes(tuple(why_not), dict(renamed))
    return out


@register_pass("fuse")
def fuse(graph: Graph) -> Graph:
    """Anchor groups (conv/dense + epilogue + pool) and elementwise groups."""
    return fuse_graph(graph, anchors_on=True)


@register_pass("fuse_elementwise")
def fuse_elementwise(graph: Graph) -> Graph:
    """Only elementwise groups (opt level 1): every anchor stays one kernel of its own."""
    return fuse_graph(graph, anchors_on=False)
