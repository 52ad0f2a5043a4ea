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

    def describe(self) -> str:
        return (f"{self.isa}: {self.vector_floats} floats x {self.vector_registers} vector registers, "
                f"{self.threads} threads")


GENERIC = CTarget("generic", 4, 16)
