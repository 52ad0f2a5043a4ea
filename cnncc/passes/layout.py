"""layout: activations in the blocked layout NCHW[V]c between the kernels that have a blocked form.

onnxruntime's CPU speed comes from one idea (its NCHWc transformer): a convolution reads and
writes its activations as ``[C/V][H][W][V]`` per batch item, V = floats per vector register, so
its register tile of pixels x output channels is stored with one vector store per pixel and
channel block, and the next convolution reads V input channels of a pixel from one cache line.
This pass decides which tensors live that way; the C kernels (codegen/c_conv.py and the
templates) read and write whatever layout their tensors have (``TensorRef.block``).

The manager asks for it with a vector width (``optimize(..., layout_vector=V)``, compile() passes
the C target's; 0 = every tensor NCHW, the pass does nothing). A tensor is blocked when

* it is 4-D with the batch N leading, ``C % V == 0`` (channels are not padded: the 3-channel
  image and every tensor with C % V != 0 stay NCHW) and more than one position per channel
  (a 1x1 plane is laid out alike either way: global pooling's output is plain NCHW);
* it is not a graph output (the user gets NCHW);
* its producer has a blocked kernel: an ungrouped 2-D convolution (grouped ones keep their NCHW
  kernels; so does a 1x1 one with at most ``POINTWISE_NCHW_MAX_COUT`` outputs
  reading a tensor that stays NCHW) with its fused epilogue and pool, or a depthwise one (one
  channel per group) with its epilogue and no pool; elementwise kernels (when one of their
  same-shape inputs is blocked); max/avg pooling (when its input is); a channel concat (when
  every part is);
* some consumer reads it blocked (else the producer writes NCHW and no reorder is needed).

Every blocked-layout kernel reads either layout for its inputs (a convolution stages its input,
an operand of the output's shape is addressed in its own layout), so a reorder is inserted only
where a blocked tensor meets a kernel without a blocked form (or is broadcast): flatten/reshape before a dense layer, a grouped
convolution, a concat whose parts are not all blocked, anything else. One reorder per tensor
serves all such consumers. The graph's ``layout`` record (contracts.LayoutPlan) lists the
blocked tensors and every reorder with its reason; ``cnncc inspect`` prints them.
"""
from __future__ import annotations

from dataclasses import replace

import sympy

from .. import ops
from ..contracts import LayoutPlan, Reorder
from ..ir import N, Graph, Node
from .base import note, register_pass

#: the pooling operators with a blocked kernel (templates/c/pool.c.j2)
BLOCKED_POOLS = ("max_pool2d", "avg_pool2d")


def blockable(node: Node, vector: int) -> bool:
    """Can ``node``'s tensor be stored NCHW[V]c: 4-D, batch N leading, C % V == 0, a plane of more
    than one position."""
    t = node.type
    if t is None or t.rank != 4 or t.dtype != "float32":
        return False
    dims = [sympy.sympify(d) for d in t.shape]
    if sympy.simplify(dims[0] - N) != 0 or not all(d.is_number for d in dims[1:]):
        return False
    c, h, w = (int(d) for d in dims[1:])
    return c % vector == 0 and h * w > 1


def conv_anchor(node: Node) -> Node | None:
    """The convolution that anchors ``node`` (itself, or a fused group's first member)."""
    anchor = node.members[0] if node.op == "fused" and node.members else node
    if node.op == "fused" and node.attrs.get("kind") != "conv":
        return None
    return anchor if ops.get(anchor.op).kernel == "conv" else None


