"""The CUDA target: NVRTC builds the rendered .cu into an sm_90 cubin, CuPy loads and launches it.

``build`` needs no GPU (NVRTC only, with the ptxas report checked: no spills, limits kept), so
``cnncc compile --target cuda`` works anywhere; ``load`` needs CuPy and a GPU. At run time there
is one ``cupy.RawModule`` per model, one arena allocation per batch size (sized by the memory
plan), the weight blob uploaded once, every kernel launched in order on one stream, and for
small batches the whole launch sequence captured once as a CUDA Graph and replayed.
Concurrent calls from several Python threads take turns (one lock per module): they share the
stream, the arenas and the graphs' static buffers, and the GPU runs one stream's work in order
anyway; the lock costs one uncontended acquire per call.

The pieces that do not touch CuPy (``KernelCall``, ``kernel_calls``, ``tensor_address``) are
shared with the CPU emulation (runtime/emu_backend.py), so both run the exact same launch sequence.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cnncc.codegen.spec import Program, TensorRef
from cnncc.errors import CnnccError, CompileError
from cnncc.runtime.module import KernelSource, Rendered

#: batches up to this size replay a captured CUDA Graph (launch overhead dominates there)
GRAPH_MAX_BATCH = 8


@dataclass
class KernelCall:
    """One launch: kernel name, grid as a function of N, block, and what each argument is."""

    name: str
    grid: tuple        # three GridDim (see codegen/cuda.py)
    block: tuple[int, int, int]
    args: list         # "N", "W", a literal int (static kernels) or a TensorRef

    def grid_for(self, batch: int) -> tuple[int, int, int]:
        return tuple(int(g(batch)) for g in self.grid)


def kernel_calls(program: Program, rendered: Rendered) -> list[KernelCall]:
    """The launch sequence, parsed from each kernel's launch text (so a saved module replays
    exactly what was rendered) and bound to the Program's tensors by name."""
    from cnncc.codegen.cuda import parse_launch

    if len(rendered.kernels) != len(program.kernels):
        raise CompileError(f"{len(rendered.kernels)} rendered kernels for {len(program.kernels)} kernel specs")
    calls = []
    for spec, k in zip(program.kernels, rendered.kernels):
        grid, block, names = parse_launch(k.launch)
        tensors = {t.cname: t for t in spec.tensors()}
        args = []
        for a in names:
            if a in ("N", "W"):
                args.append(a)
            elif a.isdigit():
                args.append(int(a))   # a static kernel's literal row count, passed where N goes
            elif a in tensors:
                args.append(tensors[a])
            else:
                raise CompileError(f"kernel {k.name}: launch argument '{a}' is not one of its tensors")
        calls.append(KernelCall(spec.cname, grid, block, args))   # the function's name, not the layer's
    return calls


def tensor_address(t: TensorRef, batch: int, inputs: Sequence[int], outputs: Sequence[int],
                   arena: int | Callable[[TensorRef], int], weights: int) -> int:
    """Byte address of a tensor's first element given the base addresses of each storage
    (TensorRef.start's rule, for the CUDA runner and the emulator). ``arena``: the arena's
    address, or a function giving an arena tensor's slot address (the emulator's separately
    allocated slots, each standing where ``arena_a * N + arena_b`` points)."""
    a, b = t.start()
    if t.storage == "input":
        base = inputs[t.slot]
    elif t.storage == "output":
        base = outputs[t.slot]
    elif t.storage == "arena":
        base = arena
        if callable(arena):
            base, a, b = arena(t), 0, b - t.arena_b
    elif t.storage == "weights":
        base = weights
    else:
        raise CompileError(f"tensor '{t.name}': unknown storage '{t.storage}'")
    return base + a * batch + b


def output_shape(t: TensorRef, batch: int) -> tuple[int, ...]:
    return ((batch,) + tuple(t.shape[1:])) if t.batched else tuple(t.shape)


def render(program: Program) -> Rendered:
    from cnncc.codegen.cuda import render as render_cuda

    source, kernels = render_cuda(program)
    return Rendered(source, [KernelSource(*k) for k in kernels])


class CudaBackend:
    target = "cuda"
    source_name = "kernels.cu"
    artifact_name = "kernels.cubin"

    def render(self, program: Program) -> Rendered:
        return render(program)

    def toolchain(self) -> str:
        from cnncc.runtime import nvrtc

        return f"nvrtc {'.'.join(map(str, nvrtc.nvrtc_version()))} | {' '.join(nvrtc.default_options()[:4])}"

    def machine(self) -> str:
        # a cubin for sm_90 runs on any sm_90 device; the driver checks the rest at load time
        from cnncc.runtime import nvrtc

        return f"cuda-{nvrtc.ARCH}"

    def build(self, source: str, artifact: Path) -> None:
        build_cubin(source, artifact)

    def load(self, artifact: Path, program: Program, rendered: Rendered):
        return CudaRunner(Path(artifact), program, rendered)


def launch_table(source: str) -> dict[str, tuple]:
    """Kernel name -> (grid, block, args) from the launch table in a rendered .cu file's header."""
    from cnncc.codegen.cuda import parse_launch

    return {m.group(1): parse_launch(m.group(2))
            for m in re.finditer(r"^//\s+(\w+)\s+(grid \(.*\) block \(.*\) args \(.*\))$", source, re.M)}


