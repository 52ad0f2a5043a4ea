"""The CUDA emulation toolkit: build CUDA source with g++ against cuda_emu.h and launch its kernels.
Target "cuda-emu" (runtime/emu_backend.py) runs compiled models with it.

The very source NVRTC compiles for the GPU is compiled here as C++ (see cuda_emu.h for how
blocks, fibers, ``__shared__`` and barriers are emulated), together with a generated
launcher per kernel, into a shared library loaded with ctypes. That lets tests check every
CUDA template against the numpy reference on machines without a GPU, and lets a user step
through a kernel with gdb on a laptop.

Launch arguments follow the cuLaunchKernel convention: numpy arrays (or ``Pointer``) for
pointer parameters and numpy scalars of the exact parameter type for values. Python ints
and floats are refused on purpose: CuPy would pass them as 64-bit, which silently breaks an
``int`` parameter on a real GPU, so the emulator catches that mistake first.

Set ``CNNCC_EMU_SANITIZE=address`` to build with AddressSanitizer; the process must then
have libasan preloaded (see ``asan_environment``).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncc.errors import CompileError, CnnccError
from cnncc.runtime.toolchain import cache_dir, compiler_version, cxx_compiler

HEADER = Path(__file__).with_name("cuda_emu.h")

#: ``__global__ void [__launch_bounds__(...)] name(`` -- the kernels a source defines
_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\(")
#: anything that needs the threads of a block to run as fibers
_SYNC = re.compile(r"__syncthreads|__syncwarp|__shfl|__ballot_sync|__any_sync|__all_sync")


class EmulationError(CnnccError):
    """A kernel misbehaved in the emulator: deadlock, divergent barrier, bad launch arguments."""


@dataclass(frozen=True)
class Pointer:
    """A raw address passed as a pointer parameter (e.g. an offset into the arena)."""

    address: int


def kernel_names(source: str) -> list[str]:
    return _KERNEL.findall(_code_only(source))


#: a comment or a string/character literal: text that is not code to a scan for braces and calls
_NOT_CODE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


def _code_only(source: str) -> str:
    """The source with every comment and literal replaced by spaces (newlines kept), so a tensor
    name such as ``}`` or ``__syncthreads`` quoted in a comment cannot mislead the scans below."""
    return _NOT_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)


#: a ``__device__`` function definition: ``__device__ [qualifiers] type name(``
_DEVICE_FN = re.compile(r"__device__[^;{(]*?\b([A-Za-z_]\w*)\s*\([^;{]*\)\s*\{")


def _braced(source: str, open_at: int) -> str:
    """The text from the ``{`` at ``open_at`` to its matching ``}``."""
    depth = 0
    for i in range(open_at, len(source)):
        if source[i] == "{":
            depth += 1
        elif source[i] == "}":
            depth -= 1
            if depth == 0:
                return source[open_at:i + 1]
    return source[open_at:]


def kernel_bodies(source: str) -> dict[str, str]:
    """Each kernel's body (from its opening brace to the matching closing one)."""
    source = _code_only(source)
    return {m.group(1): _braced(source, source.index("{", m.end())) for m in _KERNEL.finditer(source)}


def needs_fibers(source: str) -> dict[str, bool]:
    """Kernels that use barriers or warp operations, directly or through the ``__device__``
    functions they call, run as fibers; the others run their threads as plain calls.

    The scan is textual; should it miss a barrier, the emulator reports the barrier in direct
    mode as an error rather than ignoring it (force fibers with ``fibers=True``)."""
    source = _code_only(source)
    device = {m.group(1): _braced(source, m.end() - 1) for m in _DEVICE_FN.finditer(source)}
    syncing = {name for name, body in device.items() if _SYNC.search(body)}
    changed = True
    while changed:  # a device function that calls a synchronising one synchronises too
        changed = False
        for name, body in device.items():
            if name not in syncing and any(re.search(rf"\b{s}\s*\(", body) for s in syncing):
                syncing.add(name)
                changed = True
    return {name: bool(_SYNC.search(body)) or any(re.search(rf"\b{s}\s*\(", body) for s in syncing)
            for name, body in kernel_bodies(source).items()}


def sanitizer() -> str | None:
    value = os.environ.get("CNNCC_EMU_SANITIZE", "").strip()
    return value or None


