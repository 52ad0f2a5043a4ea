"""The C target: gcc (or $CC) builds the rendered C into a shared library, ctypes calls it.

One exported function runs the whole model, so a forward call costs one ctypes call (LeNet-5
is dominated by per-call overhead otherwise). Outputs are fresh numpy arrays.

Thread safety: a module may be called from many Python threads at once (ctypes releases the
GIL). Each call checks an arena out of a small pool per batch size and returns it afterwards,
so concurrent calls never share scratch memory; a single-threaded caller reuses one arena
(cost: two uncontended lock operations per call). The pointer tables are built per call.
Kernels that need per-thread scratch allocate it once per call and check it; a failed
allocation makes cnncc_forward return CNNCC_ENOMEM, raised here as a CnnccError.

OpenMP threads spin after a parallel region before sleeping (GOMP_SPINCOUNT, default 300000
iterations when threads <= cores). With tiny kernels on 2 cores that spinning competes with the
master thread, so unless the user set it, we set GOMP_SPINCOUNT=10000 before libgomp loads.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from cnncc.errors import CnnccError, CompileError
from cnncc.codegen.spec import Program
from cnncc.codegen.target import GENERIC, CTarget
from cnncc.runtime.module import KernelSource, Rendered

FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c99", "-ffp-contract=fast"]


def sanitizer() -> str | None:
    """``CNNCC_SANITIZE`` (e.g. ``address,undefined``): build the C target with these sanitizers.
    The process that loads such a module must have libasan preloaded (runtime/emu.py's
    ``asan_environment`` gives the environment for a child process)."""
    return os.environ.get("CNNCC_SANITIZE", "").strip() or None


def flags(sanitize: str | None = None) -> list[str]:
    """The gcc flags of a build (part of the cache key through ``CBackend.toolchain``). With a
    sanitizer: -O0 (measured on LeNet-5's kernels with address,undefined: 3.6 s to build at -O0,
    68 s at -O1, whose UBSan instrumentation of the unrolled tiles is slow to optimize), every
    finding fatal, frames kept."""
    sanitize = sanitize if sanitize is not None else sanitizer()
    if not sanitize:
        return list(FLAGS)
    return ["-O0" if f == "-O3" else f for f in FLAGS] + [
        f"-fsanitize={sanitize}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise CompileError("no C compiler found: install gcc (or set CC) to use the C target")
    return cc


@lru_cache(maxsize=4)
def compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError as e:
        raise CompileError(f"cannot run the C compiler '{cc}': {e}") from None
    return out.splitlines()[0] if out else cc


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
    ``CNNCC_C_VECTOR=floats,registers`` overrides the probe (tests, cross-checking)."""
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
        return CTarget("avx512", 16, 32)
    if "__AVX__" in out:
        return CTarget("avx2" if "__AVX2__" in out else "avx", 8, 16)
    if "__aarch64__" in out:
        return CTarget("neon", 4, 32)
    return GENERIC


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

        source, kernels = render(program, target or host_target())
        return Rendered(source, [KernelSource(*k) for k in kernels])

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


