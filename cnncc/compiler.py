"""The one place that strings frontends, passes, codegen and runtime together."""
from __future__ import annotations

from pathlib import Path

from .errors import CnnccError
from .ir import Graph, sym


def load_model(path: str | Path, *, weights: str | Path | None = None, symbolic: str | None = None) -> Graph:
    """Load a model file: a DSL ``.py`` (trusted code defining ``model()``) or an ``.onnx`` file.

    ``symbolic="H,W"`` replaces the input's spatial sizes by symbols so the formulas show."""
    path = Path(path)
    if path.suffix == ".py":
        from cnncc.frontends.dsl import load_model as load_dsl

        g = load_dsl(path, weights=weights)
    elif path.suffix == ".onnx":
        from cnncc.frontends.onnx import from_onnx

        g = from_onnx(path)
    else:
        raise CnnccError(f"don't know how to load '{path}': expected a DSL .py file or an .onnx file")
    if symbolic:
        make_symbolic(g, [s.strip() for s in symbolic.split(",") if s.strip()])
    return g


def make_symbolic(g: Graph, names: list[str]) -> Graph:
    """Replace the trailing (spatial) dims of every input by symbols, then re-derive all shapes."""
    for name in g.inputs:
        node = g[name]
        shape = list(node.attrs["shape"])
        if len(names) > len(shape) - 2:
            raise CnnccError(f"input '{name}' has {len(shape) - 2} spatial dims, got symbols {names}")
        for i, s in enumerate(names):
            shape[len(shape) - len(names) + i] = sym(s)
        node.attrs["shape"] = tuple(shape)
    return g.infer_shapes()


# -- the public entry points of the other floors (imported lazily: extras stay optional) ----------
def optimize(graph: Graph, opt_level: int = 2, passes=None, disable=()) -> Graph:
    """Run the pass pipeline; returns the optimized Graph with ``.pass_report``."""
    from .passes.manager import optimize as _optimize

    return _optimize(graph, opt_level=opt_level, passes=passes, disable=disable)


def from_onnx(model, **kwargs) -> Graph:
    """Import an ONNX model (path, bytes or onnx.ModelProto)."""
    from cnncc.frontends.onnx import from_onnx as _from_onnx

    return _from_onnx(model, **kwargs)


def from_torch(module, example_input, **kwargs) -> Graph:
    """Trace a PyTorch nn.Module with torch.fx (needs the ``torch`` extra)."""
    from cnncc.frontends.torch import from_torch as _from_torch

    return _from_torch(module, example_input, **kwargs)
