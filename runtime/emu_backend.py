"""Target "cuda-emu" (the backend of runtime/module.py's table): the CUDA target's source, built
with g++ against cuda_emu.h by the emulation toolkit (runtime/emu.py) and launched call by call.

Before every call the outputs and all scratch memory are filled with NaN (integers with their
minimum), so a kernel that forgets to write a value shows it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cnncc.runtime import emu as emu_toolkit
from cnncc.runtime.emu import HEADER, EmuProgram, Pointer, build, flags, sanitizer
from cnncc.runtime.toolchain import compiler_version, cxx_compiler


class EmuBackend:
    """Target "cuda-emu": the CUDA target's source, built with g++ against cuda_emu.h."""

    target = "cuda-emu"
    source_name = "kernels.cu"
    artifact_name = "kernels_emu.so"

    def render(self, program):
        from cnncc.runtime.cuda import render

        return render(program)

    def toolchain(self) -> str:
        header = hashlib.sha256(HEADER.read_bytes()).hexdigest()[:12]
        # emu.py writes the launchers (and decides fibers from its scan): a change there must not
        # reuse libraries built by the previous version
        emu = hashlib.sha256(Path(emu_toolkit.__file__).read_bytes()).hexdigest()[:12]
        return f"{compiler_version(cxx_compiler())} | {' '.join(flags()[:-1])} | cuda_emu.h {header} | emu.py {emu}"

    def machine(self) -> str:
        import platform

        return f"{platform.system()}-{platform.machine()}-emu"

    def build(self, source: str, artifact: Path) -> None:
        build(source, output=Path(artifact))

    def load(self, artifact: Path, program, rendered):
        return EmuRunner(Path(artifact), program, rendered)


class EmuRunner:
    """Runs the launch sequence of the CUDA target on the CPU.

    Before every call the outputs and all scratch memory are filled with NaN (integers with
    their minimum), so a kernel that forgets to write a value shows it. Under a sanitizer (or
    with ``separate_buffers=True``) every arena slot is its own allocation, so AddressSanitizer
    sees a write past a tensor's end instead of it landing in the neighbouring slot."""

    def __init__(self, library: Path, program, rendered, separate_buffers: bool | None = None):
        from cnncc.runtime.cuda import kernel_calls

        self.program = program
        self.calls = kernel_calls(program, rendered)
        self.emu = EmuProgram(rendered.source, library=library)
        self.weights = np.ascontiguousarray(program.blob, np.float32)
        self.separate = sanitizer() is not None if separate_buffers is None else separate_buffers

    def _arena(self, batch: int):
        """(the arena's address, or a function giving an arena tensor's own buffer; buffers to keep alive)."""
        if not self.separate:
            arena = np.full(max(64, self.program.arena_bytes(batch)) // 4 + 1, np.nan, np.float32)
            return arena.ctypes.data, [arena]
        slots: dict[tuple[int, int], int] = {}
        for spec in self.program.kernels:
            for t in spec.tensors():
                if t.storage == "arena":
                    span = t.start()[1] - t.arena_b + t.span(batch)   # from the slot's start to the tensor's end
                    key = (t.arena_a, t.arena_b)
                    slots[key] = max(slots.get(key, 0), span)
        buffers = {k: np.full(v // 4 + 2, np.nan, np.float32) for k, v in slots.items()}
        return (lambda t: buffers[(t.arena_a, t.arena_b)].ctypes.data), list(buffers.values())

    def __call__(self, inputs, batch: int) -> list:
        from cnncc.runtime.cuda import output_shape, tensor_address

        outs = []
        for t in self.program.outputs:
            dt = np.dtype(t.dtype)
            fill = np.nan if dt.kind == "f" else np.iinfo(dt).min
            outs.append(np.full(output_shape(t, batch), fill, dt))
        arena, keep = self._arena(batch)
        ins = [np.ascontiguousarray(x) for x in inputs]
        in_ptrs, out_ptrs = [x.ctypes.data for x in ins], [y.ctypes.data for y in outs]
        for call in self.calls:
            args = []
            for a in call.args:
                if isinstance(a, int):
                    args.append(np.int32(a))
                    continue
                if isinstance(a, str):
                    args.append(np.int32(batch) if a == "N" else self.weights)
                    continue
                args.append(Pointer(tensor_address(a, batch, in_ptrs, out_ptrs, arena, self.weights.ctypes.data)))
            self.emu.launch(call.name, call.grid_for(batch), call.block, args)
        del keep
        return outs
