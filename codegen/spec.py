"""The kernel-spec vocabulary: what lowering hands a target, everything a target needs as plain ints.

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
* Blocked layout (``TensorRef.block`` = V > 0, passes/layout.py): a 4-D tensor stored NCHW[V]c,
  item = [C/V][H][W][V]; an Operand of one has ``block`` and ``plane`` (H*W) set and is read at
  ``n * stride_n + (c / V) * plane * V + q * V + c % V`` (its shape is the output's). Item size
  and channel-slice offsets (``base``) are NCHW's, since slices start on whole blocks.
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
  lrn, instance_norm, unpool: see their lowerings in codegen/lowering.py
A channel slice marked ``view_of`` by eliminate_concat (``placement.view_channel`` = its first
channel) launches nothing: its TensorRef is its input's, ``base`` moved by that many channels,
``item_stride`` kept, so every kernel that reads it walks the input's items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncc import names

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
    block: int = 0                    # 0: NCHW; V: NCHW[V]c, item = [C/V][H][W][V] (passes/layout.py)

    @property
    def item_numel(self) -> int:
        return int(np.prod(self.shape[1:] if self.batched else self.shape, dtype=np.int64))

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def nbytes(self, batch: int) -> int:
        return self.item_numel * (batch if self.batched else 1) * self.itemsize

    def start(self) -> tuple[int, int]:
        """The one address rule: the tensor's first element lies ``a * N + b`` bytes past the start
        of its storage (the caller's input/output array ``slot``, the arena, the weight blob) --
        ``(a, b)`` returned. The C renderer spells it, the CUDA renderer checks overlaps with it,
        the CUDA runner and the emulator add it to their buffers' addresses."""
        a = self.arena_a if self.storage == "arena" else 0
        b = self.arena_b if self.storage == "arena" else 4 * self.offset if self.storage == "weights" else 0
        return a, b + self.base * self.itemsize

    def span(self, batch: int) -> int:
        """Bytes from the first element to one past the last at ``batch`` (items ``item_stride`` apart)."""
        if not self.batched:
            return self.item_numel * self.itemsize
        return ((batch - 1) * self.item_stride + self.item_numel) * self.itemsize


@dataclass
class Operand:
    """Reads ``tensor`` at output coordinates (n, c, q); see the module docstring."""

    tensor: TensorRef
    stride_n: int
    stride_c: int
    stride_q: int
    general: tuple[int, ...] | None = None      # one stride per inner output dim
    inner_dims: tuple[int, ...] | None = None   # the inner output dims (to split q)
    block: int = 0                              # the tensor is NCHW[block]c: (n, c, q) at
    plane: int = 0                              # n * stride_n + (c / block) * plane * block + q * block + c % block


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


def round16(floats: int) -> int:
    """Floats rounded up to whole 64-byte lines (the generated C's ``cnncc_round16``)."""
    return -(-floats // 16) * 16


@dataclass
class Workspace:
    """The scratch memory one C kernel asked for while it was rendered (templates/c/scratch.c.j2):
    ``shared`` pieces for the whole call (one input item copied channels-last, ...), then one slot
    of the ``per_thread`` pieces for every OpenMP thread. A piece is ``(a, b)``: ``a * N + b``
    floats, rounded up to 16 floats like the kernel's own carving. Kernels run one after the
    other, so they all start at the same place: the arena's workspace (``Program.workspace_at``)."""

    kernel: str
    shared: tuple[tuple[int, int], ...] = ()
    per_thread: tuple[tuple[int, int], ...] = ()

    def floats(self, batch: int, threads: int) -> int:
        def total(pieces):
            return sum(round16(a * batch + b) for a, b in pieces)
        return total(self.shared) + threads * total(self.per_thread)


#: the workspace's first 64 bytes hold how many threads' slots follow (a C long, written by the
#: runtime); the generated cnncc_forward returns CNNCC_ESLOTS when the call would use more threads
WORKSPACE_HEADER = 64


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
    arena_source: str = "cnncc"                # "memory_plan" when the graph's MemoryPlan was used
    output_names: list[str] | None = None      # the user's names for the outputs (before fusion renamed them)
    fixed_batch: int | None = None             # `cnncc compile --batch B`: the only batch the module accepts
    precision: str = "fp32"                    # CUDA convolution inputs: fp32 | tf32 | fp16 | bf16 (see compile())
    conv_algorithm: str = "auto"               # C convolutions: auto | direct | winograd[2|4] (codegen/c_winograd.py)
    workspace: list[Workspace] = field(default_factory=list)   # the C kernels' scratch (set when rendering)

    def workspace_at(self) -> tuple[int, int]:
        """Where the workspace starts in the arena, ``(a, b)``: ``a * N + b`` bytes, past every
        tensor the memory plan placed there and on a 64-byte line."""
        return -(-self.arena_a // ALIGN_BYTES) * ALIGN_BYTES, -(-self.arena_b // ALIGN_BYTES) * ALIGN_BYTES

    def workspace_bytes(self, batch: int, threads: int) -> int:
        """The workspace a call at ``batch`` on ``threads`` OpenMP threads needs: its header and the
        largest kernel's request (0 when no kernel asked for scratch)."""
        if not self.workspace:
            return 0
        return WORKSPACE_HEADER + 4 * max(w.floats(batch, threads) for w in self.workspace)

    def arena_bytes(self, batch: int, threads: int = 1) -> int:
        """The arena of one call: the memory plan's tensors, then the kernels' workspace."""
        if not self.workspace:
            return self.arena_a * batch + self.arena_b
        a, b = self.workspace_at()
        return a * batch + b + self.workspace_bytes(batch, threads)


def append_blob_entry(parts: list[np.ndarray], arr: np.ndarray) -> int:
    """Append one weight-blob entry to ``parts``: the array flattened, then zeros so the next
    entry starts on ALIGN_FLOATS. Returns the floats appended."""
    flat = np.ravel(arr)
    parts.append(flat)
    pad = (-flat.size) % ALIGN_FLOATS
    if pad:
        parts.append(np.zeros(pad, np.float32))
    return flat.size + pad
