"""The one-page HTML report of `cnncc inspect --html`: pipeline, each pass's graph, fusion groups
with the traffic they save, the memory plan and the generated kernels. Self-contained: styles,
SVG pictures and sources are inline, nothing is fetched."""
from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path

import jinja2
import sympy

from .contracts import GroupNotes
from .ir import N, Graph
from .report import fmt_bytes
from .report_dot import has_dot, render, to_dot

TEMPLATES = Path(__file__).parent / "templates"


def _inline_svg(dot_text: str) -> str | None:
    svg = render(dot_text, "svg")
    if svg is None:
        return None
    text = svg.decode()
    return text[text.index("<svg"):]   # drop the XML prolog and doctype


def _at(x, batch: int) -> int:
    return int(sympy.sympify(x).subs(N, batch))


def memory_svg(graph: Graph, width: int = 900, height: int = 320) -> str:
    """Buffers as rectangles: x = lifetime (execution steps), y = arena offset (per sample)."""
    mp = graph.memory_plan
    if not mp or not mp.lifetimes:
        return ""
    steps = max(hi for _, hi in mp.lifetimes.values()) + 1
    top = max(_at(mp.offsets[b], 1) + _at(mp.sizes[b], 1) for b in mp.lifetimes) or 1
    sx, sy = (width - 60) / steps, (height - 30) / top
    rects = []
    for i, (b, (lo, hi)) in enumerate(sorted(mp.lifetimes.items(), key=lambda kv: kv[1])):
        x, y = 50 + lo * sx, 10 + _at(mp.offsets[b], 1) * sy
        w, h = max((hi - lo + 1) * sx - 1, 1), max(_at(mp.sizes[b], 1) * sy - 1, 1)
        hue = (i * 47) % 360
        rects.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'fill="hsl({hue},60%,70%)" stroke="#333" stroke-width="0.5"><title>{html.escape(b)}: '
                     f'steps {lo}-{hi}, {_at(mp.sizes[b], 1):,} bytes per sample at offset '
                     f'{_at(mp.offsets[b], 1):,}</title></rect>')
    axis = (f'<text x="4" y="14" font-size="10">0</text><text x="4" y="{height - 20}" font-size="10">'
            f'{top:,} B</text><text x="{width / 2:.0f}" y="{height - 4}" font-size="10">execution step</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="memory plan">{axis}{"".join(rects)}</svg>')


def compiled_kernels(graph: Graph, opt_level: int | None):
    """[(name, source, launch)] from cnncc.compile(target="c"), or (None, why) when unavailable."""
    try:
        import cnncc

        mod = cnncc.compile(graph, target="c", opt_level=2 if opt_level is None else opt_level)
        return list(mod.kernels), None
    except Exception as e:  # codegen is another floor: its absence or failure must not hide the report
        return None, f"{type(e).__name__}: {e}"


def html_report(optimized: Graph, kernels: list | None = None, kernels_note: str | None = None,
                batch: int = 1) -> str:
    """Render the page for an optimized graph (with its pass report)."""
    report = optimized.pass_report
    stages = [("input", report.initial)] + [(r.name, r.snapshot) for r in report] if report else [("graph", optimized)]
    graphs = []
    last_dot, drawn = None, None
    for name, g in stages:
        dot_text = to_dot(g, f"{optimized.name} after {name}")
        body = dot_text.split("\n", 3)[3]
        unchanged = body == last_dot
        last_dot = body
        drawn = drawn if unchanged else name
        graphs.append({"name": name, "nodes": len(g), "unchanged": unchanged, "same_as": drawn, "open": False,
                       "svg": None if unchanged else _inline_svg(dot_text), "text": str(g)})
    graphs[[g["name"] for g in graphs].index(drawn)]["open"] = True   # the final picture, unfolded
    groups = []
    for node in optimized:
        if node.op != "fused":
            continue
        notes = node.group or GroupNotes()
        u, f = notes.bytes_unfused or 0, notes.bytes_fused or 0
        groups.append({"name": node.name, "kind": node.attrs.get("kind"),
                       "members": " + ".join(f"{m.name} ({m.op})" for m in node.members),
                       "unfused": _at(u, batch), "fused": _at(f, batch), "saved": _at(u, batch) - _at(f, batch),
                       "formula": str(sympy.expand(sympy.sympify(u) - f)), "flops": _at(notes.flops or 0, batch),
                       "recompute": notes.recompute if notes.recompute != 1 else None})
    mp = optimized.memory_plan
    memory = None
    if mp:
        memory = {"arena": fmt_bytes(mp.arena_bytes, batch), "naive": fmt_bytes(mp.naive_bytes, batch),
                  "svg": memory_svg(optimized), "inplace": mp.inplace,
                  "rows": [{"tensor": b, "offset": str(mp.offsets[b]), "size": str(mp.sizes[b]),
                            "life": f"{lo}-{hi}"} for b, (lo, hi) in sorted(mp.lifetimes.items(),
                                                                            key=lambda kv: kv[1])]}
    traffic = None
    if optimized.traffic:
        traffic = {k: (fmt_bytes(v, batch) if k in ("bytes_unfused", "bytes_fused", "flops") else v)
                   for k, v in dataclasses.asdict(optimized.traffic).items()}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(
        model=optimized.name, opt_level=report.opt_level if report else None, batch=batch,
        passes=list(report) if report else [], total_ms=report.total_seconds() * 1e3 if report else 0,
        graphs=graphs, has_dot=has_dot(), groups=groups, why_not=optimized.fusion.why_not if optimized.fusion else [],
        memory=memory, traffic=traffic, kernels=kernels, kernels_note=kernels_note,
        anchor=lambda s: re.sub(r"\W", "-", s))


def write_html(optimized: Graph, path: str | Path, *, with_kernels: bool = True, batch: int = 1) -> Path:
    kernels, why = compiled_kernels(optimized.pass_report.initial if optimized.pass_report else optimized,
                                    optimized.opt_level) if with_kernels else (None, "not requested")
    path = Path(path)
    path.write_text(html_report(optimized, kernels, why, batch=batch), encoding="utf-8")
    return path
