"""Core IR types: the batch symbol, TensorType and Node (torch.fx keeps Node apart from Graph too).

The operator registry (cnncc.ops) is written against these types only; cnncc.ir builds the Graph
on top of both, so the registry never needs the Graph. ``cnncc.ir`` re-exports every name here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy

from .contracts import OWN_BUFFER, GroupNotes, NodeOrigin, Placement
from .errors import ModelError

#: The batch dimension. Shapes keep it symbolic until a concrete batch is asked for.
N = sympy.Symbol("N", integer=True, positive=True)


#: weight arrays that are running statistics (PyTorch buffers), not learned parameters
RUNNING_STATISTICS: dict[str, tuple[str, ...]] = {"batch_norm": ("mean", "var")}


def sym(name: str) -> sympy.Symbol:
    """A positive integer size symbol (``H``, ``W``, ...), as used for symbolic spatial sizes."""
    return sympy.Symbol(name, integer=True, positive=True)


@dataclass(frozen=True)
class TensorType:
    """dtype + shape; the shape is a tuple of sympy expressions (ints are sympified)."""

    shape: tuple
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(sympy.sympify(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def numel(self) -> sympy.Expr:
        return sympy.Mul(*self.shape) if self.shape else sympy.Integer(1)

    def nbytes(self) -> sympy.Expr:
        return self.numel() * self.itemsize

    def subs(self, mapping: dict) -> "TensorType":
        return TensorType(tuple(sympy.sympify(d).subs(mapping) for d in self.shape), self.dtype)

    def concrete(self, mapping: dict | None = None) -> tuple[int, ...]:
        """The shape as ints once every symbol is given (``{N: 8}``); errors name a free symbol."""
        out = []
        for d in self.shape:
            d = sympy.sympify(d).subs(mapping or {})
            if not d.is_number:
                raise ModelError(f"shape {format_shape(self.shape)} still has free symbols {sorted(map(str, d.free_symbols))}",
                                 fix="give a value for every symbol, e.g. a batch size for N")
            out.append(int(d))
        return tuple(out)

    def __str__(self) -> str:
        return f"{format_shape(self.shape)} {self.dtype}"


def format_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


@dataclass
class Node:
    """One operator application. ``op`` is a registry name (see cnncc.ops) or ``"fused"``."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    type: TensorType | None = None
    #: for a fused group: the original nodes, anchor first, in execution order
    members: list["Node"] | None = None
    #: what stages leave for later ones, one typed record per concern (cnncc/contracts.py)
    placement: Placement = OWN_BUFFER
    group: GroupNotes | None = None              # on fused nodes: recompute, bytes, FLOPs
    origin: NodeOrigin | None = None
    calibrated_mean_square: float | None = None  # frontends/dsl.py scaled this batch norm's statistics once

    @property
    def shape(self) -> tuple:
        return self.type.shape if self.type else ()

    def param_count(self) -> int:
        """Learned parameters only: running statistics (see RUNNING_STATISTICS) are state, not
        parameters, so totals match PyTorch's ``parameters()`` and the published counts."""
        skip = RUNNING_STATISTICS.get(self.op, ())
        own = sum(int(np.prod(p.shape)) for k, p in self.params.items() if k not in skip)
        return own + sum(m.param_count() for m in self.members or [])

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op!r}, inputs={self.inputs})"

    @property
    def meta(self):
        raise AttributeError("Node.meta is gone: stages share typed records (node.placement, node.group, "
                             "node.origin, node.calibrated_mean_square; see cnncc/contracts.py)")
