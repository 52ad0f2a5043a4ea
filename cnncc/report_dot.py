"""Graphviz views of a graph: DOT text (fused groups as coloured clusters) and, when Graphviz's
``dot`` is installed, SVG/PNG renderings of it."""
from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

from .ir import Graph, Node, format_shape

KIND_COLOURS = {"conv": "#cfe2ff", "conv_transpose": "#e2d9f3", "dense": "#fff3cd", "matmul": "#fff3cd",
                "elementwise": "#d1e7dd"}


def _label(node: Node) -> str:
    shape = format_shape(node.type.shape) if node.type else ""
    return f"<<b>{html.escape(node.name)}</b><br/>{html.escape(node.op)}<br/><font point-size='9'>{html.escape(shape)}</font>>"


def to_dot(graph: Graph, title: str | None = None) -> str:
    """DOT text: one box per operator, each fused group a filled cluster of its members."""
    ids: dict[str, str] = {}      # tensor name -> dot node id that produces it
    lines = ["digraph G {", "  rankdir=TB; node [shape=box, style=\"rounded,filled\", fillcolor=white, "
             "fontname=Helvetica, fontsize=10]; edge [color=\"#555555\"];",
             f"  label={_q(title or graph.name)}; labelloc=t; fontname=Helvetica;"]
    counter = 0

    def new_id() -> str:
        nonlocal counter
        counter += 1
        return f"n{counter}"

    edges: list[str] = []
    for node in graph:
        if node.op == "fused":
            kind = node.attrs.get("kind", "")
            lines.append(f"  subgraph cluster_{len(ids)} {{ style=\"filled,rounded\"; "
                         f"fillcolor={_q(KIND_COLOURS.get(kind, '#eeeeee'))}; color=\"#888888\"; "
                         f"label={_q(node.name + ' (' + kind + ')')}; fontsize=9;")
            local: dict[str, str] = {}
            for m in node.members:
                mid = new_id()
                local[m.name] = mid
                lines.append(f"    {mid} [label={_label(m)}];")
                for i in m.inputs:
                    src = local.get(i) or ids.get(i)
                    if src:
                        edges.append(f"  {src} -> {mid};")
            lines.append("  }")
            ids[node.name] = local[node.members[-1].name]
            continue
        nid = new_id()
        ids[node.name] = nid
        style = ""
        if node.op == "input":
            style = ", shape=ellipse, fillcolor=\"#f8f9fa\""
        elif node.placement.view_of:
            style = ", style=\"rounded,dashed\""
        elif node.placement.eliminated:
            style = ", style=\"rounded,dotted\", xlabel=\"in place\""
        lines.append(f"  {nid} [label={_label(node)}{style}];")
        for i in node.inputs:
            if i in ids:
                edges.append(f"  {ids[i]} -> {nid};")
    for out in graph.outputs:
        if out in ids:
            oid = new_id()
            lines.append(f"  {oid} [label={_q('output ' + out)}, shape=ellipse, fillcolor=\"#f8f9fa\"];")
            edges.append(f"  {ids[out]} -> {oid};")
    lines += edges
    lines.append("}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def has_dot() -> bool:
    return shutil.which("dot") is not None


def render(dot_text: str, fmt: str = "svg", timeout: float = 60) -> bytes | None:
    """Render DOT with Graphviz (``svg``/``png``); None when ``dot`` is not installed."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    done = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.decode(errors='replace')[:500]}")
    return done.stdout


def write_dot_files(graph: Graph, directory: str | Path) -> list[Path]:
    """One DOT per pass snapshot (``00_input.dot``, ``01_infer_shapes.dot``, ...), plus SVG and
    PNG of each when Graphviz is installed. Returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = graph.pass_report
    stages = [("input", report.initial)] + [(r.name, r.snapshot) for r in report] if report else [("graph", graph)]
    written: list[Path] = []
    for i, (name, g) in enumerate(stages):
        stem = directory / f"{i:02d}_{name}"
        text = to_dot(g, f"{graph.name} after {name}" if i else f"{graph.name} (input)")
        stem.with_suffix(".dot").write_text(text)
        written.append(stem.with_suffix(".dot"))
        if has_dot():
            for fmt in ("svg", "png"):
                stem.with_suffix(f".{fmt}").write_bytes(render(text, fmt))
                written.append(stem.with_suffix(f".{fmt}"))
    return written