class CRunner:
    """Calls cnncc_forward(N, inputs, outputs, weights, arena), or its per-kernel timed twin."""

    def __init__(self, lib, program: Program):
        self.lib = lib  # keep the library alive
        self.fn = lib.cnncc_forward
        self.fn.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.fn.restype = ctypes.c_int
        prof = lib.cnncc_forward_profiled
        prof.argtypes = self.fn.argtypes + [ctypes.c_void_p]
        prof.restype = ctypes.c_int
        self.program = program
        self.blob = aligned(np.asarray(program.blob, np.float32), PAGE)
        self.in_type = ctypes.c_void_p * max(1, len(program.inputs))
        self.out_type = ctypes.c_void_p * max(1, len(program.outputs))
        self.arenas: dict[int, list[np.ndarray]] = {}   # batch -> idle arenas (checked out per call)
        self.lock = threading.Lock()
        failed = getattr(lib, "cnncc_failed_kernel", None)   # absent in modules saved before it existed
        if failed is not None:
            failed.restype = ctypes.c_char_p
        self.failed_kernel = failed
        self.threads: int | None = None   # None: OpenMP's choice (OMP_NUM_THREADS, else all cores)
        try:   # libgomp, found through the library's dependencies; a module without parallel loops has none
            self._omp_set, self._omp_get = lib.omp_set_num_threads, lib.omp_get_max_threads
            self._omp_set.argtypes, self._omp_get.restype = [ctypes.c_int], ctypes.c_int
        except AttributeError:
            self._omp_set = self._omp_get = None

    def profile(self, inputs, batch: int, repeat: int) -> list[tuple[str, float]]:
        """Mean seconds per kernel over ``repeat`` forwards, timed between the calls inside the C code
        (no ctypes or Python overhead in the figures)."""
        seconds = np.zeros(max(1, len(self.program.kernels)), np.float64)
        for _ in range(repeat):
            self(inputs, batch, seconds)
        return [(k.name, float(s) / repeat) for k, s in zip(self.program.kernels, seconds)]

    ARENAS_PER_BATCH = 8   # idle arenas kept per batch size (as many as concurrent callers, up to this)

    def checkout(self, batch: int) -> np.ndarray:
        """An arena no other call is using: an idle one of this batch size, else a new one."""
        with self.lock:
            idle = self.arenas.get(batch)
            if idle:
                return idle.pop()
        return aligned_empty(max(64, self.program.arena_bytes(batch)), np.uint8, PAGE)

    def checkin(self, batch: int, arena: np.ndarray) -> None:
        with self.lock:
            idle = self.arenas.get(batch)
            if idle is None:
                if len(self.arenas) >= 4:   # keep the arenas of at most 4 batch sizes
                    self.arenas.pop(next(iter(self.arenas)))
                idle = self.arenas[batch] = []
            if len(idle) < self.ARENAS_PER_BATCH:
                idle.append(arena)

    def __call__(self, inputs, batch: int, seconds: np.ndarray | None = None) -> list[np.ndarray]:
        outs, out_ptrs, in_ptrs = [], self.out_type(), self.in_type()
        for i, t in enumerate(self.program.outputs):
            shape = ((batch,) + tuple(t.shape[1:])) if t.batched else tuple(t.shape)
            o = aligned_empty(shape, t.dtype)
            outs.append(o)
            out_ptrs[i] = o.ctypes.data
        inputs = [aligned(x) for x in inputs]   # a copy only when misaligned; alive until we return
        for i, x in enumerate(inputs):
            in_ptrs[i] = x.ctypes.data
        arena = self.checkout(batch)
        args = (batch, ctypes.addressof(in_ptrs), ctypes.addressof(out_ptrs), self.blob.ctypes.data,
                arena.ctypes.data)
        # OpenMP's thread count is a setting of the calling thread: set it for this call, restore it after
        threads = self.threads if self._omp_set is not None else None
        before = self._omp_get() if threads else 0
        if threads:
            self._omp_set(threads)
        try:
            if seconds is None:
                rc = self.fn(*args)
            else:
                rc = self.lib.cnncc_forward_profiled(*args, ctypes.c_void_p(seconds.ctypes.data))
        finally:
            if threads:
                self._omp_set(before)
            self.checkin(batch, arena)
        rc = int(rc)
        if rc == 2 and self.failed_kernel is not None:   # CNNCC_ENOMEM, see templates/c/prelude.c.j2
            kernel = self.failed_kernel().decode(errors="replace")
            raise CnnccError(f"kernel '{kernel}' could not allocate its scratch memory (batch {batch}): out of "
                             f"memory; fix: call with a smaller batch or free memory")
        if rc != 0:
            raise CnnccError(f"cnncc_forward returned {rc}")
        return outs