def asan_library() -> str:
    out = subprocess.run([cxx_compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return os.path.realpath(out) if out and os.path.exists(out) else "libasan.so"


def asan_environment(base: dict | None = None) -> dict:
    """Environment for a child process that loads ASan-built emulator libraries into Python."""
    env = dict(os.environ if base is None else base)
    env["CNNCC_EMU_SANITIZE"] = "address"
    env["LD_PRELOAD"] = asan_library()
    # CPython's allocator "leaks" by design, and fibers confuse the stack-use-after-return check
    env["ASAN_OPTIONS"] = "detect_leaks=0:detect_stack_use_after_return=0:abort_on_error=0:halt_on_error=1"
    return env


def _launcher(names: list[str], fibers: dict[str, bool]) -> str:
    """C entry points ctypes can call: one launcher and one signature string per kernel."""
    lines = ["", "// ---- generated by cnncc.runtime.emu: host entry points ----",
             "static thread_local std::string cnncc_emu_error;",
             'extern "C" const char* cnncc_emu_last_error() { return cnncc_emu_error.c_str(); }']
    for n in names:
        lines += [
            f'extern "C" int cnncc_emu_launch_{n}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,'
            f' unsigned bz, void** args, int fibers) {{',
            f"    cnncc_emu_error = cuda_emu::launch({n}, dim3(gx, gy, gz), dim3(bx, by, bz), args,"
            f" fibers < 0 ? {'true' if fibers[n] else 'false'} : fibers != 0);",
            "    return cnncc_emu_error.empty() ? 0 : 1;",
            "}",
            f'extern "C" const char* cnncc_emu_signature_{n}() {{',
            f"    static const std::string s = cuda_emu::signature({n});",
            "    return s.c_str();",
            "}",
        ]
    return "\n".join(lines) + "\n"


def flags(sanitize: str | None = None, openmp: bool | None = None, opt: str = "-O2") -> list[str]:
    """g++ flags of an emulator build (part of the cache key)."""
    sanitize = sanitize if sanitize is not None else sanitizer()
    if openmp is None:
        openmp = sanitize is None  # keep the sanitized build single-threaded and simple
    if sanitize and opt == "-O2":
        opt = "-O1"  # the sanitizer's usual level: faster builds, clearer reports
    out = ["-std=c++17", opt, "-fPIC", "-shared", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-variable",
           "-Wno-unused-function", "-Wno-unused-but-set-variable", f"-I{HEADER.parent}",
           f"-I{HEADER.parent / 'cuda_emu_include'}"]   # mma.h, cuda_pipeline.h, cuda_fp16.h, cuda_bf16.h
    if openmp:
        out.append("-fopenmp")
    if sanitize:
        out += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
    return out


def build(source: str, *, name: str = "kernels", sanitize: str | None = None, openmp: bool | None = None,
          opt: str = "-O2", extra_flags: tuple[str, ...] = (), output: Path | None = None) -> Path:
    """Compile ``source`` + launchers into a shared library; returns its path.

    Without ``output`` the library is cached under the cache folder by a hash of everything
    that goes into it; with ``output`` (the kernel cache of runtime/cache.py calls it so) it is
    written there."""
    names = kernel_names(source)
    if not names:
        raise CompileError(f"{name}.cu defines no __global__ kernel")
    if len(set(names)) != len(names):
        raise CompileError(f"{name}.cu defines a kernel twice: {sorted(n for n in names if names.count(n) > 1)}")
    cxx = cxx_compiler()
    cmd_flags = flags(sanitize, openmp, opt) + list(extra_flags)
    unit = (f'#include "cuda_emu.h"\n#line 1 "{name}.cu"\n{source}\n'
            f'#line 1 "{name}_launch.cpp"\n{_launcher(names, needs_fibers(source))}')
    if output is not None:
        lib = Path(output)
    else:
        key = hashlib.sha256("\0".join([unit, HEADER.read_text(), " ".join(cmd_flags), compiler_version(cxx)])
                             .encode()).hexdigest()[:24]
        lib = cache_dir() / "emu" / f"{name}-{key}.so"
        lib.parent.mkdir(parents=True, exist_ok=True)
        if lib.exists():
            return lib
    with tempfile.TemporaryDirectory(prefix="cnncc-emu-") as tmp:
        src = Path(tmp) / f"{name}_emu.cpp"
        src.write_text(unit)
        out = Path(tmp) / "lib.so"
        proc = subprocess.run([cxx, *cmd_flags, str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"g++ could not compile {name}.cu for the CUDA emulator:\n{proc.stderr[-6000:]}")
        shutil.move(str(out), str(lib.with_name(lib.name + ".part")))
        os.replace(lib.with_name(lib.name + ".part"), lib)  # atomic: a concurrent build of the same key is harmless
    return lib


_SCALAR_CODES = {"i4": np.int32, "i8": np.int64, "u4": np.uint32, "u8": np.uint64, "f4": np.float32,
                 "f8": np.float64, "i2": np.int16, "i1": np.int8, "u1": np.uint8}


class EmuProgram:
    """A built emulator library: ``program.launch("kernel", grid, block, [args...])``."""

    def __init__(self, source: str, *, name: str = "kernels", sanitize: str | None = None,
                 openmp: bool | None = None, opt: str = "-O2", library: Path | None = None):
        self.source = source
        self.path = Path(library) if library is not None else build(source, name=name, sanitize=sanitize,
                                                                     openmp=openmp, opt=opt)
        self.lib = ctypes.CDLL(str(self.path))
        self.lib.cnncc_emu_last_error.restype = ctypes.c_char_p
        self.fibers = needs_fibers(source)
        self.signatures: dict[str, list[str]] = {}
        self._launchers = {}
        for n in kernel_names(source):
            sig = getattr(self.lib, f"cnncc_emu_signature_{n}")
            sig.restype = ctypes.c_char_p
            self.signatures[n] = sig().decode().split()
            fn = getattr(self.lib, f"cnncc_emu_launch_{n}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p, ctypes.c_int]
            self._launchers[n] = fn

    @property
    def kernels(self) -> list[str]:
        return list(self._launchers)

    def launch(self, kernel: str, grid, block, args, *, fibers: bool | None = None) -> None:
        """Run ``kernel<<<grid, block>>>(*args)`` to completion (synchronous, like a launch + sync)."""
        if kernel not in self._launchers:
            raise EmulationError(f"no kernel '{kernel}' in the emulated module (has: {', '.join(self.kernels)})")
        sig = self.signatures[kernel]
        if len(args) != len(sig):
            raise EmulationError(f"{kernel}: {len(args)} arguments given, the kernel takes {len(sig)} ({' '.join(sig)})")
        keep, slots = [], (ctypes.c_void_p * max(1, len(args)))()
        for i, (a, code) in enumerate(zip(args, sig)):
            cell = self._argument(kernel, i, a, code)
            keep.append(cell)
            slots[i] = ctypes.addressof(cell)
        g = tuple(grid) + (1,) * (3 - len(tuple(grid)))
        b = tuple(block) + (1,) * (3 - len(tuple(block)))
        rc = self._launchers[kernel](*map(int, g), *map(int, b), slots, -1 if fibers is None else int(fibers))
        if rc:
            raise EmulationError(f"{kernel}<<<{g}, {b}>>>: {self.lib.cnncc_emu_last_error().decode()}")

    @staticmethod
    def _argument(kernel: str, index: int, a, code: str):
        where = f"{kernel} argument {index}"
        if code[0] == "p":
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise EmulationError(f"{where}: array must be C-contiguous")
                return ctypes.c_void_p(a.ctypes.data)
            if isinstance(a, Pointer):
                return ctypes.c_void_p(a.address)
            raise EmulationError(f"{where}: the kernel expects a pointer, got {type(a).__name__}")
        if not isinstance(a, np.generic):
            raise EmulationError(f"{where}: pass a numpy scalar of the parameter's type ({code}), not "
                                 f"{type(a).__name__}; CuPy would pass a Python number as 64-bit")
        want = _SCALAR_CODES.get(code)
        if want is None or a.dtype != np.dtype(want):
            raise EmulationError(f"{where}: the kernel parameter is {code}, got numpy {a.dtype}")
        return ctypes.create_string_buffer(a.tobytes(), len(a.tobytes()))
