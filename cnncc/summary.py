"""The Keras-style summary table of a graph (``Graph.summary()``, ``cnncc summary``).

It sits on the ground floor beside cnncc.ir, which calls it, and reads the graph only by
iterating it and by ``graph.name`` / ``graph.inputs`` / ``graph[name]``, so it never imports
cnncc.ir; cnncc.report re-exports it with the views of an optimized graph.
"""
from __future__ import annotations

import sympy

from .cost import node_cost
from .node import N, format_shape


def _fmt_int(x) -> str:
    x = sympy.sympify(x)
    if x.is_number:
        return f"{int(x):,}"
    return str(sympy.expand(x))


def summary_table(graph, batch: int | None = None) -> str:
    """Keras-style table: layer, operator, output shape, parameters, FLOPs, then totals."""
    mapping = {N: batch} if batch else {}
    rows = [("Layer", "Op", "Output shape", "Params", "FLOPs")]
    total_flops = sympy.Integer(0)
    total_params = 0
    for node in graph:
        cost = node_cost(graph, node)
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


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, a dashed rule under the headers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
