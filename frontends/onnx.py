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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sympy

from cnncc import names, ops
from cnncc.contracts import GraphOrigin, NodeOrigin
from cnncc.errors import ModelError, UnsupportedError
from cnncc.registry import registrar
from cnncc.resize import COORDINATE_MODES, NEAREST_MODES
from cnncc.ir import N, Graph, Node, TensorType, sym
from cnncc.shapes import batch_reshape_spec

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


handles = registrar(HANDLERS)    # @handles("Conv", ...): the importer of these ONNX operators


def supported_operators() -> list[str]:
    """The ONNX operator types the importer maps (some only when their inputs are constants)."""
    return sorted(HANDLERS)


# ---------------------------------------------------------------------------------------------
# entry point
def from_onnx(model, *, name: str | None = None, batch=None) -> Graph:
    """Import an ONNX model given as a path, serialized bytes or an ``onnx.ModelProto``.

    Symbolic input dimensions become sympy symbols; a dynamic (or unnamed) first dimension is the
    batch ``cnncc.N``. ``batch="N"`` makes a *fixed* leading dimension (a batch-1 export) the
    batch ``N`` too: Reshape targets written for the exported batch (``[1, -1]``) are restated
    for ``N`` when that is the only per-item reading, and a node that mixes the batch into other
    dimensions is refused by name. ``graph.origin.onnx_inputs`` / ``.onnx_outputs`` map ONNX
    tensor names to cnncc node names (cnncc/contracts.py, GraphOrigin)."""
    import onnx

    if batch is not None and not (batch == "N" or batch is N):
        raise ModelError(f"batch={batch!r}: the only choice is batch='N' (a symbolic batch)",
                         fix="pass batch='N', or leave it out to import the model's own batch")

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
    return _Importer(proto, name or default_name or proto.graph.name or "model", dynamic_batch=batch is not None).run()


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


#: an ONNX name as a graph node name ('/layer1/conv1/Conv' -> 'layer1_conv1_Conv'): cnncc/names.py
c_name = names.graph_name


# ---------------------------------------------------------------------------------------------
class _Importer:
    def __init__(self, proto, name: str, dynamic_batch: bool = False):
        import onnx  # noqa: F401  (the caller already needs it)

        self.dynamic_batch = dynamic_batch         # batch="N": fixed leading dims become N
        self.literal_batch: int | None = None      # the batch the model was exported with

        self.proto = proto
        self.opset = model_opset(proto)
        self.graph = Graph(c_name(name))
        self.onnx_inputs: dict[str, str] = {}     # ONNX input name -> cnncc input (graph.origin)
        self.onnx_outputs: dict[str, str] = {}    # ONNX output name -> cnncc node
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
        self._drop_dead()
        self.graph.origin = GraphOrigin(self.onnx_inputs, self.onnx_outputs, self.opset,
                                        self.literal_batch if self.dynamic_batch else None)
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
            if i == 0 and self.dynamic_batch and d.HasField("dim_value") and d.dim_value > 0:
                if self.literal_batch not in (None, int(d.dim_value)):
                    raise ModelError(f"graph input '{vi.name}' has batch {d.dim_value}, another input "
                                     f"{self.literal_batch}", fix="import without batch='N'")
                self.literal_batch = int(d.dim_value)
                shape.append(N)
            elif d.HasField("dim_value") and d.dim_value > 0:
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
        self.onnx_inputs[vi.name] = name

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
            self.onnx_outputs[vo.name] = src
            if src in self.per_plane_indices:
                self._check_index_output(src, vo.name)
        self.graph.outputs = names

    def _drop_dead(self) -> None:
        """Remove nodes no output depends on (what a recognized pattern such as LRN left behind);
        graph inputs stay, they are the model's signature."""
        live = set(self.graph.outputs)
        for node in reversed(list(self.graph)):
            if node.name in live:
                live.update(node.inputs)
        for node in reversed(list(self.graph)):
            if node.name not in live and node.op != "input":
                self.graph.remove(node.name)

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
                outs = [Const(_numeric(np.asarray(o))) for o in outs]
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
        node.origin = NodeOrigin(onnx_node=self.label)
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
        if self.dynamic_batch:
            self.check_per_item(old, shape)
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

    def check_per_item(self, old: tuple, new: tuple) -> None:
        """batch='N': a reshape of a batched tensor must keep N leading and out of the other dims."""
        if old and N in sympy.sympify(old[0]).free_symbols and (
                not new or sympy.simplify(sympy.sympify(new[0]) - old[0]) != 0
                or any(N in sympy.sympify(d).free_symbols for d in new[1:])):
            raise self.error(f"reshapes {tuple(old)} to {tuple(new)}: with batch='N' that mixes the batch into "
                             "other dimensions", fix="export the model with a dynamic batch axis, or import it "
                                                      "at its fixed batch (without batch='N')")

    def restate_batch(self, sizes: list, shape: tuple) -> list:
        """batch='N': a full-rank size list written for the exported batch (Resize's ``sizes``
        [1, C, H, W]) names the batch at position 0; restate it as the tensor's N."""
        if self.dynamic_batch and sizes and shape and N in sympy.sympify(shape[0]).free_symbols \
                and sympy.sympify(sizes[0]).is_number and int(sizes[0]) == self.literal_batch:
            return [shape[0]] + list(sizes[1:])
        return sizes


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


