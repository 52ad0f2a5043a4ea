"""The toolchain, written once: which C and C++ compilers build cnncc's code (and where nvcc is),
their versions (part of every cache key), the C flags, and the cache folder.

The C target (runtime/cpu.py), the CUDA emulation (runtime/emu.py), the kernel cache
(runtime/cache.py) and the roofline probe (cnncc/roofline.py) all read it from here, so the
probe is built exactly like the kernels it is the roof of, and one environment variable moves
every cached artifact.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from cnncc.errors import CompileError

#: the C target's build flags (and the roofline probe's, with the same contraction rule);
#: -std=c99 alone would turn FMA contraction off, hence -ffp-contract=fast
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c99", "-ffp-contract=fast"]


def cache_dir() -> Path:
    """``$CNNCC_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnncc`` (default ``~/.cache/cnncc``): compiled
    kernels, emulator libraries, ptxas reports and the roofline live under it."""
    env = os.environ.get("CNNCC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "cnncc"


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
    """The C compiler: ``$CC``, else ``cc``, else ``gcc``."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise CompileError("no C compiler found: install gcc (or set CC) to use the C target")
    return cc


def cxx_compiler() -> str:
    """The C++ compiler of the CUDA emulation: ``$CXX``, else ``g++``."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise CompileError(f"the cuda-emu target needs a C++ compiler; '{cxx}' is not on PATH")
    return cxx


@lru_cache(maxsize=4)
def compiler_version(cc: str) -> str:
    """The first line of ``cc --version`` (a cache-key part: another compiler, another artifact)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise CompileError(f"cannot run the compiler '{cc}': {e}") from None
    return out.splitlines()[0] if out else cc


def nvcc_path() -> str | None:
    """The CUDA toolkit's offline compiler, if on PATH (the nvcc cross-check, its include folder)."""
    return shutil.which("nvcc")


def load_probe(source: str, folder: Path, what: str) -> ctypes.CDLL:
    """A measuring probe's C ``source`` compiled like the kernels (FLAGS) in ``folder`` and
    loaded: the roofline's and the bench's cross-core handoff probe. ``what`` names it in the
    error when the compiler refuses it."""
    cc = compiler()
    src, lib = folder / "probe.c", folder / "probe.so"
    src.write_text(source)
    res = subprocess.run([cc, *FLAGS, str(src), "-o", str(lib)], capture_output=True, text=True)
    if res.returncode:
        raise CompileError(f"the {what} did not compile with {cc}:\n{res.stderr}")
    return ctypes.CDLL(str(lib))
