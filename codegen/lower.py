"""Lowering: a (fused) Graph -> a Program of KernelSpecs, everything a target needs as plain ints.

Python decides WHAT each kernel computes; the templates of a target (C, CUDA) only spell it. The
vocabulary (TensorRef, Operand, EpilogueOp, PoolSpec, KernelSpec, Program) is codegen/spec.py;
each kernel family's lowering is registered in codegen/lowering.py (``@lowers``); this module is
the walk over the graph: where every tensor lives (inputs, outputs, the arena, the weight blob,
views and concat slices), how an operand is read at output coordinates, and which lowering each
node goes to. The names of spec.py (and template_env) are re-exported here for older imports.
"""
from __future__ import annotations

import numpy as np
import sympy

from cnncc import names, ops
from cnncc.errors import UnsupportedError
from cnncc.ir import N, Graph, Node

from .lowering import LOWERINGS, lower_fused
from .spec import (ALIGN_BYTES, ALIGN_FLOATS, EpilogueOp, KernelSpec, Operand, PoolSpec, Program,  # noqa: F401
                   TensorRef, append_blob_entry)
from .templating import template_env  # noqa: F401  (older imports)

# ---------------------------------------------------------------------------------------------
def lower(graph: Graph) -> list[KernelSpec]:
    """Contract E: one KernelSpec per kernel, in execution order."""
    return lower_program(graph).kernels


def lower_program(graph: Graph) -> Program:
    return _Lowering(graph).run()


def _row(t: TensorRef) -> int:
    """Elements per leading item: per batch item (batched) or per leading row (static)."""
    if t.batched:
        return t.item_numel
    return t.item_numel // t.shape[0] if t.shape and t.shape[0] else t.item_numel


def _linear_in_N(expr, what: str) -> tuple[int, int]:
    """sympy a*N + b -> (a, b); a Max of linear pieces -> its componentwise upper bound."""
    expr = sympy.sympify(expr)
    if isinstance(expr, sympy.Max):
        pieces = [_linear_in_N(a, what) for a in expr.args]
        return max(p[0] for p in pieces), max(p[1] for p in pieces)
    try:
        poly = sympy.Poly(sympy.expand(expr), N)
    except sympy.PolynomialError:
        raise UnsupportedError(f"{what} = {expr} is not linear in the batch size N") from None
    if poly.degree() > 1 or poly.free_symbols - {N}:
        raise UnsupportedError(f"{what} = {expr} is not linear in the batch size N")
    a = int(poly.coeff_monomial(N)) if poly.degree() == 1 else 0
    return a, int(poly.coeff_monomial(1))


