"""The IR: a Graph of named Nodes over a networkx.DiGraph, every tensor typed with sympy shapes.

Each node produces exactly one tensor, named like the node. ``Node.inputs`` (ordered producer
names) is the source of truth; the DiGraph mirrors it so graph algorithms come from networkx.
Weights live on the node that uses them (``Node.params``), so parameter counts, BN folding and
codegen find them without chasing constant nodes.
"""
from __future__ import annotations

import copy as _copy
from typing import Any, Iterator

import networkx as nx
import sympy

from . import ops
from .contracts import FusionNotes, GraphOrigin, LayoutPlan, MemoryPlan, PassNotes, Traffic
from .errors import ModelError
from .node import N, RUNNING_STATISTICS, Node, TensorType, format_shape, sym  # noqa: F401  (re-exported)


class Graph:
    """A dataflow graph. Iterating yields nodes in a deterministic topological order."""

    def __init__(self, name: str = "model"):
        self.name = name
        self.nx = nx.DiGraph()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._order = 0
        #: filled by the pass manager: list of per-pass records (see cnncc.passes.manager)
        self.pass_report: Any = None
        # what stages leave for later ones (cnncc/contracts.py says who writes and who reads each)
        self.origin = GraphOrigin()
        self.renamed: dict[str, str] = {}
        self.notes = PassNotes()
        self.opt_level: int | None = None
        self.fusion: FusionNotes | None = None
        self.memory_plan: MemoryPlan | None = None
        self.traffic: Traffic | None = None
        self.layout: LayoutPlan = LayoutPlan()
        #: FLOPs a byte of saved traffic is worth to the fuse pass's recompute rule (set by the pass
        #: manager for the target; None: the GPU's, passes/fuse.py BALANCE)
        self.fuse_balance: float | None = None

    #: the graph-level records a copy of the graph's structure carries along (snapshots, fuse)
    RECORDS = ("origin", "renamed", "opt_level", "fusion", "memory_plan", "traffic", "layout", "fuse_balance")

    def carry_records(self, other: "Graph") -> "Graph":
        """Take ``other``'s graph-level records (shared: records are replaced, never edited)."""
        for k in self.RECORDS:
            setattr(self, k, getattr(other, k))
        return self

    @property
    def meta(self):
        raise AttributeError("Graph.meta is gone: stages share typed records (graph.origin, renamed, fusion, "
                             "memory_plan, traffic, opt_level, notes; see cnncc/contracts.py)")

    # -- construction ----------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        if node.name in self.nx:
            raise ModelError(f"a node named '{node.name}' already exists", node=node.name,
                             fix="give every layer a unique name")
        self.nx.add_node(node.name, node=node, order=self._order)
        self._order += 1
        self._link(node)
        if node.op == "input" and node.name not in self.inputs:
            self.inputs.append(node.name)
        return node

    def _link(self, node: Node) -> None:
        for src in list(self.nx.predecessors(node.name)):
            self.nx.remove_edge(src, node.name)
        for src in node.inputs:
            if src not in self.nx:
                raise ModelError(f"input '{src}' does not exist", node=node.name, op=node.op,
                                 fix="connect the layer to an existing tensor")
            self.nx.add_edge(src, node.name)

    def replace_node(self, node: Node) -> Node:
        """Put ``node`` in the place of the node with its name: same position in the order, the
        edges redrawn from ``node.inputs`` (a folded constant, a batch norm become scale_shift)."""
        if node.name not in self.nx:
            raise KeyError(f"no node named '{node.name}' in graph '{self.name}'")
        self.nx.nodes[node.name]["node"] = node
        self._link(node)
        return node

    def set_inputs(self, name: str, inputs: list[str]) -> None:
        node = self[name]
        node.inputs = list(inputs)
        self._link(node)

    def remove(self, name: str) -> None:
        if any(True for _ in self.nx.successors(name)):
            users = ", ".join(self.nx.successors(name))
            raise ModelError(f"cannot remove '{name}': still read by {users}", node=name)
        self.nx.remove_node(name)
        self.inputs = [i for i in self.inputs if i != name]

    def replace_uses(self, old: str, new: str, *, exclude: set[str] | frozenset = frozenset()) -> None:
        """Make every consumer of ``old`` (and the graph outputs) read ``new`` instead."""
        for user in list(self.nx.successors(old)):
            if user in exclude:
                continue
            node = self[user]
            self.set_inputs(user, [new if i == old else i for i in node.inputs])
        self.outputs = [new if o == old else o for o in self.outputs]

    def rename(self, old: str, new: str) -> None:
        node = self[old]
        users = list(self.nx.successors(old))
        order = self.nx.nodes[old]["order"]
        self.nx = nx.relabel_nodes(self.nx, {old: new})
        node.name = new
        self.nx.nodes[new]["order"] = order
        for u in users:
            self[u].inputs = [new if i == old else i for i in self[u].inputs]
        self.outputs = [new if o == old else o for o in self.outputs]
        self.inputs = [new if o == old else o for o in self.inputs]

    def unique_name(self, base: str) -> str:
        if base not in self.nx:
            return base
        i = 1
        while f"{base}_{i}" in self.nx:
            i += 1
        return f"{base}_{i}"

    # -- queries ---------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Node:
        try:
            return self.nx.nodes[name]["node"]
        except KeyError:
            raise KeyError(f"no node named '{name}' in graph '{self.name}'") from None

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def __iter__(self) -> Iterator[Node]:
        if not nx.is_directed_acyclic_graph(self.nx):
            self._raise_cycle()
        order = self.nx.nodes
        for name in nx.lexicographical_topological_sort(self.nx, key=lambda n: order[n]["order"]):
            yield order[name]["node"]

    def nodes(self) -> list[Node]:
        return list(self)

    def consumers(self, name: str) -> list[Node]:
        """The nodes that read ``name``, in the graph's order (deterministic)."""
        order = self.nx.nodes
        return [self[s] for s in sorted(self.nx.successors(name), key=lambda s: order[s]["order"])]

    def ancestors(self, name: str) -> set[str]:
        """Every node ``name`` depends on, directly or not."""
        return nx.ancestors(self.nx, name)

    def producers(self, name: str) -> list[Node]:
        return [self[p] for p in self[name].inputs]

    def copy(self) -> "Graph":
        """A deep copy (weights too) so a snapshot never changes under a later pass."""
        return _copy.deepcopy(self)

    # -- checks ----------------------------------------------------------------------------
    def _raise_cycle(self):
        cycle = nx.find_cycle(self.nx)
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise ModelError(f"the graph has a cycle: {path}", node=cycle[0][0], op=self[cycle[0][0]].op,
                         fix="a layer cannot (indirectly) consume its own output; break the loop")

    def verify(self) -> "Graph":
        """Acyclic, inputs exist, arity and attributes valid, stored shapes equal inferred ones;
        a fused group also keeps the group contract (docs/DESIGN.md, B: ``check_group``).
        Read-only: the one verifier of plain and fused nodes, run by the manager after every pass."""
        if not nx.is_directed_acyclic_graph(self.nx):
            self._raise_cycle()
        for out in self.outputs:
            if out not in self.nx:
                raise ModelError(f"graph output '{out}' is not a node", fix="name an existing layer as output")
        for node in self:
            for src in node.inputs:
                if src not in self.nx:
                    raise ModelError(f"input '{src}' does not exist", node=node.name, op=node.op)
            if node.op == "fused":
                check_group(self, node)
                # every member checked and inferred in order, nothing stored
                members = fused_types(self, node)
                stored = [m.type for m in node.members]
                if members != stored and all(t is not None for t in stored):
                    _group_fails(node, "a member's stored type differs from the inferred one")
            else:
                opdef = ops.get(node.op, node=node.name)
                opdef.check(node)
            if node.type is not None:
                inferred = members[-1] if node.op == "fused" else \
                    opdef.infer(node, [self[i].type for i in node.inputs])
                if tuple(sympy.simplify(a - b) for a, b in zip(inferred.shape, node.type.shape)) != (0,) * len(inferred.shape) \
                        or len(inferred.shape) != len(node.type.shape):
                    raise ModelError(f"stored shape {format_shape(node.type.shape)} differs from inferred "
                                     f"{format_shape(inferred.shape)}", node=node.name, op=node.op)
        return self

    def infer_shapes(self) -> "Graph":
        """Fill ``node.type`` for every node from its inputs with each operator's sympy rule."""
        from . import ops

        for node in self:
            if node.op == "fused":
                infer_fused(self, node)
                continue
            opdef = ops.get(node.op, node=node.name)
            opdef.check(node)
            node.type = opdef.infer(node, [self[i].type for i in node.inputs])
        return self

    # -- totals ----------------------------------------------------------------------------
    def param_count(self) -> int:
        return sum(n.param_count() for n in self)

    def flops(self) -> sympy.Expr:
        from .cost import node_cost

        return sympy.expand(sum((node_cost(self, n)["flops"] for n in self), sympy.Integer(0)))

    def input_types(self) -> dict[str, TensorType]:
        return {i: self[i].type for i in self.inputs}

    # -- printing --------------------------------------------------------------------------
    def __str__(self) -> str:
        """One line per node, like torch.fx's graph printout."""
        lines = [f"graph {self.name}({', '.join(self.inputs)}):"]
        for n in self:
            shown = {k: v for k, v in n.attrs.items()}
            attrs = ", ".join(f"{k}={v!r}" for k, v in shown.items())
            args = ", ".join(n.inputs)
            ty = f" : {n.type}" if n.type else ""
            members = f" [{' + '.join(m.name for m in n.members)}]" if n.members else ""
            params = (" {" + ", ".join(f"{k}{list(v.shape)}" for k, v in n.params.items()) + "}") if n.params else ""
            lines.append(f"  %{n.name}{ty} = {n.op}{members}({args}{', ' if args and attrs else ''}{attrs}){params}")
        lines.append(f"  return {', '.join('%' + o for o in self.outputs)}")
        return "\n".join(lines)

    def summary(self, batch: int | None = None) -> str:
        from .summary import summary_table

        return summary_table(self, batch=batch)


