"""Standalone 2D pooling on the C target: which outputs need bounds checks, and the work split.

A pooling window that lies wholly inside the input plane reads its KH x KW taps at literal
offsets from one pointer; only windows that reach into the padding or past the plane (ceil-mode
overhang) need a check per tap. Along each axis those are a few outputs at each end: the
*interior* outputs ``[lo, hi)`` are the ones whose first tap is at or after the plane's start
and whose last tap is before its end. :func:`plan` computes both ranges; the template
(templates/c/pool.c.j2) runs the interior without any check and the border rows and columns
through the checked window (templates/c/pool_window.c.j2, PyTorch semantics: ceil mode,
dilation, count_include_pad). An interior window of an average pool has KH * KW elements under
either count_include_pad, so its divisor is a literal.

Work is split over (batch item, channel -- or channel block in NCHW[V]c --, output row): at batch
1 with a few channel blocks that still gives every thread rows to do. In NCHW[V]c one output
pixel of a channel block is one vector of V lanes (``#pragma omp simd`` over the lanes); in NCHW
the interior of an output row is vectorised along the row (contiguous loads where the stride is
1), and so are a border row's interior columns where they are many (``ROW_MIN``). Max pools
with indices (``argmax``) run every window through the checked code.
"""
from __future__ import annotations

from dataclasses import dataclass

from cnncc.codegen.spec import KernelSpec, PoolSpec

#: NCHW: a border row's interior columns run along the row (one window row and column at a time,
#: vectorised over the columns) when there are at least this many; fewer run window by window
#: (GoogLeNet at opt 0, one thread: 28- and 14-wide rows gained 7-17%, 7-wide ones lost 30%)
ROW_MIN = 8

#: pool kinds whose interior windows run without checks (argmax keeps the checked code: its
#: index rule -- the first maximum, NaN wins -- is not worth a second spelling)
INTERIOR_KINDS = ("max", "min", "avg", "sum", "lp")


@dataclass(frozen=True)
class PoolPlan:
    """Which output rows and columns are interior (no tap outside the input plane)."""

    OH_LO: int   # interior output rows are [OH_LO, OH_HI); the others are border rows
    OH_HI: int
    OW_LO: int   # interior output columns are [OW_LO, OW_HI) on an interior row
    OW_HI: int
    along_row: bool = False   # NCHW: a border row's interior columns along the row (ROW_MIN)

    @property
    def interior(self) -> bool:
        """Some output has its whole window inside the plane."""
        return self.OH_HI > self.OH_LO and self.OW_HI > self.OW_LO


def interior(O: int, S: int, P: int, K: int, D: int, size: int) -> tuple[int, int]:
    """Outputs ``[lo, hi)`` of one axis (O outputs, stride S, low padding P, K taps D apart, an
    input of ``size``) whose window's taps are all inside ``[0, size)``; ``lo == hi`` if none."""
    lo = -(-P // S)                                  # first o with o * S - P >= 0
    last = size - 1 + P - (K - 1) * D                # o * S <= last: the last tap is inside
    hi = min(O, last // S + 1) if last >= 0 else 0
    return (lo, hi) if hi > lo else (0, 0)


def plan(spec: KernelSpec) -> PoolPlan:
    """The interior of a standalone pool kernel (none for argmax)."""
    p: PoolSpec = spec.pool
    if p.kind not in INTERIOR_KINDS:
        return PoolPlan(0, 0, 0, 0)
    h = interior(p.OH, p.SH, p.PH, p.KH, p.DH, p.H)
    w = interior(p.OW, p.SW, p.PW, p.KW, p.DW, p.W)
    if h[0] == h[1] or w[0] == w[1]:
        return PoolPlan(0, 0, 0, 0)
    return PoolPlan(*h, *w, along_row=not spec.inputs[0].block and w[1] - w[0] >= ROW_MIN)
