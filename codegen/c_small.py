"""Kernels for small layers on the C target: tiles sized for one core and no team to wake.

LeNet-5 at batch 1 does ~0.4 M multiply-adds in five kernels: every one of them is far below the
work that pays for waking the OpenMP team (``CTarget.parallel_work``), so each runs on the calling
thread and what counts is how many vector instructions it issues and what it does around them.
The general kinds (:mod:`cnncc.codegen.c_conv`) fit these layers badly:

* ``channels`` puts output channels in the vector lanes: LeNet's first layer has 6, so 10 of 16
  AVX-512 lanes compute zeros (19,600 vector FMAs where 8,400 do);
* ``dense`` vectorises along the inputs and sums the 16 lanes of every output one by one at the
  end -- a chain of 16 dependent adds per output feature, longer than the dot product itself
  for 120 outputs of 400 inputs;
* both allocate scratch and enter an ``omp parallel`` region on every call, even when its ``if``
  keeps the team asleep (~0.75 us per region measured on the 2-core Xeon: as much as a layer).

The kinds planned here run without any of that. They are chosen for layers whose work per
batch item is below the default threshold (:func:`small`); such a kernel runs its items on the
calling thread (a plain loop, no OpenMP region), and at batches whose work reaches the target's
threshold it splits the items over the team (one region).

* ``rowblock`` (convolution, one group): vectors along the output rows, a register tile of ``RT``
  output rows x ``NV`` vectors x ``COB`` output channels, the channels' weights broadcast (packed
  at compile time as ``[block][ci][kh][kw][COB]``). The input item is staged zero-bordered and
  split into its column phases (as the ``rows`` kind does), with enough zero rows and columns
  that every tile reads whole vectors without a bounds check. Tiles go to a band buffer of the
  channel block's conv rows that stays in L1; the epilogue, the fused pool and the store read
  it from there (only pooled rows are stored). Chosen for a small convolution when it issues
  fewer vector FMAs than the ``channels`` kind would (few output channels, wide rows).
* ``pixblock`` (convolution with a fused pool whose windows do not overlap rows): vectors along
  the output channels; the band of one pooled row (KH x OW pixels) is one register tile, every
  pixel at a literal offset from one pointer into the channels-last staged input (the
  ``channels`` kind keeps one pointer per pixel: past ~12 they spill the general registers).
* ``gemv`` (dense): vectors along the output features; weights packed ``[block][K][MB]`` so each
  input is one broadcast into ``MB / VEC`` FMAs and no lane sum is left at the end; ``KS``
  independent accumulator sets over interleaved inputs hide the FMA latency when a block's
  vectors are few; ``NR`` batch items share each weight load. The softmax tail, if any, runs on
  each item's row right after it.

:func:`plan_conv`, :func:`plan_pool_band` and :func:`plan_dense` return None where a layer is not
small (or another kind does better); c_conv.plan asks them before its own kinds. docs/cpu.md has
the rules and the measured LeNet-5 kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncc.codegen.spec import KernelSpec
from cnncc.codegen.target import PARALLEL_WORK_PER_FLOAT, CTarget

KINDS = ("rowblock", "pixblock", "gemv")

#: a rowblock kernel's per-item buffers (staged input and the band of conv rows) live on the
#: stack: at most this many floats (64 KiB), so they stay in L1/L2 and never strain a thread stack
STACK_FLOATS = 16 * 1024
#: the band buffer of one channel block: this many floats at most (24 KiB: L1 with the input)
BAND_FLOATS = 6 * 1024
#: rowblock replaces the ``channels`` kind only where it issues at most this share of its vector
#: FMAs: the channels kind is the tuned general one, a small gain is not worth a second code path
MARGIN = 0.75
#: registers a rowblock tile leaves free (gcc needs them for the unrolled taps' broadcasts and
#: loads: with none left it spilled half of LeNet-5's 24 accumulators on every tap)
SLACK = 6
#: independent accumulators that keep the FMA units busy (2 units x 4 cycles latency, plus slack)
MIN_ACC = 12


@dataclass(frozen=True)
class SmallPlan:
    """How one small conv or dense kernel is tiled (all sizes literal in the generated C)."""

    kind: str          # "rowblock" | "gemv"
    VEC: int           # floats per vector register
    COB: int           # rowblock: output channels per block; gemv: outputs per block (MB = NV * VEC)
    NCB: int           # blocks of them
    NV: int            # vectors per register tile row (rowblock: along an output row; gemv: of outputs)
    RT: int = 0        # rowblock: output rows per register tile
    NCOL: int = 0      # rowblock: column blocks of NV vectors per output row
    OWr: int = 0       # rowblock: output row rounded up to whole column blocks
    Hs: int = 0        # rowblock: staged rows (zero rows below the input so the last tile reads inside)
    Wq: int = 0        # rowblock: staged columns per phase
    phases: tuple = ()     # rowblock: per column phase s, the (first, end) staged columns that read the input
    BR: int = 0        # rowblock: pooled rows per band (a fused pool), else conv rows per band
    NBAND: int = 0     # rowblock: bands per plane
    BROWS: int = 0     # rowblock: rows of the band buffer (a band's conv rows, rounded up to whole tiles)
    NR: int = 0        # gemv: batch items per tile
    KS: tuple = ()     # gemv: accumulator sets per tile height: KS[nr - 1] for nr items
    reason: str = ""

    @property
    def tag(self) -> str:
        """Names the packed weights."""
        return f"{self.kind}{self.COB}"


def stage_phases(g: dict, OWr: int, OHr: int) -> tuple[int, int, tuple]:
    """A zero-bordered copy of an input plane split into its SW column phases (phase s holds
    padded columns s, s + SW, ...) wide enough for ``OWr`` output columns and tall enough for
    ``OHr`` output rows: (rows Hs, columns per phase Wq, per phase the (first, end) columns that
    read the input -- the rest are zeros). Shared with c_conv's ``rows`` kind."""
    SW = g["SW"]
    Wq = OWr + (g["KW"] - 1) * g["DW"] // SW + 1
    Hs = max(g["PH"] + g["H"], (OHr - 1) * g["SH"] + (g["KH"] - 1) * g["DH"] + 1)
    phases = []
    for s in range(SW):   # phase column j reads input column j * SW + s - PW when that is inside
        lo = min(Wq, max(0, -(-(g["PW"] - s) // SW)))
        hi = min(Wq, max(lo, (g["W"] - 1 + g["PW"] - s) // SW + 1))
        phases.append((lo, hi))
    return Hs, Wq, tuple(phases)


def item_work(spec: KernelSpec) -> int:
    """Multiply-adds per batch item (codegen/c.py's parallel_work for conv and dense)."""
    g = spec.geometry
    if spec.family == "dense":
        return g["M"] * g["K"]
    return g["C_out"] * g["OH"] * g["OW"] * (g["C_in"] // g["groups"]) * g["KH"] * g["KW"]


def small(spec: KernelSpec, target: CTarget) -> bool:
    """A layer is small when one item's work stays below what pays for waking the OpenMP team at
    the default threshold for the target's vector width (target.PARALLEL_WORK_PER_FLOAT per float;
    not ``target.parallel_work``, which may be set to move regions: the kind, and the weights
    packed for it, follow the vectors only)."""
    return item_work(spec) < PARALLEL_WORK_PER_FLOAT * target.vector_floats


def _row_tile(g: dict, VEC: int, regs: int, rows: int) -> tuple[int, int, int] | None:
    """(RT, NV, COB) doing the most useful work per FMA: few padded channels, lanes and rows (of
    the ``rows`` conv rows computed), at least MIN_ACC accumulators, then the fewest loads per
    FMA. Accumulators, the COB broadcast weights and one input vector fit the registers."""
    OW, C_out = g["OW"], g["C_out"]
    nvr = -(-OW // VEC)
    best, best_key = None, None
    for COB in range(1, min(C_out, 16) + 1):
        for RT in range(1, 5):
            for NV in range(1, nvr + 1):
                acc = RT * NV * COB
                if acc + COB + 1 > regs - SLACK:
                    continue
                ncol = -(-nvr // NV)
                useful = (C_out / (-(-C_out // COB) * COB)) * (OW / (ncol * NV * VEC)) * \
                    (rows / (-(-rows // RT) * RT))
                score = useful * min(1.0, acc / MIN_ACC) ** 1.5
                loads = 1 / COB + 1 / (RT * NV)
                key = (round(score, 3), -round(loads, 3))
                if best_key is None or key > best_key:
                    best, best_key = (RT, NV, COB), key
    return best


def channels_fmas(g: dict, register_tile, VEC: int, regs: int) -> int | None:
    """Vector FMAs of the ``channels`` kind for this convolution (c_conv._choose's tile)."""
    choice = register_tile(g["C_out"], g["OH"] * g["OW"], 1, VEC, regs)
    if choice is None:
        return None
    V, P = choice
    plane = g["OH"] * g["OW"]
    return -(-g["C_out"] // (V * VEC)) * V * -(-plane // P) * P * g["C_in"] * g["KH"] * g["KW"]


def plan_conv(spec: KernelSpec, target: CTarget, register_tile) -> SmallPlan | None:
    """A ``rowblock`` plan for a small, ungrouped convolution that issues at most ``MARGIN`` of the
    vector FMAs of the ``channels`` kind (``register_tile``: c_conv._choose), or None."""
    g = spec.geometry
    VEC, regs = target.vector_floats, target.vector_registers
    if g["groups"] != 1 or not small(spec, target):
        return None
    p = spec.pool
    if p is not None and p.kind == "argmax":
        return None
    rows = g["OH"] if p is None else min(p.H, (p.OH - 1) * p.SH + (p.KH - 1) * p.DH + 1 - p.PH)
    tile = _row_tile(g, VEC, regs, max(1, rows))
    if tile is None:
        return None
    RT, NV, COB = tile
    nvr = -(-g["OW"] // VEC)
    NCOL = -(-nvr // NV)
    OWr = NCOL * NV * VEC
    NCB = -(-g["C_out"] // COB)
    fmas = NCB * COB * -(-g["OH"] // RT) * RT * NCOL * NV * g["C_in"] * g["KH"] * g["KW"]
    other = channels_fmas(g, register_tile, VEC, regs)
    if other is not None and fmas > MARGIN * other:
        return None
    OW = g["OW"]
    if p is not None:
        def band_rows(br):   # conv rows a band of br pooled rows covers at most, rounded up to whole tiles
            span = min(p.H, (br - 1) * p.SH + (p.KH - 1) * p.DH + 1)
            return -(-span // RT) * RT
        BR = p.OH
        while BR > 1 and COB * band_rows(BR) * OW > BAND_FLOATS:
            BR -= 1
        BROWS, NBAND = band_rows(BR), -(-p.OH // BR)
    else:
        BR = max(RT, BAND_FLOATS // (COB * OW) // RT * RT)
        BR = min(BR, -(-g["OH"] // RT) * RT)
        BROWS, NBAND = BR, -(-g["OH"] // BR)
    Hs, Wq, phases = stage_phases(g, OWr, g["OH"] + RT - 1)
    staged = g["C_in"] * g["SW"] * Hs * Wq
    if staged + COB * BROWS * OW > STACK_FLOATS:
        return None
    return SmallPlan("rowblock", VEC, COB, NCB, NV, RT=RT, NCOL=NCOL, OWr=OWr, Hs=Hs, Wq=Wq, phases=phases,
                     BR=BR, NBAND=NBAND, BROWS=BROWS,
                     reason=f"{fmas:,} vector FMAs vs {other:,} with channels in the lanes" if other else "")


def plan_pool_band(spec: KernelSpec, target: CTarget) -> SmallPlan | None:
    """A ``pixblock`` plan for a small convolution with a fused pool whose windows do not overlap
    rows (KH == SH, no padding above), output channels in whole vectors and one pooled row's conv
    rows (KH x OW pixels) fitting one register tile, or None. The tile's pixels sit at literal
    offsets from one input pointer (the ``channels`` kind keeps a pointer per pixel: past ~12 of
    them they no longer fit the general registers)."""
    g, p = spec.geometry, spec.pool
    VEC, regs = target.vector_floats, target.vector_registers
    if p is None or p.kind == "argmax" or g["groups"] != 1 or g["DW"] != 1 or not small(spec, target):
        return None
    if p.KH != p.SH or p.PH or p.DH != 1 or g["C_out"] % VEC:
        return None
    RT, P = p.KH, p.KH * g["OW"]
    V = next((v for v in (4, 3, 2, 1) if g["C_out"] % (v * VEC) == 0 and P * v + v + 2 <= regs), None)
    if V is None:
        return None
    Hs = max(g["PH"] + g["H"], (g["OH"] + RT - 2) * g["SH"] + (g["KH"] - 1) * g["DH"] + 1)
    Ws = max(g["PW"] + g["W"], (g["OW"] - 1) * g["SW"] + g["KW"])
    COB = V * VEC
    if Hs * Ws * g["C_in"] + COB * (RT * g["OW"] + VEC) + P * COB > STACK_FLOATS:
        return None
    return SmallPlan("pixblock", VEC, COB, g["C_out"] // COB, V, RT=RT, OWr=g["OW"], Hs=Hs, Wq=Ws, BR=1,
                     NBAND=p.OH, BROWS=RT, reason=f"one pooled row's {RT}x{g['OW']} pixels in one register tile")


def plan_dense(spec: KernelSpec, target: CTarget) -> SmallPlan | None:
    """A ``gemv`` plan for a dense layer small enough to run on the calling thread, or None."""
    g = spec.geometry
    VEC, regs = target.vector_floats, target.vector_registers
    if not small(spec, target):
        return None
    budget = regs - 4                       # accumulators; the rest: a weight vector, a broadcast
    NV = max(1, min(-(-g["M"] // VEC), budget))
    NR = max(1, min(4, budget // NV))
    KS = tuple(max(1, min(4, budget // (nr * NV), g["K"])) for nr in range(1, NR + 1))
    MB = NV * VEC
    return SmallPlan("gemv", VEC, MB, -(-g["M"] // MB), NV, NR=NR, KS=KS)


def pack(weight: np.ndarray, b: SmallPlan) -> np.ndarray:
    """rowblock: (C_out, C_in, KH, KW) -> (NCB, C_in, KH, KW, COB); pixblock: -> (NCB, KH, KW, C_in,
    COB); gemv: (M, K) -> (NCB, K, MB);
    zeros past the last channel / output."""
    axes = (2, 3, 1, 0) if b.kind == "pixblock" else tuple(range(1, weight.ndim)) + (0,)
    out = np.zeros((b.NCB,) + tuple(weight.shape[a] for a in axes[:-1]) + (b.COB,), np.float32)
    for blk in range(b.NCB):
        lo, hi = blk * b.COB, min((blk + 1) * b.COB, weight.shape[0])
        out[blk, ..., : hi - lo] = np.transpose(weight[lo:hi], axes)
    return out