def _decide(imp, a, b, what: str) -> bool:
    """a == b for sizes that may be sympy expressions; undecidable means the answer depends on a
    symbolic size (the batch N of a dynamic-batch import): refuse rather than guess."""
    d = sympy.simplify(sympy.sympify(a) - sympy.sympify(b))
    if d.is_number:
        return bool(d == 0)
    raise imp.error(f"{what} compares the symbolic size {a} with {b}; the answer depends on the input size",
                    fix="import with a concrete size for that dimension (e.g. without batch='N')")


def _fold_equal(imp, vals, a):
    x, y = vals
    if x.dtype != object and y.dtype != object:
        return [np.equal(x, y)]
    return [np.vectorize(lambda p, q: _decide(imp, p, q, "Equal"), otypes=[bool])(x, y)]


def _fold_where(imp, vals, a):
    cond, x, y = vals
    if cond.dtype == object:
        raise imp.error("Where on a condition computed from a symbolic size",
                        fix="import with concrete input sizes")
    return [np.where(cond.astype(bool), x, y)]


def _fold_range(imp, vals, a):
    start, limit, delta = (np.asarray(v).reshape(()).item() for v in vals)
    if any(isinstance(v, sympy.Basic) and not v.is_number for v in (start, limit, delta)):
        raise imp.error(f"Range({start}, {limit}, {delta}) over a symbolic size",
                        fix="import with concrete input sizes")
    dtype = np.result_type(*[np.asarray(v).dtype for v in vals if np.asarray(v).dtype != object])
    return [np.arange(start, limit, delta).astype(dtype)]


def _fold_not(imp, vals, a):
    return [np.logical_not(vals[0])]


def _numeric(v: np.ndarray) -> np.ndarray:
    """An object array (sizes from a symbolic shape) whose entries all turned out to be numbers is
    an ordinary int64 array again, so later nodes fold with numpy (or onnx's reference)."""
    if v.dtype != object:
        return v
    items = [sympy.sympify(x) for x in v.reshape(-1)]
    if all(x.is_number and x.is_integer for x in items):
        return np.array([int(x) for x in items], np.int64).reshape(v.shape)
    return v


