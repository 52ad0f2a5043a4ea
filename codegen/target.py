"""What a renderer knows of the machine it renders for: plain data, never a probe.

The runtime's toolchain probes the host once (``cnncc.runtime.cpu.host_target``) and passes a
:class:`CTarget` to the C renderer, so rendering is a pure function of (Program, target) and
codegen never runs a compiler. Tests and cross-compilers build a CTarget by hand.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CTarget:
    """The facts the C kernels are tiled for."""

    isa: str                # "avx512", "avx2", "neon", "generic": what `cc -march=native` offers
    vector_floats: int      # floats per vector register (16 on AVX-512, 8 on AVX2, 4 otherwise)
    vector_registers: int   # vector registers the tiles may fill (32 on AVX-512 and NEON, 16 otherwise)
    threads: int = 8        # cores the kernels' parallel loops are split for (tasks per kernel, not a limit)
    #: multiply-adds a kernel call must do before its loops run on the OpenMP team; below it the
    #: calling thread runs them alone (codegen/c.py ``parallel_if``). 0: derived from the vector
    #: width (``PARALLEL_WORK_PER_FLOAT`` per float of a vector).
    parallel_work: int = 0
    #: single-precision FLOPs one core's FMA units finish per cycle. 0: two FMA units of a whole
    #: vector (4 x vector_floats: 64 on AVX-512, 32 on AVX2). AMD Zen 4 runs a 512-bit FMA as two
    #: 256-bit halves: 32 with 16-float vectors. Fewer FLOPs a cycle against the same caches
    #: favour Winograd's fewer multiply-adds (codegen/c_winograd.py ``choose``).
    fma_flops: int = 0

    def __post_init__(self):
        if not self.parallel_work:
            object.__setattr__(self, "parallel_work", PARALLEL_WORK_PER_FLOAT * self.vector_floats)
        if not self.fma_flops:
            object.__setattr__(self, "fma_flops", 4 * self.vector_floats)

    def describe(self) -> str:
        return (f"{self.isa}: {self.vector_floats} floats x {self.vector_registers} vector registers, "
                f"FMA {self.fma_flops} FLOP/cycle, {self.threads} threads")


#: Waking the OpenMP team and joining it costs ~5-10 us (sleeping threads; a short GOMP_SPINCOUNT
#: lets them sleep between calls), about what one core needs for 62,500 multiply-adds per float of
#: its vector width: 500,000 on AVX2 (the threshold the C kernels had been tuned to on the 2-core
#: AVX2 EPYC: LeNet-5's layers at batch 1 all stay on the calling thread), 1,000,000 on AVX-512.
PARALLEL_WORK_PER_FLOAT = 62_500

GENERIC = CTarget("generic", 4, 16)
