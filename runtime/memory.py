"""Memory the host can give, checked before a module allocates its buffers.

A model whose tensors exceed memory should fail with the tensor and the bytes named, not with
numpy's MemoryError (or the OOM killer) in the middle of a call. What a call of a C or cuda-emu
module allocates on the host: the arena (the memory plan's scratch, ``arena_a * N + arena_b``
bytes, then the C kernels' workspace for the threads a call runs on), the outputs and the weight
blob (once, when the module is first loaded). The CUDA target's buffers live on the GPU and are
left to CuPy's own out-of-memory error.
"""
from __future__ import annotations

import os

from cnncc.errors import CnnccError


class OutOfMemoryError(CnnccError):
    """The buffers a model needs exceed the memory available; names the largest tensors."""


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), else the free
    physical pages; None when neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def tensors(program) -> dict:
    """Every tensor a program's kernels read or write: name -> TensorRef."""
    out = {}
    for k in program.kernels:
        for t in [k.output, *k.inputs]:
            out.setdefault(t.name, t)
    for t in [*program.inputs, *program.outputs]:
        out.setdefault(t.name, t)
    return out


def cores() -> int:
    """The cores this process may run on: OpenMP's default thread count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def needed_bytes(program, batch: int, *, weights: bool = True, threads: int | None = None) -> int:
    """Arena (workspace for ``threads`` threads, default: every core) + outputs (+ weights)."""
    need = program.arena_bytes(batch, threads or cores()) + sum(t.nbytes(batch) for t in program.outputs)
    return need + (int(program.blob.nbytes) if weights else 0)


def check(program, batch: int, *, weights: bool = True, available: int | None = None,
          threads: int | None = None) -> None:
    """Raise OutOfMemoryError when the arena + outputs (+ weights) at ``batch`` on ``threads``
    threads exceed the available host memory, naming the largest tensors and their bytes."""
    avail = available_bytes() if available is None else available
    if avail is None:
        return
    threads = threads or cores()
    need = needed_bytes(program, batch, weights=weights, threads=threads)
    if need <= avail:
        return
    made = [t for t in tensors(program).values() if t.storage != "input"]     # inputs exist already
    biggest = sorted(made, key=lambda t: -t.nbytes(batch))[:3]
    listing = ", ".join(f"'{t.name}' {tuple([batch, *t.shape[1:]] if t.batched else t.shape)} = "
                        f"{human(t.nbytes(batch))}" for t in biggest)
    parts = f"arena {human(program.arena_bytes(batch, threads))} + outputs " \
            f"{human(sum(t.nbytes(batch) for t in program.outputs))}"
    if weights:
        parts += f" + weights {human(int(program.blob.nbytes))}"
    raise OutOfMemoryError(
        f"model '{program.name}' at batch {batch} needs {human(need)} ({parts}) but only {human(avail)} of memory "
        f"is available; the largest tensors: {listing}\n  fix: use a smaller batch or input size, or split the "
        f"batch into several calls")
