"""On-disk kernel cache: compiled artifacts keyed by sha256(target, toolchain, source).

Compiling ResNet-sized C or CUDA takes seconds to minutes; the same source compiled with the
same compiler and flags always gives an equivalent artifact, so it is built once. The folder is
``$CNNCC_CACHE_DIR`` or ``$XDG_CACHE_HOME/cnncc`` (default ``~/.cache/cnncc``); deleting it is
always safe (`cnncc cache clear`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from cnncc.runtime.toolchain import cache_dir


def cache_key(target: str, toolchain: str, source: str) -> str:
    h = hashlib.sha256()
    for part in (target, toolchain, source):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def build_cached(backend, source: str) -> Path:
    """The artifact for ``source`` from the cache, building it (atomically) on a miss."""
    key = cache_key(backend.target, backend.toolchain(), source)
    suffix = Path(backend.artifact_name).suffix
    path = cache_dir() / "kernels" / key[:2] / f"{key}{suffix}"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=suffix + ".tmp")
    os.close(fd)
    try:
        backend.build(source, Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def info() -> dict:
    root = cache_dir() / "kernels"
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    return {"path": str(cache_dir()), "entries": len(files), "bytes": sum(p.stat().st_size for p in files)}


def clear() -> int:
    """Delete every cached artifact; returns how many were removed."""
    n = info()["entries"]
    root = cache_dir() / "kernels"
    if root.is_dir():
        shutil.rmtree(root)
    return n
