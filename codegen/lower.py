"""Lowering: a (fused) Graph -> a Program of KernelSpecs, everything a target needs as plain ints.

Python decides WHAT each kernel computes; the templates of a target (C, CUDA) only spell it.
A KernelSpec therefore holds no sympy and no graph: shapes, strides, paddings and offsets are
ints, the batch size ``N`` is the one runtime argument every kernel takes.

Vocabulary (shared by every target, see also ``runtime/module.py`` for the backend protocol):

* ``TensorRef``: where a tensor lives. ``storage`` is ``"input"``/``"output"`` (the caller's
  arrays, index ``slot``), ``"arena"`` (one scratch allocation; byte offset ``arena_a * N +
  arena_b``) or ``"weights"`` (the one float32 weight blob; element offset ``offset``). Batched
  tensors (``batched``) have ``shape[0] == 1`` standing for ``N``; item ``n`` starts at
  ``n * item_stride`` elements from the tensor's pointer, and the pointer itself is the
  storage address plus ``base`` elements (``base``/``item_stride`` differ from the plain
  layout only when a producer writes into a channel slice of an eliminated concat,
  contract C).
* Static tensors: a tensor whose shape does not lead with N (ONNX graphs with fixed sizes,
  constants) is not ``batched``; its ``shape`` is the full shape and ``item_stride`` the size
  of one leading row. A kernel whose output is static has ``KernelSpec.batch`` = that leading
  size, and runs over exactly that many rows instead of the runtime N (the renderer passes the
  literal where it would pass N). A static kernel that mixes the leading dim (concat or softmax
  along it, a transpose/pad that moves or grows it, a matmul over literal batch dims) sets
  ``geometry["whole"]``: it runs once (``batch`` = 1) over the whole tensors, its geometry
  counting dim 0 like any other; an epilogue reads its leading index from the flat position.
* Output coordinates ``(n, c, q)``: every kernel's output of shape ``(N, C, *rest)`` is
  addressed by batch item ``n``, channel ``c`` (dim 1) and flat inner position ``q`` (over
  ``rest``; 0 when the output is 2-D). An ``Operand`` reads another tensor at those coordinates
  with strides ``stride_n * n + stride_c * c + stride_q * q`` (a 0 stride broadcasts); when
  the inner dims broadcast partially, ``general`` gives a stride per inner output dim and
  ``inner_dims`` the sizes to decompose ``q`` with.
* ``EpilogueOp``: one elementwise op applied to the running value ``v`` at ``(n, c, q)``:
  ``bias``, ``scale_shift``, ``batch_norm`` (params mean, inv, bias), ``prelu``, any activation,
  or ``add/sub/mul/div`` with an ``operand`` (``swap``: the operand is the left side).
* ``PoolSpec``: the one pooling fused after an anchor. ``post_epilogue`` True means the
  epilogue runs once per pooled output after the max/min (legal because every epilogue op
  before the pool is per-channel and non-decreasing: bias, MONOTONE activations, scale_shift
  with scale >= 0, ...).

Families (``KernelSpec.family``) and their ``geometry`` keys:
  conv            C_in, H, W, C_out, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW, groups  (1-D: H=1)
  conv_transpose  same keys plus OPH, OPW (output_padding)
  dense           K (in features), M (out features); optional ``tail`` softmax/log_softmax
  pool            kind, C, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW, count_include_pad
  global_pool     kind, C, Q (spatial size)
  softmax         log, outer, axis_len, inner (per batch item; whole: over the whole tensor)
  matmul          MB blocks of R x K @ K x M per item; a_off/b_off: each block's offset into a/b;
                  a_item/b_item: an operand's stride per batch item (0: shared); C, Q for the epilogue
  elementwise     C, Q (output coordinates); inputs are Operands, the chain is ``epilogue``
  copy            numel (per item) — views that must materialize, identity at opt 0
  concat          outer x row copy: each input's chunk of a row and its offset in geometry["parts"]
  gather          dims, tables, fill, numel: pure data movement (transpose, pad, depth/space
                  rearrangement, nearest resizing, slice and gather that are not views)
  resize          C, H, W, OH, OW; KH/KW taps per output row/column: ih/wh (OH*KH source rows and
                  weights), iw/ww (OW*KW); fill where ih/iw tap 0 is -1 (extrapolate)
  roi             kind (pool | align), K boxes, C, H, W, OH, OW, NB, spatial_scale, sampling_ratio,
                  aligned, mode; inputs [x, boxes (K, 5)] or [x, rois (K, 4), batch_indices (K,)];
                  runs over K with the runtime N (``roi``)
  (lrn, instance_norm, unpool: see lower_other)
A channel slice marked ``view_of`` by eliminate_concat (``meta["view_channel"]`` = its first
channel) launches nothing: its TensorRef is its input's, ``base`` moved by that many channels,
``item_stride`` kept, so every kernel that reads it walks the input's items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy

from cnncc import names, ops
from cnncc.errors import UnsupportedError
from cnncc.ir import N, Graph, Node

ALIGN_FLOATS = 16          # weight blob entries start on 64-byte boundaries (vector loads)
ALIGN_BYTES = 64           # arena entries too, when we plan the arena ourselves

# ---------------------------------------------------------------------------------------------
# the data a template sees
@dataclass
class TensorRef:
    """Where one tensor lives and how it is laid out (see the module docstring)."""

    name: str                         # the graph's name, as the user wrote it
    cname: str                        # its C/CUDA identifier (cnncc/names.py)
    shape: tuple[int, ...]            # concrete; shape[0] == 1 stands for N when batched
    batched: bool = True
    dtype: str = "float32"
    storage: str = "arena"            # input | output | arena | weights
    slot: int = 0                     # index into inputs / outputs
    arena_a: int = 0                  # arena byte offset = arena_a * N + arena_b
    arena_b: int = 0
    offset: int = 0                   # element offset into the weight blob
    base: int = 0                     # element offset added to the storage address
    item_stride: int = 0              # elements between batch items

    @property
    def item_numel(self) -> int:
        return int(np.prod(self.shape[1:] if self.batched else self.shape, dtype=np.int64))

    def nbytes(self, batch: int) -> int:
        return self.item_numel * (batch if self.batched else 1) * np.dtype(self.dtype).itemsize


@dataclass
class Operand:
    """Reads ``tensor`` at output coordinates (n, c, q); see the module docstring."""

    tensor: TensorRef
    stride_n: int
    stride_c: int
    stride_q: int
    general: tuple[int, ...] | None = None      # one stride per inner output dim
    inner_dims: tuple[int, ...] | None = None   # the inner output dims (to split q)


@dataclass
class EpilogueOp:
    op: str                                   # registry op name, or "bias"
    node: str                                 # graph node it came from
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, TensorRef] = field(default_factory=dict)   # per-channel vectors in the blob
    operand: Operand | None = None
    swap: bool = False                        # binary op: operand OP v instead of v OP operand
    per_channel: bool = False                 # params have one value per channel (else one value)


@dataclass
class PoolSpec:
    node: str
    kind: str                                  # max | avg | min | sum | lp | argmax (int64 indices)
    KH: int
    KW: int
    SH: int
    SW: int
    DH: int
    DW: int
    PH: int                                    # low padding (the high side follows from OH/OW)
    PW: int
    H: int                                     # pooled input (the anchor's output)
    W: int
    OH: int
    OW: int
    count_include_pad: bool = True
    PH_hi: int = 0
    PW_hi: int = 0
    post_epilogue: bool = False
    p: float = 0.0                             # the norm of an "lp" pool


@dataclass
class KernelSpec:
    """One kernel: what it computes, in ints. ``name`` is the graph's (fused) node name as
    written, ``cname`` its C/CUDA identifier (cnncc/names.py)."""

    name: str
    family: str
    nodes: list[tuple[str, str]]              # (node name, op) of every fused member, in order
    output: TensorRef
    inputs: list[TensorRef] = field(default_factory=list)       # main data inputs (x, indices, ...)
    operands: list[Operand] = field(default_factory=list)       # elementwise family: its inputs
    weights: dict[str, TensorRef] = field(default_factory=dict)  # weight, (bias is an epilogue op)
    geometry: dict[str, Any] = field(default_factory=dict)
    epilogue: list[EpilogueOp] = field(default_factory=list)
    pool: PoolSpec | None = None
    tail: str | None = None                   # softmax | log_softmax after dense
    shapes: dict[str, tuple] = field(default_factory=dict)   # node -> shape text, for comments
    batch: int | None = None                  # None: N items at run time; an int: a static kernel's rows
    cname: str = ""                           # the kernel's C/CUDA identifier (names.ident(name, "k"))

    def __post_init__(self):
        if not self.cname:
            self.cname = names.ident(self.name, "k")

    @property
    def out_C(self) -> int:
        return self.output.shape[1] if len(self.output.shape) > 1 else 1

    @property
    def out_Q(self) -> int:
        return int(np.prod(self.output.shape[2:], dtype=np.int64)) if len(self.output.shape) > 2 else 1

    def tensors(self) -> list[TensorRef]:
        """Every activation tensor the kernel touches (inputs, operands, output), deduplicated."""
        seen: dict[str, TensorRef] = {}
        for t in self.inputs + [o.tensor for o in self.operands] + \
                [e.operand.tensor for e in self.epilogue if e.operand] + [self.output]:
            if t.storage != "weights":
                seen.setdefault(t.cname, t)
        return list(seen.values())

    def blob_tensors(self) -> list[TensorRef]:
        """Every weight-blob array the kernel reads (weights, epilogue vectors, constant operands),
        deduplicated; a kernel with a packed weight copy reads only the packed one."""
        refs: dict[str, TensorRef] = {}
        for key, t in self.weights.items():
            if not (key == "weight" and "packed" in self.weights):
                refs.setdefault(t.cname, t)
        for e in self.epilogue:
            for t in e.params.values():
                refs.setdefault(t.cname, t)
        for t in [o.tensor for o in self.operands] + [e.operand.tensor for e in self.epilogue if e.operand] \
                + list(self.inputs):
            if t.storage == "weights":
                refs.setdefault(t.cname, t)
        return list(refs.values())


@dataclass
class Program:
    """A whole lowered model: kernels in execution order plus where every tensor lives."""

    name: str
    kernels: list[KernelSpec]
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    blob: np.ndarray                           # float32 weights, every param at its offset
    blob_layout: dict[str, tuple[int, tuple]]  # "layer.param" -> (offset, shape)
    arena_a: int                               # arena bytes = arena_a * N + arena_b
    arena_b: int
    arena_source: str = "cnncc"                # "memory_plan" when graph.meta's plan was used
    output_names: list[str] | None = None      # the user's names for the outputs (before fusion renamed them)
    fixed_batch: int | None = None             # `cnncc compile --batch B`: the only batch the module accepts
    precision: str = "fp32"                    # CUDA convolution inputs: fp32 | tf32 | fp16 | bf16 (see compile())

    def arena_bytes(self, batch: int) -> int:
        return self.arena_a * batch + self.arena_b


# ---------------------------------------------------------------------------------------------
def lower(graph: Graph) -> list[KernelSpec]:
    """Contract E: one KernelSpec per kernel, in execution order."""
    return lower_program(graph).kernels


def lower_program(graph: Graph) -> Program:
    return _Lowering(graph).run()


def append_blob_entry(parts: list[np.ndarray], arr: np.ndarray) -> int:
    """Append one weight-blob entry to ``parts``: the array flattened, then zeros so the next
    entry starts on ALIGN_FLOATS. Returns the floats appended."""
    flat = np.ravel(arr)
    parts.append(flat)
    pad = (-flat.size) % ALIGN_FLOATS
    if pad:
        parts.append(np.zeros(pad, np.float32))
    return flat.size + pad


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
            return self.lower_fused(node)
        spec = KernelSpec(node.name, "", [(node.name, node.op)], out)
        spec.shapes[node.name] = tuple(str(d) for d in node.type.shape)
        opdef = ops.get(node.op, node=node.name)
        if opdef.has(ops.ANCHOR):
            self.anchor(spec, node)
            return self.finish(spec)
        if node.meta.get("view_of") or opdef.has(ops.VIEW):
            src = self.ref(node.inputs[0])
            spec.family = "copy"
            spec.inputs = [src]
            spec.geometry = {"numel": out.item_numel}
            return spec
        if opdef.has(ops.ELEMENTWISE) or node.op in ("batch_norm", "scale_shift", "prelu"):
            self.elementwise_chain(spec, [node])
            return spec
        if opdef.has(ops.POOL):
            spec.family = "pool"
            spec.inputs = [self.ref(node.inputs[0])]
            spec.pool = self.pool_spec(node)
            return spec
        if node.op in ("global_avg_pool", "global_max_pool"):
            x = self.ref(node.inputs[0])
            spec.family = "global_pool"
            spec.inputs = [x]
            spec.geometry = {"kind": node.op.split("_")[1], "C": x.shape[1],
                             "Q": int(np.prod(x.shape[2:], dtype=np.int64))}
            return spec
        if node.op in ("softmax", "log_softmax"):
            x = self.ref(node.inputs[0])
            ax = node.attrs["axis"] % len(x.shape)
            whole = ax == 0
            if whole and (x.batched or out.batched):
                raise UnsupportedError(f"layer '{node.name}' ({node.op}): softmax over the batch axis")
            spec.family = "softmax"
            spec.inputs = [x]
            spec.geometry = {"log": node.op == "log_softmax",
                             "outer": int(np.prod(x.shape[0 if whole else 1:ax], dtype=np.int64)),
                             "axis_len": x.shape[ax], "inner": int(np.prod(x.shape[ax + 1:], dtype=np.int64)),
                             "whole": whole}
            return spec
        if node.op == "concat":
            return self.concat(spec, node)
        return self.lower_other(spec, node)

    # -- families ---------------------------------------------------------------------------------
    def anchor(self, spec: KernelSpec, node: Node) -> None:
        x = self.ref(node.inputs[0])
        spec.inputs = [x]
        p = node.params
        if node.op in ("conv1d", "conv2d", "conv_transpose2d", "conv_transpose1d"):
            g = ops.conv_geometry(node, self.g[node.inputs[0]].type)
            w = p["weight"]
            if g["nd"] == 1:
                g = {"kernel": (1,) + g["kernel"], "stride": (1,) + g["stride"],
                     "dilation": (1,) + g["dilation"], "pads": [(0, 0)] + list(g["pads"]), "groups": g["groups"]}
                xs = (x.shape[0], x.shape[1], 1, x.shape[2])
                w = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
            else:
                xs = x.shape
            (ph, ph_hi), (pw, pw_hi) = [(int(a), int(b)) for a, b in g["pads"]]
            geo = {"C_in": xs[1], "H": xs[2], "W": xs[3], "KH": g["kernel"][0], "KW": g["kernel"][1],
                   "SH": g["stride"][0], "SW": g["stride"][1], "DH": g["dilation"][0], "DW": g["dilation"][1],
                   "PH": ph, "PW": pw, "PH_hi": ph_hi, "PW_hi": pw_hi, "groups": g["groups"]}
            os_ = self.concrete(node)[0]
            if len(os_) == 3:
                os_ = (os_[0], os_[1], 1, os_[2])
            geo.update(C_out=os_[1], OH=os_[2], OW=os_[3])
            if node.op.startswith("conv_transpose"):
                spec.family = "conv_transpose"
                opad = ops.tup(node.attrs.get("output_padding", 0), 2 if len(xs) == 4 else 1)
                geo.update(OPH=opad[0] if len(opad) == 2 else 0, OPW=opad[-1])
            else:
                spec.family = "conv"
            spec.geometry = geo
            spec.weights["weight"] = self.weight(f"{node.name}.weight", w)
        elif node.op == "dense":
            if len(x.shape) != 2:
                raise UnsupportedError(f"layer '{node.name}' (dense): input {tuple(x.shape)} is not 2-D; "
                                       f"flatten it first")
            spec.family = "dense"
            spec.geometry = {"K": p["weight"].shape[1], "M": p["weight"].shape[0]}
            spec.weights["weight"] = self.weight(f"{node.name}.weight", p["weight"])
        elif node.op == "matmul":
            self.matmul(spec, node, x)
            return
        else:
            raise UnsupportedError(f"layer '{node.name}' ({node.op}): no kernel family for this anchor yet")
        if "bias" in p:
            spec.epilogue.append(EpilogueOp("bias", node.name, params={"bias": self.weight(f"{node.name}.bias",
                                                                                         p["bias"])},
                                            per_channel=True))

    def matmul(self, spec: KernelSpec, node: Node, a: TensorRef) -> None:
        """numpy matmul with literal shapes: 1-D operands promoted (and their unit dim dropped from
        the result), batch dims broadcast. Per kernel item the output is MB blocks of R x M; block i
        reads a at ``a_off[i]`` and b at ``b_off[i]`` (tables), plus ``n * item stride`` for an
        operand that carries the batch N. A static output runs as one whole-tensor item."""
        b = self.ref(node.inputs[1])
        whole = not self.concrete(node)[1]
        A = [None if (i == 0 and a.batched) else d for i, d in enumerate(a.shape)]   # None: the batch N
        B = [None if (i == 0 and b.batched) else d for i, d in enumerate(b.shape)]
        if len(A) == 1:
            A = [1] + A
        if len(B) == 1:
            B = B + [1]
        R, K, M = A[-2], A[-1], B[-1]
        if None in (K, B[-2], M) or (R is None and len(B) > 2):
            raise UnsupportedError(f"layer '{node.name}' (matmul): {tuple(a.shape)} @ {tuple(b.shape)} puts the "
                                   f"batch N inside the matrices; cnncc keeps N as the leading dimension")
        rank = max(len(A), len(B)) - 2
        ab = [1] * (rank - len(A) + 2) + A[:-2]
        bb = [1] * (rank - len(B) + 2) + B[:-2]
        a_item = b_item = 0
        if R is None:                      # a (N, K): N is the row dim, one row per item
            R, a_item = 1, a.item_stride
        elif rank and (ab[0] is None or bb[0] is None):
            a_item = a.item_stride if ab[0] is None else 0
            b_item = b.item_stride if bb[0] is None else 0
            if (ab[0] is None and bb[0] not in (None, 1)) or (bb[0] is None and ab[0] not in (None, 1)):
                raise UnsupportedError(f"layer '{node.name}' (matmul): the batch N of one operand meets a fixed "
                                       f"size of the other ({tuple(a.shape)} @ {tuple(b.shape)})")
            ab, bb = ab[1:], bb[1:]
        if None in ab or None in bb:
            raise UnsupportedError(f"layer '{node.name}' (matmul): {tuple(a.shape)} @ {tuple(b.shape)} does not "
                                   f"keep the batch N as the leading dimension")
        blocks = [max(x, y) for x, y in zip(ab, bb)]

        def offsets(dims: list[int], matrix: int) -> list[int]:
            strides = [int(np.prod(dims[i + 1:], dtype=np.int64)) * matrix if d != 1 else 0
                       for i, d in enumerate(dims)]
            return [int(sum(i * s for i, s in zip(idx, strides))) for idx in np.ndindex(*blocks)] if blocks else [0]

        a_off, b_off = offsets(ab, R * K), offsets(bb, K * M)
        spec.family = "matmul"
        spec.inputs = [a, b]
        spec.geometry = {"MB": len(a_off), "R": R, "K": K, "M": M, "a_off": a_off, "b_off": b_off,
                         "a_item": a_item, "b_item": b_item, "b_batched": bool(b_item),
                         "C": spec.out_C if len(spec.output.shape) > 1 else 1, "Q": spec.out_Q, "whole": whole}

    def epilogue_op(self, m: Node, prev: str | None, out_shape: tuple[int, ...]) -> EpilogueOp:
        """One chain member as an EpilogueOp; ``prev`` names the running value's tensor."""
        op = m.op
        e = EpilogueOp(op, m.name, attrs=dict(m.attrs))
        p = m.params
        if op == "batch_norm":
            inv = (p["weight"] / np.sqrt(p["var"] + np.float32(m.attrs["eps"]))).astype(np.float32)
            e.params = {"mean": self.weight(f"{m.name}.mean", p["mean"]),
                        "inv": self.weight(f"{m.name}.inv_std_weight", inv),
                        "bias": self.weight(f"{m.name}.bias", p["bias"])}
            e.per_channel = True
        elif op == "scale_shift":
            e.params = {"scale": self.weight(f"{m.name}.scale", p["scale"]),
                        "shift": self.weight(f"{m.name}.shift", p["shift"])}
            e.per_channel = True
        elif op == "prelu":
            e.params = {"slope": self.weight(f"{m.name}.slope", p["slope"])}
            e.per_channel = p["slope"].size > 1
        elif op in ops.BINARY:
            others = [i for i in m.inputs if i != prev] if prev is not None else list(m.inputs[1:])
            if prev is not None and len(others) != 1:
                # x + x: both sides are the running value
                e.attrs["self"] = True
                return e
            e.operand = self.operand(others[0], out_shape)
            e.swap = prev is not None and m.inputs[0] != prev
        elif op in ("dropout", "identity"):
            pass
        elif not ops.get(op, node=m.name).has(ops.ACTIVATION):
            raise UnsupportedError(f"layer '{m.name}' ({op}) cannot be part of an elementwise epilogue")
        return e

    def elementwise_chain(self, spec: KernelSpec, members: list[Node]) -> None:
        spec.family = "elementwise"
        out = spec.output
        first = members[0]
        spec.operands = [self.operand(first.inputs[0], out.shape)]
        prev = None
        for m in members:
            e = self.epilogue_op(m, prev, out.shape)
            if prev is None and m.op in ops.BINARY:
                e.operand = self.operand(m.inputs[1], out.shape)
                e.swap = False
            spec.epilogue.append(e)
            prev = m.name
        spec.geometry = {"C": spec.out_C, "Q": spec.out_Q}

    def pool_spec(self, node: Node) -> PoolSpec:
        in_node_type = self._type_of(node.inputs[0])
        g = ops.pool_geometry(node, in_node_type)
        shape_in = tuple(int(sympy.sympify(d).subs(N, 1)) for d in in_node_type.shape)
        shape_out = tuple(int(sympy.sympify(d).subs(N, 1)) for d in node.type.shape)
        k, s, d, pads = list(g["kernel"]), list(g["stride"]), list(g["dilation"]), [tuple(map(int, p)) for p in g["pads"]]
        if g["nd"] == 1:
            k, s, d, pads = [1] + k, [1] + s, [1] + d, [(0, 0)] + pads
            shape_in = shape_in[:2] + (1,) + shape_in[2:]
            shape_out = shape_out[:2] + (1,) + shape_out[2:]
        return PoolSpec(node.name, node.op.split("_")[0], k[0], k[1], s[0], s[1], d[0], d[1], pads[0][0],
                        pads[1][0], shape_in[2], shape_in[3], shape_out[2], shape_out[3],
                        bool(node.attrs.get("count_include_pad", True)), pads[0][1], pads[1][1])

    def _type_of(self, name: str):
        if getattr(self, "_member_types", None) and name in self._member_types:
            return self._member_types[name]
        return self.g[name].type

    def concat(self, spec: KernelSpec, node: Node) -> KernelSpec:
        out = spec.output
        ax = node.attrs["axis"] % len(out.shape)
        whole = ax == 0         # static tensors joined along their leading dim: one pass over everything
        if whole and out.batched:
            raise UnsupportedError(f"layer '{node.name}' (concat): concatenation along the batch axis")
        spec.family = "concat"
        spec.inputs = [self.ref(i) for i in node.inputs]
        inner = int(np.prod(out.shape[ax + 1:], dtype=np.int64))
        outer = int(np.prod(out.shape[0 if whole else 1:ax], dtype=np.int64))
        parts, off = [], 0
        for t in spec.inputs:
            chunk = t.shape[ax] * inner
            parts.append({"chunk": chunk, "offset": off})
            off += chunk
        spec.geometry = {"outer": outer, "row": off, "parts": parts, "whole": whole}
        return spec

    def lower_fused(self, node: Node) -> KernelSpec:
        members = node.members
        self._member_types = {m.name: m.type for m in members}
        try:
            out = self.ref(node.name)
            spec = KernelSpec(node.name, "", [(m.name, m.op) for m in members], out)
            for m in members:
                spec.shapes[m.name] = tuple(str(d) for d in m.type.shape)
            kind = node.attrs.get("kind")
            if kind == "elementwise":
                if any(ops.get(m.op).has(ops.POOL) for m in members):
                    raise UnsupportedError(f"fused group '{node.name}': pooling after an elementwise chain")
                self.elementwise_chain(spec, members)
                return spec
            anchor = members[0]
            # the anchor reads the fused node's external input; build its spec on the anchor's own shape
            saved = spec.output
            spec.output = TensorRef(anchor.name, saved.cname, self._member_shape(anchor), True)
            self.anchor(spec, anchor)
            anchor_shape = spec.output.shape
            spec.output = saved
            prev = anchor.name
            for m in members[1:]:
                opdef = ops.get(m.op, node=m.name)
                if opdef.has(ops.POOL):
                    spec.pool = self.pool_spec(m)
                elif m.op in ("softmax", "log_softmax"):
                    spec.tail = m.op
                else:
                    if spec.pool is not None:
                        raise UnsupportedError(f"fused group '{node.name}': '{m.name}' follows the pooling member")
                    spec.epilogue.append(self.epilogue_op(m, prev, anchor_shape))
                prev = m.name
            if spec.pool is not None:
                spec.pool.post_epilogue = self.commutes_with_pool(spec)
            spec.geometry["anchor_shape"] = anchor_shape
            return self.finish(spec)
        finally:
            self._member_types = None

    def _member_shape(self, m: Node) -> tuple[int, ...]:
        shape = tuple(int(sympy.sympify(d).subs(N, 1)) for d in m.type.shape)
        return shape

    def commutes_with_pool(self, spec: KernelSpec) -> bool:
        """Max/min pooling commutes with per-channel non-decreasing maps: apply them after the pool."""
        if spec.pool.kind not in ("max", "min"):
            return False
        blob = np.concatenate(self.blob_parts) if self.blob_parts else None
        for e in spec.epilogue:
            if e.op == "bias":
                continue
            if e.op in ("scale_shift", "batch_norm"):
                ref = e.params["scale" if e.op == "scale_shift" else "inv"]
                vals = blob[ref.offset: ref.offset + ref.item_numel]
                if (vals < 0).any():
                    return False
                continue
            if e.op in ("add", "sub") and e.operand is not None and not e.swap \
                    and e.operand.stride_n == 0 and e.operand.stride_q == 0 and e.operand.general is None:
                continue
            if e.op in ops.REGISTRY and ops.get(e.op).has(ops.MONOTONE):
                continue
            return False
        return True

    def finish(self, spec: KernelSpec) -> KernelSpec:
        if spec.family in ("conv", "conv_transpose"):
            spec.geometry.setdefault("anchor_shape", (1, spec.geometry["C_out"], spec.geometry["OH"],
                                                      spec.geometry["OW"]))
        return spec

    def lower_other(self, spec: KernelSpec, node: Node) -> KernelSpec:
        """Data-movement and normalization operators that are kernels of their own."""
        op = node.op
        x = self.ref(node.inputs[0])
        out = spec.output
        spec.inputs = [x]
        if op in ("transpose", "pad", "depth_to_space", "space_to_depth", "unpool_nearest2d", "slice", "gather"):
            return self.gather(spec, node, x)
        if op == "resize2d":
            th, tw = ops.resize_tables(node, x.shape[2:], out.shape[2:])
            if th.taps == tw.taps == 1:      # nearest: pure data movement
                return self.gather(spec, node, x, (th, tw))
            spec.family = "resize"
            spec.geometry = {"C": x.shape[1], "H": x.shape[2], "W": x.shape[3], "OH": out.shape[2],
                             "OW": out.shape[3], "KH": th.taps, "KW": tw.taps,
                             "ih": self.resize_index(th), "wh": [float(v) for v in th.weight.ravel()],
                             "iw": self.resize_index(tw), "ww": [float(v) for v in tw.weight.ravel()],
                             "fill": float(node.attrs["extrapolation_value"]),
                             "extrapolate": bool(th.outside.any() or tw.outside.any())}
            return spec
        if op == "lrn":
            a = node.attrs
            spec.family = "lrn"
            spec.geometry = {"C": x.shape[1], "Q": int(np.prod(x.shape[2:], dtype=np.int64)), "size": int(a["size"]),
                             "alpha": float(a["alpha"]), "beta": float(a["beta"]), "k": float(a["k"])}
            return spec
        if op == "instance_norm":
            spec.family = "instance_norm"
            spec.geometry = {"C": x.shape[1], "Q": int(np.prod(x.shape[2:], dtype=np.int64)),
                             "eps": float(node.attrs["eps"])}
            spec.weights = {"weight": self.weight(f"{node.name}.weight", node.params["weight"]),
                            "bias": self.weight(f"{node.name}.bias", node.params["bias"])}
            return spec
        if op in ("lp_pool2d", "max_pool2d_indices"):
            spec.family = "pool"
            spec.pool = self.pool_spec(node)
            if op == "lp_pool2d":
                spec.pool.kind, spec.pool.p = "lp", float(node.attrs["p"])
            else:
                spec.pool.kind = "argmax"
            return spec
        if op == "max_unpool2d":
            idx = self.ref(node.inputs[1])
            spec.family = "unpool"
            spec.inputs = [x, idx]
            spec.geometry = {"C": x.shape[1], "Q_in": int(np.prod(x.shape[2:], dtype=np.int64)),
                             "Q_out": int(np.prod(out.shape[2:], dtype=np.int64))}
            return spec
        if op in ("roi_pool", "roi_align"):
            return self.roi(spec, node, x)
        raise UnsupportedError(f"layer '{node.name}' ({op}): the code generators have no kernel for "
                               f"this operator yet")

    def roi(self, spec: KernelSpec, node: Node, x: TensorRef) -> KernelSpec:
        """Region pooling: the kernel runs over the K boxes (a literal) and reads whichever image
        each box names, so it takes the runtime batch N (to check the batch index) although its
        output (K, C, OH, OW) is static. ``NB``: the literal image count of a static feature map."""
        boxes = self.ref(node.inputs[1])
        out = spec.output
        a = node.attrs
        spec.family = "roi"
        spec.inputs = [x, boxes] + [self.ref(i) for i in node.inputs[2:]]   # (x, boxes) or (x, rois, batch_indices)
        spec.geometry = {"kind": node.op.split("_")[1], "K": out.shape[0], "C": x.shape[1], "H": x.shape[2],
                         "W": x.shape[3], "OH": out.shape[2], "OW": out.shape[3],
                         "NB": None if x.batched else x.shape[0], "spatial_scale": float(a["spatial_scale"]),
                         "sampling_ratio": int(a.get("sampling_ratio", 0)), "aligned": bool(a.get("aligned", False)),
                         "mode": a.get("mode", "max")}
        return spec

    def gather(self, spec: KernelSpec, node: Node, x: TensorRef, resize_tables=None) -> KernelSpec:
        """Pure data movement as nested loops over ``dims`` (per batch item, row-major = the output
        order); the source element is the sum of one table entry per loop index. A negative sum
        (padding) reads the constant ``fill``."""
        op, a, out = node.op, node.attrs, spec.output
        rank = len(x.shape)
        xs = x.shape
        in_strides = [int(np.prod(xs[i + 1:], dtype=np.int64)) for i in range(rank)]
        PAD = -(1 << 40)
        fill = 0.0
        # static tensors whose leading dim moves or grows: loop over the whole tensor, dim 0 included
        whole = False
        if op == "transpose":
            perm = ops._perm(node, rank)
            whole = perm[0] != 0
            if whole and (x.batched or out.batched):
                raise UnsupportedError(f"layer '{node.name}' (transpose): perm {perm} moves the batch axis")
            first = 0 if whole else 1
            dims = [out.shape[d] for d in range(first, rank)]
            tables = [[i * in_strides[perm[d]] for i in range(out.shape[d])] for d in range(first, rank)]
        elif op in ("slice", "gather"):
            # every output axis reads one source index per position: a range (slice) or a table (gather)
            if op == "slice":
                bounds = ops.slice_bounds(node, xs)
                rows = [list(range(*b)) if b is not None else list(range(xs[d])) for d, b in enumerate(bounds)]
            else:
                ax, idx = ops.gather_indices(node, xs)
                rows = [list(range(xs[d])) for d in range(rank)]
                rows[ax] = [int(i) for i in idx.reshape(-1)]     # the index dims, flattened into one loop
            moved = rows[0] != list(range(xs[0]))
            whole = moved or (op == "gather" and ax == 0)
            if whole and (x.batched or out.batched):
                raise UnsupportedError(f"layer '{node.name}' ({op}): selecting along the batch axis")
            first = 0 if whole else 1
            dims = [len(r) for r in rows[first:]]
            tables = [[i * in_strides[d] for i in rows[d]] for d in range(first, rank)]
        elif op == "pad":
            widths = ops.pad_widths(node, rank)
            whole = widths[0] != (0, 0)
            if whole and (x.batched or out.batched):
                raise UnsupportedError(f"layer '{node.name}' (pad): padding the batch axis")
            mode = a["mode"]
            fill = float(a["value"])
            dims, tables = [], []
            for d in range(0 if whole else 1, rank):
                lo, hi = widths[d]
                n = xs[d]
                row = []
                for i in range(n + lo + hi):
                    j = i - lo
                    if 0 <= j < n:
                        row.append(j * in_strides[d])
                    elif mode == "constant":
                        row.append(PAD)
                    elif mode == "edge":
                        row.append(min(max(j, 0), n - 1) * in_strides[d])
                    else:  # reflect without repeating the edge
                        period = 2 * (n - 1) if n > 1 else 1
                        k = abs(j) % period if n > 1 else 0
                        row.append((k if k < n else period - k) * in_strides[d])
                dims.append(n + lo + hi)
                tables.append(row)
        elif op in ("depth_to_space", "space_to_depth"):
            b, mode = int(a["block"]), a["mode"]
            C, H, W = xs[1], xs[2], xs[3]
            HW = H * W
            if op == "depth_to_space":
                Cp = C // (b * b)
                # output (c', h, i, w, j) <- channel (i*b + j)*C' + c' (DCR) or c'*b*b + i*b + j (CRD)
                dims = [Cp, H, b, W, b]
                if mode == "DCR":
                    tables = [[c * HW for c in range(Cp)], [h * W for h in range(H)], [i * b * Cp * HW for i in range(b)],
                              list(range(W)), [j * Cp * HW for j in range(b)]]
                else:
                    tables = [[c * b * b * HW for c in range(Cp)], [h * W for h in range(H)],
                              [i * b * HW for i in range(b)], list(range(W)), [j * HW for j in range(b)]]
            else:
                Hp, Wp = H // b, W // b
                ti, tj = [i * W for i in range(b)], list(range(b))
                tc, th, tw = [c * HW for c in range(C)], [h * b * W for h in range(Hp)], [w * b for w in range(Wp)]
                if mode == "DCR":      # output channel (i*b + j)*C + c
                    dims, tables = [b, b, C, Hp, Wp], [ti, tj, tc, th, tw]
                else:                  # output channel c*b*b + i*b + j
                    dims, tables = [C, b, b, Hp, Wp], [tc, ti, tj, th, tw]
        else:  # nearest resize / unpooling: every output row/column reads one source row/column
            H, W = xs[2], xs[3]
            OH, OW = out.shape[2], out.shape[3]
            if op == "unpool_nearest2d":
                s = ops.tup(a["scale"], 2)
                row_t, col_t = [i // s[0] * W for i in range(OH)], [j // s[1] for j in range(OW)]
            else:   # tf_crop_and_resize positions outside the input read the extrapolation value
                th, tw = resize_tables
                fill = float(a["extrapolation_value"])
                row_t = [PAD if o else int(r) * W for r, o in zip(th.index[:, 0], th.outside)]
                col_t = [PAD if o else int(c) for c, o in zip(tw.index[:, 0], tw.outside)]
            dims = [xs[1], OH, OW]
            tables = [[c * H * W for c in range(xs[1])], row_t, col_t]
        spec.family = "gather"
        spec.geometry = {"dims": [int(d) for d in dims], "tables": [[int(v) for v in t] for t in tables],
                         "fill": fill, "numel": out.item_numel, "whole": whole}
        return spec

    @staticmethod
    def resize_index(table) -> list[int]:
        """A resize axis table's source indices, row-major (output, tap); -1 in tap 0 marks an output
        position outside the input (tf_crop_and_resize: the extrapolation value)."""
        index = table.index.copy()
        index[table.outside, 0] = -1
        return [int(v) for v in index.ravel()]


def template_env(*targets: str):
    """The jinja2 environment renderers share: templates/<target>/ and templates/common/ on the
    path (import as "common/epilogue.j2", "c/conv.c.j2"), plus the filters the macros use:
    ``shape`` (a concrete shape with N shown for the batch), ``reduce_mul`` (product of ints)."""
    import jinja2
    from pathlib import Path

    from cnncc.codegen.simplify import ix

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)

    def shape(s, batched=True):
        if not isinstance(s, (tuple, list)):
            return str(s)
        dims = [str(d) for d in s]
        if batched and dims and dims[0] == "1":
            dims[0] = "N"
        return "(" + ", ".join(dims) + ")"

    env.filters["shape"] = shape
    env.filters["comment"] = names.comment     # a user's name inside a comment of generated code
    env.filters["reduce_mul"] = lambda xs: int(np.prod(list(xs), dtype=np.int64)) if len(xs) else 1
    env.globals["ix"] = ix      # index arithmetic folded before printing (codegen/simplify.py)
    return env
