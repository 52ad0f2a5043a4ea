"""Checks of the fused-group contract (docs/DESIGN.md, B), run by the manager after every pass.

Graph.verify() checks plain operators; a fused node is checked here: a chain of members, each
reading the previous one as its first input, external inputs listed in order of first use, and
an anchor (or an elementwise op) first. A violation is a compiler bug, so the message says which
group and which rule.
"""
from __future__ import annotations


from .. import ops
from ..errors import ModelError
from ..ir import Graph, Node, fused_types



def external_inputs(members: list[Node]) -> list[str]:
    """Inputs of a chain that no member produces, in order of first use, without repeats."""
    inside = {m.name for m in members}
    out: list[str] = []
    for m in members:
        for i in m.inputs:
            if i not in inside and i not in out:
                out.append(i)
    return out


def verify_fused(graph: Graph) -> None:
    for node in graph:
        if node.op != "fused":
            continue
        _check_group(graph, node)


def _fail(node: Node, msg: str):
    raise ModelError(f"fused group breaks the group contract: {msg}", node=node.name, op="fused",
                     fix="this is a bug in a cnncc pass; please report it with the model")


def _check_group(graph: Graph, node: Node) -> None:
    ms = node.members or []
    if not ms:
        _fail(node, "it has no members")
    kind = node.attrs.get("kind")
    first = ms[0]
    if kind == "elementwise":
        if not ops.get(first.op).has(ops.ELEMENTWISE):
            _fail(node, f"kind elementwise but the first member {first.name} is {first.op}")
    elif not (first.op in ops.REGISTRY and ops.get(first.op).has(ops.ANCHOR) and ops.get(first.op).kernel == kind):
        _fail(node, f"kind {kind!r} but the anchor {first.name} is {first.op}")
    for prev, m in zip(ms, ms[1:]):
        if not m.inputs or m.inputs[0] != prev.name:
            _fail(node, f"member {m.name} does not read the previous member {prev.name} first")
        if any(i in {x.name for x in ms} for i in m.inputs[1:]):
            _fail(node, f"member {m.name} reads a member as a second operand")
    ext = external_inputs(ms)
    if list(node.inputs) != ext:
        _fail(node, f"inputs {node.inputs} differ from the members' external inputs {ext}")
    for i in ext:
        if i not in graph:
            _fail(node, f"external input {i} is not a graph node")
    before = [m.type for m in ms]
    if fused_types(graph, node) != before and all(t is not None for t in before):   # read-only
        _fail(node, "a member's stored type differs from the inferred one")
