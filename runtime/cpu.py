"""The C target: gcc (or $CC) builds the rendered C into a shared library, ctypes calls it.

One exported function (``cnncc_run``) runs the whole model and sets the call's OpenMP thread
count, so a forward call costs one ctypes call (LeNet-5 is dominated by per-call overhead
otherwise). Its arguments are ctypes objects built once per batch size (see ``CallContext``):
a call only writes its input and output addresses into the context's pointer tables. Outputs
are fresh numpy arrays, or the caller's ``out=`` arrays (docs/robustness.md, "What a call keeps").

Thread safety: a module may be called from many Python threads at once (ctypes releases the
GIL). Each call checks a context (arena, pointer tables, staging copies) out of a small pool per
batch size and returns it afterwards, so concurrent calls never share scratch memory or tables;
a single-threaded caller reuses one context (no lock taken once the batch size is known).
Kernels that need scratch take it from the workspace at the end of the context's arena
(``Program.workspace``, codegen/c_scratch.py), sized for the OpenMP threads the call runs on: a
call allocates nothing. A call that would run on more threads than its context's workspace holds
gets CNNCC_ESLOTS back before any kernel ran; the context then grows and the call runs again.
(Modules saved before the workspace allocate their scratch per call and report a failed
allocation as CNNCC_ENOMEM, raised here as a CnnccError naming the kernel.)

OpenMP threads spin after a parallel region before sleeping (GOMP_SPINCOUNT, default 300000
iterations when threads <= cores). With tiny kernels on 2 cores that spinning competes with the
master thread, so unless the user set it, we set GOMP_SPINCOUNT=10000 before libgomp loads.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import platform
import subprocess
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from cnncc.errors import CnnccError, CompileError
from cnncc.codegen.spec import Program
from cnncc.codegen.target import GENERIC, CTarget
from cnncc.runtime.module import KernelSource, Rendered
from cnncc.runtime.toolchain import compiler, compiler_version, flags


@lru_cache(maxsize=1)
def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return hashlib.sha256(line.encode()).hexdigest()[:16]
    except OSError:
        pass
    return platform.processor() or "unknown"


@lru_cache(maxsize=1)
def host_target() -> CTarget:
    """What ``cc -march=native`` targets on this machine, probed once: the C kernels' tiles are
    sized to fill its vector registers without spilling. The generated C uses gcc's generic
    vectors, so it stays correct (only slower) on any other machine.
    ``CNNCC_C_VECTOR=floats,registers`` overrides the probe (tests, cross-checking). ``threads``
    is the cores this process may run on."""
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return dataclasses.replace(_probe_isa(), threads=threads)


def _probe_isa() -> CTarget:
    env = os.environ.get("CNNCC_C_VECTOR")
    if env:
        vec, regs = (int(v) for v in env.split(","))
        return CTarget(f"override-{vec}x{regs}", vec, regs)
    try:
        out = subprocess.run([compiler(), "-march=native", "-dM", "-E", "-x", "c", os.devnull],
                             capture_output=True, text=True, timeout=60).stdout
    except Exception:   # no compiler: the build will say so; any target renders correct C
        out = ""
    if "__AVX512F__" in out:
        return CTarget("avx512", 16, 32, fma_flops=32 if _amd_family() == 0x19 else 0)
    if "__AVX__" in out:
        return CTarget("avx2" if "__AVX2__" in out else "avx", 8, 16)
    if "__aarch64__" in out:
        return CTarget("neon", 4, 32)
    return GENERIC


def _amd_family(cpuinfo: str | None = None) -> int | None:
    """The CPU family of an AMD x86 CPU (``cpuinfo``: /proc/cpuinfo's text, read when None), else
    None. Family 0x19 with AVX-512 is Zen 4, whose FMA units take a 512-bit vector in two 256-bit
    halves (CTarget.fma_flops)."""
    try:
        info = (Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo).split("\n\n", 1)[0]
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if fields.get("vendor_id") != "AuthenticAMD":
        return None
    try:
        return int(fields.get("cpu family", ""))
    except ValueError:
        return None


#: instruction-set extensions -march=native may use (x86 /proc/cpuinfo "flags", Arm "Features")
SIMD_FLAGS = frozenset("""sse sse2 ssse3 sse4_1 sse4_2 popcnt avx avx2 fma f16c bmi1 bmi2 avx_vnni avx512f avx512dq
    avx512cd avx512bw avx512vl avx512ifma avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq
    avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8 asimd asimdhp asimddp sve sve2 i8mm bf16""".split())


@lru_cache(maxsize=1)
def cpu_isa() -> tuple[str, ...]:
    """The SIMD extensions this CPU has (what a -march=native build may rely on), sorted."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return tuple(sorted(SIMD_FLAGS.intersection(line.split(":", 1)[1].split())))
    except OSError:
        pass
    return ()


class CBackend:
    target = "c"
    source_name = "kernels.c"
    artifact_name = "kernels.so"

    def render(self, program: Program, target: CTarget | None = None) -> Rendered:
        from cnncc.codegen.c import render

        source, kernels, prepared = render(program, target or host_target())
        return Rendered(source, [KernelSource(*k) for k in kernels], prepared)

    def toolchain(self) -> str:
        cc = compiler()
        return f"{compiler_version(cc)} | {' '.join(flags())}"

    def machine(self) -> str:
        # -march=native ties the binary to this CPU family
        return f"{platform.system()}-{platform.machine()}-{_cpu_flags()}"

    def isa(self) -> list[str]:
        """Recorded in a saved module: the extensions the library may use (it is built -march=native)."""
        return list(cpu_isa())

    def missing_isa(self, isa: list[str]) -> list[str]:
        """Those of ``isa`` this CPU lacks: a library built for them could die of SIGILL here."""
        have = set(cpu_isa())
        return [f for f in isa if f not in have]

    def build(self, source: str, artifact: Path) -> None:
        artifact = Path(artifact)
        src = artifact.with_suffix(".c")
        src.write_text(source)
        cmd = [compiler(), *flags(), str(src), "-o", str(artifact), "-lm"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            src.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise CompileError(f"the C compiler failed ({' '.join(cmd[:3])} ...):\n{proc.stderr[-4000:]}")

    def load(self, artifact: Path, program: Program, rendered: Rendered):
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
        try:
            lib = ctypes.CDLL(str(artifact))
        except OSError as e:
            raise CompileError(f"cannot load the compiled module '{artifact}': {e}") from None
        return CRunner(lib, program)


LINE, PAGE = 64, 4096
ESLOTS = 3   # cnncc_forward's CNNCC_ESLOTS (templates/c/prelude.c.j2)


def aligned_empty(shape, dtype, align: int = LINE) -> np.ndarray:
    """np.empty whose data starts on an ``align``-byte boundary. numpy guarantees 16 bytes; the
    memory plan's 64-byte offsets are cache lines only if the arena starts on one. Measured:
    DenseNet-121's elementwise kernels ran 2-4x slower in processes whose arena happened to
    start 16-48 bytes past a line (vector loads and stores split across two lines)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + align, np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip: skip + count * dtype.itemsize].view(dtype).reshape(shape)


def aligned(x: np.ndarray, align: int = LINE) -> np.ndarray:
    """``x`` itself when contiguous and aligned, else an aligned copy."""
    if x.flags.c_contiguous and x.ctypes.data % align == 0:
        return x
    out = aligned_empty(x.shape, x.dtype, align)
    out[...] = x
    return out


def address(x: np.ndarray) -> int:
    """The address of a C-contiguous array's data. ``ctypes.c_char.from_buffer`` takes ~0.6 us,
    numpy's ``x.ctypes.data`` ~2 us (it builds a helper object); the former needs a writable
    buffer, so read-only arrays take the latter."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(x))
    except (TypeError, ValueError, BufferError):
        return x.ctypes.data


class CallContext:
    """What one call of a given batch size works in, checked out by that call alone: the arena
    (the memory plan's tensors, then the kernels' workspace with a slot per thread), the
    input/output pointer tables (ctypes arrays passed to the C entry as they are), aligned staging
    copies for misaligned inputs (made on first need) and the call's ctypes arguments, built once."""

    __slots__ = ("program", "batch", "slots", "arena", "ins", "outs", "n", "arena_p", "stage", "stage_at",
                 "out_spec", "out_bytes")

    def __init__(self, runner: "CRunner", batch: int, slots: int):
        p = self.program = runner.program
        self.batch = batch
        self.slots = 0
        self.grow(slots)
        self.ins, self.outs = runner.in_type(), runner.out_type()
        self.n = ctypes.c_long(batch)
        self.stage: list[np.ndarray | None] = [None] * len(p.inputs)
        self.stage_at = [0] * len(p.inputs)
        self.out_spec, pos = [], 0       # (shape, dtype, byte offset) of each output in one block
        for t in p.outputs:
            shape = ((batch,) + tuple(t.shape[1:])) if t.batched else tuple(t.shape)
            dt = np.dtype(t.dtype)
            self.out_spec.append((shape, dt, pos))
            pos += -(-int(np.prod(shape, dtype=np.int64)) * dt.itemsize // LINE) * LINE
        self.out_bytes = pos

    def grow(self, slots: int) -> None:
        """(Re)allocate the arena with workspace slots for ``slots`` threads (kept when it has them)."""
        if slots <= self.slots:
            return
        p = self.program
        self.arena = aligned_empty(max(64, p.arena_bytes(self.batch, slots)), np.uint8, PAGE)
        if p.workspace:   # the workspace's header: how many threads' slots follow (spec.WORKSPACE_HEADER)
            a, b = p.workspace_at()
            self.arena[a * self.batch + b:][:8].view(np.int64)[0] = slots
        self.slots = slots
        self.arena_p = ctypes.c_void_p(self.arena.ctypes.data)

    def input_address(self, i: int, x: np.ndarray) -> int:
        """Where input ``i`` is read from: the caller's array when it starts on a cache line,
        else this context's aligned staging copy of it (never written to the caller's)."""
        a = address(x) if x.size else 0
        if a % LINE == 0:
            return a
        st = self.stage[i]
        if st is None or st.shape != x.shape or st.dtype != x.dtype:
            st = self.stage[i] = aligned_empty(x.shape, x.dtype)
            self.stage_at[i] = st.ctypes.data
        np.copyto(st, x)
        return self.stage_at[i]

    def fresh_outputs(self) -> list[np.ndarray]:
        """New output arrays (the caller keeps them), cut from one block starting on a cache line."""
        raw = np.empty(self.out_bytes + LINE, np.uint8)
        base = address(raw)
        skip = -base % LINE
        outs = []
        for i, (shape, dt, off) in enumerate(self.out_spec):
            outs.append(np.ndarray(shape, dt, raw, skip + off))
            self.outs[i] = base + skip + off
        return outs


class CRunner:
    """Calls the module's C entry ``cnncc_run(N, threads, inputs, outputs, weights, arena)``: one
    ctypes call per forward, with arguments prepared once per batch size (a ``CallContext``).
    Modules saved before cnncc_run existed are called through cnncc_forward, the thread count
    then set from Python; the per-kernel timed twin (``profile``) is called the same way."""

    ARENAS_PER_BATCH = 8   # idle contexts kept per batch size (as many as concurrent callers, up to this)

    def __init__(self, lib, program: Program):
        self.lib = lib  # keep the library alive
        self.fn = lib.cnncc_forward
        self.fn.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.fn.restype = ctypes.c_int
        prof = lib.cnncc_forward_profiled
        prof.argtypes = self.fn.argtypes + [ctypes.c_void_p]
        prof.restype = ctypes.c_int
        # no argtypes: every argument is passed as an already-built ctypes object (no conversion per call)
        self.run = getattr(lib, "cnncc_run", None)   # absent in modules saved before it existed
        if self.run is not None:
            self.run.restype = ctypes.c_int
        self.program = program
        self.blob = aligned(np.asarray(program.blob, np.float32), PAGE)
        self.blob_p = ctypes.c_void_p(self.blob.ctypes.data)
        self.in_type = ctypes.c_void_p * max(1, len(program.inputs))
        self.out_type = ctypes.c_void_p * max(1, len(program.outputs))
        self.contexts: dict[int, list[CallContext]] = {}   # batch -> idle contexts (checked out per call)
        self.lock = threading.Lock()
        failed = getattr(lib, "cnncc_failed_kernel", None)   # only in modules that allocate scratch per call
        if failed is not None:
            failed.restype = ctypes.c_char_p
        self.failed_kernel = failed
        self.threads = None   # None: OpenMP's choice (OMP_NUM_THREADS, else all cores)
        try:   # libgomp, found through the library's dependencies; a module without parallel loops has none
            self._omp_set, self._omp_get = lib.omp_set_num_threads, lib.omp_get_max_threads
            self._omp_set.argtypes, self._omp_get.restype = [ctypes.c_int], ctypes.c_int
        except AttributeError:
            self._omp_set = self._omp_get = None

    @property
    def threads(self) -> int | None:
        return self._threads

    @threads.setter
    def threads(self, n: int | None) -> None:
        self._threads = n
        self._threads_c = ctypes.c_int(n or 0)

    def profile(self, inputs, batch: int, repeat: int) -> list[tuple[str, float]]:
        """Mean seconds per kernel over ``repeat`` forwards, timed between the calls inside the C code
        (no ctypes or Python overhead in the figures)."""
        seconds = np.zeros(max(1, len(self.program.kernels)), np.float64)
        for _ in range(repeat):
            self(inputs, batch, seconds)
        return [(k.name, float(s) / repeat) for k, s in zip(self.program.kernels, seconds)]

    def call_threads(self) -> int:
        """The OpenMP threads a call from this Python thread runs on: ``threads``, else OpenMP's
        choice for the calling thread (1 without OpenMP)."""
        return self._threads or (self._omp_get() if self._omp_get is not None else 1)

    def checkout(self, batch: int) -> CallContext:
        """A context no other call is using: an idle one of this batch size, else a new one.
        (list.pop and list.append are atomic: the lock is taken only to add a batch size.)"""
        idle = self.contexts.get(batch)
        if idle:
            try:
                ctx = idle.pop()
                if self.program.workspace and (self._threads or 0) > ctx.slots:   # threads raised since: more slots
                    ctx.grow(self._threads)
                return ctx
            except IndexError:   # another thread took the last one
                pass
        return CallContext(self, batch, self.call_threads() if self.program.workspace else 1)

    def checkin(self, ctx: CallContext) -> None:
        idle = self.contexts.get(ctx.batch)
        if idle is None:
            with self.lock:
                idle = self.contexts.get(ctx.batch)
                if idle is None:
                    if len(self.contexts) >= 4:   # keep the contexts of at most 4 batch sizes
                        self.contexts.pop(next(iter(self.contexts)), None)
                    idle = self.contexts[ctx.batch] = []
        if len(idle) < self.ARENAS_PER_BATCH:
            idle.append(ctx)

    def __call__(self, inputs, batch: int, seconds: np.ndarray | None = None,
                 out: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Run the model on ``inputs`` (C-contiguous arrays of the program's dtypes, checked by
        the caller); outputs are fresh arrays, or written into ``out`` (checked by the caller:
        shapes, dtypes, C-contiguous, writable, sharing no memory with the inputs) and returned."""
        ctx = self.checkout(batch)
        try:
            for i, x in enumerate(inputs):   # `inputs` stay referenced (alive) until we return
                ctx.ins[i] = ctx.input_address(i, x)
            if out is None:
                outs = ctx.fresh_outputs()
            else:
                outs = list(out)
                for i, o in enumerate(outs):
                    ctx.outs[i] = address(o)
            rc = self._call(ctx, seconds)
            if rc == ESLOTS:   # more OpenMP threads than the workspace has slots: nothing ran yet
                ctx.grow(self.call_threads())
                rc = self._call(ctx, seconds)
        finally:
            self.checkin(ctx)
        if rc:
            self._raise(int(rc), batch)
        return outs

    def _call(self, ctx: CallContext, seconds: np.ndarray | None) -> int:
        if seconds is None and self.run is not None:
            return self.run(ctx.n, self._threads_c, ctx.ins, ctx.outs, self.blob_p, ctx.arena_p)
        return self._legacy(ctx, seconds)

    def _legacy(self, ctx: CallContext, seconds: np.ndarray | None) -> int:
        """cnncc_forward (or its timed twin), the thread count set from Python around it."""
        # OpenMP's thread count is a setting of the calling thread: set it for this call, restore it after
        threads = self.threads if self._omp_set is not None else None
        before = self._omp_get() if threads else 0
        if threads:
            self._omp_set(threads)
        try:
            args = (ctx.n, ctypes.addressof(ctx.ins), ctypes.addressof(ctx.outs), self.blob_p, ctx.arena_p)
            if seconds is None:
                return self.fn(*args)
            return self.lib.cnncc_forward_profiled(*args, ctypes.c_void_p(seconds.ctypes.data))
        finally:
            if threads:
                self._omp_set(before)

    def _raise(self, rc: int, batch: int) -> None:
        if rc == ESLOTS:
            raise CnnccError(f"cnncc_forward wants more thread slots than its workspace was given after growing "
                             f"(batch {batch}, {self.call_threads()} threads): OpenMP's thread count changed during "
                             f"the call; fix: set the module's threads")
        if rc == 2 and self.failed_kernel is not None:   # CNNCC_ENOMEM of modules saved before the workspace
            kernel = self.failed_kernel().decode(errors="replace")
            raise CnnccError(f"kernel '{kernel}' could not allocate its scratch memory (batch {batch}): out of "
                             f"memory; fix: call with a smaller batch or free memory")
        raise CnnccError(f"cnncc_forward returned {rc}")
