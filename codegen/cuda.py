"""The CUDA renderer: a Program -> one .cu translation unit (templates/cuda/*.cu.j2).

Python decides everything a kernel's shape depends on (variant, tile sizes, block size, grid);
the templates only spell it. Every kernel is ``extern "C" __global__`` and takes

    (const int N, <tensor pointers in KernelSpec.tensors() order>, const float* W)

where the tensor pointers already include their storage offset (arena slot, concat slice) and
``W`` is the weight blob (each array at a literal offset). How to launch it is written in the
launch string of ``mod.kernels``, a small grammar the runtimes parse (see ``parse_launch``):

    grid (cdiv(784*N, 256), 1, 1) block (256, 1, 1) args (N, conv1, image, W)

Each grid dimension is an int or ``cdiv(A*N+B, D)`` = ceil((A*N+B)/D). A static kernel (output
not leading with N, ``KernelSpec.batch`` set) gets its literal row count as first argument.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from cnncc.codegen.cuda_wmma import (channels_last, dense_tiles, dense_uses_tensor_cores, matmul_tiles,
                                     matmul_uses_tensor_cores, tiles as wmma_tiles,
                                     uses_tensor_cores)
from cnncc.codegen.spec import KernelSpec, Program, TensorRef
from cnncc.codegen.templating import template_env, weight_decls
from cnncc.errors import UnsupportedError

TEMPLATES = {"conv:gemm": "cuda/conv_gemm.cu.j2", "conv:wmma": "cuda/conv_wmma.cu.j2", "conv:direct": "cuda/conv_direct.cu.j2",
             "conv_transpose": "cuda/conv_transpose.cu.j2", "dense:tiled": "cuda/dense.cu.j2", "dense:wmma": "cuda/dense_wmma.cu.j2",
             "dense:rowwise": "cuda/dense_softmax.cu.j2", "pool": "cuda/pool.cu.j2",
             "global_pool": "cuda/global_pool.cu.j2", "softmax": "cuda/softmax.cu.j2",
             "elementwise": "cuda/elementwise.cu.j2", "copy": "cuda/copy.cu.j2", "concat": "cuda/concat.cu.j2",
             "gather": "cuda/gather.cu.j2", "resize": "cuda/resize.cu.j2", "lrn": "cuda/lrn.cu.j2",
             "instance_norm": "cuda/instance_norm.cu.j2", "unpool": "cuda/unpool.cu.j2", "matmul": "cuda/matmul.cu.j2",
             "matmul:wmma": "cuda/matmul_wmma.cu.j2",
             "roi": "cuda/roi.cu.j2"}

#: a convolution whose reduction (C_in/groups x KH x KW) is at most this long runs as a direct
#: kernel (one thread per output, window unrolled): depthwise 3x3/5x5, RGB stems, LeNet's conv1
DIRECT_CONV_MAX_K = 27
#: register budget of the GEMM convolution (via __launch_bounds__' minimum blocks per SM):
#: ptxas otherwise spends up to 255 on the unrolled tile loads and occupancy collapses
MAX_GEMM_REGISTERS = 128
#: the rowwise dense kernel keeps one output row in shared memory for the softmax tail
ROWWISE_MAX_M = 8192


@dataclass(frozen=True)
class GridDim:
    """ceil((a*N + b) / d): one grid dimension as a function of the batch size N."""

    a: int = 0
    b: int = 1
    d: int = 1

    def __call__(self, batch: int) -> int:
        return max(1, -(-(self.a * batch + self.b) // self.d))

    def text(self) -> str:
        if self.a == 0 and self.d == 1:
            return str(self.b)
        work = (f"{self.a}*N" if self.a != 1 else "N") if self.a else ""
        if self.b:
            work = f"{work}+{self.b}" if work else str(self.b)
        return f"cdiv({work}, {self.d})"


@dataclass
class LaunchPlan:
    """How one kernel launches, and the tile parameters its template spells."""

    variant: str
    threads: int
    grid: tuple[GridDim, GridDim, GridDim]
    tiles: dict

    def text(self, args: list[str]) -> str:
        return (f"grid ({', '.join(g.text() for g in self.grid)}) block ({self.threads}, 1, 1) "
                f"args ({', '.join(args)})")


_GRID_DIM = re.compile(r"^(?:(\d+)|cdiv\((?:(\d+)\*)?(N)?(?:\+?(\d+))?, (\d+)\))$")


def parse_launch(text: str) -> tuple[tuple[GridDim, GridDim, GridDim], tuple[int, int, int], list[str]]:
    """Inverse of LaunchPlan.text: (grid dims, block, argument names)."""
    m = re.match(r"grid \((.*?)\) block \((\d+), (\d+), (\d+)\) args \((.*)\)$", text.strip())
    if not m:
        raise ValueError(f"not a cnncc CUDA launch description: {text!r}")
    dims = []
    for part in re.split(r",\s*(?![^()]*\))", m.group(1)):
        d = _GRID_DIM.match(part.strip())
        if not d:
            raise ValueError(f"bad grid dimension {part!r} in {text!r}")
        if d.group(1):
            dims.append(GridDim(0, int(d.group(1)), 1))
        else:
            a = int(d.group(2)) if d.group(2) else (1 if d.group(3) else 0)
            dims.append(GridDim(a, int(d.group(4) or 0), int(d.group(5))))
    block = tuple(int(m.group(i)) for i in (2, 3, 4))
    return tuple(dims), block, [a.strip() for a in m.group(5).split(",")]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------------
# what each kernel computes and how it is tiled
def plan(spec: KernelSpec, precision: str = "fp32", nhwc: frozenset = frozenset()) -> LaunchPlan:
    """``nhwc``: the activations kept channels-last between tensor-core convolutions (see
    :func:`nhwc_tensors`); every other kernel reads and writes NCHW."""
    f = spec.family
    if f == "conv":
        return _plan_conv(spec, precision, nhwc)
    if f == "conv_transpose":
        return _flat(spec, "conv_transpose", spec.out_C * spec.out_Q)
    if f == "dense":
        return _plan_dense(spec, precision)
    if f == "pool":
        return _flat(spec, "pool", spec.out_C * spec.out_Q)
    if f == "global_pool":
        return _warps(spec, "global_pool", spec.geometry["C"])
    if f == "softmax":
        return _warps(spec, "softmax", spec.geometry["outer"] * spec.geometry["inner"])
    if f == "elementwise":
        return _flat(spec, "elementwise", spec.geometry["C"] * spec.geometry["Q"])
    if f == "copy":
        return _flat(spec, "copy", spec.geometry["numel"])
    if f == "concat":
        return _flat(spec, "concat", spec.geometry["outer"] * spec.geometry["row"])
    if f == "gather":
        return _flat(spec, "gather", spec.geometry["numel"])
    if f == "resize":
        return _flat(spec, "resize", spec.geometry["C"] * spec.geometry["OH"] * spec.geometry["OW"])
    if f == "lrn":
        return _flat(spec, "lrn", spec.geometry["C"] * spec.geometry["Q"])
    if f == "matmul":
        g = spec.geometry
        if matmul_uses_tensor_cores(spec, precision):
            # tensor cores, block by block (codegen/cuda_wmma.py): N x MB matrices x column tiles, row tiles
            threads, wt, (col_tiles, row_tiles) = matmul_tiles(spec, precision)
            return LaunchPlan("matmul:wmma", threads, (GridDim(g["MB"] * col_tiles, 0, 1), GridDim(0, row_tiles, 1),
                                                       GridDim()), wt)
        return _flat(spec, "matmul", g["MB"] * g["R"] * g["M"])
    if f == "roi":
        # the K boxes' outputs, whatever the batch N: a fixed grid
        g = spec.geometry
        total = g["K"] * g["C"] * g["OH"] * g["OW"]
        threads = min(256, max(32, cdiv(total, 32) * 32))
        return LaunchPlan("roi", threads, (GridDim(0, total, threads), GridDim(), GridDim()), {"TOTAL": total})
    if f in ("instance_norm", "unpool"):
        # one block per (n, c) plane
        return LaunchPlan(f, 256, (GridDim(spec.geometry["C"], 0, 1), GridDim(), GridDim()), {})
    raise UnsupportedError(f"kernel '{spec.name}': the CUDA target has no template for family '{f}' yet "
                           f"(nodes: {', '.join(n for n, _ in spec.nodes)})")


def _flat(spec: KernelSpec, variant: str, per_item: int, threads: int = 256) -> LaunchPlan:
    """One thread per output element over N x per_item (grid-stride loop inside)."""
    threads = min(threads, max(32, cdiv(per_item, 32) * 32))
    return LaunchPlan(variant, threads, (GridDim(per_item, 0, threads), GridDim(), GridDim()),
                      {"PER_ITEM": per_item})


def _warps(spec: KernelSpec, variant: str, rows_per_item: int) -> LaunchPlan:
    """One warp per reduced row (global pooling plane, softmax row): lanes stride the row, shuffles reduce."""
    warps = 8
    return LaunchPlan(variant, 32 * warps, (GridDim(rows_per_item, 0, warps), GridDim(), GridDim()),
                      {"WARPS": warps, "ROWS": rows_per_item})


def _plan_conv(spec: KernelSpec, precision: str = "fp32", nhwc: frozenset = frozenset()) -> LaunchPlan:
    g, p = spec.geometry, spec.pool
    ci_g, co_g = g["C_in"] // g["groups"], g["C_out"] // g["groups"]
    k = ci_g * g["KH"] * g["KW"]
    win = p.KH * p.KW if p else 1
    outplane = p.OH * p.OW if p else g["OH"] * g["OW"]
    tiles = {"CI_G": ci_g, "CO_G": co_g, "K": k, "WIN": win, "OUTPLANE": outplane}
    if k <= DIRECT_CONV_MAX_K:
        lp = _flat(spec, "conv:direct", g["C_out"] * outplane)
        lp.tiles.update(tiles)
        return lp
    if uses_tensor_cores(g, precision, direct=False):
        # the same implicit GEMM on tensor cores (codegen/cuda_wmma.py picks the tile)
        threads, wt, (bpp, channel_blocks, groups) = wmma_tiles(spec, precision, tiles, nhwc)
        return LaunchPlan("conv:wmma", threads, (GridDim(outplane, 0, bpp), GridDim(0, channel_blocks, 1),
                                                 GridDim(0, groups, 1)), wt)
    # implicit GEMM: (C_out/groups) x (N * positions) x K, tiles in shared memory. Always 16 x 16
    # threads; the tile's channel extent follows C_out/groups so small layers waste little.
    bm = 16 if co_g <= 16 else 32 if co_g <= 32 else 64
    tx = ty = 16
    tm = bm // ty
    tp = 4 if win == 1 else 1
    bp = tx * tp
    bk = 16
    threads = tx * ty
    tiles.update(BM=bm, BP=bp, BK=bk, TM=tm, TP=tp, TX=tx, TY=ty, COLS=bp * win,
                 MIN_BLOCKS=max(1, 65536 // (threads * MAX_GEMM_REGISTERS)))
    return LaunchPlan("conv:gemm", threads, (GridDim(outplane, 0, bp), GridDim(0, cdiv(co_g, bm), 1),
                                             GridDim(0, g["groups"], 1)), tiles)


def _plan_dense(spec: KernelSpec, precision: str = "fp32") -> LaunchPlan:
    g = spec.geometry
    if dense_uses_tensor_cores(spec, precision):
        # tensor cores (codegen/cuda_wmma.py picks the tile): features x batch rows
        threads, wt, (feature_blocks, rows) = dense_tiles(spec, precision)
        return LaunchPlan("dense:wmma", threads, (GridDim(0, feature_blocks, 1), GridDim(1, 0, rows), GridDim()), wt)
    if spec.tail:
        if g["M"] > ROWWISE_MAX_M:
            raise UnsupportedError(f"kernel '{spec.name}': {spec.tail} after a dense layer of {g['M']} features "
                                   f"(the CUDA kernel keeps a row of at most {ROWWISE_MAX_M} in shared memory)")
        return LaunchPlan("dense:rowwise", 256, (GridDim(1, 0, 1), GridDim(), GridDim()), {"WARPS": 8})
    tiles = {"BM": 64, "BNB": 16, "BK": 32, "TMF": 2, "TNB": 4, "TXF": 32, "TYB": 4}
    return LaunchPlan("dense:tiled", 128, (GridDim(0, cdiv(g["M"], 64), 1), GridDim(1, 0, 16), GridDim()), tiles)


# ---------------------------------------------------------------------------------------------
# rendering
@lru_cache(maxsize=1)
def _env():
    return template_env("cuda")


_CTYPE = {"float32": "float", "int64": "long long", "int32": "int"}


def _extent(t: TensorRef, batch: int) -> tuple[str, int, int] | None:
    """(storage, first byte, one past the last byte) of a tensor for ``batch`` (TensorRef.start's
    rule); None for weights (read-only)."""
    if t.storage == "weights":
        return None
    a, b = t.start()
    start = a * batch + b
    return f"{t.storage}{t.slot if t.storage != 'arena' else ''}", start, start + t.span(batch)


def may_alias(spec: KernelSpec) -> bool:
    """True when two of the kernel's tensors can overlap in memory (then no ``__restrict__``)."""
    ts = spec.tensors()
    for batch in (1, 7, 64):
        ext = [e for e in (_extent(t, batch) for t in ts) if e]
        for i, (s1, a1, b1) in enumerate(ext):
            for s2, a2, b2 in ext[i + 1:]:
                if s1 == s2 and a1 < b2 and a2 < b1:
                    return True
    return False


