"""Storage placement: where every tensor of a lowered graph lives, as a TensorRef.

Contract C (docs/DESIGN.md) made concrete. The passes decide placement as data: each node's
``Placement`` record (cnncc/contracts.py; eliminate_concat writes it) and the graph's
``MemoryPlan`` (plan_memory). :class:`Storage` turns them into addresses:

* graph inputs and outputs live in the caller's arrays (``storage`` input/output, ``slot``);
* weights and constants are entries of the one float32 weight blob, each starting on
  ``ALIGN_FLOATS`` (:func:`append_blob_entry`), deduplicated by key;
* a view (``view_of``: flatten/reshape, a channel slice from ``view_channel``) is its source's
  reference, ``base`` moved by the slice's first channel, ``item_stride`` kept, so every kernel
  that reads it walks the source's items; it launches nothing;
* a producer that writes into an eliminated concat (``write_into``) is the concat's reference
  with ``base`` moved to its channel offset and the concat's ``item_stride``;
* every other intermediate gets an arena offset ``arena_a * N + arena_b`` bytes: the memory
  plan's when there is one, else a fresh ``ALIGN_BYTES``-aligned slot of its own (opt 0/1).

codegen/lower.py's lowering is a Storage: it asks ``ref(name)`` for every tensor a kernel reads
or writes and ``weight(key, array)`` for every array it puts in the blob.
"""
from __future__ import annotations


import numpy as np
import sympy

from cnncc import names
from cnncc.contracts import MemoryPlan
from cnncc.errors import UnsupportedError
from cnncc.ir import N, Graph, Node

from .spec import ALIGN_BYTES, ALIGN_FLOATS, TensorRef, append_blob_entry  # noqa: F401  (the vocabulary)


def row_elements(t: TensorRef) -> int:
    """Elements per leading item: per batch item (batched) or per leading row (static)."""
    if t.batched:
        return t.item_numel
    return t.item_numel // t.shape[0] if t.shape and t.shape[0] else t.item_numel


def linear_in_N(expr, what: str) -> tuple[int, int]:
    """sympy a*N + b -> (a, b); a Max of linear pieces -> its componentwise upper bound."""
    expr = sympy.sympify(expr)
    if isinstance(expr, sympy.Max):
        pieces = [linear_in_N(a, what) for a in expr.args]
        return max(p[0] for p in pieces), max(p[1] for p in pieces)
    try:
        poly = sympy.Poly(sympy.expand(expr), N)
    except sympy.PolynomialError:
        raise UnsupportedError(f"{what} = {expr} is not linear in the batch size N") from None
    if poly.degree() > 1 or poly.free_symbols - {N}:
        raise UnsupportedError(f"{what} = {expr} is not linear in the batch size N")
    a = int(poly.coeff_monomial(N)) if poly.degree() == 1 else 0
    return a, int(poly.coeff_monomial(1))


class Storage:
    """The TensorRefs of one graph's tensors, its weight blob and its arena (see the module docstring)."""

    def __init__(self, graph: Graph):
        self.g = graph
        self.refs: dict[str, TensorRef] = {}
        self.blob_parts: list[np.ndarray] = []
        self.blob_size = 0
        self.blob_layout: dict[str, tuple[int, tuple]] = {}
        self.cnames: dict[str, str] = {}          # identifier -> the name it spells
        self.plan: MemoryPlan | None = graph.memory_plan
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
            ref = self._make_ref(name)
            ref.block = self.g.layout.block(name)    # NCHW[V]c when the layout pass chose it
            self.refs[name] = ref
        return self.refs[name]

    def _make_ref(self, name: str) -> TensorRef:
        node = self.g[name]
        shape, batched = self.concrete(node)
        if node.op == "constant":
            r = self.weight(f"{name}.value", node.params["value"])
            r.shape, r.batched, r.name, r.cname = shape, batched, name, self.unique_cname(name)
            r.item_stride = row_elements(r)
            return r
        ref = TensorRef(name, self.unique_cname(name), shape, batched, dtype=node.type.dtype)
        ref.item_stride = row_elements(ref)
        if name in self.g.inputs:
            ref.storage, ref.slot = "input", self.g.inputs.index(name)
            return ref
        if name in self.g.outputs:
            if node.placement.write_into:
                raise UnsupportedError(f"layer '{name}' is a graph output and also writes into concat "
                                       f"'{node.placement.write_into.tensor}'")
            ref.storage, ref.slot = "output", self.g.outputs.index(name)
            return ref
        view_of = node.placement.view_of
        if view_of:
            src = self.ref(view_of)
            if batched != src.batched or (not batched and (src.item_stride != row_elements(src) or shape[:1] != src.shape[:1])):
                raise UnsupportedError(f"layer '{name}' ({node.op}) is a view that merges the batch dimension "
                                       f"{tuple(node.type.shape)}; cnncc keeps N as the leading dimension")
            # a channel slice (view_channel) starts that many channels into each item of its source
            skip = node.placement.view_channel * int(np.prod(shape[2:], dtype=np.int64))
            return TensorRef(name, ref.cname, shape, batched, node.type.dtype, src.storage, src.slot, src.arena_a,
                             src.arena_b, src.offset, src.base + skip, src.item_stride if batched else row_elements(ref))
        wi = node.placement.write_into
        if wi:
            dst = self.ref(wi.tensor)
            inner = int(np.prod(shape[2:], dtype=np.int64))
            return TensorRef(name, ref.cname, shape, batched, node.type.dtype, dst.storage, dst.slot, dst.arena_a,
                             dst.arena_b, dst.offset, dst.base + wi.channel_offset * inner, dst.item_stride)
        self.place_in_arena(ref)
        return ref

    def place_in_arena(self, ref: TensorRef) -> None:
        if self.plan and ref.name in self.plan.offsets:
            ref.arena_a, ref.arena_b = linear_in_N(self.plan.offsets[ref.name], f"arena offset of '{ref.name}'")
            return
        if self.plan:
            raise UnsupportedError(f"the memory plan has no offset for intermediate tensor '{ref.name}'")
        size = ref.item_numel * np.dtype(ref.dtype).itemsize
        per_n = size if ref.batched else 0
        const = 0 if ref.batched else size
        ref.arena_a, ref.arena_b = self.arena_a, self.arena_b
        self.arena_a += -(-per_n // ALIGN_BYTES) * ALIGN_BYTES
        self.arena_b += -(-const // ALIGN_BYTES) * ALIGN_BYTES

    # -- the whole ------------------------------------------------------------------------------
    def arena(self) -> tuple[int, int, str]:
        """(a, b, source): arena bytes = a * N + b, and whose layout it is ("memory_plan" or "cnncc")."""
        if self.plan:
            return (*linear_in_N(self.plan.arena_bytes, "arena size"), "memory_plan")
        return self.arena_a, self.arena_b, "cnncc"

    def blob(self) -> np.ndarray:
        """The weight blob: every entry at its offset (one aligned block of zeros when empty)."""
        return np.concatenate(self.blob_parts) if self.blob_parts else np.zeros(ALIGN_FLOATS, np.float32)
