"""The C target's register blocking for convolutions and dense layers, and the weight packing
that matches it.

A plain direct convolution keeps one output value live at a time and reloads its weight for
every element, so it runs at a tenth of the FMA peak. The blocked kernels keep a tile of outputs
in as many vector registers as the target has (a :class:`CTarget`) and feed every loaded vector to
several FMAs. :func:`plan` picks one of these kinds per kernel:

* ``rowtiles`` (an ungrouped convolution whose input is NCHW[V]c, passes/layout.py, or a grouped
  one whose groups are whole channel blocks, :func:`grouped_in_place`): vectors
  along ``COB`` output channels x up to ``P`` output pixels of one output row, the input read
  in place (no copy): each tile's base pointer is its first input column, every tap a constant
  offset from it (no pointer per pixel, no bounds check). The tiles at a row's ends are their own
  functions (:class:`TileFn`) that leave out the taps on the zero border; rows at the top and
  bottom run fewer kernel rows. Weights packed as ``[block][kh][ci / XB][kw][ci % XB][COB]``,
  the order a tile reads them (XB: the input's channel block); one vector store
  per pixel and channel block into an NCHW[V]c output. A fused pool's band of conv rows is kept
  channels-last and pooled with vectors along the channels.
* ``channels`` (any other convolution with whole vectors of output channels per group): vectors
  along ``COB`` output channels x ``P`` consecutive output pixels; the input item is copied
  channels-last with a zero border, weights packed as ``[block][kh][kw][ci][COB]``.
* ``pixels`` (1x1, stride 1, unpadded): the GEMM W @ X straight on the NCHW planes, vectors along
  the pixels, ``COB`` channels broadcast from weights packed as ``[block][ci][COB]``.
* ``depthwise`` (a depthwise convolution whose input or output is NCHW[V]c): vectors along a
  channel block's ``COB`` = V channels, ``P`` output pixels of a row at a time, every tap one
  input vector times the tap's weight vector (packed ``[block][kh][kw][COB]``). A task is one
  item's channel block and band of ``BR`` output rows; it first copies the ``BROWS`` input rows
  the band reads into a zero-bordered ``[BROWS][Wp][COB]`` buffer (from NCHW[V]c: a run per row;
  from NCHW: transposed), so the taps need no bounds checks.
* ``rows`` (depthwise and other groups smaller than a vector, NCHW): vectors along each output row of a
  zero-bordered plane split into its stride phases; weights in the PyTorch layout.
* ``dense``: a tile of ``NR`` batch rows x ``MR`` weight rows (PyTorch layout) with vector
  accumulators along the inputs, over chunks of ``KC`` inputs that stay in L1.

Small layers (below the work that wakes the OpenMP team) may instead get one of
:mod:`cnncc.codegen.c_small`'s kinds, asked first: ``rowblock`` (vectors along output rows, a
tile of rows x channels, for convolutions with few output channels), ``pixblock`` (a fused
pool's band of one pooled row as one register tile) and ``gemv`` (dense, vectors along the
outputs).

Packed arrays go into the weight blob of the Program :func:`prepare` returns (the C renderer calls
it and hands that Program back with the source; the CUDA target keeps the PyTorch layout and never
sees them); packing is free at run time.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from cnncc.errors import CompileError
from cnncc import names
from cnncc.codegen import c_small, c_winograd
from cnncc.codegen.spec import KernelSpec, Program, TensorRef, append_blob_entry
from cnncc.codegen.target import CTarget


@dataclass(frozen=True)
class ConvBlocking:
    """How one conv or dense kernel is tiled (all sizes literal in the generated C)."""

    kind: str         # "channels": vectors along output channels; "pixels": along output pixels;
                      # "rows": along output rows; "dense": along the inputs k
    VEC: int          # floats per vector register
    V: int            # vectors per tile row (of output channels, or of pixels)
    COB: int          # output channels per block
    P: int            # output pixels per tile (consecutive in row-major order, any rows)
    NCB: int          # channel blocks (over all groups)
    NT: int           # tiles per output plane
    Hp: int = 0       # "channels": rows of the channels-last input copy (zero border included)
    Wp: int = 0       # columns, likewise
    padded: bool = False    # the copy has a zero border
    TPC: int = 0      # "pixels": tiles per chunk (a chunk's input columns stay in L2 across blocks)
    NCHUNK: int = 0   # chunks per plane
    OWr: int = 0      # "rows": output row length rounded up to whole vectors
    Wq: int = 0       # "rows": columns of each stride phase of the padded input plane
    phases: tuple = ()      # "rows": per phase s, the (first, end) columns j that read the input
    NR: int = 0       # "dense": batch rows per tile (COB = MR weight rows, NCB blocks of them)
    CS: int = 0       # "channels": floats from one pixel of the input copy to the next (0: C_in)
    KC: int = 0       # "dense": inputs per chunk
    BR: int = 0       # "channels" with a fused pool: pooled rows per band (a task = channel block x band)
    NBAND: int = 0    # bands per pooled plane
    BROWS: int = 0    # conv rows a band needs at most (its window rows, overlap included)
    XB: int = 0       # "rowtiles": the input's channel block (NCHW[XB]c)
    CBG: int = 0      # "rowtiles": channel blocks per group; tasks run group, item, row, block of the group
    tiles: tuple = ()       # "rowtiles": the tile functions (TileFn)
    runs: tuple = ()        # "rowtiles": an output row's tiles, left to right (ColumnRun)
    KS: int = 0       # "rowtiles" on a small plane: input channel blocks per chunk (the block's whole
                      # output plane is summed in cache chunk by chunk); 0: every row runs all inputs
    flat: bool = False      # "rowtiles", 1x1 stride 1 unpadded with KS: the plane is tiled as one row
    PF: int = 0       # "rowtiles" with KS: chunks ahead whose weights are prefetched into L2

    def row_geometry(self, spec: KernelSpec) -> dict:
        """The geometry the ``rowtiles`` template tiles: the spec's, or with ``flat`` its plane
        as a single row; a grouped convolution's C_in is its group's (what one block reads)."""
        g = _one_row(spec.geometry) if self.flat else spec.geometry
        return dict(g, C_in=g["C_in"] // g["groups"]) if g["groups"] > 1 else g

    @property
    def tag(self) -> str:
        """Names the packed weights (c_winograd.WinogradPlan has its own)."""
        return f"{self.kind}{self.COB}" + (f"x{self.XB}" if self.XB else "") + ("k" if self.KS else "")


@dataclass(frozen=True)
class TileFn:
    """One tile function of the ``rowtiles`` kind: ``pixels`` consecutive output pixels of a row.
    ``taps`` holds, per kernel column kw, the (pixel, input offset in floats from the tile's base
    pointer) pairs whose input column lies inside the input: a tile at a row's end leaves out the
    taps that fall on the zero border, a middle tile has every pair."""

    pixels: int
    taps: tuple      # ((kw, ((i, offset), ...)), ...)


@dataclass(frozen=True)
class ColumnRun:
    """``count`` consecutive tiles of an output row that share tile function ``fn``: the first
    covers output columns ``first`` .., and reads from input column ``base`` on; each next one
    starts ``P`` output columns (``P * SW`` input columns) further."""

    fn: int
    first: int
    count: int
    base: int


def _choose(co_g: int, plane: int, groups: int, vec: int, regs: int) -> tuple[int, int] | None:
    """The (V, P) tile that does the most useful work per cycle: few padded channels and wasted
    pixels, and enough independent accumulators (V * P) to hide the FMA latency -- fewer than
    ``regs - 4`` costs more than proportionally, as measured. Once V weight vectors, a broadcast
    and the accumulators exceed the registers, gcc folds the weight loads into every FMA."""
    max_acc = regs - 4
    best, best_key = None, None
    for V in range(1, 5):
        cob = V * vec
        if groups > 1 and co_g % cob:
            continue
        P = min(plane, min(max_acc, regs - V - 2) // V)
        if P < 1:
            continue
        useful = _useful(co_g, cob) * _useful(plane, P)
        score = useful * min(1.0, V * P / max_acc) ** 1.5
        key = (round(score, 3), -abs(V - 2))
        if best_key is None or key > best_key:
            best, best_key = (V, P), key
    return best


#: accumulators that keep two full-vector FMA units busy: :func:`_choose_row` counts no more as a
#: need. U-Net's 64 -> 64 3x3 on 16x16 at batch 8 (2-core AVX-512 Xeon, 2026-12-05): 2 x 8 (16
#: sums, two blocks of 32 channels) 0.315 ms, 99% of the FMA peak by the taps it runs, where the
#: need of 28 had picked 3 x 8 (24 sums, two blocks of 48: a third of its FMAs on channels that
#: do not exist) at 0.459 ms -- the fused group 0.69-0.72x of its members at opt 0
ACC_ENOUGH = 16


def _choose_row(c_out: int, OW: int, vec: int, regs: int, threads: int = 1,
                fma_per_load: float = 1.0, co_g: int = 0) -> tuple[int, int]:
    """The (V, P) tile of the ``rowtiles`` kind: V vectors of output channels x at most P pixels of
    one output row (a row is cut into equal tiles). Scored like :func:`_choose` -- useful channels
    x enough accumulators (V * pixels per tile, up to ``regs - 4`` and no more than
    :data:`ACC_ENOUGH`) to hide the FMA latency; a
    tile also needs its V weight vectors and a broadcast in registers, and loads no more vectors
    than it runs FMAs. With ``threads`` (a chunked plane, whose tasks are whole channel blocks)
    the blocks should split evenly over the threads; there ``fma_per_load`` (:func:`_fma_per_load`)
    scales both needs: a core that runs half the FMAs a cycle hides their latency with half the
    accumulators and keeps up with twice the loads (Zen 4's AVX-512). Inception-v4's 7x1 224->224
    on 17x17 at batch 1 (2-core Zen 4): 3 x 9 (5 blocks of 48 for 2 threads) 1.110 ms, 1 x 17 (14
    blocks, 17 sums) 0.885 ms, 229 GFLOP/s. ``co_g``: a grouped convolution's output channels a
    group, which a block must divide (blocks never straddle groups)."""
    max_acc = regs - 4
    need = min(max_acc * min(1.0, fma_per_load), ACC_ENOUGH)
    best, best_key = None, None
    for V in range(1, 5):
        cob = V * vec
        if co_g and co_g % cob:
            continue
        # with 32 registers a tile may be one over (4 x 7: 28 sums, 4 weights, a broadcast): on
        # ResNet's 7-wide rows it beat 3 x 7 (21 sums, 11 blocks of 48 channels) -- layer4's 3x3s
        # 0.77 -> 0.67 ms at batch 1, 4.38 -> 3.93 ms at batch 8 (2-core AVX-512 Xeon, 2026-12-04)
        pmax = (max_acc if regs >= 32 else min(max_acc, regs - V - 1)) // V
        if pmax < 1:
            continue
        per_row = -(-OW // pmax)
        P = -(-OW // per_row)
        useful = _useful(c_out, cob)
        # V weight loads and P broadcasts per V * P FMAs: two of each per cycle at most
        acc, loads = min(1.0, V * OW / per_row / max_acc) ** 1.5, min(1.0, V * P / (V + P))
        score = useful * min(1.0, V * OW / per_row / need) ** 1.5 * min(1.0, V * P / (V + P) / fma_per_load)
        if threads > 1:    # tasks are whole channel blocks (a batch-1 call): every thread as busy
            score *= _balance(-(-c_out // cob), threads)
        # ties: the most accumulators and fewest loads count (4 x 7 rather than 2 x 7 on ResNet's
        # 7x7 512->512 3x3s, 0.900 vs 0.937 ms at batch 1 on Zen 4), then V nearest 2
        key = (round(score, 3), round(useful * acc * loads, 3), -abs(V - 2))
        if best_key is None or key > best_key:
            best, best_key = (V, P), key
    return best


def _choose_flat(c_out: int, OW: int, vec: int, regs: int, threads: int,
                 fma_per_load: float = 1.0, co_g: int = 0) -> tuple[int, int]:
    """The (V, P) tile of a ``flat`` plane (a 1x1 convolution's whole small plane as one row,
    summed chunk by chunk): its weights sit in L1 while each tile's input streams in from L2. A
    tile step loads V weight vectors and P broadcasts for V * P FMAs; the core keeps its FMA units
    busy while (V + P) / (V * P) * ``fma_per_load`` <= 1 (vector FMAs a cycle per load a cycle:
    1 with two FMA units and two loads, 1/2 where a 512-bit FMA takes both halves of 256-bit units,
    as on AMD Zen 4). The cost of a useful FMA is the larger of the two, over the share of real
    output channels and -- tasks are whole channel blocks at batch 1 -- how evenly the blocks split
    over ``threads``; ties go to the fewest loads. Tiles must fit their accumulators, weights and
    broadcast in the registers with at least 3/4 of ``regs - 4`` accumulators. ResNet-50 at batch
    1 (2-core AVX-512 Xeon, 2026-12-04): 4 x 6 instead of :func:`_choose_row`'s 2 x 13/14 on the
    7x7 and 14x14 layers, about 1% in all (docs/cpu.md). Inception-v3's 1x1 1280->448 on 8x8 (2-core
    Zen 4): 4 x 6 made 7 blocks of 64 channels for 2 threads, 0.410 ms at batch 1 (pixels GEMM at
    opt 0: 0.345); 2 x 13 (14 blocks) 0.368, and 2.89 vs 3.01 ms at batch 8. ``co_g``: as in
    :func:`_choose_row`."""
    best, best_key = None, None
    for V in range(1, 5):
        cob = V * vec
        if co_g and co_g % cob:
            continue
        useful, balance = _useful(c_out, cob), _balance(-(-c_out // cob), threads)
        for P in range(1, OW + 1):
            if V * P + V + 1 > regs or 4 * V * P < 3 * (regs - 4):
                continue
            per_row = -(-OW // P)
            Pe = -(-OW // per_row)                  # the row cut into equal tiles
            loads = (V + Pe) / (V * Pe)
            key = (round(max(1.0, loads * fma_per_load) / useful / balance, 6), loads, -V)
            if best_key is None or key < best_key:
                best, best_key = (V, Pe), key
    return best or _choose_row(c_out, OW, vec, regs, threads, co_g=co_g)


def _fma_per_load(target: CTarget) -> float:
    """Vector FMAs a core issues per cycle over the vector loads it issues (2): 1 with two FMA
    units of a whole vector, 1/2 on AMD Zen 4's AVX-512 (``CTarget.fma_flops``)."""
    return target.fma_flops / (2 * target.vector_floats) / 2


