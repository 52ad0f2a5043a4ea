"""Compile CUDA source to an sm_90 cubin with NVRTC, no GPU or driver needed.

CuPy's ``RawModule.compile`` wants a driver, so we call NVRTC directly through
``cupy.cuda.nvrtc`` with the include flags RawModule would add, ask ptxas for its verbose
report (``-Xptxas=-v``) and parse it per kernel: registers, shared memory, stack, spills.
That report is how we know, on a machine without a GPU, that every generated kernel would
load on the H200 and never touches local memory for spills. ``nvcc -cubin`` cross-checks.
"""
from __future__ import annotations

import dataclasses

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cnncc.errors import CompileError
from cnncc.runtime.toolchain import nvcc_path

ARCH = "sm_90"
#: sm_90 limits (CUDA C Programming Guide, compute capability 9.0)
MAX_REGISTERS_PER_THREAD = 255
MAX_REGISTERS_PER_BLOCK = 65536
MAX_STATIC_SMEM_BYTES = 48 * 1024
MAX_THREADS_PER_BLOCK = 1024


@dataclass
class KernelResources:
    """What ptxas reported for one ``__global__`` function."""

    name: str
    registers: int = 0
    smem_bytes: int = 0
    stack_bytes: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    barriers: int = 0
    cmem_bytes: int = 0

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads


@dataclass
class NvrtcResult:
    cubin: bytes
    log: str
    kernels: dict[str, KernelResources] = field(default_factory=dict)
    options: tuple[str, ...] = ()


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")
_CMEM0 = re.compile(r"(\d+) bytes cmem\[0\]")


def parse_ptxas_report(log: str) -> dict[str, KernelResources]:
    """Parse ``ptxas -v`` output (NVRTC's program log or nvcc's stderr) into one record per kernel.

    Only entry functions (``__global__``) get records; ``Function properties`` blocks of
    device functions that were not inlined are folded into nothing (their stack shows in the
    caller's frame anyway)."""
    kernels: dict[str, KernelResources] = {}
    current: KernelResources | None = None
    props_for: str | None = None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = kernels.setdefault(m.group(1), KernelResources(m.group(1)))
            continue
        m = _PROPS.search(line)
        if m:
            props_for = m.group(1)
            continue
        m = _FRAME.search(line)
        if m and props_for in kernels:
            k = kernels[props_for]
            k.stack_bytes, k.spill_stores, k.spill_loads = map(int, m.groups())
            continue
        m = _USED.search(line)
        if m and current is not None:
            current.registers = int(m.group(1))
            if (b := _BARRIERS.search(line)):
                current.barriers = int(b.group(1))
            if (s := _SMEM.search(line)):
                current.smem_bytes = int(s.group(1))
            if (c := _CMEM0.search(line)):
                current.cmem_bytes = int(c.group(1))
    return kernels


def include_options() -> tuple[str, ...]:
    """The ``-I`` flags CuPy's RawModule adds: CuPy's headers, its CCCL copy, the CUDA include dir."""
    opts: list[str] = []
    try:
        from cupy._core import core as _core
        from cupy import _environment

        opts.append("-I" + _core._get_header_dir_path())
        opts.extend(_core._get_cccl_include_options())
        cuda_path = _environment.get_cuda_path()
        if cuda_path and os.path.isdir(os.path.join(cuda_path, "include")):
            opts.append("-I" + os.path.join(cuda_path, "include"))
    except (ImportError, AttributeError):  # an older/newer CuPy without these helpers: NVRTC's builtins suffice
        pass
    return tuple(opts)


#: headers the tensor-core kernels include that the NVRTC wheel does not ship (its builtins
#: cover cuda_fp16.h / cuda_bf16.h but not the WMMA and pipeline headers)
TENSOR_CORE_HEADERS = ("mma.h", "cuda_pipeline.h")


def _has_tensor_core_headers(folder: str | None) -> bool:
    return bool(folder) and all(os.path.isfile(os.path.join(folder, h)) for h in TENSOR_CORE_HEADERS)