def kind(graph: Graph, node: Node, vector: int) -> tuple[str, str]:
    """How a kernel treats layouts: ("conv", _) writes blocked and reads either; ("follow", _)
    elementwise, pool and concat: blocked when their inputs are; ("reads", _) global pooling:
    reads either, writes a 1x1 plane; ("none", why) NCHW only."""
    if node.op in ("input", "constant"):
        return "none", "a graph input or constant"
    anchor = conv_anchor(node)
    if anchor is not None:
        if anchor.type.rank != 4:
            return "none", f"{anchor.name} is not a 2-D convolution"
        groups = int(anchor.attrs.get("groups", 1))
        if groups > 1:
            pooled = any(ops.get(m.op).has(ops.POOL) for m in node.members or [])
            x = graph[anchor.inputs[0]].type
            if groups == int(x.shape[1]) == int(anchor.type.shape[1]) and not pooled and vector >= 2:
                return "conv", ""      # c_conv's "depthwise" kind: channel blocks in the lanes
            ci_g, co_g = int(x.shape[1]) // groups, int(anchor.type.shape[1]) // groups
            register = graph.layout.register or vector
            if not pooled and vector >= 2 and ci_g % vector == 0 and co_g % register == 0:
                return "conv", ""      # groups of whole channel blocks: c_conv's "rowtiles" (grouped_in_place)
            why = ("with a fused pool" if pooled else "blocks of 1 channel" if vector < 2 else
                   f"{ci_g} -> {co_g} channels a group: not whole blocks of {vector} in and {register} out")
            return "none", (f"{anchor.name} is a grouped convolution (groups {groups}, {why}): its kernels "
                            f"read and write NCHW")
        x = graph[anchor.inputs[0]]
        if ops.pointwise(anchor, x.type) and _nchw_only(graph, x, vector) \
                and int(anchor.type.shape[1]) <= POINTWISE_NCHW_MAX_COUT:
            return "none", (f"{anchor.name} is a 1x1 convolution reading {anchor.inputs[0]}, which stays NCHW: the "
                            f"GEMM on its NCHW planes (c_conv 'pixels') outruns a blocked copy")
        return "conv", ""
    if node.op == "fused":
        if node.attrs.get("kind") == "elementwise" and not any(ops.get(m.op).has(ops.POOL) for m in node.members):
            return "follow", ""
        return "none", f"{node.name} ({node.attrs.get('kind')} group) has no blocked kernel"
    opdef = ops.get(node.op)
    if opdef.has(ops.VIEW):
        return "none", f"{node.name} ({node.op}) reads the NCHW order (a view, e.g. before a dense layer)"
    if opdef.kernel == "elementwise":
        return "follow", ""
    if node.op in BLOCKED_POOLS:
        return "follow", ""
    if opdef.kernel == "global_pool":
        return "reads", ""
    if node.op == "concat" and node.type.rank == 4 and int(node.attrs.get("axis", 1)) % 4 == 1:
        return "follow", ""
    return "none", f"{node.name} ({node.op}) has no blocked kernel"


#: a 1x1 convolution reading a tensor that stays NCHW (a grouped convolution's; a depthwise one's
#: since its blocked kernel only where its channels do not block or it has a fused pool) with at
#: most this many output channels keeps NCHW too: c_conv's ``pixels`` GEMM reads the planes as they
#: are, while a blocked output needs the ``channels`` kernel and its per-item copy of the input,
#: which few output channels do not amortise. Measured (2-core AVX-512 Xeon, batch 1, 2026-12-03):
#: MobileNetV2 6.50 -> 5.53 ms, its fused project/expand groups no longer slower than their
#: members at opt 0 (4 -> 0-1 of 45); ResNeXt-50 39.3 -> 38.1 ms. With 256 (ResNeXt's conv3
#: too) ResNeXt-50 ran 39.8 ms, with no limit 46.9 (the whole network NCHW). Those figures predate
#: c_conv.nchw_in_place (a blocked output no longer needs the copy: the rowtiles kernel reads the
#: NCHW planes in place); the limit has not been measured again since. MobileNetV2's figures
#: predate the depthwise kind too: its projections now read blocked depthwise outputs.
POINTWISE_NCHW_MAX_COUT = 128


def _nchw_only(graph: Graph, producer: Node, vector: int) -> bool:
    """``producer``'s tensor is NCHW whatever the pass decides: a kernel without a blocked form
    (a grouped or depthwise convolution, ...), or a tensor that cannot be blocked."""
    if not blockable(producer, vector):
        return True
    k, _ = kind(graph, producer, vector)
    return k == "none"


def _same_shape_inputs(graph: Graph, node: Node) -> list[str]:
    return [i for i in dict.fromkeys(node.inputs) if graph[i].type is not None and graph[i].type.shape == node.type.shape]


