"""Human-facing views of a graph: the summary table (more views join as passes land)."""
from __future__ import annotations

import sympy

from . import ops
from .ir import N, Graph, format_shape


def _fmt_int(x) -> str:
    x = sympy.sympify(x)
    if x.is_number:
        return f"{int(x):,}"
    return str(sympy.expand(x))


def summary_table(graph: Graph, batch: int | None = None) -> str:
    """Keras-style table: layer, operator, output shape, parameters, FLOPs, then totals."""
    mapping = {N: batch} if batch else {}
    rows = [("Layer", "Op", "Output shape", "Params", "FLOPs")]
    total_flops = sympy.Integer(0)
    total_params = 0
    for node in graph:
        cost = ops.node_cost(graph, node)
        flops = sympy.sympify(cost["flops"]).subs(mapping)
        params = node.param_count()
        total_flops += flops
        total_params += params
        op = node.op if node.op != "fused" else "fused[" + "+".join(m.op for m in node.members) + "]"
        shape = format_shape([sympy.sympify(d).subs(mapping) for d in node.type.shape]) if node.type else "?"
        rows.append((node.name, op, shape, f"{params:,}" if params else "0", _fmt_int(flops)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    line = "-" * (sum(widths) + 8)
    out = [f"Model: {graph.name}" + (f" (batch {batch})" if batch else " (batch N)"), line]
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(widths[j]) if j < 3 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            out.append(line)
    out.append(line)
    out.append(f"Total params: {total_params:,}")
    out.append(f"Total FLOPs:  {_fmt_int(sympy.expand(total_flops))}")
    ins = ", ".join(f"{i} {format_shape([sympy.sympify(d).subs(mapping) for d in graph[i].type.shape])}"
                    for i in graph.inputs)
    out.append(f"Inputs: {ins}")
    return "\n".join(out)


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
    return [f"{p} -> {c}: {why}" for p, c, why in graph.meta.get("why_not", [])]


def groups_table(graph: Graph, batch: int = 1) -> str:
    """Fused groups with the traffic each saves (bytes at N=batch) and its FLOPs."""
    rows = [("Group", "Members", "Bytes unfused", "Bytes fused", "Saved", "FLOPs")]
    for node in graph:
        if node.op != "fused":
            continue
        m = node.meta
        at = {N: batch}
        u, f = int(sympy.sympify(m["bytes_unfused"]).subs(at)), int(sympy.sympify(m["bytes_fused"]).subs(at))
        rows.append((node.name, " + ".join(x.op for x in node.members), f"{u:,}", f"{f:,}", f"{u - f:,}",
                     f"{int(sympy.sympify(m['flops']).subs(at)):,}"))
    if len(rows) == 1:
        return "(no fused groups)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(widths[j]) if j < 2 else c.rjust(widths[j]) for j, c in enumerate(r))
                     for r in rows)


def memory_lines(graph: Graph, batch: int | None = None) -> list[str]:
    """The memory plan's arena (peak) beside the naive sum of all intermediates."""
    mp = graph.meta.get("memory_plan")
    if not mp:
        return ["(no memory plan: plan_memory runs at opt level 2)"]
    arena, naive = mp["arena_bytes"], mp["naive_bytes"]
    lines = [f"memory plan: arena (peak) {fmt_bytes(arena, batch)} bytes",
             f"             naive sum   {fmt_bytes(naive, batch)} bytes",
             f"             {len(mp['lifetimes'])} buffers, {len(mp['inplace'])} written in place"]
    ratio = sympy.simplify(sympy.sympify(arena) / naive) if naive != 0 else None
    if ratio is not None and ratio.is_number:
        lines[0] += f"  ({float(ratio):.1%} of naive)"
    return lines


def traffic_lines(graph: Graph, batch: int | None = None) -> list[str]:
    t = graph.meta.get("traffic")
    if not t:
        return []
    return [f"traffic: {t['kernels']} kernels, {t['groups']} fused groups",
            f"         bytes one kernel per op {fmt_bytes(t['bytes_unfused'], batch)}",
            f"         bytes as fused          {fmt_bytes(t['bytes_fused'], batch)}",
            f"         FLOPs                   {fmt_bytes(t['flops'], batch)}"]
