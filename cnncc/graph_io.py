"""A Graph as JSON plus named arrays: what a saved module keeps so ``cnncc summary`` and
``cnncc inspect`` work on the folder (no pickles: attributes are JSON, weights an .npz).

Attribute values are ints, floats, strings, bools, None, lists, tuples and sympy sizes (the batch
``N``, symbolic spatial sizes); tuples and sympy expressions are tagged so they come back as they
went in. Of the records stages leave (cnncc/contracts.py) only ``graph.origin`` (the frontend's
name maps) is kept, under "origin": the graph saved is the one compile() was given, passes rebuild
the rest, and node provenance is for reading the live graph only.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import sympy

from .contracts import GraphOrigin
from .errors import IntegrityError
from .ir import Graph, Node, sym

GRAPH_FORMAT = 1
_FUNCTIONS = {"floor", "ceiling", "Max", "Min", "Mod", "Abs", "Piecewise"}


def _encode(v: Any) -> Any:
    if isinstance(v, sympy.Basic):
        return {"sympy": str(v)}
    if isinstance(v, tuple):
        return {"tuple": [_encode(x) for x in v]}
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {"dict": {str(k): _encode(x) for k, x in v.items()}}
    if isinstance(v, np.ndarray):
        return {"tuple": [_encode(x) for x in v.tolist()]} if v.ndim else _encode(v.item())
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot save an attribute value of type {type(v).__name__}: {v!r}")


def _decode(v: Any) -> Any:
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if isinstance(v, dict):
        if "sympy" in v:
            text = v["sympy"]      # every name but the size formulas' functions is a positive integer size
            names = {w: sym(w) for w in re.findall(r"[A-Za-z_]\w*", text) if w not in _FUNCTIONS}
            return sympy.sympify(text, locals=names)
        if "tuple" in v:
            return tuple(_decode(x) for x in v["tuple"])
        if "dict" in v:
            return {k: _decode(x) for k, x in v["dict"].items()}
        raise IntegrityError(f"graph.json: unknown tagged value {sorted(v)}")
    return v


def graph_to_json(graph: Graph) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON-able description, arrays keyed "<node>/<param>") of an unfused graph."""
    nodes, arrays = [], {}
    for node in graph:
        if node.members:
            raise ValueError(f"graph_to_json saves graphs before fusion; '{node.name}' is a fused group")
        nodes.append({"name": node.name, "op": node.op, "inputs": list(node.inputs),
                      "attrs": {k: _encode(v) for k, v in node.attrs.items()}, "params": sorted(node.params)})
        for k, p in node.params.items():
            arrays[f"{node.name}/{k}"] = np.asarray(p)
    origin = {k: _encode(v) for k, v in dataclasses.asdict(graph.origin).items()
              if v != getattr(GraphOrigin(), k)}       # the frontend's name maps, when there are any
    return {"graph_format": GRAPH_FORMAT, "name": graph.name, "nodes": nodes, "outputs": list(graph.outputs),
            "origin": origin}, arrays


def graph_from_json(doc: dict, arrays: dict[str, np.ndarray]) -> Graph:
    """The Graph back, shapes re-derived (``infer_shapes``)."""
    if doc.get("graph_format") != GRAPH_FORMAT:
        raise IntegrityError(f"graph.json: format {doc.get('graph_format')} is not {GRAPH_FORMAT}; recompile")
    g = Graph(doc["name"])
    for n in doc["nodes"]:
        try:
            params = {k: arrays[f"{n['name']}/{k}"] for k in n["params"]}
        except KeyError as e:
            raise IntegrityError(f"graph.npz: missing array {e}") from None
        g.add(Node(n["name"], n["op"], list(n["inputs"]), {k: _decode(v) for k, v in n["attrs"].items()}, params))
    g.outputs = list(doc["outputs"])
    known = {f.name for f in dataclasses.fields(GraphOrigin)}
    saved = doc.get("origin", doc.get("meta", {}))    # "meta": folders saved before the typed records
    g.origin = GraphOrigin(**{k: _decode(v) for k, v in saved.items() if k in known})
    return g.infer_shapes()
