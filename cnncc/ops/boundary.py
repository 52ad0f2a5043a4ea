"""Graph boundary operators: input, constant."""
from __future__ import annotations

import sympy

from ..errors import ModelError
from .core import Attr, OpDef, REQUIRED, is_int, register


# ---------------------------------------------------------------------------------------------
# graph boundary
def _input_shape(node, ins):
    shape = tuple(node.attrs["shape"])
    for axis, d in enumerate(shape):
        ok = is_int(d) and d > 0
        if not ok and isinstance(d, sympy.Expr):
            ok = not d.is_number or (d.is_integer and d > 0)
        if not ok:
            raise ModelError(f"axis {axis} of the input shape {tuple(shape)} is {d!r}; every size must be a "
                             f"positive int (or a size symbol such as N)", node=node.name, op="input", attr="shape",
                             fix="give positive sizes, e.g. (N, 3, 224, 224)")
    return shape


def _no_ref(node, xs):
    raise RuntimeError(f"{node.name}: inputs are fed by the interpreter")


register(OpDef("input", (0, 0), _input_shape, _no_ref,
               attrs={"shape": Attr(REQUIRED, lambda v: isinstance(v, (tuple, list)), "a shape tuple"),
                      "dtype": Attr("float32", lambda v: isinstance(v, str), "a numpy dtype name")},
               dtype=lambda node, ins: node.attrs["dtype"], doc="a graph input"))

register(OpDef("constant", (0, 0), lambda node, ins: node.params["value"].shape,
               lambda node, xs: node.params["value"], params=("value",), required_params=("value",),
               dtype=lambda node, ins: str(node.params["value"].dtype), doc="a constant tensor"))
