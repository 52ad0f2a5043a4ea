"""Tensor-core convolutions for the CUDA target: which layers, which tile, and why.

A convolution whose GEMM has at least ``MIN_CHANNELS`` output channels per group runs, when the
precision is not fp32, as an implicit GEMM on the tensor cores (``templates/cuda/conv_wmma.cu.j2``,
``nvcuda::wmma``): TF32 m16n16k8 or FP16/BF16 m16n16k16 fragments, FP32 accumulators. Narrower
layers (grouped ResNeXt, depthwise) keep the FP32 kernels: a 16-row tile would be mostly waste.

The tile is chosen here by a small cost model (the template only spells it): every candidate
block tile (BM output channels x BPP output positions, x WIN window values when a pool is
fused) that fits the 48 KB of static shared memory and 64 accumulator registers per thread is
priced as

    waves x (MMA work of one block at its share of the SM's tensor-core rate + its tile loads)

where ``waves = ceil(blocks / (132 SMs x resident blocks per SM))`` at a nominal batch of
``NOMINAL_BATCH``, and the MMA work counts the padding of the last channel/position/K tile, so
small layers pick small tiles and big layers big ones. Python owns every number; see
``docs/gpu.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

#: output channels per group below which a layer keeps the FP32 kernel
MIN_CHANNELS = 16
#: the batch the tile choice assumes (the grid follows N at run time; the tile cannot)
NOMINAL_BATCH = 8
SMS = 132
SMEM_PER_SM = 228 * 1024
STATIC_SMEM = 48 * 1024
MAX_THREADS_PER_SM = 2048
REGS_PER_SM = 65536

#: per precision: fragment k, the fragment's input type, the conversion into it, smem bytes per staged input
PRECISION = {
    "tf32": {"KSTEP": 8, "IN_T": "wmma::precision::tf32", "CONVERT": "wmma::__float_to_tf32", "HALF": False},
    "fp16": {"KSTEP": 16, "IN_T": "__half", "CONVERT": "__float2half_rn", "HALF": True},
    "bf16": {"KSTEP": 16, "IN_T": "__nv_bfloat16", "CONVERT": "__float2bfloat16_rn", "HALF": True},
}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Tile:
    BM: int         # output channels per block
    BPP: int        # output (pooled) positions per block
    WIN: int        # conv outputs per position (pool window), 1 without a pool
    BK: int         # reduction rows per pipeline stage
    STAGES: int     # cp.async stages in flight
    WARPS_M: int
    WARPS_N: int
    HALF: bool      # fp16/bf16: the float stage is converted into half tiles before the MMAs
    BT: bool = False  # channels-last input: the B stage is Bs[col][k] (copies along k = channels)

    @property
    def COLS(self) -> int:
        return self.BPP * self.WIN

    @property
    def threads(self) -> int:
        return 32 * self.WARPS_M * self.WARPS_N

    @property
    def FM(self) -> int:
        return self.BM // 16 // self.WARPS_M

    @property
    def FN(self) -> int:
        return self.COLS // 16 // self.WARPS_N

    def smem_bytes(self) -> int:
        lda, ldc = self.BK + 4, self.COLS + 4
        b_floats = self.COLS * (self.BK + 4) if self.BT else self.BK * (self.COLS + 4)
        pipeline = self.STAGES * (self.BM * lda + b_floats)
        floats = max(pipeline, self.BM * ldc)         # the accumulator tile reuses the stages
        b_half = self.COLS * (self.BK + 8) if self.BT else self.BK * (self.COLS + 8)
        half = (self.BM * (self.BK + 8) + b_half) if self.HALF else 0
        return 4 * floats + 2 * half

    def registers(self) -> int:
        """A rough per-thread estimate (accumulators, operand fragments, addressing) for the model;
        ptxas's real figure is checked by the NVRTC tests and shown by ``cnncc inspect``."""
        per_frag = 4 if not self.HALF else 8
        return min(255, 48 + 8 * self.FM * self.FN + per_frag * (self.FM + self.FN))

    def blocks_per_sm(self) -> int:
        return max(0, min(32, MAX_THREADS_PER_SM // self.threads, SMEM_PER_SM // (self.smem_bytes() + 1024),
                          REGS_PER_SM // (self.registers() * self.threads)))


def candidates(co_g: int, win: int, half: bool, kstep: int, bt: bool = False):
    for bm in (16, 32, 64, 128):
        if bm > max(16, cdiv(co_g, 16) * 16):
            continue
        for bpp in (16, 32, 64, 128):
            cols = bpp * win
            if cols > 256:
                continue
            for wm in (1, 2, 4):
                for wn in (1, 2, 3, 4, 8):      # 3: a 3x3 pool window makes 9 fragment columns
                    if not 2 <= wm * wn <= 8 or bm % (16 * wm) or cols % (16 * wn):
                        continue
                    for bk in (16, 32):
                        if bk % kstep:
                            continue
                        for stages in (2, 3, 4):
                            t = Tile(bm, bpp, win, bk, stages, wm, wn, half, bt)
                            if t.FM * t.FN > 8 or t.smem_bytes() > STATIC_SMEM:
                                continue
                            yield t


def cost(t: Tile, co_g: int, positions: int, k: int, groups: int) -> float:
    """Relative time of a layer with tile ``t`` (arbitrary units; only comparisons matter)."""
    per_sm = t.blocks_per_sm()
    if per_sm == 0:
        return float("inf")
    blocks = cdiv(co_g, t.BM) * cdiv(positions, t.BPP) * groups
    waves = cdiv(blocks, SMS * per_sm)
    kp = cdiv(k, t.BK) * t.BK
    mma = t.BM * t.COLS * kp / min(per_sm, 4)             # 4 tensor-core quadrants share an SM
    loads = (t.BM + t.COLS) * kp * 16                      # global -> smem traffic per block
    pipeline = 1.0 + 1.0 / t.STAGES                        # fewer stages hide less latency
    return waves * (mma + loads) * pipeline / max(1, min(per_sm * t.threads // 32, 16) / 4)


def choose(co_g: int, positions: int, k: int, groups: int, win: int, precision: str, bt: bool = False) -> Tile:
    info = PRECISION[precision]
    best = min(candidates(co_g, win, info["HALF"], info["KSTEP"], bt),
               key=lambda t: (cost(t, co_g, positions * NOMINAL_BATCH, k, groups), -t.STAGES, t.BM * t.COLS))
    return best


def uses_tensor_cores(geometry: dict, precision: str, direct: bool) -> bool:
    """The rule: any non-fp32 precision, a GEMM convolution, at least MIN_CHANNELS per group."""
    co_g = geometry["C_out"] // geometry["groups"]
    return precision != "fp32" and not direct and co_g >= MIN_CHANNELS


def aligned16(ref) -> bool:
    """True when element 4i of every batch item of ``ref`` starts a 16-byte boundary (arena slots are
    256-byte aligned, inputs/outputs come from allocators that align at least that much)."""
    return (ref.base % 4 == 0 and (ref.storage != "arena" or (ref.arena_a % 16 == 0 and ref.arena_b % 16 == 0))
            and ref.item_stride % 4 == 0)


def channels_last(program, is_wmma) -> frozenset:
    """The activations the CUDA target keeps channels-last (NHWC): the arena tensors that a
    tensor-core convolution writes whole (no concat slice, no view) and that only tensor-core
    convolutions read, each as its main input. ``is_wmma(spec)`` says which kernels those are.

    Every other kernel, the runtime's inputs and outputs and the epilogue operands stay NCHW, so
    the layout is a contract between WMMA producers and WMMA consumers alone. A tensor's life is
    followed from its producer until another tensor is written to its arena slot; any read of
    that slot meanwhile (a view, a residual add, a pool, a concat) by anything but a WMMA
    convolution's input keeps the tensor NCHW."""
    kernels = program.kernels
    out = set()
    for i, spec in enumerate(kernels):
        t = spec.output
        if (spec.family != "conv" or not is_wmma(spec) or t.storage != "arena" or t.base != 0
                or t.item_stride != t.item_numel or not t.batched):
            continue
        def reads_slot(k):
            reads = list(k.inputs) + [o.tensor for o in k.operands] + [e.operand.tensor for e in k.epilogue if e.operand]
            return [r for r in reads if r.storage == "arena" and (r.arena_a, r.arena_b) == (t.arena_a, t.arena_b)]

        if reads_slot(spec):
            continue   # written in place of its own (NCHW) input, e.g. a residual operand: the layouts would race
        readers = 0
        for later in kernels[i + 1:]:
            same = reads_slot(later)
            if same:
                if not (later.family == "conv" and is_wmma(later) and len(same) == 1 and same[0] is later.inputs[0]
                        and same[0].name == t.name and same[0].base == 0):
                    readers = -1
                    break
                readers += 1
            o = later.output
            if o.storage == "arena" and (o.arena_a, o.arena_b) == (t.arena_a, t.arena_b):
                break   # the slot is overwritten: the tensor's life is over
        if readers > 0:
            out.add(t.name)
    return frozenset(out)


def tiles(spec, precision: str, base: dict, nhwc: frozenset = frozenset()) -> tuple[int, dict, tuple]:
    """(threads, template parameters, grid as (positions per block, channel blocks, groups)).

    ``nhwc``: the tensors kept channels-last (:func:`channels_last`); a convolution reading one
    orders its reduction (kh, kw, ci), so four consecutive k are four channels of one pixel: one
    16-byte copy when the channels per group are a multiple of 4."""
    g = spec.geometry
    co_g = base["CO_G"]
    x = spec.inputs[0]
    nhwc_in, nhwc_out = x.name in nhwc, spec.output.name in nhwc
    t = choose(co_g, base["OUTPLANE"], base["K"], g["groups"], base["WIN"], precision, nhwc_in)
    info = PRECISION[precision]
    w = spec.weights["weight"]
    aligned_x = aligned16(x)
    vec_b = (g["KH"] == g["KW"] == 1 and g["SH"] == g["SW"] == 1 and g["PH"] == g["PW"] == 0 and spec.pool is None
             and base["OUTPLANE"] % 4 == 0 and aligned_x and g.get("PH_hi", 0) == g.get("PW_hi", 0) == 0)
    b_floats = t.COLS * (t.BK + 4) if nhwc_in else t.BK * (t.COLS + 4)
    params = dict(base)
    params.update(PREC=precision, KSTEP=info["KSTEP"], IN_T=info["IN_T"], CONVERT=info["CONVERT"], HALF=t.HALF,
                  BM=t.BM, BPP=t.BPP, COLS=t.COLS, BK=t.BK, STAGES=t.STAGES, WARPS_M=t.WARPS_M,
                  WARPS_N=t.WARPS_N, FM=t.FM, FN=t.FN, LDA=t.BK + 4, LDB=t.COLS + 4, LDC=t.COLS + 4,
                  LDAH=t.BK + 8, LDBH=t.COLS + 8, LDBT=t.BK + 4, LDBTH=t.BK + 8,
                  A_FLOATS=t.BM * (t.BK + 4), B_FLOATS=b_floats,
                  SMEM_FLOATS=max(t.STAGES * (t.BM * (t.BK + 4) + b_floats), t.BM * (t.COLS + 4)),
                  VEC_A=base["K"] % 4 == 0 and w.offset % 4 == 0 and (not nhwc_in or g["KH"] * g["KW"] == 1),
                  VEC_B=vec_b and not nhwc_in, NHWC_IN=nhwc_in, NHWC_OUT=nhwc_out,
                  VEC_C=nhwc_in and base["CI_G"] % 4 == 0 and aligned_x and g["C_in"] % 4 == 0,
                  B_HALF=t.COLS * (t.BK + 8) if nhwc_in else t.BK * (t.COLS + 8),
                  MIN_BLOCKS=max(1, min(t.blocks_per_sm(), REGS_PER_SM // (t.threads * 128))),
                  SMEM_BYTES=t.smem_bytes())
    return t.threads, params, (t.BPP, cdiv(co_g, t.BM), g["groups"])


# ---------------------------------------------------------------------------------------------
# dense layers (templates/cuda/dense_wmma.cu.j2)
#: batch rows per block: one 16-wide fragment column (dense layers run at small batches)
DENSE_BN = 16


def dense_uses_tensor_cores(spec, precision: str) -> bool:
    """Any non-fp32 precision, at least MIN_CHANNELS output features, no softmax tail (the rowwise
    kernel keeps the row in shared memory for it)."""
    return precision != "fp32" and not spec.tail and spec.geometry["M"] >= MIN_CHANNELS


def dense_tiles(spec, precision: str) -> tuple[int, dict, tuple]:
    """(threads, template parameters, (feature blocks, batch rows per block)).

    A block is BM features (one warp per 16) x DENSE_BN batch rows; BM grows to 64 only while
    the grid still fills the SMs at the nominal batch, since a dense layer at small batch is a
    weight stream: more blocks in flight read it faster."""
    g = spec.geometry
    info = PRECISION[precision]
    m, k = g["M"], g["K"]
    bm = 16
    while bm < 64 and bm < m and cdiv(m, bm * 2) * cdiv(NOMINAL_BATCH, DENSE_BN) >= SMS:
        bm *= 2
    bk = 32
    stages = 2 if k <= bk else 3
    lda = ldb = bk + 4
    a_floats, b_floats = bm * lda, DENSE_BN * ldb
    w = spec.weights["weight"]
    vec_a = 4 if k % 4 == 0 and w.offset % 4 == 0 else 1
    vec_b = 4 if k % 4 == 0 and aligned16(spec.inputs[0]) else 1
    params = dict(PREC=precision, KSTEP=info["KSTEP"], IN_T=info["IN_T"], CONVERT=info["CONVERT"], HALF=info["HALF"],
                  BM=bm, BN=DENSE_BN, BK=bk, STAGES=stages, WARPS=bm // 16, WM=bm // 16, WN=1, LDA=lda, LDB=ldb,
                  LDC=DENSE_BN + 4, LDAH=bk + 8, LDBH=bk + 8, B_ROWS=DENSE_BN, B_COLS=bk,
                  A_FLOATS=a_floats, B_FLOATS=b_floats, VEC_A=vec_a, VEC_B=vec_b,
                  SMEM_FLOATS=max(stages * (a_floats + b_floats), bm * (DENSE_BN + 4)))
    return 32 * (bm // 16), params, (cdiv(m, bm), DENSE_BN)


# ---------------------------------------------------------------------------------------------
# matmul (templates/cuda/matmul_wmma.cu.j2): numpy's batched, broadcast matmul, block by block
def matmul_uses_tensor_cores(spec, precision: str) -> bool:
    """Any non-fp32 precision, matrices of at least MIN_CHANNELS rows and columns per block (a
    16 x 16 tile would otherwise be mostly padding: a (N, K) @ (K, M) product has one row per
    item), and an output led by the batch N (a static one keeps the FP32 kernel)."""
    g = spec.geometry
    return precision != "fp32" and not g["whole"] and g["R"] >= MIN_CHANNELS and g["M"] >= MIN_CHANNELS


def matmul_tiles(spec, precision: str) -> tuple[int, dict, tuple]:
    """(threads, template parameters, (column tiles, row tiles)).

    A block is BM rows x BN columns of one output matrix, one warp per 16 x 16 fragment (WM x WN
    warps); the stages hold A as As[row][k] and B as Bs[k][col] (both row-major, as in memory),
    16-byte copies along k / along the columns when K / M and the operands' offsets allow."""
    g = spec.geometry
    info = PRECISION[precision]
    r, k, m = g["R"], g["K"], g["M"]
    wm = 4 if r >= 64 else 2 if r >= 32 else 1
    wn = 2 if m >= 32 else 1
    bm, bn, bk = 16 * wm, 16 * wn, 32
    lda, ldb = bk + 4, bn + 4
    a_floats, b_floats = bm * lda, bk * ldb
    half = (bm * (bk + 8) + bk * (bn + 8)) * 2 if info["HALF"] else 0
    stages = 2 if k <= bk else 3
    while stages > 2 and 4 * stages * (a_floats + b_floats) + half > STATIC_SMEM:
        stages -= 1
    a, b = spec.inputs
    vec_a = 4 if k % 4 == 0 and aligned16(a) and all(o % 4 == 0 for o in g["a_off"]) and g["a_item"] % 4 == 0 else 1
    vec_b = 4 if m % 4 == 0 and aligned16(b) and all(o % 4 == 0 for o in g["b_off"]) and g["b_item"] % 4 == 0 else 1
    params = dict(PREC=precision, KSTEP=info["KSTEP"], IN_T=info["IN_T"], CONVERT=info["CONVERT"], HALF=info["HALF"],
                  BM=bm, BN=bn, BK=bk, STAGES=stages, WARPS=wm * wn, WM=wm, WN=wn, LDA=lda, LDB=ldb, LDC=bn + 4,
                  LDAH=bk + 8, LDBH=bn + 8, B_ROWS=bk, B_COLS=bn, A_FLOATS=a_floats, B_FLOATS=b_floats,
                  VEC_A=vec_a, VEC_B=vec_b, TM=cdiv(m, bn),
                  SMEM_FLOATS=max(stages * (a_floats + b_floats), bm * (bn + 4)))
    return 32 * wm * wn, params, (cdiv(m, bn), cdiv(r, bm))
