"""ONNX import: an ``.onnx`` model (opset 7 and newer) -> cnncc.Graph on the registry operators.

Why it is shaped like this: ONNX graphs mix the network with bookkeeping that exporters emit
(``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains, ``Constant`` and
``ConstantOfShape`` weights, ``Identity``/``Dropout``). Every tensor is therefore tracked as
either a *runtime* tensor (a node of the cnncc graph) or a *constant* (a numpy array, possibly of
sympy expressions when it was computed from a symbolic shape such as the batch ``N``). Constants
are folded at import with numpy, so only the network reaches the graph; weights go into
``node.params`` in PyTorch layout. Operators are mapped one handler each (``@handles``); a model
with unsupported operators fails once, listing every offender and the opset.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sympy

from cnncc import ops
from cnncc.errors import ModelError, UnsupportedError
from cnncc.ir import N, Graph, Node, TensorType, sym

__all__ = ["from_onnx", "supported_operators"]

#: the newest opset we read; older models keep their own semantics (Softmax axis, Clip, ...)
MIN_OPSET = 6


@dataclass
class Const:
    """A tensor known at import time (numpy; dtype object when it holds sympy sizes)."""

    value: np.ndarray


class _Skip(Exception):
    """Raised by a handler: this node uses a feature cnncc does not cover (collected, reported once)."""


class _Poison:
    """The output of a node that could not be imported; consumers are skipped, not reported twice."""


HANDLERS: dict[str, Callable] = {}


def handles(*op_types: str):
    def register(fn):
        for t in op_types:
            HANDLERS[t] = fn
        return fn
    return register


def supported_operators() -> list[str]:
    """The ONNX operator types the importer maps (some only when their inputs are constants)."""
    return sorted(HANDLERS)


# ---------------------------------------------------------------------------------------------
# entry point
def from_onnx(model, *, name: str | None = None) -> Graph:
    """Import an ONNX model given as a path, serialized bytes or an ``onnx.ModelProto``.

    Symbolic input dimensions become sympy symbols; a dynamic (or unnamed) first dimension is the
    batch ``cnncc.N``. ``graph.meta["onnx_inputs"]`` / ``["onnx_outputs"]`` map ONNX tensor
    names to cnncc node names."""
    import onnx

    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"no such ONNX file: {path}" + (" (it is a folder)" if path.is_dir() else ""))
        proto = _parse(path.read_bytes(), f"'{path}'")
        from onnx.external_data_helper import load_external_data_for_model, uses_external_data

        if any(uses_external_data(t) for t in proto.graph.initializer):
            load_external_data_for_model(proto, str(path.parent))    # as onnx.load(path) does
        default_name = path.stem
    elif isinstance(model, (bytes, bytearray)):
        proto = _parse(bytes(model), f"the {len(model)} bytes given")
        default_name = None
    elif isinstance(model, onnx.ModelProto):
        proto = model
        default_name = None
    else:
        raise ModelError(f"from_onnx expects a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    return _Importer(proto, name or default_name or proto.graph.name or "model").run()


def _parse(data: bytes, what: str):
    """Bytes -> ModelProto; truncated or foreign bytes (protobuf's DecodeError) and files that
    parse but hold no ONNX graph become a ModelError naming the file."""
    import onnx
    from google.protobuf.message import DecodeError

    fix = "check that the file is a complete .onnx export (not truncated, not another format)"
    try:
        proto = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{what} is not a valid ONNX model: protobuf cannot parse it ({e})", fix=fix) from None
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise ModelError(f"{what} parses as protobuf but holds no ONNX graph ({len(data)} bytes, "
                         f"ir_version {proto.ir_version})", fix=fix)
    return proto


def model_opset(proto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def c_name(text: str) -> str:
    """A valid C identifier from an ONNX name ('/layer1/conv1/Conv' -> 'layer1_conv1_Conv')."""
    s = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")
    s = re.sub(r"_+", "_", s)
    if not s or s[0].isdigit():
        s = "t_" + s
    return s


# ---------------------------------------------------------------------------------------------
class _Importer:
    def __init__(self, proto, name: str):
        import onnx  # noqa: F401  (the caller already needs it)

        self.proto = proto
        self.opset = model_opset(proto)
        self.graph = Graph(c_name(name))
        self.values: dict[str, Any] = {}          # ONNX tensor name -> graph node name | Const | _Poison
        self.materialized: dict[int, str] = {}    # id(Const) -> constant node name
        self.per_plane_indices: set[str] = set()  # graph nodes holding PyTorch-style pool indices
        self.unsupported: list[tuple[str, str, str]] = []
        self.current = None                        # the ONNX node being imported
        self.dim_symbols: dict[str, sympy.Symbol] = {}

    # -- driver -----------------------------------------------------------------------------
    def run(self) -> Graph:
        from onnx import numpy_helper

        if self.opset < MIN_OPSET:
            raise UnsupportedError(f"opset {self.opset} is older than the oldest cnncc reads ({MIN_OPSET}); "
                                   "upgrade it with onnx.version_converter.convert_version(model, 13)")
        g = self.proto.graph
        for init in g.initializer:
            self.values[init.name] = Const(numpy_helper.to_array(init))
        for vi in g.input:
            if vi.name not in self.values:       # older exporters list initializers as inputs too
                self._add_input(vi)
        self._check_producers(g)
        for node in g.node:
            self._import_node(node)
        if self.unsupported:
            lines = "\n".join(f"  - {n} ({t}){': ' + why if why else ''}" for n, t, why in self.unsupported)
            raise UnsupportedError(f"the model (opset {self.opset}) uses {len(self.unsupported)} node(s) cnncc "
                                   f"cannot import:\n{lines}\n"
                                   f"  supported: {', '.join(supported_operators())}")
        self._set_outputs(g.output)
        self.graph.meta["onnx_opset"] = self.opset
        return self.graph

    def _check_producers(self, g) -> None:
        """Every tensor has one producer, and nodes come after their producers (ONNX requires a
        topological order): name the tensor produced twice, the cycle, or the node out of order."""
        import networkx as nx

        producer: dict[str, str] = {}
        labels = [n.name or (n.output[0] if n.output else n.op_type) for n in g.node]
        for label, node in zip(labels, g.node):
            for o in node.output:
                if not o:
                    continue
                if o in producer or o in self.values:
                    first = f"'{producer[o]}'" if o in producer else "a graph input or initializer"
                    raise ModelError(f"tensor '{o}' is produced twice: by {first} and by '{label}'", node=label,
                                     op=node.op_type, fix="every ONNX tensor name must be assigned exactly once "
                                     "(SSA); rename one of the outputs")
                producer[o] = label
        seen = set(self.values)
        deps = nx.DiGraph()
        for label, node in zip(labels, g.node):
            for i in node.input:
                if i in producer:
                    deps.add_edge(producer[i], label)
        for label, node in zip(labels, g.node):
            for i in node.input:
                if i and i not in seen and i in producer:
                    try:
                        cycle = nx.find_cycle(deps, producer[i])
                        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
                        raise ModelError(f"the graph has a cycle: {path}", node=label, op=node.op_type,
                                         fix="a node cannot (indirectly) consume its own output; break the loop")
                    except nx.NetworkXNoCycle:
                        raise ModelError(f"input '{i}' is produced by '{producer[i]}', which comes later: the "
                                         f"nodes are not in topological order", node=label, op=node.op_type,
                                         fix="sort the nodes (ONNX requires it), e.g. re-export the model") from None
            seen.update(o for o in node.output if o)

    def _add_input(self, vi) -> None:
        from onnx import helper

        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except Exception:
            raise UnsupportedError(f"graph input '{vi.name}' has an unsupported element type {tt.elem_type}") from None
        if dtype not in ("float32", "int64"):
            raise UnsupportedError(f"graph input '{vi.name}' is {dtype}; cnncc computes in float32",
                                   ) from None
        if not tt.HasField("shape"):
            raise ModelError(f"graph input '{vi.name}' has no shape", fix="export the model with input shapes")
        shape = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            elif d.HasField("dim_value") and i > 0:
                raise ModelError(f"graph input '{vi.name}' axis {i} has size {d.dim_value}; a CNN input needs "
                                 f"positive sizes", fix="export the model with concrete input sizes (or a named "
                                 "symbolic dimension)")
            elif i == 0:
                if d.dim_param:
                    self.dim_symbols.setdefault(d.dim_param, N)
                shape.append(N)
            elif d.dim_param:
                shape.append(self.dim_symbols.setdefault(d.dim_param, sym(c_name(d.dim_param))))
            else:
                shape.append(sym(f"{c_name(vi.name)}_d{i}"))
        name = self.graph.unique_name(c_name(vi.name))
        node = Node(name, "input", [], {"shape": tuple(shape), "dtype": dtype})
        ops.get("input").check(node)
        node.type = ops.get("input").infer(node, [])
        self.graph.add(node)
        self.values[vi.name] = name
        self.graph.meta.setdefault("onnx_inputs", {})[vi.name] = name

    def _set_outputs(self, outputs) -> None:
        names = []
        for vo in outputs:
            v = self.values.get(vo.name)
            if v is None:
                raise ModelError(f"graph output '{vo.name}' is never computed",
                                 fix="no node, initializer or input has that name: re-export the model")
            if isinstance(v, _Poison):
                continue
            src = self.tensor(v)
            if src in self.graph.inputs or src in names:    # an output must be its own buffer
                src = self.emit("identity", [src], name=vo.name)
            names.append(src)
            self.graph.meta.setdefault("onnx_outputs", {})[vo.name] = src
            if src in self.per_plane_indices:
                self._check_index_output(src, vo.name)
        self.graph.outputs = names

    def _check_index_output(self, src: str, onnx_name: str) -> None:
        shape = self.graph[src].type.shape
        nc = sympy.sympify(shape[0] * shape[1])
        if not (nc.is_number and int(nc) == 1):
            raise UnsupportedError(f"output '{onnx_name}': MaxPool indices are returned per (n, c) plane "
                                   "(PyTorch convention), ONNX counts over the whole tensor; only "
                                   "N = C = 1 models can return them")

    def _import_node(self, node) -> None:
        self.current = node
        label = node.name or (node.output[0] if node.output else node.op_type)
        ins = [self.values.get(i) if i else None for i in node.input]
        for i, v in zip(node.input, ins):
            if i and v is None:
                raise ModelError(f"input '{i}' is not produced by any node, initializer or graph input", node=label,
                                 op=node.op_type, fix="the model is incomplete (a dangling name): re-export it, or "
                                 "check it with onnx.checker.check_model")
        if any(isinstance(v, _Poison) for v in ins):
            if node.domain not in ("", "ai.onnx") or node.op_type not in HANDLERS:
                self.unsupported.append((label, node.op_type, ""))
            self._poison(node)
            return
        if node.domain not in ("", "ai.onnx"):
            self.unsupported.append((label, f"{node.domain}.{node.op_type}", "custom domain"))
            self._poison(node)
            return
        attrs = _attributes(node)
        handler = HANDLERS.get(node.op_type)
        try:
            if node.op_type in FOLDERS and all(v is None or isinstance(v, Const) for v in ins) \
                    and (ins or node.op_type in ("Constant",)):
                outs = FOLDERS[node.op_type](self, [None if v is None else v.value for v in ins], attrs)
                outs = [Const(np.asarray(o)) for o in outs]
            elif handler is None:
                if ins and all(v is None or isinstance(v, Const) for v in ins):
                    outs = [Const(o) for o in _fold_with_onnx_reference(
                        node, [None if v is None else v.value for v in ins], self.opset)]
                else:
                    raise _Skip("")
            else:
                outs = handler(self, node, ins, attrs)
        except _Skip as e:
            self.unsupported.append((label, node.op_type, str(e)))
            self._poison(node)
            return
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for name, value in zip(node.output, outs):
            if name:
                self.values[name] = value

    def _poison(self, node) -> None:
        for o in node.output:
            if o:
                self.values[o] = _Poison()

    # -- building blocks ---------------------------------------------------------------------
    @property
    def label(self) -> str:
        n = self.current
        return n.name or n.output[0]

    def error(self, message: str, attr: str | None = None, fix: str | None = None) -> ModelError:
        return ModelError(message, node=self.label, op=self.current.op_type, attr=attr, fix=fix)

    def emit(self, op: str, inputs: list[str], attrs: dict | None = None, params: dict | None = None,
             name: str | None = None) -> str:
        """Add one registry node, derive its type now (later handlers read shapes)."""
        base = c_name(name or self._default_name(op))
        node = Node(self.graph.unique_name(base), op, list(inputs), dict(attrs or {}),
                    {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in (params or {}).items()})
        opdef = ops.get(op, node=node.name)
        opdef.check(node)
        node.type = opdef.infer(node, [self.graph[i].type for i in node.inputs])
        node.meta["onnx_node"] = self.label
        self.graph.add(node)
        return node.name

    def _default_name(self, op: str) -> str:
        n = self.current
        if n is None:
            return op
        outs = {o.name for o in self.proto.graph.output}
        if n.output and n.output[0] in outs:
            return n.output[0]
        return n.name or (n.output[0] if n.output else op)

    def const_node(self, c: Const) -> str:
        if id(c) not in self.materialized:
            v = c.value
            if v.dtype == object:
                raise self.error("a size computed from a symbolic shape is used as data",
                                 fix="give the model concrete input sizes")
            v = np.ascontiguousarray(v, np.float32 if v.dtype.kind == "f" else v.dtype)
            base = c_name(self.label + "_const")
            node = Node(self.graph.unique_name(base), "constant", [], {}, {"value": v})
            ops.get("constant").check(node)
            node.type = ops.get("constant").infer(node, [])
            self.graph.add(node)
            self.materialized[id(c)] = node.name
        return self.materialized[id(c)]

    def tensor(self, v) -> str:
        """A graph node name for a runtime tensor or a (materialized) constant."""
        if isinstance(v, Const):
            return self.const_node(v)
        if isinstance(v, str):
            return v
        raise self.error("missing input")

    def type_of(self, v) -> TensorType:
        if isinstance(v, Const):
            return TensorType(v.value.shape, str(v.value.dtype) if v.value.dtype != object else "int64")
        return self.graph[v].type

    def shape_of(self, v) -> tuple:
        return tuple(self.type_of(v).shape)

    def const(self, v, what: str) -> np.ndarray:
        """The value of an input that must be known at import (weights, shapes, pads)."""
        if not isinstance(v, Const):
            raise _Skip(f"{what} must be a constant (an initializer), not a runtime tensor")
        return v.value

    def reshape(self, x: str, shape: tuple, name: str | None = None) -> str:
        """Reshape a runtime tensor to a sympy shape; a no-op is skipped."""
        old = self.shape_of(x)
        shape = tuple(sympy.sympify(d) for d in shape)
        if len(old) == len(shape) and all(sympy.simplify(a - b) == 0 for a, b in zip(old, shape)):
            return x
        symbolic = [i for i, d in enumerate(shape) if not d.is_number]
        if len(symbolic) == 1:
            spec = tuple(-1 if i == symbolic[0] else int(d) for i, d in enumerate(shape))
        elif not symbolic:
            spec = tuple(int(d) for d in shape)
        else:
            spec = tuple(int(d) if d.is_number else d for d in shape)
        return self.emit("reshape", [x], {"shape": spec}, name=name)


def _attributes(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _fold_with_onnx_reference(node, values: list, opset: int) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all numeric constants with onnx's reference runtime."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    if any(v is not None and v.dtype == object for v in values):
        raise _Skip("computes on a symbolic shape; only Shape/Gather/Unsqueeze/Concat/Reshape/Slice/Cast/arithmetic "
                    "fold symbolically")
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(values)]
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for n, v in zip(names, values) if n]
    outs = [f"out{i}" for i in range(len(node.output))]
    one = helper.make_node(node.op_type, names, outs, domain=node.domain, **_attributes(node))
    g = helper.make_graph([one], "fold", inputs, [helper.make_empty_tensor_value_info(o) for o in outs])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    try:
        res = ReferenceEvaluator(model).run(None, {n: v for n, v in zip(names, values) if n})
    except Exception as e:  # pragma: no cover - depends on onnx's reference coverage
        raise _Skip(f"could not fold constant node: {e}") from None
    return [np.asarray(r) for r in res]


# ---------------------------------------------------------------------------------------------
# folding: numpy (object arrays carry sympy sizes through shape arithmetic)
def _int_list(v) -> list:
    return [int(x) if not isinstance(x, sympy.Basic) or x.is_number else x for x in np.asarray(v).reshape(-1)]


def _fold_constant(imp, vals, a):
    from onnx import numpy_helper

    if "value" in a:
        return [numpy_helper.to_array(a["value"])]
    if "value_float" in a:
        return [np.array(a["value_float"], np.float32)]
    if "value_floats" in a:
        return [np.array(a["value_floats"], np.float32)]
    if "value_int" in a:
        return [np.array(a["value_int"], np.int64)]
    if "value_ints" in a:
        return [np.array(a["value_ints"], np.int64)]
    raise _Skip(f"Constant with attribute {sorted(a)} (sparse or string values)")


def _fold_constant_of_shape(imp, vals, a):
    from onnx import numpy_helper

    shape = _int_list(vals[0])
    if any(isinstance(d, sympy.Basic) for d in shape):
        raise _Skip("ConstantOfShape with a symbolic shape")
    fill = numpy_helper.to_array(a["value"]).reshape(-1) if "value" in a else np.zeros(1, np.float32)
    return [np.full(shape, fill[0], dtype=fill.dtype)]


def _norm_axes(axes, rank):
    return sorted(int(x) % rank for x in axes)


def _fold_unsqueeze(imp, vals, a):
    axes = a.get("axes") if "axes" in a else _int_list(vals[1])
    x = vals[0]
    for ax in _norm_axes(axes, x.ndim + len(axes)):
        x = np.expand_dims(x, ax)
    return [x]


def _fold_squeeze(imp, vals, a):
    x = vals[0]
    axes = a.get("axes") if "axes" in a else (_int_list(vals[1]) if len(vals) > 1 and vals[1] is not None else None)
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(_norm_axes(axes, x.ndim)))]


def _reshape_target(in_shape, spec, allowzero=False) -> list:
    """ONNX Reshape semantics (0 copies, -1 infers) over sympy sizes."""
    spec = list(spec)
    out = []
    for i, d in enumerate(spec):
        if not isinstance(d, sympy.Basic) and int(d) == 0 and not allowzero:
            out.append(sympy.sympify(in_shape[i]))
        else:
            out.append(sympy.sympify(d))
    if sum(1 for d in out if d == -1) > 1:
        raise ValueError("two -1 in a reshape")
    if any(d == -1 for d in out):
        total = sympy.Mul(*[sympy.sympify(d) for d in in_shape])
        known = sympy.Mul(*[d for d in out if d != -1])
        out = [sympy.simplify(total / known) if d == -1 else d for d in out]
    return out


def _fold_reshape(imp, vals, a):
    spec = a["shape"] if "shape" in a else _int_list(vals[1])
    target = _reshape_target(vals[0].shape, spec, bool(a.get("allowzero", 0)))
    return [vals[0].reshape([int(d) for d in target])]


def _fold_gather(imp, vals, a):
    return [np.take(vals[0], vals[1].astype(np.int64), axis=int(a.get("axis", 0)))]


def _fold_concat(imp, vals, a):
    return [np.concatenate([v for v in vals if v is not None], axis=int(a.get("axis", 1 if imp.opset < 4 else 0)))]


def _fold_cast(imp, vals, a):
    from onnx import helper

    to = np.dtype(helper.tensor_dtype_to_np_dtype(a["to"]))
    if vals[0].dtype == object:
        return [vals[0]]
    return [vals[0].astype(to)]


def _fold_slice(imp, vals, a):
    x = vals[0]
    if imp.opset < 10:
        starts, ends = a["starts"], a["ends"]
        axes = a.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _int_list(vals[1]), _int_list(vals[2])
        axes = _int_list(vals[3]) if len(vals) > 3 and vals[3] is not None else list(range(len(starts)))
        steps = _int_list(vals[4]) if len(vals) > 4 and vals[4] is not None else [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        big = 2 ** 62
        sl[int(ax) % x.ndim] = slice(max(min(int(s), big), -big), max(min(int(e), big), -big), int(st))
    return [x[tuple(sl)]]


def _fold_binary(fn):
    def fold(imp, vals, a):
        x, y = vals
        if x.dtype == object or y.dtype == object:
            return [np.vectorize(fn, otypes=[object])(x, y)]
        out = fn(x, y)
        return [np.asarray(out).astype(np.result_type(x, y))]
    return fold


def _int_div(p, q):
    if isinstance(p, sympy.Basic) or isinstance(q, sympy.Basic):
        return sympy.floor(sympy.sympify(p) / q)
    if np.issubdtype(np.asarray(p).dtype, np.integer) and np.issubdtype(np.asarray(q).dtype, np.integer):
        return np.trunc(np.asarray(p) / np.asarray(q)).astype(np.int64)
    return np.divide(p, q)


def _fold_shape(imp, vals, a):
    raise AssertionError("Shape is handled on types")


def _fold_identity(imp, vals, a):
    return [vals[0]]


def _fold_transpose(imp, vals, a):
    return [np.transpose(vals[0], a.get("perm"))]


def _fold_flatten(imp, vals, a):
    x = vals[0]
    ax = int(a.get("axis", 1)) % max(x.ndim, 1) if x.ndim else 0
    return [x.reshape(int(np.prod(x.shape[:ax])), -1)]


def _fold_sum(imp, vals, a):
    out = vals[0]
    for v in vals[1:]:
        out = out + v
    return [out]


FOLDERS: dict[str, Callable] = {
    "Constant": _fold_constant, "ConstantOfShape": _fold_constant_of_shape, "Unsqueeze": _fold_unsqueeze,
    "Squeeze": _fold_squeeze, "Reshape": _fold_reshape, "Gather": _fold_gather, "Concat": _fold_concat,
    "Cast": _fold_cast, "Slice": _fold_slice, "Identity": _fold_identity, "Transpose": _fold_transpose,
    "Flatten": _fold_flatten, "Sum": _fold_sum,
    "Add": _fold_binary(lambda p, q: p + q), "Sub": _fold_binary(lambda p, q: p - q),
    "Mul": _fold_binary(lambda p, q: p * q), "Div": _fold_binary(_int_div),
}


# ---------------------------------------------------------------------------------------------
# shape bookkeeping on runtime tensors
@handles("Shape")
def _shape(imp, node, ins, a):
    shape = list(imp.shape_of(ins[0]))
    rank = len(shape)
    start, end = int(a.get("start", 0)), a.get("end")
    shape = shape[start % rank if start < 0 else start: (rank if end is None else int(end))]
    if all(sympy.sympify(d).is_number for d in shape):
        return Const(np.array([int(d) for d in shape], np.int64))
    return Const(np.array([sympy.sympify(d) for d in shape], dtype=object))


@handles("Identity", "Dropout")
def _identity(imp, node, ins, a):
    if node.op_type == "Dropout":
        if len(ins) > 2 and ins[2] is not None and bool(np.asarray(imp.const(ins[2], "training_mode")).item()):
            raise _Skip("Dropout in training mode")
        if len(node.output) > 1 and node.output[1] and _is_used(imp, node.output[1]):
            raise _Skip("Dropout's mask output")
    return [ins[0]]


def _is_used(imp, tensor: str) -> bool:
    g = imp.proto.graph
    return any(tensor in n.input for n in g.node) or any(o.name == tensor for o in g.output)


@handles("Cast")
def _cast(imp, node, ins, a):
    from onnx import helper

    to = np.dtype(helper.tensor_dtype_to_np_dtype(a["to"]))
    if to != np.dtype(imp.type_of(ins[0]).dtype):
        raise _Skip(f"Cast of a runtime tensor to {to}")
    return [ins[0]]


@handles("Reshape")
def _reshape(imp, node, ins, a):
    spec = a["shape"] if "shape" in a else _int_list(imp.const(ins[1], "the target shape"))
    if a.get("allowzero", 0) and any(not isinstance(d, sympy.Basic) and int(d) == 0 for d in spec):
        raise _Skip("Reshape to a size-0 dimension (allowzero)")
    try:
        target = _reshape_target(imp.shape_of(ins[0]), spec)
    except ValueError as e:
        raise imp.error(str(e), attr="shape") from None
    return imp.reshape(imp.tensor(ins[0]), tuple(target))


@handles("Flatten")
def _flatten(imp, node, ins, a):
    rank = len(imp.shape_of(ins[0]))
    ax = int(a.get("axis", 1))
    ax = ax % rank if ax < 0 else ax
    return imp.emit("flatten", [imp.tensor(ins[0])], {"axis": ax})


@handles("Unsqueeze", "Squeeze")
def _squeeze(imp, node, ins, a):
    shape = list(imp.shape_of(ins[0]))
    axes = a.get("axes") if "axes" in a else (_int_list(imp.const(ins[1], "axes"))
                                              if len(ins) > 1 and ins[1] is not None else None)
    if node.op_type == "Unsqueeze":
        for ax in _norm_axes(axes, len(shape) + len(axes)):
            shape.insert(ax, 1)
    else:
        drop = set(_norm_axes(axes, len(shape))) if axes is not None else {i for i, d in enumerate(shape) if d == 1}
        shape = [d for i, d in enumerate(shape) if i not in drop]
    return imp.reshape(imp.tensor(ins[0]), tuple(shape))


@handles("Transpose")
def _transpose(imp, node, ins, a):
    perm = a.get("perm")
    return imp.emit("transpose", [imp.tensor(ins[0])], {"perm": tuple(int(p) for p in perm) if perm else None})


@handles("Concat")
def _concat(imp, node, ins, a):
    rank = len(imp.shape_of(ins[0]))
    ax = int(a.get("axis", 1))
    return imp.emit("concat", [imp.tensor(v) for v in ins if v is not None], {"axis": ax % rank})


@handles("Gather", "Slice")
def _only_constant(imp, node, ins, a):
    raise _Skip(f"{node.op_type} on a runtime tensor (cnncc folds it only on constants)")


# ---------------------------------------------------------------------------------------------
# convolution and pooling geometry
def _spatial_pads(imp, a, in_shape, kernel, strides, dilations) -> list[int]:
    """ONNX pads (begins..., ends...) with auto_pad resolved; SAME needs concrete sizes."""
    nd = len(kernel)
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = list(a.get("pads", [0] * (2 * nd)))
        if len(pads) != 2 * nd:
            raise imp.error(f"pads {pads} should have {2 * nd} values", attr="pads")
        return [int(p) for p in pads]
    if auto == "VALID":
        return [0] * (2 * nd)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise imp.error(f"unknown auto_pad '{auto}'", attr="auto_pad")
    lo, hi = [], []
    for i in range(nd):
        n = sympy.sympify(in_shape[2 + i])
        if not n.is_number:
            raise imp.error(f"auto_pad {auto} on the symbolic size {n}", attr="auto_pad",
                            fix="give the model concrete spatial sizes")
        n = int(n)
        out = -(-n // strides[i])
        total = max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - n)
        small, big = total // 2, total - total // 2
        lo.append(small if auto == "SAME_UPPER" else big)
        hi.append(big if auto == "SAME_UPPER" else small)
    return lo + hi


def _as_2d(imp, x: str) -> str:
    """(N, C, L) -> (N, C, 1, L) so a 2-D operator can serve a 1-D one."""
    n, c, length = imp.shape_of(x)
    return imp.reshape(x, (n, c, 1, length))


def _back_to_1d(imp, y: str) -> str:
    n, c, one, length = imp.shape_of(y)
    return imp.reshape(y, (n, c, length))


def _geometry(imp, a, x_shape, kernel):
    nd = len(kernel)
    strides = [int(s) for s in a.get("strides", [1] * nd)]
    dilations = [int(d) for d in a.get("dilations", [1] * nd)]
    pads = _spatial_pads(imp, a, x_shape, kernel, strides, dilations)
    return strides, dilations, pads


def _padding_attr(pads: list[int]):
    nd = len(pads) // 2
    if pads[:nd] == pads[nd:]:
        return tuple(pads[:nd]) if nd > 1 else pads[0]
    return tuple(pads)


def _weight_and_bias(imp, ins, op: str) -> dict:
    """The constant weight (input 1) and optional bias (input 2) of a Conv/ConvTranspose node."""
    params = {"weight": np.asarray(imp.const(ins[1], f"the {op} weight"), np.float32)}
    if len(ins) > 2 and ins[2] is not None:
        params["bias"] = np.asarray(imp.const(ins[2], f"the {op} bias"), np.float32)
    return params


@handles("Conv")
def _conv(imp, node, ins, a):
    x = imp.tensor(ins[0])
    params = _weight_and_bias(imp, ins, "Conv")
    w = params["weight"]
    nd = w.ndim - 2
    if nd not in (1, 2):
        raise _Skip(f"{nd}-D convolution (cnncc has conv1d and conv2d)")
    kernel = [int(k) for k in w.shape[2:]]
    if "kernel_shape" in a and [int(k) for k in a["kernel_shape"]] != kernel:
        raise imp.error(f"kernel_shape {a['kernel_shape']} differs from the weight's {kernel}", attr="kernel_shape")
    strides, dilations, pads = _geometry(imp, a, imp.shape_of(x), kernel)
    attrs = {"stride": tuple(strides), "dilation": tuple(dilations), "padding": _padding_attr(pads),
             "groups": int(a.get("group", 1))}
    return imp.emit(f"conv{nd}d", [x], attrs, params)


@handles("ConvTranspose")
def _conv_transpose(imp, node, ins, a):
    x = imp.tensor(ins[0])
    params = _weight_and_bias(imp, ins, "ConvTranspose")
    w = params["weight"]
    nd = w.ndim - 2
    if nd not in (1, 2):
        raise _Skip(f"{nd}-D transposed convolution (cnncc has conv_transpose2d)")
    kernel = [int(k) for k in w.shape[2:]]
    strides = [int(s) for s in a.get("strides", [1] * nd)]
    dilations = [int(d) for d in a.get("dilations", [1] * nd)]
    out_pad = [int(p) for p in a.get("output_padding", [0] * nd)]
    in_sizes = [sympy.sympify(d) for d in imp.shape_of(x)[2:]]
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
        if not all(n.is_number for n in in_sizes):
            raise imp.error("output_shape / auto_pad SAME on symbolic sizes", attr="output_shape")
        if "output_shape" in a:
            target = [int(v) for v in a["output_shape"]][-nd:]
        else:
            target = [int(n) * s for n, s in zip(in_sizes, strides)]
        lo, hi = [], []
        for i in range(nd):
            total = strides[i] * (int(in_sizes[i]) - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - target[i]
            if auto == "SAME_UPPER" or (auto != "SAME_LOWER" and "output_shape" in a and False):
                b, e = total // 2, total - total // 2
            elif auto == "SAME_LOWER":
                b, e = total - total // 2, total // 2
            else:   # NOTSET with output_shape: ONNX puts the odd pixel at the end (SAME_UPPER rule)
                b, e = total // 2, total - total // 2
            lo.append(b)
            hi.append(e)
        pads = lo + hi
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = [int(p) for p in a.get("pads", [0] * (2 * nd))]
    # a negative end pad grows the output: that is output_padding
    for i in range(nd):
        if pads[nd + i] < 0:
            out_pad[i] += -pads[nd + i]
            pads[nd + i] = 0
    if any(p < 0 for p in pads):
        raise _Skip(f"ConvTranspose with negative begin padding {pads}")
    attrs = {"stride": tuple(strides), "dilation": tuple(dilations), "padding": _padding_attr(pads),
             "output_padding": tuple(out_pad), "groups": int(a.get("group", 1))}
    if nd == 1:
        params["weight"] = w[:, :, None, :]
        attrs = {"stride": (1, strides[0]), "dilation": (1, dilations[0]), "padding": (0, pads[0], 0, pads[1]),
                 "output_padding": (0, out_pad[0]), "groups": attrs["groups"]}
        return _back_to_1d(imp, imp.emit("conv_transpose2d", [_as_2d(imp, x)], attrs, params))
    return imp.emit("conv_transpose2d", [x], attrs, params)


POOL_KIND = {"MaxPool": "max", "AveragePool": "avg", "LpPool": "lp"}


@handles("MaxPool", "AveragePool", "LpPool")
def _pool(imp, node, ins, a):
    x = imp.tensor(ins[0])
    shape = imp.shape_of(x)
    nd = len(shape) - 2
    kind = POOL_KIND[node.op_type]
    if nd not in (1, 2):
        raise _Skip(f"{nd}-D pooling (cnncc pools 1-D and 2-D)")
    if int(a.get("storage_order", 0)):
        raise _Skip("MaxPool with column-major indices (storage_order=1)")
    kernel = [int(k) for k in a["kernel_shape"]]
    strides, dilations, pads = _geometry(imp, a, shape, kernel)
    ceil = bool(a.get("ceil_mode", 0))
    include_pad = bool(a.get("count_include_pad", 0))
    # PyTorch's rule (pad <= kernel/2) binds the registry; wider ONNX pads become an explicit pad node
    too_wide = any(max(pads[i], pads[nd + i]) * 2 > kernel[i] for i in range(nd))
    if too_wide:
        if kind == "avg" and not include_pad:
            raise _Skip("AveragePool with padding wider than half the window and count_include_pad=0")
        if ceil:
            raise _Skip("pooling with padding wider than half the window in ceil mode")
        value = -3.4028234663852886e38 if kind == "max" else 0.0
        widths = [0, 0] + pads[:nd] + [0, 0] + pads[nd:]
        x = imp.emit("pad", [x], {"pads": tuple(widths), "mode": "constant", "value": value},
                     name=imp.label + "_pad")
        pads = [0] * (2 * nd)
    attrs = {"kernel_size": tuple(kernel), "stride": tuple(strides), "dilation": tuple(dilations),
             "padding": _padding_attr(pads), "ceil_mode": ceil}
    if kind == "avg":
        attrs["count_include_pad"] = include_pad
    if kind == "lp":
        attrs["p"] = float(a.get("p", 2))
    as_1d = nd == 1 and (kind == "lp" or len(node.output) > 1)
    if as_1d:
        x = _as_2d(imp, x)
        attrs = {k: ((1, v[0]) if isinstance(v, tuple) and len(v) == 1 else v) for k, v in attrs.items()}
        attrs["padding"] = (0, pads[0], 0, pads[1])
        if pads[0] == pads[1]:
            attrs["padding"] = (0, pads[0])
    op = f"{kind}_pool{2 if as_1d else nd}d"
    y = imp.emit(op, [x], attrs)
    outs = [_back_to_1d(imp, y) if as_1d else y]
    if len(node.output) > 1 and node.output[1]:
        if kind != "max" or nd != 2:
            raise _Skip("pool indices other than 2-D MaxPool")
        idx = imp.emit("max_pool2d_indices", [x], attrs, name=node.output[1])
        imp.per_plane_indices.add(idx)
        outs.append(idx)
    return outs


@handles("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(imp, node, ins, a):
    op = "global_avg_pool" if node.op_type == "GlobalAveragePool" else "global_max_pool"
    return imp.emit(op, [imp.tensor(ins[0])])


@handles("ReduceMean", "ReduceMax")
def _reduce(imp, node, ins, a):
    x = imp.tensor(ins[0])
    rank = len(imp.shape_of(x))
    axes = a.get("axes")
    if axes is None and len(ins) > 1 and ins[1] is not None:
        axes = _int_list(imp.const(ins[1], "axes"))
    axes = _norm_axes(axes, rank) if axes else list(range(rank))
    if rank < 3 or axes != list(range(2, rank)):
        raise _Skip(f"{node.op_type} over axes {axes} (cnncc reduces all spatial axes: a global pool)")
    y = imp.emit("global_avg_pool" if node.op_type == "ReduceMean" else "global_max_pool", [x])
    if not int(a.get("keepdims", 1)):
        y = imp.reshape(y, imp.shape_of(y)[:2])
    return y


@handles("MaxUnpool")
def _max_unpool(imp, node, ins, a):
    x, idx = imp.tensor(ins[0]), ins[1]
    shape = imp.shape_of(x)
    if len(shape) != 4:
        raise _Skip(f"{len(shape) - 2}-D MaxUnpool (cnncc has max_unpool2d)")
    kernel = [int(k) for k in a["kernel_shape"]]
    strides = [int(s) for s in a.get("strides", [1, 1])]
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    if isinstance(idx, Const):
        v = np.asarray(idx.value, np.int64)
        idx = imp.const_node(Const(v))
    elif idx not in imp.per_plane_indices:
        nc = sympy.sympify(shape[0] * shape[1])
        if not (nc.is_number and int(nc) == 1):
            raise _Skip("MaxUnpool with indices from outside the model: ONNX counts them over the whole tensor, "
                        "cnncc per (n, c) plane; only N = C = 1 is the same")
    sizes = [(sympy.sympify(shape[2 + i]) - 1) * strides[i] + kernel[i] - pads[i] - pads[2 + i] for i in range(2)]
    attrs = {"kernel_size": tuple(kernel), "stride": tuple(strides), "padding": (0, 0)}
    if len(ins) > 2 and ins[2] is not None:
        attrs["output_size"] = tuple(int(v) for v in _int_list(imp.const(ins[2], "output_shape")))[-2:]
    else:
        attrs["output_size"] = tuple(int(s) if s.is_number else s for s in sizes)
    return imp.emit("max_unpool2d", [x, imp.tensor(idx)], attrs)


# ---------------------------------------------------------------------------------------------
# dense algebra
@handles("Gemm")
def _gemm(imp, node, ins, a):
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
    A = imp.tensor(ins[0])
    if ta:
        A = imp.emit("transpose", [A], {"perm": (1, 0)}, name=imp.label + "_transA")
    C = ins[2] if len(ins) > 2 else None
    if isinstance(ins[1], Const):
        B = np.asarray(ins[1].value, np.float32)
        weight = (B if tb else B.T) * np.float32(alpha)          # dense wants (out, in)
        params = {"weight": weight}
        out = weight.shape[0]
        rest = None
        if C is not None and beta != 0:
            if isinstance(C, Const) and np.asarray(C.value).size in (1, out) and \
                    (np.asarray(C.value).ndim < 2 or np.asarray(C.value).shape[0] == 1):
                params["bias"] = np.broadcast_to(np.asarray(C.value, np.float32).reshape(-1) * np.float32(beta),
                                                 (out,)).copy()
            else:
                rest = C
        y = imp.emit("dense", [A], {}, params, name=None if rest is None else imp.label + "_matmul")
    else:
        Bt = imp.tensor(ins[1])
        if tb:
            Bt = imp.emit("transpose", [Bt], {"perm": (1, 0)}, name=imp.label + "_transB")
        y = imp.emit("matmul", [A, Bt], name=imp.label + "_matmul")
        if alpha != 1.0:
            y = imp.emit("mul", [y, imp.const_node(Const(np.array(alpha, np.float32)))], name=imp.label + "_alpha")
        rest = C if beta != 0 else None
    if rest is not None:
        if isinstance(rest, Const):
            c = imp.const_node(Const(np.asarray(rest.value, np.float32) * np.float32(beta)))
        else:
            c = imp.tensor(rest)
            if beta != 1.0:
                c = imp.emit("mul", [c, imp.const_node(Const(np.array(beta, np.float32)))], name=imp.label + "_beta")
        y = imp.emit("add", [y, c])
    return y


@handles("MatMul")
def _matmul(imp, node, ins, a):
    A, B = ins
    if isinstance(B, Const) and B.value.ndim == 2 and not isinstance(A, Const) and len(imp.shape_of(A)) >= 2:
        return imp.emit("dense", [A], {}, {"weight": np.asarray(B.value, np.float32).T})
    return imp.emit("matmul", [imp.tensor(A), imp.tensor(B)])


# ---------------------------------------------------------------------------------------------
# normalization
@handles("BatchNormalization")
def _batch_norm(imp, node, ins, a):
    if int(a.get("training_mode", 0)) or (imp.opset < 7 and not int(a.get("is_test", 0))):
        raise _Skip("BatchNormalization in training mode")
    if not int(a.get("spatial", 1)):
        raise _Skip("BatchNormalization with spatial=0")
    if any(o and _is_used(imp, o) for o in node.output[1:]):
        raise _Skip("BatchNormalization's running-statistics outputs (training)")
    names = ("weight", "bias", "mean", "var")
    params = {k: np.asarray(imp.const(v, f"BatchNormalization's {k}"), np.float32).reshape(-1)
              for k, v in zip(names, ins[1:5])}
    return imp.emit("batch_norm", [imp.tensor(ins[0])], {"eps": float(a.get("epsilon", 1e-5))}, params)


@handles("InstanceNormalization")
def _instance_norm(imp, node, ins, a):
    params = {"weight": np.asarray(imp.const(ins[1], "scale"), np.float32).reshape(-1),
              "bias": np.asarray(imp.const(ins[2], "B"), np.float32).reshape(-1)}
    return imp.emit("instance_norm", [imp.tensor(ins[0])], {"eps": float(a.get("epsilon", 1e-5))}, params)


@handles("LRN")
def _lrn(imp, node, ins, a):
    size = int(a["size"])
    if size % 2 == 0:
        raise _Skip("LRN with an even size (ONNX and PyTorch centre an even window differently)")
    attrs = {"size": size, "alpha": float(a.get("alpha", 1e-4)), "beta": float(a.get("beta", 0.75)),
             "k": float(a.get("bias", 1.0))}
    return imp.emit("lrn", [imp.tensor(ins[0])], attrs)


# ---------------------------------------------------------------------------------------------
# activations
SIMPLE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish"}


@handles(*SIMPLE)
def _simple(imp, node, ins, a):
    return imp.emit(SIMPLE[node.op_type], [imp.tensor(ins[0])])


@handles("LeakyRelu")
def _leaky(imp, node, ins, a):
    return imp.emit("leaky_relu", [imp.tensor(ins[0])], {"alpha": float(a.get("alpha", 0.01))})


@handles("Elu")
def _elu(imp, node, ins, a):
    return imp.emit("elu", [imp.tensor(ins[0])], {"alpha": float(a.get("alpha", 1.0))})


@handles("Selu")
def _selu(imp, node, ins, a):
    alpha, gamma = float(a.get("alpha", 1.67326319217681884765625)), float(a.get("gamma", 1.05070102214813232421875))
    x = imp.tensor(ins[0])
    if abs(alpha - ops.SELU_ALPHA) < 1e-6 and abs(gamma - ops.SELU_SCALE) < 1e-6:
        return imp.emit("selu", [x])
    y = imp.emit("elu", [x], {"alpha": alpha}, name=imp.label + "_elu")
    return imp.emit("mul", [y, imp.const_node(Const(np.array(gamma, np.float32)))])


@handles("HardSigmoid")
def _hardsigmoid(imp, node, ins, a):
    return imp.emit("hardsigmoid", [imp.tensor(ins[0])],
                    {"alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))})


@handles("Softplus")
def _softplus(imp, node, ins, a):
    return imp.emit("softplus", [imp.tensor(ins[0])])


@handles("Gelu")
def _gelu(imp, node, ins, a):
    return imp.emit("gelu", [imp.tensor(ins[0])], {"approximate": a.get("approximate", "none")})


@handles("Clip")
def _clip(imp, node, ins, a):
    if imp.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        lo = float(np.asarray(imp.const(ins[1], "Clip's min")).item()) if len(ins) > 1 and ins[1] is not None else None
        hi = float(np.asarray(imp.const(ins[2], "Clip's max")).item()) if len(ins) > 2 and ins[2] is not None else None
    x = imp.tensor(ins[0])
    if lo == 0.0 and hi == 6.0:
        return imp.emit("relu6", [x])
    if lo is not None and hi is not None and lo > hi:    # ONNX: min > max gives max everywhere
        lo = hi
    return imp.emit("clip", [x], {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)})


@handles("PRelu")
def _prelu(imp, node, ins, a):
    x = imp.tensor(ins[0])
    shape = imp.shape_of(x)
    slope = np.asarray(imp.const(ins[1], "PRelu's slope"), np.float32)
    if imp.opset < 7 and slope.ndim == 1 and len(shape) > 2:     # opset 6: one slope per channel
        slope = slope.reshape((-1,) + (1,) * (len(shape) - 2))
    squeezed = slope.reshape(slope.shape[next((i for i, d in enumerate(slope.shape) if d != 1), slope.ndim):])
    channels = sympy.sympify(shape[1]) if len(shape) > 1 else None
    if slope.size == 1:
        return imp.emit("prelu", [x], {}, {"slope": slope.reshape(1)})
    per_channel = channels is not None and channels.is_number and squeezed.shape[0] == int(channels) and \
        squeezed.ndim == len(shape) - 1 and all(d == 1 for d in squeezed.shape[1:])
    if per_channel:
        return imp.emit("prelu", [x], {}, {"slope": squeezed.reshape(-1)})
    # any other broadcast: relu(x) + slope * (x - relu(x))
    pos = imp.emit("relu", [x], name=imp.label + "_pos")
    neg = imp.emit("sub", [x, pos], name=imp.label + "_neg")
    scaled = imp.emit("mul", [neg, imp.const_node(Const(slope))], name=imp.label + "_scaled")
    return imp.emit("add", [pos, scaled])


@handles("Softmax", "LogSoftmax")
def _softmax(imp, node, ins, a):
    op = "softmax" if node.op_type == "Softmax" else "log_softmax"
    x = imp.tensor(ins[0])
    shape = imp.shape_of(x)
    rank = len(shape)
    ax = int(a.get("axis", 1 if imp.opset < 13 else -1)) % rank
    if imp.opset >= 13 or ax == rank - 1:
        return imp.emit(op, [x], {"axis": ax})
    # opset < 13: softmax over the flattened trailing dims [axis:]
    flat = imp.reshape(x, (sympy.Mul(*shape[:ax]), sympy.Mul(*shape[ax:])), name=imp.label + "_2d")
    y = imp.emit(op, [flat], {"axis": 1}, name=imp.label + "_flat")
    return imp.reshape(y, shape)


# ---------------------------------------------------------------------------------------------
# elementwise arithmetic
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


@handles(*BINARY)
def _binary(imp, node, ins, a):
    x, y = ins
    if int(a.get("broadcast", 0)) and "axis" in a:      # opset < 7: align B's dims at `axis` of A
        rank_a, shape_b = len(imp.shape_of(x)), imp.shape_of(y)
        trailing = rank_a - int(a["axis"]) % rank_a - len(shape_b)
        if isinstance(y, Const):
            y = Const(y.value.reshape(y.value.shape + (1,) * trailing))
        else:
            y = imp.reshape(y, tuple(shape_b) + (1,) * trailing)
    for v in (x, y):
        if not isinstance(v, Const) and imp.type_of(v).dtype != "float32":
            raise _Skip(f"{node.op_type} on {imp.type_of(v).dtype}")
    return imp.emit(BINARY[node.op_type], [imp.tensor(x), imp.tensor(y)])


@handles("Sum")
def _sum(imp, node, ins, a):
    terms = [imp.tensor(v) for v in ins if v is not None]
    if len(terms) == 1:
        return terms[0]
    acc = terms[0]
    for i, t in enumerate(terms[1:], 1):
        acc = imp.emit("add", [acc, t], name=None if i == len(terms) - 1 else f"{imp.label}_{i}")
    return acc


# ---------------------------------------------------------------------------------------------
# data movement
@handles("Pad")
def _pad(imp, node, ins, a):
    x = imp.tensor(ins[0])
    rank = len(imp.shape_of(x))
    mode = a.get("mode", "constant")
    if imp.opset < 11:
        pads = list(a.get("pads", a.get("paddings", [])))
        value = float(a.get("value", 0.0))
    else:
        pads = _int_list(imp.const(ins[1], "pads"))
        value = float(np.asarray(imp.const(ins[2], "constant_value")).item()) \
            if len(ins) > 2 and ins[2] is not None else 0.0
        if len(ins) > 3 and ins[3] is not None:
            axes = _norm_axes(_int_list(imp.const(ins[3], "axes")), rank)
            full = [0] * (2 * rank)
            for j, ax in enumerate(axes):
                full[ax], full[rank + ax] = pads[j], pads[len(axes) + j]
            pads = full
    if mode not in ("constant", "reflect", "edge"):
        raise _Skip(f"Pad mode '{mode}' (cnncc pads constant, reflect, edge)")
    if any(int(p) < 0 for p in pads):
        raise _Skip("Pad with negative pads (cropping)")
    if not any(pads):
        return x
    return imp.emit("pad", [x], {"pads": tuple(int(p) for p in pads), "mode": mode, "value": value})


def _onnx_source_coords(mode: str, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """ONNX Resize's coordinate_transformation_mode: output index -> input coordinate.

    ``scale`` is the ONNX scale (given, or out/in when sizes were given); ONNX uses the
    unrounded resized length n_in * scale in align_corners mode."""
    d = np.arange(n_out, dtype=np.float64)
    if mode == "asymmetric":
        return d / scale
    if mode == "half_pixel":
        return (d + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (d + 0.5) / scale - 0.5 if n_out > 1 else np.zeros(n_out)
    if mode == "align_corners":
        length = n_in * scale
        return d * (n_in - 1) / (length - 1) if length > 1 else np.zeros(n_out)
    if mode == "tf_half_pixel_for_nn":
        return (d + 0.5) / scale
    raise _Skip(f"Resize coordinate_transformation_mode '{mode}'")


def _onnx_nearest(coords: np.ndarray, rule: str, n_in: int) -> np.ndarray:
    if rule == "floor":
        idx = np.floor(coords)
    elif rule == "ceil":
        idx = np.ceil(coords)
    elif rule == "round_prefer_ceil":
        idx = np.floor(coords + 0.5)
    else:                                   # round_prefer_floor
        idx = np.ceil(coords - 0.5)
    return np.clip(idx, 0, n_in - 1).astype(np.int64)


def _torch_linear_coords(n_in: int, n_out: int, scale: float | None, align_corners: bool) -> np.ndarray:
    """PyTorch's bilinear source coordinate (what the registry's upsample2d computes)."""
    d = np.arange(n_out, dtype=np.float64)
    if align_corners:
        return d * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    r = 1.0 / scale if scale else n_in / n_out
    return np.maximum((d + 0.5) * r - 0.5, 0.0)


def _torch_nearest(n_in: int, n_out: int, scale: float) -> np.ndarray:
    r = np.float32(1.0 / scale)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * r).astype(np.int64), n_in - 1)


@handles("Upsample", "Resize")
def _resize(imp, node, ins, a):
    x = imp.tensor(ins[0])
    shape = imp.shape_of(x)
    if len(shape) != 4:
        raise _Skip(f"{node.op_type} of a rank-{len(shape)} tensor (cnncc resizes NCHW)")
    mode = a.get("mode", "nearest")
    sizes = scales = None
    if node.op_type == "Upsample":
        scales = a["scales"] if "scales" in a else _int_list(imp.const(ins[1], "scales"))
        coord, rule = "asymmetric", "floor"
    else:
        if imp.opset < 11:
            scales = imp.const(ins[1], "scales").tolist()
            coord, rule = "asymmetric", "round_prefer_floor"
        else:
            if len(ins) > 3 and ins[3] is not None and np.asarray(ins[3].value if isinstance(ins[3], Const) else [1]).size:
                sizes = _int_list(imp.const(ins[3], "sizes"))
            elif len(ins) > 2 and ins[2] is not None:
                scales = imp.const(ins[2], "scales").tolist()
            coord = a.get("coordinate_transformation_mode", "half_pixel")
            rule = a.get("nearest_mode", "round_prefer_floor")
        for feature, default in (("antialias", 0), ("exclude_outside", 0)):
            if int(a.get(feature, default)):
                raise _Skip(f"Resize with {feature}=1")
        if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise _Skip("Resize keep_aspect_ratio_policy other than 'stretch'")
        if "axes" in a:
            full = [1.0] * 4 if scales is not None else [int(sympy.sympify(d)) if sympy.sympify(d).is_number else d
                                                          for d in shape]
            for j, ax in enumerate(int(v) % 4 for v in a["axes"]):
                full[ax] = (scales or sizes)[j]
            if scales is not None:
                scales = full
            else:
                sizes = full
    if mode not in ("nearest", "linear", "bilinear"):
        raise _Skip(f"{node.op_type} mode '{mode}' (cnncc resizes nearest and linear)")
    if coord == "tf_crop_and_resize":
        raise _Skip("Resize coordinate_transformation_mode 'tf_crop_and_resize'")
    if scales is not None and (float(scales[0]) != 1.0 or float(scales[1]) != 1.0) or \
            sizes is not None and any(sympy.sympify(sizes[i]) != sympy.sympify(shape[i]) for i in (0, 1)):
        raise _Skip(f"{node.op_type} that scales the batch or channel axis")
    in_hw = [sympy.sympify(d) for d in shape[2:]]
    if scales is not None:
        sc = [float(s) for s in scales[2:]]
        out_hw = [sympy.floor(n * sympy.Rational(repr(s))) for n, s in zip(in_hw, sc)]
    else:
        out_hw = [sympy.sympify(s) for s in sizes[2:]]
        sc = None
    if not all(n.is_number for n in in_hw + out_hw):
        raise _Skip(f"{node.op_type} on symbolic spatial sizes")
    in_i, out_i = [int(n) for n in in_hw], [int(n) for n in out_hw]
    eff = sc or [o / i for o, i in zip(out_i, in_i)]
    attrs = {"scale_factor": tuple(sc)} if sc is not None else {"size": tuple(out_i)}
    if mode == "nearest":
        # map onto PyTorch's nearest (floor(dst / scale)) when the two index maps agree exactly
        for i in range(2):
            want = _onnx_nearest(_onnx_source_coords(coord, in_i[i], out_i[i], eff[i]), rule, in_i[i])
            have = _torch_nearest(in_i[i], out_i[i], eff[i])
            if not np.array_equal(want, have):
                raise _Skip(f"nearest resize with coordinate mode '{coord}' and nearest_mode '{rule}' "
                            f"({in_i[i]} -> {out_i[i]}) picks other pixels than PyTorch's nearest")
        attrs["mode"] = "nearest"
    else:
        if coord not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            raise _Skip(f"linear resize with coordinate mode '{coord}' (cnncc: half_pixel or align_corners)")
        align = coord == "align_corners"
        if align:
            attrs = {"size": tuple(out_i)}
        for i in range(2):
            want = np.clip(_onnx_source_coords(coord, in_i[i], out_i[i], eff[i]), 0, in_i[i] - 1)
            have = np.clip(_torch_linear_coords(in_i[i], out_i[i], sc[i] if sc and not align else None, align),
                           0, in_i[i] - 1)
            if not np.allclose(want, have, atol=1e-6):
                raise _Skip(f"linear resize with coordinate mode '{coord}' ({in_i[i]} -> {out_i[i]}) samples "
                            "other points than PyTorch's bilinear")
        attrs["mode"] = "bilinear"
        attrs["align_corners"] = align
    return imp.emit("upsample2d", [x], attrs)


@handles("DepthToSpace")
def _depth_to_space(imp, node, ins, a):
    return imp.emit("depth_to_space", [imp.tensor(ins[0])],
                    {"block": int(a["blocksize"]), "mode": a.get("mode", "DCR")})


@handles("SpaceToDepth")
def _space_to_depth(imp, node, ins, a):
    return imp.emit("space_to_depth", [imp.tensor(ins[0])],
                    {"block": int(a["blocksize"]), "mode": a.get("mode", "DCR")})


# the constant-only operators are importable too (they fold)
for _op in FOLDERS:
    HANDLERS.setdefault(_op, _only_constant)