def _nvcc_include_dirs() -> list[str]:
    """Include folders of the toolkit that owns ``nvcc``: beside the binary (symlinks resolved)
    and, for a wrapper script elsewhere on PATH, the ``_HERE_`` folder ``nvcc --dryrun`` names."""
    nvcc = nvcc_path()
    if nvcc is None:
        return []
    dirs = [os.path.join(os.path.dirname(nvcc), "..", "include"),
            os.path.join(os.path.dirname(os.path.realpath(nvcc)), "..", "include")]
    try:
        proc = subprocess.run([nvcc, "--dryrun", "-E", "-x", "cu", os.devnull], capture_output=True, text=True, timeout=30)
        m = re.search(r"^#\$ _HERE_=(.+)$", proc.stdout + proc.stderr, re.M)
        if m:
            dirs.append(os.path.join(m.group(1).strip(), "..", "include"))
    except (OSError, subprocess.SubprocessError):
        pass
    return dirs


def _wheel_include_dirs() -> list[str]:
    """Include folders of NVIDIA's pip wheels (nvidia-cuda-crt and friends) in this environment."""
    import importlib.util

    dirs = []
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for sub in sorted(os.listdir(base)):
            dirs.append(os.path.join(base, sub, "include"))
    return dirs


_TC_INCLUDE: list[str | None] = []


def tensor_core_include(refresh: bool = False) -> str | None:
    """The folder holding mma.h and cuda_pipeline.h, found at run time (never a fixed path):
    $CUDA_HOME / $CUDA_PATH, the toolkit of ``nvcc`` on PATH, CuPy's CUDA path, then NVIDIA's pip
    wheels (``pip install nvidia-cuda-crt``). None when there is none."""
    if _TC_INCLUDE and not refresh:
        return _TC_INCLUDE[0]
    candidates = [os.path.join(os.environ[v], "include") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates += _nvcc_include_dirs()
    try:
        from cupy import _environment

        if _environment.get_cuda_path():
            candidates.append(os.path.join(_environment.get_cuda_path(), "include"))
    except (ImportError, AttributeError):
        pass
    candidates += _wheel_include_dirs()
    found = next((os.path.realpath(c) for c in candidates if _has_tensor_core_headers(c)), None)
    _TC_INCLUDE[:] = [found]
    return found


def needs_tensor_core_headers(source: str) -> bool:
    return any(f"#include <{h}>" in source for h in TENSOR_CORE_HEADERS)


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
    except ImportError as e:  # pragma: no cover - the cuda extra is missing
        raise CompileError("NVRTC is not available: install the cuda extra (pip install 'cnncc[cuda]')") from e
    return nvrtc


def nvrtc_version() -> tuple[int, int]:
    return tuple(_nvrtc().getVersion())


def default_options(arch: str = ARCH) -> tuple[str, ...]:
    """Flags for generated kernels: the target arch, CuPy's -ftz=true, C++17 and the ptxas report."""
    return (f"-arch={arch}", "-std=c++17", "-ftz=true", "-Xptxas=-v") + include_options()


def compile_cubin(source: str, name: str = "kernels.cu", options: tuple[str, ...] | None = None,
                  arch: str = ARCH) -> NvrtcResult:
    """Compile ``source`` to a cubin for ``arch``; the result carries the parsed ptxas report.

    Raises CompileError with NVRTC's log (which names the line) when compilation fails."""
    nvrtc = _nvrtc()
    opts = tuple(options) if options is not None else default_options(arch)
    if needs_tensor_core_headers(source):
        folder = tensor_core_include()
        if folder is None:
            raise CompileError(f"{name} uses tensor cores (#include <mma.h>, <cuda_pipeline.h>), which the NVRTC "
                               f"wheel does not ship, and no folder with them was found: set CUDA_HOME to a CUDA "
                               f"toolkit, put its nvcc on PATH, or pip install nvidia-cuda-crt==13.0.88 (or compile "
                               f"with precision='fp32', which needs no extra header)")
        opts = opts + ("-I" + folder,)
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, list(opts))
        except nvrtc.NVRTCError as e:
            log = nvrtc.getProgramLog(prog)
            raise CompileError(f"NVRTC failed to compile {name} for {arch}:\n{log}") from e
        log = nvrtc.getProgramLog(prog)
        cubin = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return NvrtcResult(cubin=bytes(cubin), log=log, kernels=parse_ptxas_report(log), options=opts)