def signature(spec: KernelSpec) -> str:
    r = "" if may_alias(spec) else " __restrict__"
    parts = ["const int N"]
    for t in spec.tensors():
        const = "" if t.cname == spec.output.cname else "const "
        parts.append(f"{const}{_CTYPE.get(t.dtype, 'float')}*{r} {t.cname}")
    parts.append("const float* __restrict__ W")
    return ", ".join(parts)


def nhwc_tensors(program: Program) -> frozenset:
    """The activations that tensor-core convolutions pass to each other channels-last (the CUDA
    target's layout choice, codegen/cuda_wmma.py channels_last; empty at fp32)."""
    if program.precision == "fp32":
        return frozenset()
    return channels_last(program, lambda s: s.family == "conv" and _plan_conv(s, program.precision).variant == "conv:wmma")


def tensor_core_nodes(program: Program) -> dict[str, str]:
    """{graph node name: precision} of the operators whose multiplies this target runs on tensor
    cores at ``program.precision`` (each kernel's own plan decides: the anchor of every WMMA
    kernel); empty at fp32. ``cnncc.precision_reference`` rounds exactly these nodes' operands."""
    if program.precision == "fp32":
        return {}
    from cnncc import ops

    out = {}
    for spec in program.kernels:
        if plan(spec, program.precision).variant.endswith(":wmma"):
            out.update((name, program.precision) for name, op in spec.nodes
                       if ops.get(op, node=name).kernel == spec.family)
    return out


