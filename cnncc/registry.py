"""The one decorator registry: ``registrar(table)`` makes a decorator ``@deco("name", ...)`` that
files the function under each name in ``table``. The ONNX importer's ``@handles``, the lowering's
``@lowers`` and the exporters' ``@emits`` / ``@builds`` are registrars."""
from __future__ import annotations

from typing import Callable


def registrar(table: dict, what: str | None = None) -> Callable:
    """A decorator factory filing functions in ``table`` by name; with ``what`` (e.g. "kernel
    family") a name filed twice is refused, naming ``what``."""
    def register(*names: str):
        def deco(fn):
            for name in names:
                if what is not None and name in table:
                    raise ValueError(f"{what} '{name}' is registered twice")
                table[name] = fn
            return fn
        return deco
    return register
