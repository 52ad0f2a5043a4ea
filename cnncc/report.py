"""Human-facing views of a graph: the summary table (cnncc/summary.py) and the inspect views."""
from __future__ import annotations

import sympy

from .ir import N, Graph
from .summary import _fmt_int, summary_table  # noqa: F401  (summary_table re-exported: cnncc.report.summary_table)


# -- views of an optimized graph (cnncc inspect) ------------------------------------------------------
def fmt_bytes(x, batch: int | None = None) -> str:
    """A byte count (sympy in N) as a formula, plus its value at ``batch`` when given."""
    x = sympy.expand(sympy.sympify(x))
    if batch is None or x.is_number:
        return _fmt_int(x)
    return f"{_fmt_int(x)} (= {int(x.subs(N, batch)):,} at N={batch})"


def pass_table(graph: Graph) -> str:
    """One line per pass: nodes before -> after, wall time, what changed."""
    if graph.pass_report is None:
        return "(no pass report: run cnncc.optimize first)"
    return str(graph.pass_report)


def why_not_lines(graph: Graph) -> list[str]:
    """Every producer -> consumer edge the fuse pass left unfused, with its reason."""
    return [f"{p} -> {c}: {why}" for p, c, why in (graph.fusion.why_not if graph.fusion else ())]


def groups_table(graph: Graph, batch: int = 1) -> str:
    """Fused groups with the traffic each saves (bytes at N=batch) and its FLOPs."""
    rows = [("Group", "Members", "Bytes unfused", "Bytes fused", "Saved", "FLOPs")]
    for node in graph:
        if node.op != "fused":
            continue
        m = node.group
        at = {N: batch}
        u, f = int(sympy.sympify(m.bytes_unfused).subs(at)), int(sympy.sympify(m.bytes_fused).subs(at))
        rows.append((node.name, " + ".join(x.op for x in node.members), f"{u:,}", f"{f:,}", f"{u - f:,}",
                     f"{int(sympy.sympify(m.flops).subs(at)):,}"))
    if len(rows) == 1:
        return "(no fused groups)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(widths[j]) if j < 2 else c.rjust(widths[j]) for j, c in enumerate(r))
                     for r in rows)


def conv_algorithm_table(graph: Graph, conv_algorithm: str = "auto") -> str:
    """The C target's convolutions: each one's algorithm (direct or Winograd, codegen/c_winograd.py's
    rule for ``conv_algorithm``) and the reason."""
    from cnncc.codegen.c_winograd import choose
    from cnncc.codegen.lower import lower_program
    from cnncc.errors import CnnccError

    try:
        specs = lower_program(graph).kernels
    except CnnccError as e:   # e.g. symbolic spatial sizes: kernels need concrete ones
        return f"C convolutions: not shown, the graph does not lower ({str(e).splitlines()[0]})"
    rows = [("Kernel", "Convolution", "Algorithm", "Reason")]
    for spec in specs:
        if spec.family != "conv":
            continue
        g = spec.geometry
        pool = " + pool" if spec.pool is not None else ""
        conv = (f"{g['C_in']}->{g['C_out']} {g['KH']}x{g['KW']}/{g['SH']} on {g['OH']}x{g['OW']}"
                f"{'' if g['groups'] == 1 else ' g' + str(g['groups'])}{pool}")
        c = choose(spec, conv_algorithm)
        rows.append((spec.name, conv, c.algorithm, c.reason))
    if len(rows) == 1:
        return "(no convolutions)"
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    head = f"C convolutions (conv_algorithm={conv_algorithm!r}):"
    return "\n".join([head] + ["  ".join(c.ljust(widths[j]) for j, c in enumerate(r[:3])) + "  " + r[3] for r in rows])


def layout_lines(graph: Graph) -> str:
    """The layout pass's decisions (passes/layout.py): how many tensors are NCHW[V]c and every
    reorder it inserted, with the reason."""
    lay = graph.layout
    if not lay.vector:
        return "layout: every tensor NCHW (layout 'nchw', or not the C target at opt 2)"
    lines = [f"layout: {len(lay.blocked)} tensors NCHW{lay.vector}c, {len(lay.reorders)} reorder(s) to NCHW"]
    for r in lay.reorders:
        lines.append(f"  {r.node}: {r.tensor} -> {r.to.upper()} for {', '.join(r.consumers)}: {r.reason}")
    return "\n".join(lines)


def memory_lines(graph: Graph, batch: int | None = None) -> list[str]:
    """The memory plan's arena (peak) beside the naive sum of all intermediates."""
    mp = graph.memory_plan
    if not mp:
        return ["(no memory plan: plan_memory runs at opt level 2)"]
    arena, naive = mp.arena_bytes, mp.naive_bytes
    lines = [f"memory plan: arena (peak) {fmt_bytes(arena, batch)} bytes",
             f"             naive sum   {fmt_bytes(naive, batch)} bytes",
             f"             {len(mp.lifetimes)} buffers, {len(mp.inplace)} written in place"]
    ratio = sympy.simplify(sympy.sympify(arena) / naive) if naive != 0 else None
    if ratio is not None and ratio.is_number:
        lines[0] += f"  ({float(ratio):.1%} of naive)"
    return lines


def traffic_lines(graph: Graph, batch: int | None = None) -> list[str]:
    t = graph.traffic
    if not t:
        return []
    return [f"traffic: {t.kernels} kernels, {t.groups} fused groups",
            f"         bytes one kernel per op {fmt_bytes(t.bytes_unfused, batch)}",
            f"         bytes as fused          {fmt_bytes(t.bytes_fused, batch)}",
            f"         FLOPs                   {fmt_bytes(t.flops, batch)}"]