def render_kernel(spec: KernelSpec, precision: str = "fp32", nhwc: frozenset = frozenset()) -> tuple[str, str]:
    """(kernel source, launch text) for one KernelSpec."""
    lp = plan(spec, precision, nhwc)
    rows = "N"
    if spec.batch is not None:
        # a static kernel (its output does not lead with N): the literal row count stands for N
        rows = str(spec.batch)
        lp.grid = tuple(GridDim(0, g.a * spec.batch + g.b, g.d) for g in lp.grid)
    launch = lp.text([rows] + [t.cname for t in spec.tensors()] + ["W"])
    key = lp.variant if lp.variant in TEMPLATES else spec.family
    text = _env().get_template(TEMPLATES[key]).render(
        spec=spec, t=lp.tiles, threads=lp.threads, signature=signature(spec), weight_decls=weight_decls(spec, "const float* __restrict__", ("//", "")),
        launch=launch)
    return text.strip() + "\n", launch


def render(program: Program) -> tuple[str, list[tuple[str, str, str]]]:
    """The whole .cu source and [(kernel name, its source, its launch)] in execution order."""
    from cnncc.version import __version__

    nhwc = nhwc_tensors(program)
    rendered = [(spec, *render_kernel(spec, program.precision, nhwc)) for spec in program.kernels]
    tensor_cores = any("wmma::mma_sync" in text for _, text, _ in rendered)
    prelude = _env().get_template("cuda/prelude.cu.j2").render(program=program, version=__version__,
                                                               kernels=rendered, tensor_cores=tensor_cores)
    source = prelude.strip() + "\n\n" + "\n".join(text for _, text, _ in rendered)
    return source, [(spec.name, text, launch) for spec, text, launch in rendered]


def block_sizes(program_or_kernels) -> dict[str, int]:
    """Kernel function (``spec.cname``) -> threads per block, for the ptxas registers-per-block check."""
    kernels = program_or_kernels.kernels if isinstance(program_or_kernels, Program) else program_or_kernels
    precision = program_or_kernels.precision if isinstance(program_or_kernels, Program) else "fp32"
    nhwc = nhwc_tensors(program_or_kernels) if isinstance(program_or_kernels, Program) else frozenset()
    return {spec.cname: plan(spec, precision, nhwc).threads for spec in kernels}