def _useful(c_out: int, cob: int) -> float:
    """The share of ``cob``-channel blocks that holds real output channels."""
    return c_out / (-(-c_out // cob) * cob)


def _balance(ncb: int, threads: int) -> float:
    """How busy ``threads`` are when ``ncb`` equal tasks split over them."""
    return ncb / (-(-ncb // threads) * threads)


def _row_tiles(g: dict, P: int, XB: int) -> tuple[tuple, tuple]:
    """The tile functions and column runs of one output row (the same for every row): tiles of P
    output columns from the left, the last one shorter when P does not divide OW."""
    tiles, runs = [], []
    for w0 in range(0, g["OW"], P):
        n = min(P, g["OW"] - w0)
        col = {(i, kw): (w0 + i) * g["SW"] - g["PW"] + kw * g["DW"] for i in range(n) for kw in range(g["KW"])}
        inside = {k: c for k, c in col.items() if 0 <= c < g["W"]}
        base = min(inside.values(), default=0)
        fn = TileFn(n, tuple((kw, tuple((i, (inside[i, kw] - base) * XB) for i in range(n) if (i, kw) in inside))
                             for kw in range(g["KW"])))
        if fn not in tiles:
            tiles.append(fn)
        k = tiles.index(fn)
        last = runs[-1] if runs else None
        if last and last.fn == k and last.base + last.count * P * g["SW"] == base:
            runs[-1] = dataclasses.replace(last, count=last.count + 1)
        else:
            runs.append(ColumnRun(k, w0, 1, base))
    return tuple(tiles), tuple(runs)


def _rowtiles(spec: KernelSpec, VEC: int, regs: int, threads: int, fma_per_load: float = 1.0) -> ConvBlocking:
    """A convolution reading an NCHW[V]c input in place (see the module docstring); a grouped one
    (:func:`grouped_in_place`) is planned on its group's input channels, its blocks inside groups."""
    g = spec.geometry
    XB = spec.inputs[0].block or 1     # an NCHW input is NCHW1c (see nchw_in_place)
    groups = g["groups"]
    grp = {"co_g": g["C_out"] // groups} if groups > 1 else {}
    ci = g["C_in"] // groups            # input channels a block reads
    V, P = _choose_row(g["C_out"], g["OW"], VEC, regs, **grp)
    KS = _chunk(spec, V * VEC, XB)
    if KS:    # tasks are whole planes; a 1x1 unpadded stride-1 plane is tiled as one row
        if (g["KH"], g["KW"], g["SH"], g["SW"], g["PH"], g["PW"]) == (1, 1, 1, 1, 0, 0) and g["OH"] > 1:
            g = _one_row(g)
        if g is not spec.geometry:
            V, P = _choose_flat(g["C_out"], g["OW"], VEC, regs, threads, fma_per_load, **grp)
        else:
            V, P = _choose_row(g["C_out"], g["OW"], VEC, regs, threads, fma_per_load, **grp)
        KS = _chunk(spec, V * VEC, XB)
        if (-(-g["C_out"] // (V * VEC)) < threads and spec.geometry["OH"] > 1
                and 4 * g["KH"] * g["KW"] * ci * V * VEC <= ROW_TASK_WEIGHT_BYTES):
            # fewer channel blocks than threads: whole-plane tasks would idle a thread at batch 1;
            # row tasks split the plane instead (each row reads the block's weights again)
            g, KS = spec.geometry, 0
            V, P = _choose_row(g["C_out"], g["OW"], VEC, regs, 1, fma_per_load, **grp)
    flat = g is not spec.geometry
    COB = V * VEC
    NCB = -(-g["C_out"] // COB)
    tiles, runs = _row_tiles(g, P, XB)
    band = _pool_bands(spec, COB, NCB, threads) if spec.pool is not None else {}
    block_bytes = 4 * g["KH"] * g["KW"] * ci * COB
    most = NCB if NCB * block_bytes <= ONE_GROUP_BYTES else max(1, GROUP_WEIGHT_BYTES // block_bytes)
    CBG = _group(NCB, most)
    if KS and NCB % CBG:
        # tasks are whole planes (no rows in the task loop): the short last group's empty slots
        # would all fall to the last thread of the static split. Inception-v3's 1x1 1280->448 on
        # 8x8 (AVX-512): 7 blocks in groups of 3 ran 5 blocks on one thread, 2 on the other, 0.54
        # ms; a group per block 0.39 ms (2-core Zen 4, 2026-12-04)
        CBG = 1
    return ConvBlocking("rowtiles", VEC, V, COB, P, NCB, g["OH"] * sum(r.count for r in runs),
                        XB=XB, CBG=CBG, tiles=tiles, runs=runs,
                        KS=KS, flat=flat,
                        PF=PREFETCH_CHUNKS if KS else 0, **band)


def grouped_in_place(spec: KernelSpec, vec: int) -> bool:
    """A grouped (not depthwise) convolution whose groups are whole channel blocks -- input
    channels a group a multiple of its NCHW[V]c input's block, output channels a group a multiple
    of the vector width ``vec`` -- takes the ``rowtiles`` kind: a channel block's tiles read the
    input blocks of its group in place (the block's input pointer starts at its group's first
    block) with weights packed per block over the group's input channels only. ResNeXt's 3x3s
    with 16 or more channels a group (AVX-512; 8 on AVX2); smaller groups keep the ``channels`` kind
    (a channels-last copy of the input) or the NCHW ``rows`` kind."""
    g = spec.geometry
    XB = spec.inputs[0].block
    groups = g["groups"]
    return (groups > 1 and bool(XB) and not is_depthwise(g)
            and (g["C_in"] // groups) % XB == 0 and (g["C_out"] // groups) % vec == 0)


def executed_fraction(spec: KernelSpec, blk) -> float:
    """The share of a direct convolution's nominal multiply-adds (every tap of every output) that
    kernel plan ``blk`` really does: the ``rowtiles`` kind leaves out the taps on the zero border
    (its edge tiles and its top and bottom rows), every other kind multiplies them by the zeros of
    its bordered copy. ResNet's 3x3s on 7x7 planes do 82% of their nominal FLOPs, so their nominal
    rate reads above the FMA peak (`cnncc bench` places them on the roof by this share)."""
    if getattr(blk, "kind", "") != "rowtiles":
        return 1.0
    g = spec.geometry

    def inside(out: int, stride: int, pad: int, k: int, dil: int, size: int) -> float:
        return sum(0 <= o * stride - pad + t * dil < size for o in range(out) for t in range(k)) / (out * k)

    return (inside(g["OH"], g["SH"], g["PH"], g["KH"], g["DH"], g["H"])
            * inside(g["OW"], g["SW"], g["PW"], g["KW"], g["DW"], g["W"]))


def _one_row(g: dict) -> dict:
    """A 1x1 unpadded stride-1 convolution's geometry with its planes as single rows: its pixels
    are the same whichever rows they lie in (``ConvBlocking.flat``)."""
    return dict(g, OH=1, OW=g["OH"] * g["OW"], H=1, W=g["H"] * g["W"])


def _group(NCB: int, most: int) -> int:
    """Channel blocks per group, at most ``most``: groups of equal size where some count up to
    twice the fewest divides NCB (the tasks' static split stays even), else as even as can be
    with a short last group (ResNet-50's 43 blocks of 48 channels: 9 groups of 5, the last of 3;
    the next equal split, 43 groups of one, re-read the input once per block)."""
    fewest = -(-NCB // most)
    for groups in range(fewest, min(NCB, 2 * fewest) + 1):
        if NCB % groups == 0:
            return NCB // groups
    return -(-NCB // fewest)


#: a small output plane (a channel block's sums up to this many bytes) is computed chunk by chunk
#: of input channels, each chunk's packed weights (up to CHUNK_BYTES) read from L1 by every row and
#: prefetched PREFETCH_CHUNKS chunks ahead. Row by row over all inputs, ResNet-50's 14x14 and 7x7
#: layers re-read their block's weights (0.6-0.9 MiB, from L2 or, at batch 1, L3/DRAM) once per row.
PLANE_BYTES = 64 * 1024
#: ... but a plane whose channel blocks are fewer than the threads runs in row tasks (not chunked)
#: when a block's weights are at most this: every row re-reads them (from L1 at this size)
ROW_TASK_WEIGHT_BYTES = 32 * 1024
CHUNK_BYTES = 24 * 1024
PREFETCH_CHUNKS = 2


def _chunk(spec: KernelSpec, COB: int, XB: int) -> int:
    """Input channel blocks per chunk (``KS``) of a small plane's ``rowtiles`` kernel; 0: none."""
    g = spec.geometry
    if spec.pool is not None or 4 * g["OH"] * g["OW"] * COB > PLANE_BYTES:
        return 0
    return max(1, min(g["C_in"] // g["groups"] // XB, CHUNK_BYTES // (4 * g["KH"] * g["KW"] * XB * COB)))


#: the packed weights of a group of channel blocks that fit this (half an L2 of the machines we
#: measure on) run row by row, every block of the group on a row before the next row: the
#: group's weights stay in cache and the input is read from memory once per group. ResNet-50's
#: 1x1 stride-2 downsamples (512 KiB to 8 MiB of weights, 6-25 MB inputs at batch 8) had run block
#: by block at 36-50% of the FMA peak, re-reading their input once per block (16-64 times).
GROUP_WEIGHT_BYTES = 1 << 20
#: ... but weights up to this size in all make one group: the items are then the outermost loop,
#: so each thread reads the items whose input it wrote itself (the previous kernel split them the
#: same way) and re-reads the weights from its L2. ResNet-18's layer3_0_conv1 (3x3/2, 1.2 MB of
#: weights) at batch 8: 2.25 -> 2.05 ms, 87 -> 93-95% of the FMA peak (2-core AVX-512 Xeon,
#: 2026-12-04); above it (layer4_0_conv1, 4.7 MB) items outermost re-streamed the weights per item
ONE_GROUP_BYTES = 3 << 19


def _pointwise(spec: KernelSpec, VEC: int, regs: int) -> ConvBlocking | None:
    """A 1x1, stride-1, unpadded, ungrouped convolution is the GEMM W (C_out x C_in) @ X
    (C_in x pixels) on the NCHW planes as they are: vectors along the pixels, ``COB`` output
    channels broadcast from packed weights -- no input copy, contiguous stores."""
    g = spec.geometry
    plane = g["OH"] * g["OW"]
    if (g["KH"], g["KW"], g["SH"], g["SW"], g["PH"], g["PW"], g["groups"]) != (1, 1, 1, 1, 0, 0, 1) or \
            (g["OH"], g["OW"]) != (g["H"], g["W"]):
        return None
    V = 2
    P = V * VEC
    if plane < P:
        return None
    COB = (regs - 4) // V
    NT = -(-plane // P)
    TPC = max(1, min(NT, (128 * 1024) // (4 * g["C_in"] * P)))   # ~128 KiB of input columns per chunk
    return ConvBlocking("pixels", VEC, V, COB, P, -(-g["C_out"] // COB), NT, TPC=TPC, NCHUNK=-(-NT // TPC))


def nchw_in_place(spec: KernelSpec) -> bool:
    """A 1x1 stride-1 unpadded ungrouped convolution from an NCHW input to an NCHW[V]c output
    (ResNeXt's conv3 after its grouped conv, which has no blocked kernel) reads the input in
    place as NCHW1c with the ``rowtiles`` kind -- one broadcast per pixel and input channel, as
    from a blocked input -- instead of copying it channels-last for the ``channels`` kind (the
    ``pixels`` GEMM writes NCHW only)."""
    g = spec.geometry
    return (not spec.inputs[0].block and bool(spec.output.block) and spec.pool is None
            and (g["KH"], g["KW"], g["SH"], g["SW"], g["PH"], g["PW"], g["groups"]) == (1, 1, 1, 1, 0, 0, 1))


def is_depthwise(geometry: dict) -> bool:
    """One input and one output channel per group (MobileNet's, ShuffleNet's 3x3s)."""
    g = geometry
    return g["groups"] > 1 and g["groups"] == g["C_in"] == g["C_out"]


def depthwise_blocked(spec: KernelSpec) -> bool:
    """The ``depthwise`` kind: a depthwise convolution without a fused pool whose input or output
    is NCHW[V]c with V >= 2 (passes/layout.py keeps such a group's tensors blocked when it may)."""
    block = spec.inputs[0].block or spec.output.block
    return is_depthwise(spec.geometry) and spec.pool is None and block >= 2


#: a ``depthwise`` task's staged input rows: well inside L2, so the KH rows each output row reads
#: stay near; bands get shorter until the tasks (items x channel blocks x bands) reach
#: DEPTHWISE_TASKS per thread, each band copying its KH - 1 rows of overlap again
DEPTHWISE_BAND_BYTES = 48 * 1024
DEPTHWISE_TASKS = 4


def _depthwise(spec: KernelSpec, target: CTarget) -> ConvBlocking:
    g = spec.geometry
    B = spec.inputs[0].block or spec.output.block
    if spec.inputs[0].block and spec.output.block and spec.inputs[0].block != spec.output.block:
        raise CompileError(f"{spec.name}: a depthwise convolution from NCHW{spec.inputs[0].block}c to "
                           f"NCHW{spec.output.block}c (the layout pass blocks every tensor alike)")
    OH, OW = g["OH"], g["OW"]
    pmax = 8 if target.vector_registers >= 32 else 4   # accumulators beside the KH x KW weight vectors
    tiles = -(-OW // pmax)
    P = -(-OW // tiles)                                  # a row in equal tiles: 14 = 7 + 7, not 8 + 6
    # the staged row: the left border, the input, and zeros up to the last tile's last tap
    Wp = max(g["PW"] + g["W"], (tiles * P - 1) * g["SW"] + (g["KW"] - 1) * g["DW"] + 1)
    span = lambda br: (br - 1) * g["SH"] + (g["KH"] - 1) * g["DH"] + 1    # input rows of br output rows
    NCB = g["C_out"] // B
    br = OH
    while br > 1 and span(br) * Wp * B * 4 > DEPTHWISE_BAND_BYTES:
        br -= 1
    while br > 1 and NCB * -(-OH // br) < DEPTHWISE_TASKS * target.threads:
        br = -(-br // 2)
    return ConvBlocking("depthwise", B, 1, B, P, NCB, tiles, Wp=Wp, BR=br, NBAND=-(-OH // br), BROWS=span(br))


def _rows(spec: KernelSpec, VEC: int) -> ConvBlocking:
    """Grouped convolutions with less than a vector of output channels per group (depthwise):
    vectors along each output row. Each input plane is copied zero-bordered and split into its
    SW column phases (phase s holds padded columns s, s + SW, ...), so every tap of a strided
    convolution reads whole vectors at consecutive addresses."""
    g = spec.geometry
    OWr = -(-g["OW"] // VEC) * VEC
    Hp, Wq, phases = c_small.stage_phases(g, OWr, g["OH"])
    return ConvBlocking("rows", VEC, 1, g["C_out"] // g["groups"], 0, g["groups"], g["OH"], Hp=Hp,
                        OWr=OWr, Wq=Wq, phases=phases)


def _dense(spec: KernelSpec, VEC: int, regs: int) -> ConvBlocking:
    MR = 6   # weight rows per task; NR items x MR accumulators + NR input vectors + one weight vector fit
    NR = max(1, (regs - 2) // (MR + 1))
    K = spec.geometry["K"]
    KC = min(-(-K // VEC) * VEC, max(VEC, (16384 // (4 * MR)) // VEC * VEC))   # MR rows of a chunk: ~16 KiB
    return ConvBlocking("dense", VEC, 1, MR, 0, -(-spec.geometry["M"] // MR), 0, NR=NR, KC=KC,
                        NCHUNK=-(-K // KC))


def plan(spec: KernelSpec, target: CTarget, algorithm: str = "auto"):
    """How a conv or dense kernel is vectorized and blocked for ``target`` (None: neither); a
    3x3 stride-1 conv that ``algorithm`` (compile()'s conv_algorithm) sends to Winograd gets a
    c_winograd.WinogradPlan."""
    VEC, regs = target.vector_floats, target.vector_registers
    if spec.family == "dense":
        return c_small.plan_dense(spec, target) or _dense(spec, VEC, regs)
    if spec.family != "conv":
        return None
    if depthwise_blocked(spec):
        return _depthwise(spec, target)
    wino = c_winograd.plan(spec, target, algorithm, _choose)
    if wino is not None:   # one that starts at min_batch items carries the direct plan it runs below
        return dataclasses.replace(wino, direct=plan(spec, target, "direct")) if wino.min_batch else wino
    g = spec.geometry
    if c_winograd.direct_reads_in_place(spec) or nchw_in_place(spec) or grouped_in_place(spec, VEC):
        return _rowtiles(spec, VEC, regs, target.threads, _fma_per_load(target))
    blocked = bool(spec.inputs[0].block or spec.output.block)   # NCHW[V]c (passes/layout.py): the channels kind
    pw = None if blocked else _pointwise(spec, VEC, regs)
    if pw is not None:
        return pw
    # the small kinds read and write NCHW only: a blocked input, output or residual operand
    # (passes/layout.py) takes the channels kind
    operand_blocked = any(e.operand is not None and e.operand.block for e in spec.epilogue)
    small = None if blocked or operand_blocked else (c_small.plan_conv(spec, target, _choose)
                                                     or c_small.plan_pool_band(spec, target))
    if small is not None:
        return small
    groups = g["groups"]
    co_g = g["C_out"] // groups
    OH, OW = g["OH"], g["OW"]
    choice = _choose(co_g, OH * OW, groups, VEC, regs)
    if choice is None:
        if blocked:
            raise CompileError(f"{spec.name}: the 'rows' kernel of a grouped convolution has no blocked form, yet its "
                               f"tensors are NCHW[V]c (the layout pass should have put reorders around it)")
        return _rows(spec, VEC)
    V, P = choice
    COB = V * VEC
    NCB = groups * -(-co_g // COB)
    rows = (OH - 1) * g["SH"] + (g["KH"] - 1) * g["DH"] + 1
    cols = (OW - 1) * g["SW"] + (g["KW"] - 1) * g["DW"] + 1
    padded = bool(g["PH"] or g["PW"] or rows > g["H"] or cols > g["W"])
    Hp = max(g["PH"] + g["H"], rows) if padded else g["H"]
    Wp = max(g["PW"] + g["W"], cols) if padded else g["W"]
    band = _pool_bands(spec, COB, NCB, target.threads) if spec.pool is not None else {}
    return ConvBlocking("channels", VEC, V, COB, P, NCB, -(-OH * OW // P), Hp, Wp, padded, **band,
                        CS=copy_stride(g["C_in"]))


def copy_stride(c_in: int) -> int:
    """The pixel stride of the ``channels`` kind's channels-last input copy: ``c_in`` floats, one
    64-byte line more when that is a multiple of 1 KiB. A tile's pixels then fall in different
    L1 sets; 2 KiB apart (512 channels) its 28 pixels shared one or two sets of an 8-way L1 and
    thrashed it: ResNeXt-style grouped 3x3 (512 channels, 32 groups, stride 2, 28x28 -> 14x14, b8)
    8.74 ms at 512 channels against 3.59 at 496 (2-core Zen 4)."""
    return c_in + 16 if (4 * c_in) % 1024 == 0 else c_in


BAND_BYTES = 192 * 1024   # a band's conv rows for one channel block: well inside L2


MIN_TASKS = 16           # channel blocks x bands: at least this many tasks, and two per thread


def _pool_bands(spec: KernelSpec, COB: int, NCB: int, threads: int) -> dict:
    """A fused pool is computed band by band: a task takes one channel block and ``BR`` pooled
    rows, computes just the conv rows their windows cover (``BROWS`` at most, overlapping windows
    recompute the rows two bands share) into a buffer that stays in L2, pools them there and
    stores only the pooled rows. Bands are as tall as ``BAND_BYTES`` allows, but short enough
    that channel blocks x bands give every thread several tasks (``threads``: the target's)."""
    p = spec.pool
    span = lambda br: min(p.H, (br - 1) * p.SH + (p.KH - 1) * p.DH + 1)   # conv rows for br pooled rows
    row_bytes = 4 * COB * p.W
    br = max(1, min(p.OH, BAND_BYTES // max(1, row_bytes * p.SH)))
    while br > 1 and span(br) * row_bytes > BAND_BYTES:
        br -= 1
    while br > 1 and NCB * -(-p.OH // br) < max(MIN_TASKS, 2 * threads):
        br = max(1, br // 2)
    return {"BR": br, "NBAND": -(-p.OH // br), "BROWS": span(br)}


def pack(weight: np.ndarray, groups: int, b: ConvBlocking) -> np.ndarray:
    """(C_out, CI_G, KH, KW) -> (NCB, KH, KW, CI_G, COB); block k holds channels k*COB.. of its
    group (blocks never straddle groups), zeros where a block runs past the group's channels."""
    if b.kind == "winograd":    # (NCB, alpha^2, C_in, COB) of the transformed weights
        return c_winograd.pack(weight, b)
    if b.kind in c_small.KINDS:
        return c_small.pack(weight, b)
    c_out, ci_g, kh, kw = weight.shape
    if b.kind == "depthwise":   # (NCB, KH, KW, COB): a tap's weights of a channel block, one vector
        return np.ascontiguousarray(np.transpose(weight[:, 0].reshape(b.NCB, b.COB, kh, kw), (0, 2, 3, 1)))
    if b.kind == "pixels":      # (NCB, C_in, COB): the block's channels side by side per input channel
        out = np.zeros((b.NCB, ci_g, b.COB), np.float32)
        for blk in range(b.NCB):
            lo, hi = blk * b.COB, min((blk + 1) * b.COB, c_out)
            out[blk, :, : hi - lo] = weight[lo:hi, :, 0, 0].T
        return out
    if b.kind == "rowtiles":    # (NCB, KH, C_in / XB, KW, XB, COB): a tile reads them in order
        XB = b.XB
        out = np.zeros((b.NCB, kh, ci_g // XB, kw, XB, b.COB), np.float32)
        for blk in range(b.NCB):
            lo, hi = blk * b.COB, min((blk + 1) * b.COB, c_out)
            w = np.transpose(weight[lo:hi], (2, 3, 1, 0)).reshape(kh, kw, ci_g // XB, XB, hi - lo)
            out[blk, ..., : hi - lo] = np.transpose(w, (0, 2, 1, 3, 4))
        if b.KS:                # (NCB, C_in / XB, KH, KW, XB, COB): a chunk of input channels in one run
            out = np.ascontiguousarray(np.transpose(out, (0, 2, 1, 3, 4, 5)))
        return out
    co_g = c_out // groups
    per_group = b.NCB // groups
    out = np.zeros((b.NCB, kh, kw, ci_g, b.COB), np.float32)
    for blk in range(b.NCB):
        grp, k = divmod(blk, per_group)
        lo = grp * co_g + k * b.COB
        hi = min(lo + b.COB, (grp + 1) * co_g)
        out[blk, ..., : hi - lo] = np.transpose(weight[lo:hi], (2, 3, 1, 0))
    return out


def prepare(program: Program, target: CTarget) -> Program:
    """The Program the C source for ``target`` reads: each blocked conv's weights packed and
    appended to the blob as ``<layer>.weight.c_<kind><COB>``, referenced as
    ``spec.weights["packed"]``, and the originals no kernel reads dropped. ``program`` itself is
    not changed (rendering is a pure function of Program and target): the result is a new
    Program, or ``program`` when nothing needs packing. Idempotent (a saved module keeps its
    packed weights); packing for another vector width needs the originals, so such a Program is
    refused (compile again)."""
    kernels = None            # copied on the first kernel that needs a packed reference
    layout = dict(program.blob_layout)
    extra: list[np.ndarray] = []
    size = int(program.blob.size)
    for i, spec in enumerate(program.kernels):
        b = plan(spec, target, program.conv_algorithm)
        if b is None or b.kind in ("rows", "dense"):   # these read the PyTorch layout
            if b is not None and "packed" in spec.weights:   # packed for another target's plan
                if spec.weights["weight"].offset < 0:
                    raise CompileError(f"{spec.name}: its weights were packed for another vector width and the "
                                       "original layout was dropped; compile the model again")
                if kernels is None:
                    kernels = copy.deepcopy(program.kernels)
                del kernels[i].weights["packed"]
            continue
        w = spec.weights["weight"]
        # a Winograd kernel that runs only from min_batch items on has the direct kernel beside it
        wanted = [("packed", b)] + ([("packed_direct", b.direct)] if getattr(b, "direct", None) else [])
        if all(slot in spec.weights and spec.weights[slot].name == f"{w.name}.c_{pb.tag}" for slot, pb in wanted) \
                and ("packed_direct" in spec.weights) == (len(wanted) == 2):
            continue
        if kernels is None:
            kernels = copy.deepcopy(program.kernels)    # specs and their TensorRefs: the caller's stay as they are
        for slot, pb in wanted:
            key = f"{w.name}.c_{pb.tag}"
            if key in layout:
                off, shape = layout[key]
            else:
                if w.offset < 0:
                    raise CompileError(f"{spec.name}: its weights were packed for another vector width and the "
                                       "original layout was dropped; compile the model again")
                numel = int(np.prod(w.shape, dtype=np.int64))
                arr = pack(program.blob[w.offset: w.offset + numel].reshape(w.shape), spec.geometry.get("groups", 1),
                           pb)
                off, shape = size, arr.shape
                size += append_blob_entry(extra, arr)
                layout[key] = (off, tuple(shape))
            node, _, param = w.name.rpartition(".")
            kernels[i].weights[slot] = TensorRef(key, names.weight_ident(node, f"{param}_c_{pb.tag}"), tuple(shape),
                                                 batched=False, storage="weights", offset=off)
        if "packed_direct" in kernels[i].weights and len(wanted) == 1:
            del kernels[i].weights["packed_direct"]
        if b.kind == "winograd":   # keeps the PyTorch layout too: direct sums where the input is not finite
            kernels[i].weights["weight_direct"] = kernels[i].weights["weight"]
    if kernels is None:
        return program
    out = dataclasses.replace(program, kernels=kernels, blob_layout=layout,
                              blob=np.concatenate([program.blob] + extra) if extra else program.blob)
    if extra:
        drop_unread_weights(out)
    return out


def drop_unread_weights(program: Program) -> None:
    """Keep in the blob only the arrays some kernel reads: a packed convolution no longer needs
    its PyTorch-layout copy (ResNet-18 would otherwise hold and save its weights twice, +45 MB).
    References to a dropped array get offset -1; packing again then needs a fresh lowering.
    Edits ``program`` in place: :func:`prepare` calls it on the Program it has just made."""
    read = {t.offset for spec in program.kernels for t in spec.blob_tensors()}
    moves, parts, size, layout = {}, [], 0, {}
    for key, (off, shape) in sorted(program.blob_layout.items(), key=lambda kv: kv[1][0]):
        numel = int(np.prod(shape, dtype=np.int64))
        if not any(off <= r < off + numel for r in read):
            continue
        moves[off] = (numel, size)
        layout[key] = (size, shape)
        size += append_blob_entry(parts, program.blob[off: off + numel])
    refs = [t for spec in program.kernels for t in _weight_refs(spec)]
    for t in refs:
        t.offset = next((new + t.offset - off for off, (numel, new) in moves.items()
                         if off <= t.offset < off + numel), -1)
    program.blob = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    program.blob_layout = layout


def _weight_refs(spec):
    """Every blob reference of a kernel, including ones it does not read (a packed conv's original)."""
    seen = {id(t): t for t in list(spec.weights.values()) + spec.blob_tensors()}
    return list(seen.values())
