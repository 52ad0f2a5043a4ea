"""Winograd convolution on the C target: F(2x2,3x3) and F(4x4,3x3) for 3x3 stride-1 layers.

A 3x3 convolution computes each m x m output tile from an (m+2) x (m+2) input patch ``d``:
``Y = A^T [ (G g G^T) * (B^T d B) ] A`` (Lavin & Gray, 2015), an elementwise product in an
alpha x alpha transform domain (alpha = m + 2). Summed over the input channels, each of the
alpha^2 positions is a GEMM (tiles x C_in) @ (C_in x C_out), so the multiplies per output drop
from 9 to alpha^2 / m^2 (4 for F(2x2): 2.25x fewer; 2.25 for F(4x4): 4x fewer).

What the kernel does (templates/c/conv_winograd.c.j2 spells it):

* the weights ``U = G g G^T`` are transformed here at compile time (float64, rounded once) and
  packed as ``[channel block][alpha^2][C_in][COB]``, appended to the weight blob like the
  direct kernels' packed weights (c_conv.prepare);
* a task takes batch item ``n``, a chunk of ``TB`` tiles (consecutive, row-major) and a group of channel
  blocks: it copies the ``alpha`` input rows it reads channels-last (zeros outside the image),
  transforms each tile's patch (``B^T d B``, vectorised over input channels), runs the alpha^2
  GEMMs in a register tile of ``P`` tiles x ``COB`` output channels (the target's vectors, as the
  direct kernel's tile), and transforms the result back (``A^T M A``, vectorised over output
  channels) with the epilogue -- bias, folded BN, activation, residual add -- before the store;
* or, where that would stream U once per chunk of tiles for more bytes than the tiles' V and M
  (:func:`planes_pay`), ``IB`` items at a time run in three steps split over the threads: every
  tile row of the items staged and transformed into one V, then the GEMMs per (transform
  position, channel block) over all their tiles -- each block of U read once per ``IB`` items --
  into one M, then the output transforms per (item, block, tile);
* with F(2x2) an output tile is exactly one 2x2 pool window (with F(4x4), four): a fused 2x2/2 max
  pool is reduced inside the output transform, and only the pooled tile is stored.

Accuracy: F(2x2)'s transforms hold only 0, +-1 and 1/2, its float32 error is that of the direct
convolution. F(4x4)'s hold up to 8 and 1/24 and lose ~3-4 more bits (~1e-5 relative per layer
with random weights, docs/cpu.md); :data:`F4_MAX_CIN` bounds where "auto" and "winograd" use it.
A task whose input holds a NaN or Inf computes direct sums instead (the transforms would spread
it over whole tiles), so non-finite outputs match the reference.

Which layers use it: :func:`choose` -- per layer, with the reason ``cnncc inspect`` shows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncc.errors import CnnccError
from cnncc.codegen.spec import KernelSpec
from cnncc.codegen.target import CTarget

#: what ``compile(..., conv_algorithm=)`` accepts: "winograd2"/"winograd4" force F(2x2,3x3) or
#: F(4x4,3x3) (for study and benchmarks; F(4x4) then ignores the accuracy bound)
ALGORITHMS = ("auto", "direct", "winograd", "winograd2", "winograd4")

# -- the transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015) ----------
#: m -> (B^T, G, A^T): input transform (alpha x alpha), weight transform (alpha x 3),
#: output transform (m x alpha); interpolation points 0, 1, -1 (F2) and 0, +-1, +-2, inf (F4)
MATRICES = {
    2: (np.array([[1, 0, -1, 0],
                  [0, 1, 1, 0],
                  [0, -1, 1, 0],
                  [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0],
                  [1 / 2, 1 / 2, 1 / 2],
                  [1 / 2, -1 / 2, 1 / 2],
                  [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0],
                  [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0],
                  [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0],
                  [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0],
                  [0, 1, -1, 2, -2, 0],
                  [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}

#: "auto" uses Winograd only where the GEMMs amortise the transforms: both channel counts at
#: least this (the transforms cost O(C_in + C_out) per tile, the GEMMs O(C_in * C_out))
AUTO_MIN_CHANNELS = 64
#: ... and output planes at least this tall and wide (enough tiles to fill the register tile and
#: the threads; partial edge tiles waste less)
AUTO_MIN_PLANE = 14
#: F(4x4) only on planes at least this size (its 4x4 tiles waste up to 3 rows and columns) ...
F4_MIN_PLANE = 28
#: ... and with at most this many input channels (the reduction length its error grows with;
#: VGG's 512 measured at < 1e-5 relative, docs/cpu.md)
F4_MAX_CIN = 512

BUFFER_BYTES = 512 * 1024   # a task's transformed input tiles: L2-sized
#: "auto" wants each packed weight block used for at least this many tiles per task (a task
#: streams its channel groups' whole U once: fewer tiles and the GEMMs wait on memory). Set from
#: benchmarks/winograd.py on VGG-19's layers (2-core AVX-512 Xeon, 2026-12-03, batch 1): F(4x4)
#: at 14 tiles (C_in 256) ran 1.33-1.43x of direct and beat F(2x2); F(2x2) at 16 tiles (C_in
#: 512) ran 0.73-1.04x, so C_in 512 stays direct
AUTO_MIN_REUSE_F4 = 12
AUTO_MIN_REUSE_F2 = 24
MIN_TASKS = 16              # tasks per batch item to aim for (tile chunks x channel groups)
#: transformed weights U smaller than this (a core's L2 and then some, on the machines we measure)
#: are re-read from cache by fused tasks: whole planes in three steps only pay above it
PLANES_MIN_U_BYTES = 4 << 20
#: whole planes take up to this many items at a time (IB) while their V and M fit this scratch:
#: each block of U is then read once per IB items. ResNet-50's 256-channel 14x14 layers at batch 8
#: (U 9.4 MB, V + M 1.2 MB per item) read U from memory once per item otherwise
PLANES_MAX_ITEMS = 8
PLANES_BATCH_BYTES = 16 << 20
#: "auto" on an NCHW[V]c input whose direct kernel outruns Winograd at batch 1 (ResNet's 256- and
#: 512-channel 14x14 and 7x7 layers: U is read from memory for a single item's few tiles) takes
#: F(4x4) in whole planes from a batch of ``min_batch`` items on, where reading U once pays for
#: itself: U / BATCH_U_BYTES items, at least BATCH_MIN_ITEMS. A smaller batch runs the direct
#: kernel (both are compiled; the call picks by N). Measured on ResNet-50 (2-core AVX-512 Xeon,
#: 2026-12-04): 256 -> 256 at 14x14 (U 9.4 MB) ties direct at batch 2 and wins from 4 (1.55 vs
#: 1.90 ms at 4, 2.5 vs 3.8 at 8); 512 -> 512 at 7x7 (U 37.7 MB) loses at 4 (2.41 vs 2.14) and
#: wins at 8 (3.26 vs 3.94)
BATCH_U_BYTES = 5 << 20
BATCH_MIN_ITEMS = 3
#: ... and only where that is at most this many items: the layer then carries U (4x its weights)
#: and the direct kernel's packing besides; the 512-channel 7x7 layers (U 37.7 MB, from 8 items:
#: 3.9 -> 3.3 ms each at batch 8) would add 94 MB to ResNet-50's 177 MB of weights for 1%
BATCH_MAX_ITEMS = 4
#: On a core whose FMA units finish at most this many FLOPs a cycle (CTarget.fma_flops: AVX2, and
#: Zen 4's AVX-512 in 256-bit halves) "auto" gives an NCHW[V]c-input layer F(4x4) (within its
#: accuracy bound, plan's schedule) where the row-tile direct kernel wins on cores of twice the
#: FMA rate. Measured on a 2-core Zen 4 EPYC (2026-12-04, batch 1, per-kernel medians of the quiet
#: rounds, whole networks at opt 2 with the algorithm forced): ResNet-18's 256-channel 14x14 3x3s
#: F(4x4) 0.67-0.77 ms vs 0.98-1.02 direct, GoogLeNet's inception4a-e 14x14 3x3s 0.23-0.49 vs
#: 0.37-0.75; the 512-channel 7x7 layers stay direct (plane < AUTO_MIN_PLANE: F(4x4) 1.29-1.34 vs
#: 0.98-1.05). On the 2-core Xeon (64 FLOP/cycle) F(4x4) on those 14x14 planes ran 1.4-1.5 ms vs
#: 0.71 direct (docs/cpu.md).
NARROW_FMA_FLOPS = 32


@dataclass(frozen=True)
class Choice:
    """The algorithm of one conv kernel and why (``cnncc inspect`` prints both)."""

    algorithm: str        # "direct", "winograd F(2x2,3x3)", "winograd F(4x4,3x3)"
    m: int                # output tile size; 0 for direct
    reason: str
    min_batch: int = 0    # Winograd from this batch on, the direct kernel below it (0: at every batch)

    @property
    def text(self) -> str:
        """The algorithm as ``cnncc inspect`` shows it."""
        return self.algorithm + (f" at N >= {self.min_batch}, direct below" if self.min_batch else "")


@dataclass(frozen=True)
class WinogradPlan:
    """How one Winograd conv kernel is tiled (all sizes literal in the generated C)."""

    m: int                # output tile m x m
    VEC: int              # floats per vector register
    V: int                # vectors of output channels per register tile
    COB: int              # output channels per block (V * VEC)
    P: int                # tiles per register tile
    NCB: int              # channel blocks
    TH: int               # tile rows, columns
    TW: int
    TB: int               # tiles per task (consecutive in one tile row)
    NCH: int              # chunks per tile row
    CBG: int              # channel blocks per task
    NCG: int              # channel-block groups
    pooled: bool          # a fused 2x2/2 max pool is reduced in the output transform
    reason: str = ""
    planes: bool = False  # whole planes in three steps (every tile transformed, then the GEMMs, then the
                          # output transforms), each block of U read once per IB items; else fused tasks
    IB: int = 1           # whole planes: items per pass (their tiles are one GEMM's rows)
    min_batch: int = 0    # Choice.min_batch: below it the call runs the direct kernel compiled beside,
    direct: object = None  # ... whose plan c_conv.plan puts here (this module cannot plan direct kernels)
    kind: str = "winograd"

    @property
    def alpha(self) -> int:
        return self.m + 2

    @property
    def TBP(self) -> int:
        """Rows of the GEMM output buffer per transform position: TB (times IB, whole planes) rounded
        up to whole register tiles."""
        return -(-self.TB * self.IB // self.P) * self.P

    @property
    def XW(self) -> int:
        """Columns of the channels-last input rows a task stages per tile row."""
        return min(self.TB, self.TW) * self.m + 2

    @property
    def tag(self) -> str:
        """Names the packed weights: another m or block size is another array."""
        return f"winograd{self.m}x{self.COB}"

    def matrices(self):
        """(B^T, A^T) as nested lists of floats for the template."""
        bt, _, at = MATRICES[self.m]
        return bt.tolist(), at.tolist()


def check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise CnnccError(f"conv_algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    return algorithm


def why_not(spec: KernelSpec) -> str | None:
    """Why a conv kernel cannot use Winograd here (None: it can)."""
    g = spec.geometry
    if spec.family != "conv":
        return f"a {spec.family} kernel"
    if (g["KH"], g["KW"]) != (3, 3):
        return f"kernel {g['KH']}x{g['KW']}, Winograd is for 3x3"
    if (g["SH"], g["SW"]) != (1, 1):
        return f"stride {g['SH']}x{g['SW']}, Winograd is for stride 1"
    if (g["DH"], g["DW"]) != (1, 1):
        return f"dilation {g['DH']}x{g['DW']}"
    if g["groups"] != 1:
        return f"{g['groups']} groups"
    p = spec.pool
    if p is not None and not (p.kind == "max" and (p.KH, p.KW, p.SH, p.SW, p.DH, p.DW, p.PH, p.PW)
                              == (2, 2, 2, 2, 1, 1, 0, 0) and (p.H, p.W) == (g["OH"], g["OW"])):
        return (f"fused {p.kind} pool {p.KH}x{p.KW}/{p.SH}: only a 2x2/2 max pool without padding fuses "
                f"into the output transform")
    return None


def direct_reads_in_place(spec: KernelSpec) -> bool:
    """The direct kernel of this convolution reads its input in place: ungrouped, input NCHW[V]c
    (c_conv's ``rowtiles`` kind, planned there; decided here, where the rule below needs it too --
    c_conv imports this module)."""
    return bool(spec.inputs[0].block) and spec.geometry["groups"] == 1


def _f4_ok(g: dict) -> bool:
    return g["C_in"] <= F4_MAX_CIN


def choose(spec: KernelSpec, algorithm: str = "auto", target: CTarget | None = None) -> Choice:
    """The rule, per conv kernel. ``algorithm`` is compile()'s ``conv_algorithm``; ``target`` the
    machine (None: one with two full-vector FMA units):

    * "direct": every convolution direct;
    * "winograd": every eligible 3x3 stride-1 convolution Winograd -- F(4x4) where its accuracy
      bound holds (``C_in <= F4_MAX_CIN``) and the plane is at least 4x4, F(2x2) otherwise;
      an ineligible one falls back to direct, saying why;
    * "winograd2" / "winograd4": F(2x2) / F(4x4) on every eligible one (study, benchmarks);
    * "auto": direct unless both channel counts reach ``AUTO_MIN_CHANNELS`` and the plane
      ``AUTO_MIN_PLANE``; then F(4x4) on planes of at least ``F4_MIN_PLANE`` within its
      accuracy bound where a task holds ``AUTO_MIN_REUSE_F4`` tiles (C_in <= 303) or whole planes
      in three steps pay (:func:`planes_pay`: VGG's 512-channel 28x28 layers); else direct
      when the input is NCHW[V]c (the row-tile direct kernel, c_conv's ``rowtiles``, ran 1.1-1.6x
      faster than fused F(2x2) on every such ResNet-50 and GoogLeNet layer, docs/cpu.md) unless
      F(2x2) in whole planes pays (VGG's 512-channel 14x14 layers: 1.75 vs 3.1 ms direct at batch
      1, 15.1 vs 17.0 at batch 8) -- or, on a target of at most ``NARROW_FMA_FLOPS`` FLOPs a
      cycle, F(4x4) within its accuracy bound (:data:`NARROW_FMA_FLOPS`); else F(2x2) where a task
      holds ``AUTO_MIN_REUSE_F2`` (C_in <= 341) or whole planes pay, else direct.
    """
    check_algorithm(algorithm)
    if spec.family != "conv":
        return Choice("direct", 0, f"a {spec.family} kernel")
    if algorithm == "direct":
        return Choice("direct", 0, "forced (conv_algorithm='direct')")
    g = spec.geometry
    no = why_not(spec)
    if no is not None:
        forced = "" if algorithm == "auto" else f"conv_algorithm='{algorithm}' falls back: "
        return Choice("direct", 0, forced + no)
    small = min(g["OH"], g["OW"])
    if algorithm == "winograd2":
        return Choice("winograd F(2x2,3x3)", 2, "forced (conv_algorithm='winograd2')")
    if algorithm == "winograd4":
        return Choice("winograd F(4x4,3x3)", 4, "forced (conv_algorithm='winograd4')")
    if algorithm == "winograd":
        if _f4_ok(g) and small >= 4:
            return Choice("winograd F(4x4,3x3)", 4, f"forced; C_in {g['C_in']} <= {F4_MAX_CIN} keeps F(4x4) accurate")
        why = f"C_in {g['C_in']} > {F4_MAX_CIN}" if not _f4_ok(g) else f"plane {g['OH']}x{g['OW']} under 4x4"
        return Choice("winograd F(2x2,3x3)", 2, f"forced; F(2x2) since {why}")
    chans = min(g["C_in"], g["C_out"])
    if chans < AUTO_MIN_CHANNELS:
        return Choice("direct", 0, f"{chans} channels < {AUTO_MIN_CHANNELS}: the transforms would not pay")
    if small < AUTO_MIN_PLANE:
        batched = batch_choice(spec, f"plane {g['OH']}x{g['OW']} < {AUTO_MIN_PLANE}: too few tiles for one item")
        if batched is not None:
            return batched
        return Choice("direct", 0, f"plane {g['OH']}x{g['OW']} < {AUTO_MIN_PLANE}: too few tiles")
    pays = f"{chans}+ channels, plane {g['OH']}x{g['OW']}"
    reuse4, reuse2 = tiles_per_task(g, 4), tiles_per_task(g, 2)
    planes4, planes2 = planes_pay(g, 4), planes_pay(g, 2)
    if small >= F4_MIN_PLANE and _f4_ok(g) and (reuse4 >= AUTO_MIN_REUSE_F4 or planes4):
        how = "; whole planes in three steps" if planes4 else ""
        return Choice("winograd F(4x4,3x3)", 4, f"{pays} >= {F4_MIN_PLANE}, C_in <= {F4_MAX_CIN}{how}")
    why = (f"plane < {F4_MIN_PLANE}" if small < F4_MIN_PLANE else f"C_in {g['C_in']} > {F4_MAX_CIN}"
           if not _f4_ok(g) else f"F(4x4) would reuse each weight block for {reuse4} tiles < {AUTO_MIN_REUSE_F4}")
    if direct_reads_in_place(spec) and not planes2:
        if target is not None and target.fma_flops <= NARROW_FMA_FLOPS and _f4_ok(g):
            return Choice("winograd F(4x4,3x3)", 4, f"{pays}; {why}, but on FMA units of {target.fma_flops} "
                                                    "FLOP/cycle F(4x4) outruns the row-tile direct kernel")
        batched = batch_choice(spec, f"no F(4x4) at batch 1 ({why}): the row-tile direct kernel outruns it")
        if batched is not None:
            return batched
        return Choice("direct", 0, f"no F(4x4) ({why}), and on an NCHW[V]c input the row-tile direct kernel "
                                   "outruns F(2x2) in fused tasks")
    if reuse2 < AUTO_MIN_REUSE_F2 and not planes2:
        return Choice("direct", 0, f"C_in {g['C_in']}: a task would reuse each weight block for {reuse2} tiles "
                                   f"< {AUTO_MIN_REUSE_F2}")
    return Choice("winograd F(2x2,3x3)", 2, f"{pays}; F(2x2) since {why}" + ("; whole planes in three steps" if planes2 else ""))


def batch_choice(spec: KernelSpec, why: str) -> Choice | None:
    """F(4x4) in whole planes from a batch of ``min_batch`` items on (see ``BATCH_U_BYTES``), the
    direct kernel below; None where that does not apply (input not NCHW[V]c, C_in beyond F(4x4)'s
    accuracy bound, a plane under 4x4, U small enough to stay in cache, or more than
    ``BATCH_MAX_ITEMS`` items needed)."""
    g = spec.geometry
    if not direct_reads_in_place(spec) or not _f4_ok(g) or min(g["OH"], g["OW"]) < 4:
        return None
    u = _u_bytes(g, 4)
    if u <= PLANES_MIN_U_BYTES:
        return None
    k = max(BATCH_MIN_ITEMS, -(-u // BATCH_U_BYTES))
    if k > min(BATCH_MAX_ITEMS, planes_items(g, 4, g["C_out"])):
        return None
    return Choice("winograd F(4x4,3x3)", 4, f"{why}; from {k} items on F(4x4) in whole planes reads U "
                                           f"({u / 1e6:.1f} MB) once per pass", min_batch=k)


def plan(spec: KernelSpec, target: CTarget, algorithm: str, register_tile) -> WinogradPlan | None:
    """The Winograd tiling of a conv kernel for ``target``, or None when :func:`choose` says direct.
    ``register_tile(C_out, tiles, 1, VEC, regs) -> (V, P)`` is the direct kernel's register tile
    rule (c_conv._choose, passed in: c_conv imports this module)."""
    choice = choose(spec, algorithm, target)
    if not choice.m:
        return None
    g = spec.geometry
    m, VEC, regs = choice.m, target.vector_floats, target.vector_registers
    TH, TW = -(-g["OH"] // m), -(-g["OW"] // m)
    planes = bool(choice.min_batch) or planes_pay(g, m)   # whole planes: one chunk of every tile, one channel group
    TB = TH * TW if planes else tiles_per_task(g, m)
    NCH = -(-(TH * TW) // TB)
    TB = -(-(TH * TW) // NCH)                        # the same tiles in as many tasks, evenly
    V, P = register_tile(g["C_out"], TB, 1, VEC, regs)   # P tiles x V vectors of output channels
    if not planes and TB > P and TB % P:   # whole register tiles per task: only the last task has a partial group
        TB = -(-TB // P) * P
        NCH = -(-(TH * TW) // TB)
    COB = V * VEC
    NCB = -(-g["C_out"] // COB)
    # more tasks from channel groups (each redoes the input transform: groups of >= 64 channels)
    NCG = 1 if planes else max(1, min(NCB, -(-MIN_TASKS // NCH), g["C_out"] // 64))
    CBG = -(-NCB // NCG)
    NCG = -(-NCB // CBG)
    IB = planes_items(g, m, NCB * COB) if planes else 1
    return WinogradPlan(m, VEC, V, COB, P, NCB, TH, TW, TB, NCH, CBG, NCG, spec.pool is not None, choice.reason,
                        planes=planes, IB=IB, min_batch=choice.min_batch)


def planes_items(g: dict, m: int, c_out: int) -> int:
    """Items per pass of whole planes: the most (a power of two, at most ``PLANES_MAX_ITEMS``) whose
    V and M fit ``PLANES_BATCH_BYTES``; a batch of one runs one item whatever this says."""
    per_item = _vm_bytes(g, m, c_out)
    ib = 1
    while 2 * ib <= PLANES_MAX_ITEMS and 2 * ib * per_item <= PLANES_BATCH_BYTES:
        ib *= 2
    return ib


def planes_pay(g: dict, m: int) -> bool:
    """Whole planes in three steps (WinogradPlan.planes) move fewer bytes than fused tasks: a fused
    task streams its channel groups' U once per chunk of tiles (U x chunks per item), the three
    steps write and read back every tile's transformed input V and GEMM result M once. VGG-19 at
    batch 1 (2-core AVX-512 Xeon, 2026-12-03): 512 -> 512 at 28x28 (U 38 MB x 7 chunks vs 2 x 7 MB)
    ran 4.9-5.4 ms instead of 9.7 (direct, which "auto" had kept) and 256 -> 256 at 56x56 3.6-4.3
    instead of 5.1 ms. A U under ``PLANES_MIN_U_BYTES`` stays in cache between chunks, while V and
    M of a large plane go to memory: 128 -> 128 at 112x112 (U 2.4 MB x 112 chunks vs 2 x 115 MB)
    ran 6.5 ms in three steps and 4.2 fused, 64 -> 64 at 224x224 9.3 and 5.4 ms."""
    chunks = -(-_tiles(g, m) // tiles_per_task(g, m))
    u = _u_bytes(g, m)
    return u > PLANES_MIN_U_BYTES and u * chunks > 2 * _vm_bytes(g, m, g["C_out"])


def _tiles(g: dict, m: int) -> int:
    """m x m output tiles per item."""
    return -(-g["OH"] // m) * -(-g["OW"] // m)


def _u_bytes(g: dict, m: int) -> int:
    """Bytes of the transformed weights U of F(m x m, 3x3)."""
    return 4 * (m + 2) ** 2 * g["C_in"] * g["C_out"]


def _vm_bytes(g: dict, m: int, c_out: int) -> int:
    """Bytes of one item's transformed input V and GEMM results M (``c_out`` channels of them)."""
    return 4 * (m + 2) ** 2 * _tiles(g, m) * (g["C_in"] + c_out)


def tiles_per_task(g: dict, m: int) -> int:
    """Tiles a task transforms and multiplies at once: as many as ``BUFFER_BYTES`` of transformed
    input holds (each packed weight block is reused that many times), at most all of them."""
    alpha = m + 2
    return max(1, min(-(-g["OH"] // m) * -(-g["OW"] // m), BUFFER_BYTES // (4 * alpha * alpha * g["C_in"])))


def transform_weights(weight: np.ndarray, m: int) -> np.ndarray:
    """(C_out, C_in, 3, 3) -> U = G g G^T, (alpha, alpha, C_out, C_in), computed in float64."""
    _, G, _ = MATRICES[m]
    return np.einsum("ak,oikl,bl->aboi", G, weight.astype(np.float64), G)


def pack(weight: np.ndarray, b: WinogradPlan) -> np.ndarray:
    """(C_out, C_in, 3, 3) -> (NCB, alpha^2, C_in, COB) float32: block k holds U for channels
    k*COB.. side by side per input channel, zeros past the last channel."""
    c_out, c_in = weight.shape[:2]
    u = transform_weights(weight, b.m).reshape(b.alpha * b.alpha, c_out, c_in)
    out = np.zeros((b.NCB, b.alpha * b.alpha, c_in, b.COB), np.float32)
    for blk in range(b.NCB):
        lo, hi = blk * b.COB, min((blk + 1) * b.COB, c_out)
        out[blk, :, :, : hi - lo] = u[:, lo:hi, :].transpose(0, 2, 1)
    return out


def conv2d(x: np.ndarray, weight: np.ndarray, m: int, padding: int = 1) -> np.ndarray:
    """A numpy Winograd convolution (float32 transforms and GEMMs, like the kernel): the oracle of
    the transform tests and of the accuracy study (benchmarks/winograd.py)."""
    bt, _, at = (a.astype(np.float32) for a in MATRICES[m])
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    alpha = m + 2
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2
    th, tw = -(-oh // m), -(-ow // m)
    xp = np.zeros((n, c_in, th * m + 2, tw * m + 2), np.float32)
    xp[:, :, padding: padding + h, padding: padding + w] = x[:, :, : th * m + 2 - padding, : tw * m + 2 - padding]
    idx = np.arange(th)[:, None] * m + np.arange(alpha)[None, :]          # (th, alpha) input rows
    jdx = np.arange(tw)[:, None] * m + np.arange(alpha)[None, :]
    d = xp[:, :, idx[:, :, None, None], jdx[None, None, :, :]]           # (n, ci, th, alpha, tw, alpha)
    v = np.einsum("ak,nchkwl,bl->abnhwc", bt, d, bt, optimize=True).astype(np.float32)
    u = transform_weights(weight, m).astype(np.float32)                  # (a, b, co, ci)
    mm = np.einsum("abnhwc,aboc->abnhwo", v, u, optimize=True).astype(np.float32)
    y = np.einsum("ia,abnhwo,jb->nohiwj", at, mm, at, optimize=True).astype(np.float32)
    return y.reshape(n, c_out, th * m, tw * m)[:, :, :oh, :ow]