class _Lowering:
    def __init__(self, graph: Graph):
        self.g = graph
        self.refs: dict[str, TensorRef] = {}
        self.blob_parts: list[np.ndarray] = []
        self.blob_size = 0
        self.blob_layout: dict[str, tuple[int, tuple]] = {}
        self.cnames: dict[str, str] = {}          # identifier -> the name it spells
        self.plan = graph.meta.get("memory_plan")
        self.arena_a = 0
        self.arena_b = 0

    # -- names, weights ----------------------------------------------------------------------
    def unique_cname(self, name: str, ident: str | None = None) -> str:
        """``names.ident(name)`` (or ``ident``), checked distinct from every other name's."""
        s = ident or names.ident(name)
        if self.cnames.setdefault(s, name) != name:
            raise UnsupportedError(f"tensors '{self.cnames[s]}' and '{name}' get the same C identifier {s} "
                                   f"(a hash collision in cnncc/names.py; rename one of them)")
        return s

    def weight_cname(self, key: str) -> str:
        node, _, param = key.rpartition(".")
        return self.unique_cname(key, names.weight_ident(node, param))

    def weight(self, key: str, arr: np.ndarray) -> TensorRef:
        """Append an array to the weight blob (deduplicated by key) and return its reference."""
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if key in self.blob_layout:
            off, shape = self.blob_layout[key]
            return TensorRef(key, self.weight_cname(key), tuple(shape), batched=False,
                             storage="weights", offset=off)
        off = self.blob_size
        self.blob_size += append_blob_entry(self.blob_parts, arr)
        self.blob_layout[key] = (off, tuple(arr.shape))
        return TensorRef(key, self.weight_cname(key), tuple(arr.shape), batched=False,
                         storage="weights", offset=off)

    # -- tensors -------------------------------------------------------------------------------
    def concrete(self, node: Node) -> tuple[tuple[int, ...], bool]:
        shape = node.type.shape
        if not shape:
            return (), False          # a scalar: one value, kept 0-D so the caller gets a 0-D array
        batched = sympy.simplify(sympy.sympify(shape[0]) - N) == 0
        rest = shape[1:] if batched else shape
        out = []
        for d in rest:
            d = sympy.sympify(d)
            if not d.is_number:
                raise UnsupportedError(f"layer '{node.name}' ({node.op}): shape {tuple(shape)} has a symbolic "
                                       f"size other than a leading batch N; compile needs concrete sizes "
                                       f"(fix: give concrete input sizes; only the batch may stay N)")
            out.append(int(d))
        return ((1,) + tuple(out) if batched else tuple(out)), bool(batched)

    def ref(self, name: str) -> TensorRef:
        if name not in self.refs:
            self.refs[name] = self._make_ref(name)
        return self.refs[name]

    def _make_ref(self, name: str) -> TensorRef:
        node = self.g[name]
        shape, batched = self.concrete(node)
        if node.op == "constant":
            r = self.weight(f"{name}.value", node.params["value"])
            r.shape, r.batched, r.name, r.cname = shape, batched, name, self.unique_cname(name)
            r.item_stride = _row(r)
            return r
        ref = TensorRef(name, self.unique_cname(name), shape, batched, dtype=node.type.dtype)
        ref.item_stride = _row(ref)
        if name in self.g.inputs:
            ref.storage, ref.slot = "input", self.g.inputs.index(name)
            return ref
        if name in self.g.outputs:
            if node.meta.get("write_into"):
                raise UnsupportedError(f"layer '{name}' is a graph output and also writes into concat "
                                       f"'{node.meta['write_into']['tensor']}'")
            ref.storage, ref.slot = "output", self.g.outputs.index(name)
            return ref
        view_of = node.meta.get("view_of")
        if view_of:
            src = self.ref(view_of)
            if batched != src.batched or (not batched and (src.item_stride != _row(src) or shape[:1] != src.shape[:1])):
                raise UnsupportedError(f"layer '{name}' ({node.op}) is a view that merges the batch dimension "
                                       f"{tuple(node.type.shape)}; cnncc keeps N as the leading dimension")
            # a channel slice (view_channel) starts that many channels into each item of its source
            skip = int(node.meta.get("view_channel", 0)) * int(np.prod(shape[2:], dtype=np.int64))
            return TensorRef(name, ref.cname, shape, batched, node.type.dtype, src.storage, src.slot, src.arena_a,
                             src.arena_b, src.offset, src.base + skip, src.item_stride if batched else _row(ref))
        wi = node.meta.get("write_into")
        if wi:
            dst = self.ref(wi["tensor"])
            inner = int(np.prod(shape[2:], dtype=np.int64))
            return TensorRef(name, ref.cname, shape, batched, node.type.dtype, dst.storage, dst.slot, dst.arena_a,
                             dst.arena_b, dst.offset, dst.base + int(wi["channel_offset"]) * inner, dst.item_stride)
        self.place_in_arena(ref)
        return ref

    def place_in_arena(self, ref: TensorRef) -> None:
        if self.plan and ref.name in self.plan.get("offsets", {}):
            ref.arena_a, ref.arena_b = _linear_in_N(self.plan["offsets"][ref.name], f"arena offset of '{ref.name}'")
            return
        if self.plan:
            raise UnsupportedError(f"the memory plan has no offset for intermediate tensor '{ref.name}'")
        size = ref.item_numel * np.dtype(ref.dtype).itemsize
        per_n = size if ref.batched else 0
        const = 0 if ref.batched else size
        ref.arena_a, ref.arena_b = self.arena_a, self.arena_b
        self.arena_a += -(-per_n // ALIGN_BYTES) * ALIGN_BYTES
        self.arena_b += -(-const // ALIGN_BYTES) * ALIGN_BYTES

    def operand(self, name: str, out_shape: tuple[int, ...]) -> Operand:
        """How to read tensor ``name`` at the output's (n, c, q) coordinates, numpy broadcasting."""
        t = self.ref(name)
        rank = len(out_shape)
        tshape = list(t.shape)
        if len(tshape) > rank:
            raise UnsupportedError(f"tensor '{name}' {tuple(t.shape)} has a higher rank than the output "
                                   f"{out_shape} it is combined with")
        # contiguous strides of the operand's storage, right-aligned against the output
        strides = [0] * rank
        acc = 1
        for i in range(len(tshape) - 1, -1, -1):
            od = rank - len(tshape) + i
            if i == 0 and t.batched:
                strides[od] = t.item_stride
            else:
                strides[od] = acc if tshape[i] != 1 or out_shape[od] == 1 else 0
                if tshape[i] == 1:
                    strides[od] = 0
            acc *= tshape[i]
        if rank == 0:
            return Operand(t, 0, 0, 0)
        s_n = strides[0] if (t.batched or len(tshape) == rank) else 0
        if not t.batched and len(tshape) == rank and tshape[0] == 1:
            s_n = 0
        s_c = strides[1] if rank > 1 else 0
        inner = list(out_shape[2:])
        inner_strides = strides[2:]
        contiguous = []
        acc = 1
        for d in reversed(inner):
            contiguous.append(acc)
            acc *= d
        contiguous = contiguous[::-1]
        live = [(s, d) for s, d in zip(inner_strides, inner) if d != 1]
        if all(s == 0 for s, _ in live):
            return Operand(t, s_n, s_c, 0)
        if all(s == cs for s, cs, d in zip(inner_strides, contiguous, inner) if d != 1):
            return Operand(t, s_n, s_c, 1)
        return Operand(t, s_n, s_c, 0, tuple(inner_strides), tuple(inner))

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Program:
        g = self.g
        for name in g.inputs:
            self.ref(name)
        for name in g.outputs:
            self.ref(name)
        kernels: list[KernelSpec] = []
        problems: list[str] = []
        for node in g:
            if node.op in ("input", "constant"):
                continue
            if node.meta.get("eliminated"):
                self.ref(node.name)
                continue
            if node.meta.get("view_of") and node.name not in g.outputs:
                self.ref(node.name)
                continue
            try:
                kernels.append(self.lower_node(node))
            except UnsupportedError as e:
                problems.append(str(e))
        if problems:
            raise UnsupportedError("cannot generate code for:\n  " + "\n  ".join(problems))
        if self.plan:
            self.arena_a, self.arena_b = _linear_in_N(self.plan["arena_bytes"], "arena size")
            source = "memory_plan"
        else:
            source = "cnncc"
        blob = np.concatenate(self.blob_parts) if self.blob_parts else np.zeros(ALIGN_FLOATS, np.float32)
        return Program(g.name, kernels, [self.ref(i) for i in g.inputs], [self.ref(o) for o in g.outputs],
                       blob, self.blob_layout, self.arena_a, self.arena_b, source)

    def lower_node(self, node: Node) -> KernelSpec:
        spec = self._lower_node(node)
        out = spec.output
        data = [t for t in spec.inputs if t.storage != "weights"]
        operands = [o for o in spec.operands + [e.operand for e in spec.epilogue if e.operand]]
        if spec.family == "roi":
            # a static output read from the images the boxes name: runs over its K boxes, takes N
            if out.batched or any(t.batched for t in spec.inputs[1:]):
                raise UnsupportedError(f"layer '{node.name}' ({node.op}): the box count must be fixed, "
                                       f"not the batch N")
            return spec
        if spec.geometry.get("whole"):
            # a static kernel that mixes the leading dim (concat/softmax along it, a transpose that
            # moves it, a matmul over literal batch dims): one pass over the whole tensors
            spec.batch = 1
            static = [t.name for t in data if t.batched] + [o.tensor.name for o in operands if o.tensor.batched]
        elif out.batched:
            static = [t.name for t in data if not t.batched]
        elif spec.family == "copy" and not any(t.batched for t in data):
            spec.batch, static = 1, []            # a static reshape: one copy of the whole tensor
            spec.geometry["numel"] = out.item_numel
        else:
            spec.batch = out.shape[0] if out.shape else 1
            static = [t.name for t in data if t.batched or (t.shape[0] if t.shape else 1) != spec.batch] + \
                     [o.tensor.name for o in operands if o.tensor.batched]
        if static:
            raise UnsupportedError(f"layer '{node.name}' ({node.op}): output {tuple(node.type.shape)} and input(s) "
                                   f"{', '.join(static)} do not share a leading batch dimension")
        return spec

    def _lower_node(self, node: Node) -> KernelSpec:
        out = self.ref(node.name)
        if node.op == "fused":
            return lower_fused(self, node)
        spec = KernelSpec(node.name, "", [(node.name, node.op)], out)
        spec.shapes[node.name] = tuple(str(d) for d in node.type.shape)
        opdef = ops.get(node.op, node=node.name)
        family = "copy" if node.meta.get("view_of") else opdef.kernel
        lowering = LOWERINGS.get(family)
        if lowering is None:
            raise UnsupportedError(f"layer '{node.name}' ({node.op}): the code generators have no kernel for "
                                   f"this operator yet")
        return lowering(self, spec, node)
