"""The floors of docs/DESIGN.md hold: import-linter's contracts in pyproject.toml are kept, and no two
modules import each other, even through a chain and counting imports inside functions.

grimp (import-linter's graph builder) finds a package's modules by walking its folder, and
cnncc.frontends / cnncc.codegen / cnncc.runtime live in the top-level folders frontends/, codegen/,
runtime/ (pyproject's package-dir). So both checks run over a view of the package as installed: a
temporary cnncc/ of symlinks to cnncc/* plus the mapped folders, in a subprocess started there
(the tests' own process has cnncc imported already, from the repository).

By hand: ``python tests/test_layers.py`` prints lint-imports' report over the same view.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("importlinter")   # the dev extra

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"

LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())", str(CONFIG), "--no-cache"]

# every module-level cycle (strongly connected component) of grimp's import graph
CYCLES = """
import json, grimp, networkx as nx
g = grimp.build_graph("cnncc", cache_dir=None)
d = nx.DiGraph()
d.add_nodes_from(g.modules)
d.add_edges_from((m, t) for m in g.modules for t in g.find_modules_directly_imported_by(m))
print(json.dumps({"modules": sorted(g.modules),
                  "cycles": [sorted(c) for c in nx.strongly_connected_components(d) if len(c) > 1]}))
"""


def make_view(dest: Path) -> Path:
    """dest/cnncc laid out as installed: symlinks to cnncc/* and to each package-dir folder."""
    package_dir = tomllib.loads(CONFIG.read_text())["tool"]["setuptools"]["package-dir"]
    view = dest / "cnncc"
    view.mkdir()
    for entry in (ROOT / "cnncc").iterdir():
        if entry.name != "__pycache__":
            (view / entry.name).symlink_to(entry)
    for name, folder in package_dir.items():
        if name.startswith("cnncc."):
            (view / name.split(".", 1)[1]).symlink_to(ROOT / folder)
    return dest


def _run(cmd, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def cycles_in(view: Path) -> dict:
    out = _run([sys.executable, "-c", CYCLES], view)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_lint_imports_contracts_kept(tmp_path):
    out = _run(LINT, make_view(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broken" in out.stdout and ", 0 broken" in out.stdout, out.stdout


def test_no_import_cycle_between_modules(tmp_path):
    graph = cycles_in(make_view(tmp_path))
    # the view really holds the mapped folders (a view without them would pass trivially)
    assert {"cnncc.codegen.lower", "cnncc.frontends.onnx", "cnncc.runtime.module", "cnncc.ir"} <= set(graph["modules"])
    assert graph["cycles"] == [], "import cycles (break them as docs/DESIGN.md, Floors, says): " + \
        "; ".join(" <-> ".join(c) for c in graph["cycles"])


def test_checks_catch_a_back_edge(tmp_path):
    """A ground-floor module importing the facade and the registry inside a function breaks the
    floors contract and makes a cycle: both checks see it (they are not vacuous)."""
    view = make_view(tmp_path)
    shapes = view / "cnncc" / "shapes.py"
    text = shapes.read_text()
    shapes.unlink()
    shapes.write_text(text + "\n\ndef _back_edge():\n    from cnncc import compiler, ops\n")
    out = _run(LINT, view)
    assert out.returncode != 0 and "cnncc.shapes -> cnncc.compiler" in out.stdout, out.stdout + out.stderr
    assert any({"cnncc.ops", "cnncc.shapes", "cnncc.compiler"} <= set(c) for c in cycles_in(view)["cycles"])


def test_no_pass_reaches_into_graph_nx():
    """Passes edit a Graph through its methods (replace_node, set_inputs, consumers, ancestors,
    ...), never through the networkx DiGraph underneath, so the Graph keeps its invariants."""
    import ast

    found = [f"{f.name}:{n.lineno}" for f in sorted((ROOT / "cnncc" / "passes").glob("*.py"))
             for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Attribute) and n.attr == "nx"]
    assert found == [], f"passes reading graph.nx: {found}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="cnncc-layers-") as tmp:
        proc = subprocess.run(LINT, cwd=make_view(Path(tmp)))
        found = cycles_in(Path(tmp))["cycles"]
        print("module cycles:", found or "none")
        sys.exit(proc.returncode or bool(found))