FOLDERS: dict[str, Callable] = {
    "Equal": _fold_equal, "Where": _fold_where, "Range": _fold_range, "Not": _fold_not,
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
    if imp.dynamic_batch:
        try:
            spec = batch_reshape_spec(imp.shape_of(ins[0]), spec, imp.literal_batch, N)
        except ModelError as e:
            raise imp.error(str(e).split("\n  fix: ")[0], fix=e.fix) from None
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
    if imp.dynamic_batch and ax == 0:
        raise imp.error("Flatten with axis 0 folds the batch into the features", attr="axis",
                        fix="import at the model's fixed batch (without batch='N')")
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


@handles("Slice")
def _slice(imp, node, ins, a):
    """Slice of a runtime tensor with constant starts/ends/axes/steps (INT64_MAX ends, negative
    and out-of-range values keep ONNX's clamping)."""
    rank = len(imp.shape_of(ins[0]))
    if imp.opset < 10:
        starts, ends = list(a["starts"]), list(a["ends"])
        axes, steps = list(a.get("axes", range(len(starts)))), [1] * len(starts)
    else:
        starts = _int_list(imp.const(ins[1], "starts"))
        ends = _int_list(imp.const(ins[2], "ends"))
        axes = _int_list(imp.const(ins[3], "axes")) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = _int_list(imp.const(ins[4], "steps")) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    if any(isinstance(v, sympy.Basic) for v in starts + ends + axes + steps):
        raise imp.error("Slice bounds computed from a symbolic size", fix="import with concrete input sizes")
    return imp.emit("slice", [imp.tensor(ins[0])], {"starts": starts, "ends": ends,
                                                    "axes": [int(x) % rank for x in axes], "steps": steps})


@handles("Split")
def _split(imp, node, ins, a):
    """Split of a runtime tensor: one ``slice`` node per output (sizes from the split input or
    attribute; equal parts otherwise, the last one smaller with opset 18's num_outputs)."""
    shape = imp.shape_of(ins[0])
    ax = int(a.get("axis", 0)) % len(shape)
    n = sympy.sympify(shape[ax])
    if not n.is_number:
        raise imp.error(f"Split along axis {ax} of symbolic size {n}", attr="axis",
                        fix="split an axis of concrete size (cnncc keeps the batch whole)")
    n = int(n)
    if "split" in a:
        sizes = [int(v) for v in a["split"]]
    elif len(ins) > 1 and ins[1] is not None:
        sizes = [int(v) for v in _int_list(imp.const(ins[1], "split"))]
    else:
        parts = int(a.get("num_outputs", len(node.output)))
        step = -(-n // parts)
        sizes = [min(step, n - i) for i in range(0, n, step)]
    if sum(sizes) != n or len(sizes) != len(node.output):
        raise imp.error(f"sizes {sizes} do not cut axis {ax} of size {n} into {len(node.output)} outputs",
                        attr="split")
    x, outs, at = imp.tensor(ins[0]), [], 0
    for name, size in zip(node.output, sizes):
        outs.append(imp.emit("slice", [x], {"starts": [at], "ends": [at + size], "axes": [ax], "steps": [1]},
                             name=name or None))
        at += size
    return outs


@handles("Gather")
def _gather(imp, node, ins, a):
    idx = imp.const(ins[1], "the indices")
    if idx.dtype == object:
        raise imp.error("Gather indices computed from a symbolic size", fix="import with concrete input sizes")
    rank = len(imp.shape_of(ins[0]))
    indices = np.asarray(idx, np.int64)
    return imp.emit("gather", [imp.tensor(ins[0])], {"axis": int(a.get("axis", 0)) % rank,
                                                     "indices": indices.tolist() if indices.ndim else int(indices)})


def _only_constant(imp, node, ins, a):
    raise _Skip(f"{node.op_type} on a runtime tensor (cnncc folds it only on constants)")


@handles("If")
def _if(imp, node, ins, a):
    """An If whose condition is known at import (exporters test static shapes, e.g. classic
    LocalResponseNorm's squeeze) is its taken branch, imported inline; outer tensors stay visible."""
    from onnx import numpy_helper

    cond = ins[0]
    if not isinstance(cond, Const):
        raise _Skip("If on a runtime condition (cnncc inlines an If only when its condition is known at import)")
    if cond.value.dtype == object:
        raise imp.error("If on a condition computed from a symbolic size", fix="import with concrete input sizes")
    branch = a["then_branch"] if bool(np.asarray(cond.value).reshape(-1)[0]) else a["else_branch"]
    outer = imp.current
    for init in branch.initializer:
        imp.values[init.name] = Const(numpy_helper.to_array(init))
    for inner in branch.node:
        imp._import_node(inner)
    imp.current = outer
    return [imp.values.get(o.name, _Poison()) for o in branch.output]


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


def _conv_inputs(imp, ins, op: str, kinds: str):
    """A Conv/ConvTranspose node's data input, its params (the constant weight, input 1, and the
    optional bias, input 2), its spatial rank (1 or 2: ``kinds`` says which cnncc has) and
    kernel size."""
    params = {"weight": np.asarray(imp.const(ins[1], f"the {op} weight"), np.float32)}
    if len(ins) > 2 and ins[2] is not None:
        params["bias"] = np.asarray(imp.const(ins[2], f"the {op} bias"), np.float32)
    nd = params["weight"].ndim - 2
    if nd not in (1, 2):
        raise _Skip(f"{nd}-D {op} (cnncc has {kinds})")
    return imp.tensor(ins[0]), params, nd, [int(k) for k in params["weight"].shape[2:]]


@handles("Conv")
def _conv(imp, node, ins, a):
    x, params, nd, kernel = _conv_inputs(imp, ins, "Conv", "conv1d and conv2d")
    if "kernel_shape" in a and [int(k) for k in a["kernel_shape"]] != kernel:
        raise imp.error(f"kernel_shape {a['kernel_shape']} differs from the weight's {kernel}", attr="kernel_shape")
    strides, dilations, pads = _geometry(imp, a, imp.shape_of(x), kernel)
    attrs = {"stride": tuple(strides), "dilation": tuple(dilations), "padding": _padding_attr(pads),
             "groups": int(a.get("group", 1))}
    return imp.emit(f"conv{nd}d", [x], attrs, params)


@handles("ConvTranspose")
def _conv_transpose(imp, node, ins, a):
    x, params, nd, kernel = _conv_inputs(imp, ins, "ConvTranspose", "conv_transpose2d")
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
            if auto == "SAME_UPPER":
                b, e = total // 2, total - total // 2
            else:   # SAME_LOWER, and NOTSET with output_shape (ONNX's reference: the odd pixel at the start;
                b, e = total - total // 2, total // 2      # a negative total grows the output at the end)
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
        params["weight"] = params["weight"][:, :, None, :]
        attrs = {"stride": (1, strides[0]), "dilation": (1, dilations[0]), "padding": (0, pads[0], 0, pads[1]),
                 "output_padding": (0, out_pad[0]), "groups": attrs["groups"]}
        return _back_to_1d(imp, imp.emit("conv_transpose2d", [_as_2d(imp, x)], attrs, params))
    return imp.emit("conv_transpose2d", [x], attrs, params)


POOL_KIND = {"MaxPool": "max", "AveragePool": "avg", "LpPool": "lp"}


def _valid_window_scale(sizes, kernel, strides, dilations, pads) -> np.ndarray:
    """AveragePool with count_include_pad=0 and pads wider than PyTorch allows: an average over the whole
    zero-padded window times (window size / input elements in that window), per output position."""
    if not all(sympy.sympify(d).is_number for d in sizes):
        raise _Skip("AveragePool with padding wider than half the window, count_include_pad=0, on symbolic sizes")
    nd = len(kernel)
    per_axis = []
    for i, n in enumerate(int(sympy.sympify(d)) for d in sizes):
        valid = np.pad(np.ones(n), (pads[i], pads[nd + i]))
        span = (kernel[i] - 1) * dilations[i] + 1
        starts = range(0, len(valid) - span + 1, strides[i])
        per_axis.append(np.array([valid[o: o + span: dilations[i]].sum() for o in starts]))
    counts = per_axis[0] if nd == 1 else np.multiply.outer(per_axis[0], per_axis[1])
    counts = counts.reshape((1, 1) + counts.shape)
    if (counts == 0).any():
        raise _Skip("AveragePool whose window lies entirely in the padding (count_include_pad=0 divides by 0)")
    return (np.prod(kernel) / counts).astype(np.float32)


@handles("MaxPool", "AveragePool", "LpPool")
def _pool(imp, node, ins, a):
    x = imp.tensor(ins[0])
    shape = imp.shape_of(x)
    nd = len(shape) - 2
    kind = POOL_KIND[node.op_type]
    collapsed = None
    if nd > 2 and len(node.output) == 1:
        x, a, collapsed = _collapse_trailing_window(imp, x, a, nd)
        if collapsed is not None:
            shape, nd = imp.shape_of(x), 2
    if nd not in (1, 2):
        raise _Skip(f"{nd}-D pooling with a window over more than one of the first and last axes "
                    "(cnncc pools 1-D and 2-D)")
    if int(a.get("storage_order", 0)):
        raise _Skip("MaxPool with column-major indices (storage_order=1)")
    kernel = [int(k) for k in a["kernel_shape"]]
    strides, dilations, pads = _geometry(imp, a, shape, kernel)
    ceil = bool(a.get("ceil_mode", 0))
    include_pad = bool(a.get("count_include_pad", 0))
    # PyTorch's rule (pad <= kernel/2) binds the registry; wider ONNX pads become an explicit pad node
    too_wide = any(max(pads[i], pads[nd + i]) * 2 > kernel[i] for i in range(nd))
    rescale = None
    if too_wide:
        if ceil:
            raise _Skip("pooling with padding wider than half the window in ceil mode")
        if kind == "avg" and not include_pad:    # zero-pad, average whole windows, rescale by window / valid count
            rescale = _valid_window_scale(shape[2:], kernel, strides, dilations, pads)
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
    if rescale is not None:
        y = imp.emit("mul", [y, imp.const_node(Const(rescale))], name=imp.label + "_valid")
    if collapsed is not None:        # (N, C, OD, rest) -> (N, C, OD, H, W, ...)
        y = imp.reshape(y, tuple(imp.shape_of(y)[:3]) + collapsed)
    outs = [_back_to_1d(imp, y) if as_1d else y]
    if len(node.output) > 1 and node.output[1]:
        if kind != "max" or nd != 2:
            raise _Skip("pool indices other than 2-D MaxPool")
        idx = imp.emit("max_pool2d_indices", [x], attrs, name=node.output[1])
        imp.per_plane_indices.add(idx)
        outs.append(idx)
    return outs


def _collapse_trailing_window(imp, x: str, a: dict, nd: int):
    """A 3-D (or higher) pool whose window, stride and padding are trivial on every axis after the
    first spatial one (PyTorch's classic LocalResponseNorm export: a (size, 1, 1) average over
    channels) is a 2-D pool over (first axis, the rest flattened). Returns the reshaped input, the
    2-D attributes and the trailing sizes to restore, or (x, a, None) when it does not apply."""
    kernel = [int(k) for k in a["kernel_shape"]]
    strides = [int(s) for s in a.get("strides", [1] * nd)]
    dilations = [int(d) for d in a.get("dilations", [1] * nd)]
    pads = [int(p) for p in a.get("pads", [0] * (2 * nd))]
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    trivial = all(kernel[i] == 1 and strides[i] == 1 and dilations[i] == 1 and pads[i] == 0 == pads[nd + i]
                  for i in range(1, nd))
    if not trivial or auto not in ("NOTSET", "VALID"):
        return x, a, None
    shape = imp.shape_of(x)
    rest = tuple(shape[3:])
    x = imp.reshape(x, tuple(shape[:3]) + (sympy.Mul(*rest),))
    a = dict(a, kernel_shape=[kernel[0], 1], strides=[strides[0], 1], dilations=[dilations[0], 1],
             pads=[pads[0], 0, pads[nd], 0])
    return x, a, rest


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


@handles("MaxRoiPool")
def _max_roi_pool(imp, node, ins, a):
    # rois (K, 5) [batch_index, x1, y1, x2, y2]: the registry's own box form
    oh, ow = (int(v) for v in a["pooled_shape"])
    return imp.emit("roi_pool", [imp.tensor(ins[0]), imp.tensor(ins[1])],
                    {"output_size": (oh, ow), "spatial_scale": float(a.get("spatial_scale", 1.0))})


@handles("RoiAlign")
def _roi_align(imp, node, ins, a):
    # rois (K, 4) and batch_indices (K,) stay two inputs (the registry's (x, rois, batch_indices) form);
    # opset 10 had no coordinate_transformation_mode and behaved as output_half_pixel, 16 defaults to half_pixel
    mode = a.get("coordinate_transformation_mode", "half_pixel" if imp.opset >= 16 else "output_half_pixel")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("half_pixel", "output_half_pixel"):
        raise imp.error(f"coordinate_transformation_mode '{mode}' is not one ONNX defines",
                        attr="coordinate_transformation_mode", fix="use 'half_pixel' or 'output_half_pixel'")
    pool = a.get("mode", "avg")
    pool = pool.decode() if isinstance(pool, bytes) else pool
    if pool not in ("avg", "max"):
        raise imp.error(f"mode '{pool}' is not one ONNX defines", attr="mode", fix="use 'avg' or 'max'")
    idx = ins[2]
    if isinstance(idx, Const):
        idx = Const(np.asarray(idx.value, np.float32))
    attrs = {"output_size": (int(a.get("output_height", 1)), int(a.get("output_width", 1))),
             "spatial_scale": float(a.get("spatial_scale", 1.0)), "sampling_ratio": int(a.get("sampling_ratio", 0)),
             "aligned": mode == "half_pixel", "mode": pool}
    return imp.emit("roi_align", [imp.tensor(ins[0]), imp.tensor(ins[1]), imp.tensor(idx)], attrs)


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
SIMPLE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish", "Mish": "mish"}


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


@handles("Pow")
def _pow(imp, node, ins, a):
    e = ins[1]
    if not isinstance(e, Const) or e.value.size != 1:
        raise _Skip("Pow with a runtime or per-element exponent (cnncc raises to one constant power)")
    if not isinstance(ins[0], Const) and imp.type_of(ins[0]).dtype != "float32":
        raise _Skip(f"Pow on {imp.type_of(ins[0]).dtype}")
    return imp.emit("pow", [imp.tensor(ins[0])], {"exponent": float(np.asarray(e.value).reshape(-1)[0])})


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
    if node.op_type == "Div" and isinstance(x, str) and isinstance(y, str):
        lrn = _torchscript_lrn(imp, x, y)
        if lrn is not None:
            return imp.emit("lrn", [x], lrn)
    return imp.emit(BINARY[node.op_type], [imp.tensor(x), imp.tensor(y)])


def _torchscript_lrn(imp, x: str, den: str) -> dict | None:
    """PyTorch's classic exporter writes ``nn.LocalResponseNorm`` as
    ``x / (k + alpha * AvgPool3d(Pad(view(x*x, N, 1, C, H, W)), (size, 1, 1)))^beta`` (the 3-D pool
    imported as a 2-D one over (C, H*W)); when ``den`` is exactly that chain over ``x`` with
    PyTorch's window (size//2 channels before, (size-1)//2 after) this returns the ``lrn``
    attributes (one kernel instead of six); None otherwise. The chain's nodes become dead and are
    dropped at the end of the import."""
    g = imp.graph

    def node(name, op):
        return g[name] if name in g and g[name].op == op else None

    def through_views(name):
        while name in g and g[name].op == "reshape":
            name = g[name].inputs[0]
        return name

    def scalar_and_other(n):
        for i, j in ((0, 1), (1, 0)):
            c = node(n.inputs[i], "constant")
            if c is not None and c.params["value"].size == 1:
                return float(c.params["value"].reshape(-1)[0]), n.inputs[j]
        return None, None

    p = node(den, "pow")
    add = p and node(p.inputs[0], "add")
    k, scaled = scalar_and_other(add) if add else (None, None)
    mul = scaled and node(scaled, "mul")
    alpha, avg = scalar_and_other(mul) if mul else (None, None)
    pool = avg and node(through_views(avg), "avg_pool2d")
    if pool is None or sympy.simplify(sympy.Matrix(g[avg].type.shape) - sympy.Matrix(g[x].type.shape)) != \
            sympy.zeros(len(g[x].type.shape), 1):
        return None
    pa = pool.attrs
    size = ops.tup(pa["kernel_size"], 2)[0]
    if ops.tup(pa["kernel_size"], 2)[1] != 1 or ops.tup(pa["stride"], 2) != (1, 1) or \
            ops.tup(pa["dilation"], 2) != (1, 1) or pa["padding"] not in (0, (0, 0), (0, 0, 0, 0)) or pa["ceil_mode"]:
        return None
    pad = node(through_views(pool.inputs[0]), "pad")
    if pad is None or pad.attrs["mode"] != "constant" or float(pad.attrs["value"]) != 0.0:
        return None
    five = g[pad.inputs[0]].type.shape
    widths = ops.pad_widths(pad, len(five))
    if len(five) != 5 or five[1] != 1 or widths != [(0, 0), (0, 0), (size // 2, (size - 1) // 2), (0, 0), (0, 0)]:
        return None
    square = node(through_views(pad.inputs[0]), "mul")
    if square is None or square.inputs != [x, x] or five[2] != g[x].type.shape[1]:
        return None
    return {"size": int(size), "alpha": alpha, "beta": float(p.attrs["exponent"]), "k": k}


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


def _resize_inputs(imp, node, ins, a, rank: int):
    """ONNX Upsample/Resize (opset 7-19+) inputs and attributes -> (scales or None, sizes or None, roi), each
    over all ``rank`` axes (``axes`` expanded), plus the coordinate mode and nearest rule of that opset."""
    def present(i):
        return len(ins) > i and ins[i] is not None and np.asarray(imp.const(ins[i], node.op_type + " input")).size

    roi = None
    if node.op_type == "Upsample":
        if "scales" in a:
            scales = [float(v) for v in a["scales"]]
        elif "height_scale" in a:                       # Upsample-1
            scales = [1.0, 1.0, float(a["height_scale"]), float(a["width_scale"])]
        else:
            scales = [float(v) for v in imp.const(ins[1], "scales")]
        return scales, None, roi, "asymmetric", "simple"
    if imp.opset < 11:                                  # Resize-10: asymmetric, onnxruntime's rounding
        return [float(v) for v in imp.const(ins[1], "scales")], None, roi, "asymmetric", "simple"
    scales = [float(v) for v in imp.const(ins[2], "scales")] if present(2) else None
    # sizes may hold the symbolic batch (Concat(Shape(x)[:2], hw) folded at import)
    sizes = [sympy.sympify(v) for v in np.asarray(imp.const(ins[3], "sizes")).ravel()] if present(3) else None
    if (scales is None) == (sizes is None):
        raise _Skip("Resize needs exactly one of the inputs scales and sizes")
    coord = a.get("coordinate_transformation_mode", "half_pixel")
    if coord == "tf_crop_and_resize":
        if not present(1):
            raise _Skip("Resize: coordinate_transformation_mode 'tf_crop_and_resize' needs the roi input")
        roi = [float(v) for v in imp.const(ins[1], "roi")]
    axes = [int(v) % rank for v in a["axes"]] if "axes" in a else list(range(rank))
    shape = imp.shape_of(imp.tensor(ins[0]))
    if scales is not None:
        full = [1.0] * rank
        for j, ax in enumerate(axes):
            full[ax] = scales[j]
        scales = full
    else:
        full = list(shape)
        for j, ax in enumerate(axes):
            full[ax] = sizes[j]
        sizes = imp.restate_batch(full, shape)
    if roi is not None:
        full = [0.0] * rank + [1.0] * rank
        for j, ax in enumerate(axes):
            full[ax], full[rank + ax] = roi[j], roi[len(axes) + j]
        roi = full
    policy = a.get("keep_aspect_ratio_policy", "stretch")
    if sizes is not None and policy != "stretch":
        dims = [sympy.sympify(shape[ax]) for ax in axes]
        if not all(d.is_number for d in dims):
            raise _Skip(f"Resize: keep_aspect_ratio_policy '{policy}' on symbolic sizes of axes {axes}")
        if not all(sizes[ax].is_number for ax in axes):
            raise _Skip(f"Resize: keep_aspect_ratio_policy '{policy}' with symbolic sizes {sizes}")
        ratios = [int(sizes[ax]) / int(d) for ax, d in zip(axes, dims)]
        scale = min(ratios) if policy == "not_larger" else max(ratios)
        scales = [scale if i in axes else 1.0 for i in range(rank)]
        sizes = [int(scale * int(sympy.sympify(shape[i])) + 0.5) if i in axes else shape[i] for i in range(rank)]
    return scales, sizes, roi, coord, a.get("nearest_mode", "round_prefer_floor")


@handles("Upsample", "Resize")
def _resize(imp, node, ins, a):
    """Every Upsample/Resize of a 4-D tensor that leaves N and C alone -> one resize2d (its attributes are
    ONNX's, resolved to the spatial axes: output size and/or scale per axis, roi per axis)."""
    x = imp.tensor(ins[0])
    shape = imp.shape_of(x)
    if len(shape) != 4:
        raise _Skip(f"{node.op_type} of a rank-{len(shape)} tensor (cnncc resizes NCHW: give a 4-D input)")
    mode = {"bilinear": "linear"}.get(a.get("mode", "nearest"), a.get("mode", "nearest"))
    if mode not in ("nearest", "linear", "cubic"):
        raise _Skip(f"{node.op_type}: mode '{mode}' (expected nearest, linear or cubic)")
    scales, sizes, roi, coord, rule = _resize_inputs(imp, node, ins, a, 4)
    for ax, what in ((0, "batch"), (1, "channel")):
        moved = (scales is not None and scales[ax] != 1.0) or \
                (sizes is not None and sympy.sympify(sizes[ax]) != sympy.sympify(shape[ax])) or \
                (roi is not None and (roi[ax], roi[4 + ax]) != (0.0, 1.0))
        if moved:
            attr = "scales" if scales is not None else "sizes"
            raise _Skip(f"{node.op_type} resizes the {what} axis ({attr} {list(scales or sizes)}"
                        f"{', roi ' + str(roi) if roi else ''}): cnncc resizes H and W only; give "
                        f"{attr}[{ax}] = {1.0 if attr == 'scales' else shape[ax]} (use axes=[2, 3])")
    attrs = {"mode": mode, "coordinate_mode": coord, "nearest_mode": rule,
             "cubic_coeff_a": float(a.get("cubic_coeff_a", -0.75)),
             "exclude_outside": bool(int(a.get("exclude_outside", 0))),
             "antialias": bool(int(a.get("antialias", 0))) and mode != "nearest",
             "extrapolation_value": float(a.get("extrapolation_value", 0.0))}
    if scales is not None:
        attrs["scale_factor"] = (float(scales[2]), float(scales[3]))
    if sizes is not None:
        if not all(sympy.sympify(s).is_number for s in sizes[2:]):
            raise _Skip(f"{node.op_type} to symbolic spatial sizes {sizes[2:]} (cnncc resizes to concrete H, W)")
        attrs["size"] = tuple(int(sympy.sympify(s)) for s in sizes[2:])
    if roi is not None:
        attrs["roi"] = ((roi[2], roi[6]), (roi[3], roi[7]))
    for key in ("coordinate_mode", "nearest_mode"):
        allowed = COORDINATE_MODES if key == "coordinate_mode" else NEAREST_MODES[:4]
        if attrs[key] not in allowed and not (key == "nearest_mode" and attrs[key] == "simple"):
            onnx_key = "coordinate_transformation_mode" if key == "coordinate_mode" else key
            raise _Skip(f"{node.op_type}: {onnx_key} '{attrs[key]}' (expected one of {', '.join(allowed)})")
    return imp.emit("resize2d", [x], attrs)


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
