"""The registry core: traits, Attr, OpDef, REGISTRY with register/get, the attribute checks
and the per-operator cost helpers every operator family is written with."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import sympy

from ..errors import ModelError
from ..node import Node, TensorType


REQUIRED = object()

# traits
ELEMENTWISE = "elementwise"   # out[i] depends on in[i] only (with broadcasting)
REDUCTION = "reduction"       # reduces over some axes
MONOTONE = "monotone"         # non-decreasing scalar function: commutes with max pooling
ANCHOR = "anchor"             # heavy op that can absorb an epilogue (conv, dense, ...)
POOL = "pool"                 # windowed pooling that may fuse after an anchor
ACTIVATION = "activation"     # unary elementwise activation
VIEW = "view"                 # changes only how memory is indexed (flatten, reshape)
IDENTITY = "identity"         # returns its input unchanged at inference
EPILOGUE = "epilogue"         # may ride in an anchor's epilogue or an elementwise group (passes/fuse.py)
COMMUTATIVE = "commutative"   # binary op whose operands may swap (a chain may enter through either)
GROUP_TAIL = "group_tail"     # may end a dense group as its last member (softmax, log_softmax)

# kernel families (OpDef.kernel): which lowering builds an operator's kernel (codegen/lowering.py)
KERNEL_FAMILIES = ("conv", "conv_transpose", "dense", "matmul", "pool", "global_pool", "softmax",
                   "elementwise", "copy", "concat", "gather", "resize", "lrn", "instance_norm", "unpool", "roi",
                   "reorder")


def c_float(x) -> str:
    """A float literal for C/CUDA source: 9 significant digits and the ``f`` suffix (0.5 -> 0.5f,
    2 -> 2.0f); the same spelling as epilogue.j2's ``flt`` macro."""
    s = "%.9g" % float(x)
    return s + (".0" if "." not in s and "e" not in s and "n" not in s else "") + "f"


@dataclass
class Attr:
    default: Any = REQUIRED
    check: Callable[[Any], bool] | None = None
    expect: str = ""          # the expected form, for error messages


@dataclass
class OpDef:
    name: str
    arity: tuple[int, int | None]                       # (min, max); max None = variadic
    shape: Callable[[Node, list[TensorType]], tuple]     # -> output shape (sympy)
    ref: Callable[[Node, list[np.ndarray]], np.ndarray]  # numpy reference
    attrs: dict[str, Attr] = field(default_factory=dict)
    params: tuple[str, ...] = ()                         # weight arrays the op may carry
    required_params: tuple[str, ...] = ()
    flops: Callable[[Node, list[TensorType], TensorType], sympy.Expr] | None = None
    traits: frozenset = frozenset()
    dtype: Callable[[Node, list[TensorType]], str] | None = None
    doc: str = ""
    #: (node, input index, concrete input shapes, rng) -> a valid random value for that input, or
    #: None for a plain standard normal draw (roi boxes must name an image of the batch)
    sample_input: Callable[[Node, int, list[tuple], np.random.Generator], np.ndarray | None] | None = None
    #: the kernel family that lowers this operator (KERNEL_FAMILIES); None: no kernel of its own
    kernel: str | None = None
    #: an EPILOGUE op's spelling: C statements that update the running float ``v`` (only C99
    #: math CUDA also has; NaN keeps to the rules of epilogue.j2), a format string whose fields are
    #: ``{attr}`` (a numeric attribute as a float literal), ``{param[name]}`` (the lowering's
    #: weight vector ``name`` at the element's channel) and ``{lhs}``/``{rhs}`` (a binary op's
    #: operands: ``v`` and the other tensor's element, in the graph's order), or a function of the
    #: attributes returning the text; "" for an op with nothing to do at inference.
    #: ``cuda_expr``: CUDA's spelling where it differs (None: the C one).
    c_expr: str | Callable[[dict], str] | None = None
    cuda_expr: str | Callable[[dict], str] | None = None
    #: exporters' spelling of an op without attributes to map: the ONNX operator
    #: (codegen/onnx_export.py) and the torch.nn.functional function (codegen/torch_export.py)
    onnx: str | None = None
    torch: str | None = None

    def has(self, trait: str) -> bool:
        return trait in self.traits

    def spell(self, attrs: dict, target: str = "c", *, param: dict[str, str] | None = None,
              lhs: str = "v", rhs: str = "v") -> str | None:
        """The epilogue statement(s) for ``target`` ("c" or "cuda"): ``param`` maps weight vectors
        to their C loads, ``lhs``/``rhs`` are a binary op's operands. None when the op has no
        spelling (the epilogue macro then fails the build rather than skip it)."""
        expr = (self.cuda_expr or self.c_expr) if target == "cuda" else self.c_expr
        if expr is None:
            return None
        if callable(expr):
            return expr(attrs)
        fields = {k: c_float(v) for k, v in attrs.items() if is_number(v)}
        fields.update(param={} if param is None else param, lhs=lhs, rhs=rhs)
        return expr.format(**fields)

    def check(self, node: Node) -> None:
        """Fill defaults, reject unknown or malformed attributes, check arity and weights."""
        lo, hi = self.arity
        n = len(node.inputs)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'any'}"
            raise ModelError(f"takes {want} inputs, got {n}", node=node.name, op=self.name)
        for key in node.attrs:
            if key not in self.attrs:
                known = ", ".join(sorted(self.attrs)) or "none"
                raise ModelError(f"unknown attribute '{key}' (known: {known})", node=node.name, op=self.name,
                                 attr=key, fix=f"remove '{key}' or use one of: {known}")
        for key, spec in self.attrs.items():
            if key not in node.attrs:
                if spec.default is REQUIRED:
                    raise ModelError("is required", node=node.name, op=self.name, attr=key,
                                     fix=f"give {key} ({spec.expect})" if spec.expect else None)
                node.attrs[key] = spec.default
            value = node.attrs[key]
            if spec.check is not None and not _safe_check(spec.check, value):
                raise ModelError(f"got {value!r}, expected {spec.expect or 'a valid value'}",
                                 node=node.name, op=self.name, attr=key)
        for p in self.required_params:
            if p not in node.params:
                raise ModelError(f"needs the weight array '{p}'", node=node.name, op=self.name,
                                 fix="give weights (DSL initializes them) or load them from an .npz")
        for p in node.params:
            if p not in self.params:
                raise ModelError(f"unexpected weight array '{p}' (expected: {', '.join(self.params) or 'none'})",
                                 node=node.name, op=self.name)

    def infer(self, node: Node, in_types: list[TensorType]) -> TensorType:
        if any(t is None for t in in_types):
            raise ModelError("an input has no shape yet", node=node.name, op=self.name)
        shape = self.shape(node, in_types)
        for d in shape:
            d = sympy.sympify(d)
            if d.is_number and d <= 0:
                raise ModelError(f"output shape {tuple(shape)} has a non-positive size "
                                 f"(input {', '.join(str(t.shape) for t in in_types)})",
                                 node=node.name, op=self.name,
                                 fix="the kernel or window is larger than the (padded) input: reduce it, add padding, or use a larger input")
        dtype = self.dtype(node, in_types) if self.dtype else (in_types[0].dtype if in_types else "float32")
        return TensorType(tuple(shape), dtype)