def decide(graph: Graph, vector: int) -> set[str]:
    """The tensors stored blocked (see the module docstring), to a fixed point: a convolution's
    output nobody reads blocked goes back to NCHW, which may turn its followers back too."""
    kinds = {n.name: kind(graph, n, vector)[0] for n in graph}
    candidates = {n.name for n in graph if n.name not in graph.outputs and blockable(n, vector)
                  and kinds[n.name] != "none" and kinds[n.name] != "reads"}
    dropped: set[str] = set()
    while True:
        blocked: set[str] = set()
        for node in graph:
            name = node.name
            if name not in candidates or name in dropped:
                continue
            k = kinds[name]
            if k == "conv":
                blocked.add(name)
            elif node.op == "concat":
                if all(i in blocked for i in node.inputs):
                    blocked.add(name)
            elif k == "follow":
                same = _same_shape_inputs(graph, node)
                if node.op in BLOCKED_POOLS:
                    if node.inputs[0] in blocked:
                        blocked.add(name)
                elif any(i in blocked for i in same):
                    blocked.add(name)
        useless = {t for t in blocked
                   if not any(_reads_blocked(graph, c, t, blocked, kinds) for c in graph.consumers(t))}
        if not useless:
            return blocked
        dropped |= useless


def _reads_blocked(graph: Graph, consumer: Node, tensor: str, blocked: set[str], kinds: dict[str, str]) -> bool:
    """Does ``consumer`` read ``tensor`` in the blocked layout without a reorder? A convolution
    stages its input from either layout; an operand (a residual add of a conv group, an input of
    an elementwise kernel) is read in its own layout at the output's coordinates, so it must have
    the output's shape (no broadcasting of a blocked tensor)."""
    k = kinds[consumer.name]
    shape = graph[tensor].type.shape
    if k == "reads":
        return True
    if k == "conv":
        anchor = conv_anchor(consumer)
        return tensor == anchor.inputs[0] or shape == anchor.type.shape
    if k == "follow":
        if consumer.op == "concat" or consumer.op in BLOCKED_POOLS:
            return consumer.name in blocked
        return shape == consumer.type.shape
    return False


def _rewire(node: Node, old: str, new: str) -> None:
    """``node`` (and its fused members) read ``new`` where they read ``old``."""
    for m in node.members or []:
        m.inputs = [new if i == old else i for i in m.inputs]


@register_pass("layout")
def layout(graph: Graph) -> Graph:
    vector = graph.layout.vector
    if not vector:
        note(graph, "every tensor NCHW (no vector width: layout 'nchw', or not the C target)")
        return graph
    blocked = decide(graph, vector)
    kinds = {n.name: kind(graph, n, vector) for n in graph}
    reorders: list[Reorder] = []
    for name in [n.name for n in graph if n.name in blocked]:
        needs = [c for c in graph.consumers(name) if not _reads_blocked(graph, c, name, blocked,
                                                                         {k: v[0] for k, v in kinds.items()})]
        if not needs:
            continue
        reasons = []
        for c in needs:
            k, why = kinds[c.name]
            if c.op == "concat" or c.op in BLOCKED_POOLS:
                why = f"{c.name} ({c.op}) stays NCHW: " + ("not every part is blocked" if c.op == "concat"
                                                             else "its output is NCHW")
            reasons.append(why)
        r = graph.add(Node(graph.unique_name(f"{name}__nchw"), "reorder", [name], {"to": "nchw", "vector": vector},
                           type=graph[name].type))
        for c in needs:
            graph.set_inputs(c.name, [r.name if i == name else i for i in c.inputs])
            _rewire(c, name, r.name)
        why = "; ".join(dict.fromkeys(reasons))
        reorders.append(Reorder(r.name, name, "nchw", tuple(c.name for c in needs), why))
        note(graph, f"{r.name}: {name} back to NCHW for {', '.join(c.name for c in needs)}: {why}",
             count="reorders to NCHW")
    for name in sorted(blocked):
        note(graph, f"{name} ({graph[name].op}) is NCHW{vector}c", count=f"tensors NCHW{vector}c")
    graph.layout = replace(graph.layout, blocked=frozenset(blocked), reorders=tuple(reorders))
    return graph
