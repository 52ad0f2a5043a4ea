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
    """The C target's convolutions and dense layers: each convolution's algorithm (direct or
    Winograd, codegen/c_winograd.py's rule for ``conv_algorithm``) and the reason, and every
    kernel's kind -- how codegen/c_conv.py (or c_small.py, for small layers) tiles it for this
    machine's vectors."""
    from cnncc.codegen import c_conv
    from cnncc.codegen.c_winograd import choose
    from cnncc.codegen.lower import lower_program
    from cnncc.errors import CnnccError
    from cnncc.runtime.cpu import host_target

    try:
        specs = lower_program(graph).kernels
    except CnnccError as e:   # e.g. symbolic spatial sizes: kernels need concrete ones
        return f"C convolutions: not shown, the graph does not lower ({str(e).splitlines()[0]})"
    target = host_target()
    rows = [("Kernel", "Convolution", "Algorithm", "Kind", "Reason")]
    for spec in specs:
        g = spec.geometry
        if spec.family == "dense":
            b = c_conv.plan(spec, target, conv_algorithm)
            tail = f" + {spec.tail}" if spec.tail else ""
            rows.append((spec.name, f"dense {g['K']}->{g['M']}{tail}", "-", kind_text(b), ""))
            continue
        if spec.family != "conv":
            continue
        pool = " + pool" if spec.pool is not None else ""
        conv = (f"{g['C_in']}->{g['C_out']} {g['KH']}x{g['KW']}/{g['SH']} on {g['OH']}x{g['OW']}"
                f"{'' if g['groups'] == 1 else ' g' + str(g['groups'])}{pool}")
        c = choose(spec, conv_algorithm, target)
        b = c_conv.plan(spec, target, conv_algorithm)
        reason = c.reason + (f"; {b.kind}: {b.reason}" if getattr(b, "reason", "") and b.kind != "winograd" else "")
        kind = kind_text(b)
        if getattr(b, "direct", None):   # and below min_batch items, the direct kernel
            kind = f"winograd planes / {kind_text(b.direct)}"
        rows.append((spec.name, conv, c.text, kind, reason))
    if len(rows) == 1:
        return "(no convolutions)"
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = f"C convolutions (conv_algorithm={conv_algorithm!r}), kernel kinds for {target.describe()}:"
    return "\n".join([head] + ["  ".join(c.ljust(widths[j]) for j, c in enumerate(r[:4])) + "  " + r[4]
                               for r in rows]).rstrip()


def kind_text(b) -> str:
    """A kernel plan's kind and register tile, as the conv table shows it."""
    if b is None:
        return "-"
    if b.kind in ("channels", "pixels", "rowtiles", "depthwise"):
        return f"{b.kind} {b.P}px x {b.COB}ch"
    if b.kind == "rowblock":
        return f"rowblock {b.RT}x{b.NV * b.VEC} x {b.COB}ch"
    if b.kind == "pixblock":
        return f"pixblock {b.RT}x{b.OWr}px x {b.COB}ch"
    if b.kind == "gemv":
        return f"gemv {b.COB} out x {b.NR} items"
    if b.kind == "dense":
        return f"dense {b.NR} items x {b.COB} rows"
    return b.kind


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


def workspace_lines(graph: Graph, conv_algorithm: str = "auto", batch: int | None = None) -> list[str]:
    """The C target's kernel scratch, which each call's arena holds after the memory plan's tensors
    (codegen/c_scratch.py): its bytes at ``batch`` (default 1) on this machine's threads and the
    kernel that needs the most."""
    from cnncc.codegen.lower import lower_program
    from cnncc.errors import CnnccError
    from cnncc.runtime.cpu import CBackend, host_target

    try:
        program = lower_program(graph)
    except CnnccError:   # conv_algorithm_table says why
        return []
    program.conv_algorithm = conv_algorithm
    target = host_target()
    program = CBackend().render(program, target).program
    if not program.workspace:
        return ["C kernel scratch: none (no kernel needs any)"]
    n, t = batch or 1, target.threads
    big = max(program.workspace, key=lambda w: w.floats(n, t))
    return [f"C kernel scratch: {program.workspace_bytes(n, t):,} bytes at N={n} on {t} threads, after the arena "
            f"(one workspace all kernels share; largest: {big.kernel}, {4 * big.floats(n, 0):,} shared + "
            f"{t} x {4 * big.floats(n, 1) - 4 * big.floats(n, 0):,} per thread)"]


def traffic_lines(graph: Graph, batch: int | None = None) -> list[str]:
    t = graph.traffic
    if not t:
        return []
    return [f"traffic: {t.kernels} kernels, {t.groups} fused groups",
            f"         bytes one kernel per op {fmt_bytes(t.bytes_unfused, batch)}",
            f"         bytes as fused          {fmt_bytes(t.bytes_fused, batch)}",
            f"         FLOPs                   {fmt_bytes(t.flops, batch)}"]