def build_cubin(source: str, artifact: Path):
    """NVRTC -> cubin, failing on spills or exceeded limits (block sizes from the launch table)."""
    from cnncc.runtime import nvrtc

    table = launch_table(source)
    result = nvrtc.compile_checked(source, threads={k: v[1][0] for k, v in table.items()}, expect=list(table))
    Path(artifact).write_bytes(result.cubin)
    try:   # keep the ptxas report for `cnncc bench`'s prediction and `cnncc inspect --cuda`
        nvrtc.store_resources(source, result.kernels)
    except OSError:
        pass
    return result


class CudaRunner:
    """Runs a compiled module on the GPU through CuPy."""

    def __init__(self, cubin: Path, program: Program, rendered: Rendered, use_graphs: bool = True):
        try:
            import cupy as cp
        except ImportError as e:
            raise CnnccError("running the cuda target needs CuPy (pip install 'cnncc[cuda]'); "
                             "without a GPU use target 'cuda-emu'") from e
        try:
            if cp.cuda.runtime.getDeviceCount() < 1:
                raise CnnccError("no CUDA device")
        except Exception as e:  # cupy raises CUDARuntimeError without a driver
            raise CnnccError(f"running the cuda target needs an NVIDIA GPU ({e}); the cubin was built; "
                             f"use target 'cuda-emu' to run the same CUDA source on the CPU") from None
        self.cp = cp
        self.program = program
        self.calls = kernel_calls(program, rendered)
        self.module = cp.RawModule(path=str(cubin))
        self.functions = {c.name: self.module.get_function(c.name) for c in self.calls}
        self.stream = cp.cuda.Stream(non_blocking=True)
        with self.stream:
            self.weights = cp.asarray(np.ascontiguousarray(program.blob, np.float32))
        self.arenas: dict[int, object] = {}
        self.use_graphs = use_graphs
        self.graphs: dict[int, tuple] = {}
        self.lock = threading.Lock()   # calls from several threads take turns (see the module docstring)

    def arena(self, batch: int):
        a = self.arenas.get(batch)
        if a is None:
            if len(self.arenas) >= 4:
                self.arenas.pop(next(iter(self.arenas)))
            a = self.arenas[batch] = self.cp.empty(max(256, self.program.arena_bytes(batch)), self.cp.uint8)
        return a

    def _launch_all(self, batch: int, ins: list, outs: list, arena_buffer) -> None:
        in_ptrs = [int(x.data.ptr) for x in ins]
        out_ptrs = [int(o.data.ptr) for o in outs]
        arena, weights = int(arena_buffer.data.ptr), int(self.weights.data.ptr)
        for call in self.calls:
            args = []
            for a in call.args:
                if isinstance(a, int):
                    args.append(np.int32(a))
                elif a == "N":
                    args.append(np.int32(batch))
                elif a == "W":
                    args.append(np.uint64(weights))
                else:
                    args.append(np.uint64(tensor_address(a, batch, in_ptrs, out_ptrs, arena, weights)))
            self.functions[call.name](call.grid_for(batch), call.block, tuple(args), stream=self.stream)

    def _fresh_outputs(self, batch: int) -> list:
        return [self.cp.empty(output_shape(t, batch), t.dtype) for t in self.program.outputs]

    def __call__(self, inputs, batch: int) -> list:
        with self.lock:
            return self._call(inputs, batch)

    def _call(self, inputs, batch: int) -> list:
        cp = self.cp
        on_device = any(isinstance(x, cp.ndarray) for x in inputs)
        with self.stream:
            ins = [cp.ascontiguousarray(cp.asarray(x, dtype=t.dtype)) for x, t in zip(inputs, self.program.inputs)]
            if self.use_graphs and batch <= GRAPH_MAX_BATCH:
                outs = self._replay(batch, ins)
            else:
                outs = self._fresh_outputs(batch)
                self._launch_all(batch, ins, outs, self.arena(batch))
            if on_device:
                return outs
            result = [cp.asnumpy(o, stream=self.stream) for o in outs]
        self.stream.synchronize()
        return result

    def _replay(self, batch: int, ins: list) -> list:
        """Capture the launch sequence once per batch size on static buffers (inputs, outputs and
        an arena the graph owns, so no later eviction frees memory it points at), then replay it."""
        cp = self.cp
        entry = self.graphs.get(batch)
        if entry is None:
            static_in = [cp.empty_like(x) for x in ins]
            static_out = self._fresh_outputs(batch)
            arena = cp.empty(max(256, self.program.arena_bytes(batch)), cp.uint8)
            self.stream.begin_capture()
            self._launch_all(batch, static_in, static_out, arena)
            graph = self.stream.end_capture()
            entry = self.graphs[batch] = (graph, static_in, static_out, arena)
        graph, static_in, static_out, _ = entry
        for dst, src in zip(static_in, ins):
            dst[...] = src
        graph.launch(stream=self.stream)
        return [o.copy() for o in static_out]