def check_resources(kernels: dict[str, KernelResources], threads: dict[str, int] | None = None,
                    allow_stack: bool = True) -> list[str]:
    """Problems that would make a kernel slow or unlaunchable on sm_90; empty when all is well.

    ``threads`` maps a kernel name to its block size so registers per block can be checked
    (a block whose threads need more than 64K registers cannot launch)."""
    problems = []
    for k in kernels.values():
        if k.spills:
            problems.append(f"{k.name}: {k.spill_stores} bytes spill stores, {k.spill_loads} bytes spill loads")
        if not allow_stack and k.stack_bytes:
            problems.append(f"{k.name}: {k.stack_bytes} bytes stack frame (local memory)")
        if k.registers > MAX_REGISTERS_PER_THREAD:
            problems.append(f"{k.name}: {k.registers} registers > {MAX_REGISTERS_PER_THREAD}")
        if k.smem_bytes > MAX_STATIC_SMEM_BYTES:
            problems.append(f"{k.name}: {k.smem_bytes} bytes static shared memory > {MAX_STATIC_SMEM_BYTES}")
        t = (threads or {}).get(k.name)
        if t is not None:
            if t > MAX_THREADS_PER_BLOCK:
                problems.append(f"{k.name}: {t} threads per block > {MAX_THREADS_PER_BLOCK}")
            elif k.registers * t > MAX_REGISTERS_PER_BLOCK:
                problems.append(f"{k.name}: {k.registers} registers x {t} threads > {MAX_REGISTERS_PER_BLOCK}")
    return problems


def compile_checked(source: str, name: str = "kernels.cu", threads: dict[str, int] | None = None,
                    expect: list[str] | None = None, allow_stack: bool = True) -> NvrtcResult:
    """compile_cubin + check_resources; raises CompileError listing every offending kernel.

    ``expect`` names the kernels that must appear in the report (a kernel that vanished, e.g.
    because a typo made it a device function, is an error too)."""
    result = compile_cubin(source, name)
    problems = check_resources(result.kernels, threads, allow_stack=allow_stack)
    missing = [k for k in expect or [] if k not in result.kernels]
    if missing:
        problems.append(f"kernels missing from the ptxas report: {', '.join(missing)}")
    if problems:
        raise CompileError(f"{name}: {len(problems)} resource problem(s) for {ARCH}:\n  " + "\n  ".join(problems))
    return result


def nvcc_cubin(source: str, arch: str = ARCH, extra: tuple[str, ...] = ()) -> NvrtcResult:
    """Cross-check with the offline compiler: ``nvcc -cubin -arch=sm_90 -Xptxas -v``."""
    nvcc = nvcc_path()
    if nvcc is None:
        raise CompileError("nvcc is not on PATH; the nvcc cross-check needs the CUDA toolkit")
    with tempfile.TemporaryDirectory(prefix="cnncc-nvcc-") as tmp:
        src = Path(tmp) / "kernels.cu"
        out = Path(tmp) / "kernels.cubin"
        src.write_text(source)
        cmd = [nvcc, "-cubin", f"-arch={arch}", "-std=c++17", "-ftz=true", "-Xptxas", "-v", *extra,
               "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"nvcc failed ({' '.join(cmd)}):\n{proc.stderr}")
        log = proc.stderr + proc.stdout
        return NvrtcResult(cubin=out.read_bytes(), log=log, kernels=parse_ptxas_report(log), options=tuple(cmd))


# -- ptxas reports kept next to the kernel cache (cnncc inspect --cuda, the H200 prediction) ----------
def _report_path(source: str):
    from cnncc.runtime.cache import cache_dir, cache_key

    key = cache_key("ptxas-report", f"nvrtc {nvrtc_version()} {' '.join(default_options()[:4])}", source)
    return cache_dir() / "ptxas" / f"{key}.json"


def store_resources(source: str, kernels: dict) -> None:
    """Keep a ptxas report (the CUDA build calls this, so a later prediction needs no compile)."""
    import json
    import os
    import tempfile

    path = _report_path(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({k: dataclasses.asdict(v) for k, v in kernels.items()}, f)
    os.replace(tmp, path)


def kernel_resources(source: str) -> dict:
    """ptxas's report per kernel of a rendered .cu source (an NVRTC compile, no GPU), kept in the
    kernel cache folder by a hash of the NVRTC version and the source, like the cubins."""
    import json

    path = _report_path(source)
    if path.is_file():
        return {k: KernelResources(**v) for k, v in json.loads(path.read_text()).items()}
    kernels = compile_cubin(source).kernels
    store_resources(source, kernels)
    return kernels