def _safe_check(fn, value) -> bool:
    try:
        return bool(fn(value))
    except Exception:
        return False


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ValueError(f"operator {opdef.name} registered twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def get(name: str, *, node: str | None = None) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown operator '{name}'", node=node, op=name,
                         fix=f"use one of: {', '.join(sorted(REGISTRY))}") from None


# ---------------------------------------------------------------------------------------------
# attribute checks
def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def pos_int(v) -> bool:
    return is_int(v) and v > 0


def ints_or_int(pred=pos_int):
    return lambda v: pred(v) or (isinstance(v, (tuple, list)) and len(v) > 0 and all(pred(x) for x in v))


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def padding_ok(v) -> bool:
    if isinstance(v, str):
        return v.lower() in ("same", "valid", "full")
    return ints_or_int(lambda x: is_int(x) and x >= 0)(v) or (is_int(v) and v >= 0)


def tup(v, nd: int) -> tuple[int, ...]:
    """An int or a sequence -> a tuple of nd ints."""
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return tuple(int(v[0]) for _ in range(nd))
        if len(v) != nd:
            raise ValueError(f"expected {nd} values, got {v}")
        return tuple(int(x) for x in v)
    return (int(v),) * nd


def _nd_check(node: Node, key: str, nd: int, op: str) -> tuple[int, ...]:
    try:
        return tup(node.attrs[key], nd)
    except (ValueError, TypeError):
        raise ModelError(f"got {node.attrs[key]!r}, expected an int or {nd} ints", node=node.name, op=op,
                         attr=key) from None


def window_fits(node: Node, x: TensorType, g: dict, what: str, fix: str) -> None:
    """A conv kernel's or pool window's dilated extent must fit in the padded input, per spatial
    axis (``g``: the geometry with ``kernel``, ``pads``, ``dilation``); a ModelError names the axis."""
    for i, k in enumerate(g["kernel"]):
        n = x.shape[2 + i]
        lo, hi = g["pads"][i]
        eff = g["dilation"][i] * (k - 1) + 1
        if sympy.sympify(n).is_number and int(n) + lo + hi < eff:
            raise ModelError(f"{what} {k} (dilation {g['dilation'][i]}) spans {eff} but the padded input is only "
                             f"{int(n) + lo + hi} wide (size {n}, padding {lo}+{hi})",
                             node=node.name, op=node.op, attr="kernel_size", fix=fix)


# ---------------------------------------------------------------------------------------------
# cost model (per operator; a node's cost in its graph is cnncc.cost.node_cost)
def _cost(node: Node, in_types: list[TensorType], out: TensorType) -> dict[str, sympy.Expr]:
    opdef = get(node.op, node=node.name)
    flops = opdef.flops(node, in_types, out) if opdef.flops else sympy.Integer(0)
    if opdef.has(VIEW) or opdef.has(IDENTITY) or node.op in ("input", "constant"):
        read = written = sympy.Integer(0)
    else:
        read = sum((t.nbytes() for t in in_types), sympy.Integer(0)) + sum(int(p.nbytes) for p in node.params.values())
        written = out.nbytes()
    params = sum(int(np.prod(p.shape)) for p in node.params.values())
    return {"flops": sympy.sympify(flops), "bytes_read": read, "bytes_written": written,
            "params": sympy.Integer(params)}


def elementwise_flops(per: int = 1):
    return lambda node, ins, out: per * out.numel()


def _same_shape(node, ins):
    return ins[0].shape


def _axis_check(node, rank):
    ax = node.attrs["axis"]
    if not -rank <= ax < rank:
        raise ModelError(f"axis {ax} is out of range for rank {rank}", node=node.name, op=node.op, attr="axis")
    return ax % rank


def _dims_equal(a, b) -> bool:
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0