def external_inputs(members: list[Node]) -> list[str]:
    """Inputs of a chain that no member produces, in order of first use, without repeats."""
    inside = {m.name for m in members}
    out: list[str] = []
    for m in members:
        for i in m.inputs:
            if i not in inside and i not in out:
                out.append(i)
    return out


def _group_fails(node: Node, msg: str):
    raise ModelError(f"fused group breaks the group contract: {msg}", node=node.name, op="fused",
                     fix="this is a bug in a cnncc pass; please report it with the model")


def check_group(graph: Graph, node: Node) -> None:
    """The group contract (docs/DESIGN.md, B): a chain of members, each reading the previous one
    as its first input and no member as a second operand, external inputs listed in order of
    first use, an anchor (or an elementwise op) first. A violation is a compiler bug, so the
    message says which group and which rule."""
    ms = node.members or []
    if not ms:
        _group_fails(node, "it has no members")
    kind = node.attrs.get("kind")
    first = ms[0]
    if kind == "elementwise":
        if not ops.get(first.op).has(ops.ELEMENTWISE):
            _group_fails(node, f"kind elementwise but the first member {first.name} is {first.op}")
    elif not (first.op in ops.REGISTRY and ops.get(first.op).has(ops.ANCHOR) and ops.get(first.op).kernel == kind):
        _group_fails(node, f"kind {kind!r} but the anchor {first.name} is {first.op}")
    names = {x.name for x in ms}
    for prev, m in zip(ms, ms[1:]):
        if not m.inputs or m.inputs[0] != prev.name:
            _group_fails(node, f"member {m.name} does not read the previous member {prev.name} first")
        if any(i in names for i in m.inputs[1:]):
            _group_fails(node, f"member {m.name} reads a member as a second operand")
    ext = external_inputs(ms)
    if list(node.inputs) != ext:
        _group_fails(node, f"inputs {node.inputs} differ from the members' external inputs {ext}")


def fused_types(graph: Graph, node: Node) -> list[TensorType]:
    """The members' types of a fused group, inferred in order and stored nowhere (verifiers read
    them); the last is the group's output type."""
    local: dict[str, TensorType] = {}
    for m in node.members:
        in_types = [local[i] if i in local else graph[i].type for i in m.inputs]
        opdef = ops.get(m.op, node=m.name)
        opdef.check(m)
        local[m.name] = opdef.infer(m, in_types)
    return [local[m.name] for m in node.members]


def infer_fused(graph: Graph, node: Node) -> None:
    """Shape inference inside a fused group: members in order; the last member is the output."""
    for m, t in zip(node.members, fused_types(graph, node)):
        m.type = t
    node.type = node.members[-1].type
