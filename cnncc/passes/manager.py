"""The PassManager: runs a pipeline of registered passes, verifying, timing and snapshotting each.

``optimize(graph)`` never touches the graph it is given: it works on a copy. After every pass the
graph is verified (``Graph.verify``: shapes, attributes, the fused-group contract), the wall time and the changes
the pass noted are recorded, and a snapshot is kept so ``cnncc inspect --after fuse`` can show
any step. Snapshots share weight arrays with the live graph (passes never edit arrays in place),
so keeping one per pass costs only the graph structure.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..contracts import LayoutPlan, PassNotes
from ..errors import CnnccError
from ..ir import Graph, Node
from .base import PASSES

# importing the pass modules registers them
from . import infer_shapes, fold_constants, eliminate_dead, fold_batchnorm, commute_pool, fuse, eliminate_concat  # noqa: F401,E402
from . import layout, plan_memory, traffic  # noqa: F401,E402

#: the pipeline of each optimization level (0: one kernel per operator, no rewriting at all)
PIPELINES: dict[int, list[str]] = {
    0: ["infer_shapes"],
    1: ["infer_shapes", "fold_constants", "eliminate_dead", "fold_batchnorm", "fuse_elementwise", "traffic"],
    2: ["infer_shapes", "fold_constants", "eliminate_dead", "fold_batchnorm", "commute_pool", "fuse", "layout",
        "eliminate_concat",
        "plan_memory", "traffic"],
}


@dataclass
class PassRecord:
    """What one pass did: node counts, wall time, the changes it noted, and the graph after it."""

    name: str
    nodes_before: int
    nodes_after: int
    seconds: float
    changes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    snapshot: Graph | None = None

    def summary(self) -> str:
        """'what changed' in one phrase: the counts a pass noted, else its first change."""
        if self.counts:
            return ", ".join(f"{v} {k}" for k, v in self.counts.items())
        if self.changes:
            more = f" (+{len(self.changes) - 1} more)" if len(self.changes) > 1 else ""
            return self.changes[0] + more
        return "no change"

    def line(self) -> str:
        return (f"{self.name:<18} {self.nodes_before:>5} -> {self.nodes_after:<5} nodes "
                f"{self.seconds * 1e3:>9.2f} ms  {self.summary()}")


class PassReport:
    """The per-pass records of one ``optimize`` run, in pipeline order; ``initial`` is the input."""

    def __init__(self, opt_level: int | None, initial: Graph):
        self.opt_level = opt_level
        self.initial = initial
        self.records: list[PassRecord] = []

    def __iter__(self) -> Iterator[PassRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, name: str | int) -> PassRecord:
        if isinstance(name, int):
            return self.records[name]
        for r in self.records:
            if r.name == name:
                return r
        raise CnnccError(f"no pass '{name}' in this pipeline (ran: {', '.join(r.name for r in self.records)})")

    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def snapshot(self, name: str) -> Graph:
        """The graph as it stood right after pass ``name`` (``"input"`` for the graph given)."""
        if name == "input":
            return self.initial
        return self[name].snapshot

    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    def __str__(self) -> str:
        head = f"{'pass':<18} {'nodes before -> after':<22} {'time':>8}  what changed"
        lines = [head, "-" * len(head)] + [r.line() for r in self.records]
        lines.append(f"{'total':<18} {'':<22} {self.total_seconds() * 1e3:>6.2f} ms")
        return "\n".join(lines)


def _copy_node(node: Node) -> Node:
    new = copy.copy(node)
    new.inputs, new.attrs, new.params = list(node.inputs), dict(node.attrs), dict(node.params)   # records: frozen, shared
    if node.members:
        new.members = [_copy_node(m) for m in node.members]
    return new


def snapshot(graph: Graph) -> Graph:
    """A structural copy sharing weight arrays and (immutable) types: cheap enough to keep one
    per pass. Passes replace arrays and records (cnncc/contracts.py), they never write into them."""
    out = Graph(graph.name)
    for node in graph:
        out.add(_copy_node(node))
    out.inputs, out.outputs = list(graph.inputs), list(graph.outputs)
    return out.carry_records(graph)


def pipeline_for(opt_level: int, passes: Iterable[str] | None = None, disable: Iterable[str] = ()) -> list[str]:
    """The pass names to run: ``passes`` if given (shape inference prepended), else the level's."""
    if passes is not None:
        names = list(passes)
        if "infer_shapes" not in names:
            names.insert(0, "infer_shapes")
    else:
        if opt_level not in PIPELINES:
            raise CnnccError(f"opt_level must be one of {sorted(PIPELINES)}, got {opt_level!r}")
        names = list(PIPELINES[opt_level])
    disable = list(disable or ())
    unknown = [n for n in names + disable if n not in PASSES]
    if unknown:
        raise CnnccError(f"unknown pass(es) {', '.join(unknown)}; known passes: {', '.join(PASSES)}")
    return [n for n in names if n not in disable]


def run_pass(graph: Graph, name: str) -> tuple[Graph, PassRecord]:
    """Run one registered pass on ``graph`` (in place), verify, and describe what it did."""
    before = len(graph)
    graph.notes = PassNotes()
    start = time.perf_counter()
    graph = PASSES[name](graph)
    seconds = time.perf_counter() - start
    graph.verify()      # plain and fused nodes, the group contract included
    notes, graph.notes = graph.notes, PassNotes()
    return graph, PassRecord(name, before, len(graph), seconds, notes.changes, notes.counts)


def optimize(graph: Graph, opt_level: int = 2, passes: Iterable[str] | None = None,
             disable: Iterable[str] = (), layout_vector: int = 0, fuse_balance: float | None = None,
             layout_register: int = 0) -> Graph:
    """Run the pipeline of ``opt_level`` (or exactly ``passes``) on a copy of ``graph``.

    ``layout_vector``: the floats per channel block the layout pass may store activations in
    (NCHW[V]c, passes/layout.py); compile() gives the C target's vector width, 0 keeps NCHW.
    ``layout_register``: the target's vector register in floats when the block is smaller
    (CNNCC_LAYOUT_BLOCK; 0: the same), ``LayoutPlan.register``.
    ``fuse_balance``: FLOPs per byte of saved traffic for the fuse pass's recompute rule
    (passes/fuse.py BALANCE; None: the GPU's); compile() gives its target's.
    Returns the optimized copy; ``result.pass_report`` holds one PassRecord per pass, each with
    a snapshot of the graph right after it."""
    names = pipeline_for(opt_level, passes, disable)
    work = snapshot(graph)   # weights shared: passes replace arrays, never write into them
    work.layout = LayoutPlan(vector=int(layout_vector), register=int(layout_register))
    work.fuse_balance = fuse_balance
    work.pass_report = None
    work.opt_level = opt_level if passes is None else None
    report = PassReport(opt_level if passes is None else None, snapshot(work))
    for name in names:
        work, record = run_pass(work, name)
        record.snapshot = snapshot(work)
        report.records.append(record)
    work.pass_report = report
    return work
