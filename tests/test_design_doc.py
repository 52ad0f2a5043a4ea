"""docs/DESIGN.md describes the house as it is: its Layout section names every file of the
library folders (cnncc/, codegen/, runtime/, frontends/) and no file that does not exist, and no
docstring, template or header of those folders cites a doc that does not exist.

File names are matched by their base name (``spec.py``, ``conv.c.j2``), so the Layout can
describe a folder's files in a sentence rather than as a tree."""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("cnncc", "codegen", "runtime", "frontends")
SUFFIXES = (".py", ".j2", ".h")


def library_files() -> list[Path]:
    return sorted(p for folder in LIBRARY for p in (ROOT / folder).rglob("*")
                  if p.is_file() and p.name.endswith(SUFFIXES) and "__pycache__" not in p.parts)


def layout() -> str:
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    start = text.index("## Layout")
    return text[start: text.index("\n## ", start + 1)]


def named(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text) is not None


def test_layout_names_every_library_file():
    text = layout()
    missing = [str(p.relative_to(ROOT)) for p in library_files() if not named(p.name, text)]
    assert missing == [], f"docs/DESIGN.md, Layout, does not name: {missing}"


def test_layout_names_no_missing_file():
    existing = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]   # .venv, .git, caches
        existing.update(files)
    # file names (report.html.j2 whole; a glob such as *.c.j2 names no file; graph.json is a saved
    # module's, not the repository's)
    cited = set(re.findall(r"(?<![\w.*])[\w-]+(?:\.[\w-]+)*\.(?:py|j2|h|md)\b", layout()))
    assert sorted(cited - existing) == [], "docs/DESIGN.md, Layout, names files that do not exist"


def test_no_library_file_cites_a_missing_doc():
    bad = [f"{p.relative_to(ROOT)}: {doc}" for p in library_files()
           for doc in re.findall(r"(?:docs/)?[\w-]+\.md\b", p.read_text(errors="replace"))
           if not (ROOT / "docs" / Path(doc).name).is_file() and not (ROOT / doc).is_file()]
    assert bad == [], f"docs cited that do not exist: {bad}"
