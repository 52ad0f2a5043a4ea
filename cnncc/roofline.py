"""The machine's roofline: peak float32 FLOP/s and DRAM bandwidth, measured and cached briefly.

A kernel's GFLOP/s means little alone; against the machine's ceilings it says whether the
kernel is compute-bound (near the FLOP roof), memory-bound (near the bandwidth slope) or
neither (overhead-bound: the interesting case for fusion). The probe is a small generated C
file compiled like our kernels (the C target's flags, runtime/toolchain.py): an FMA loop with enough
independent accumulators to fill the vector units, and a STREAM-style triad on arrays far
larger than the caches. Results live in ``<cnncc cache dir>/roofline-<machine key>.json`` for
MAX_AGE_S seconds (a machine's clocks drift: a figure from hours ago misleads).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import CnnccError, CompileError
from .runtime import toolchain

PROBE_C = r"""
#define _POSIX_C_SOURCE 200112L   /* posix_memalign under -std=c99 (the C target's flags) */
#include <omp.h>
#include <stdlib.h>

/* FMA peak: 12 independent vector accumulators per thread (enough to hide FMA latency on two
   pipes), written with GCC vector extensions so they stay in registers. The multiplier and the
   addend are broadcast as whole vectors: filled lane by lane, gcc kept the multiplier on the
   stack and every FMA took a memory operand, which read 0.6-0.7x of a hand-written intrinsics
   loop (tests/test_bench.py checks the loop's assembly; benchmarks/roofline_check.py the rate). */
#ifdef __AVX512F__
#define LANES 16
#else
#define LANES 8
#endif
typedef float vec __attribute__((vector_size(LANES * 4)));
#define CHAINS 12

double cnncc_fma_gflops(long iters, int threads) {
    double t0 = 0, t1 = 0;
    volatile float sink = 0;
    #pragma omp parallel num_threads(threads)
    {
        vec acc[CHAINS];
        vec m, c;
        m = (vec){0} + 0.999999f;   /* broadcast: stays in a register */
        c = (vec){0} + 1e-7f;
        for (int j = 0; j < CHAINS; j++) for (int k = 0; k < LANES; k++) acc[j][k] = 1.0f + 0.001f * (j * LANES + k);
        vec a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3], a4 = acc[4], a5 = acc[5],
            a6 = acc[6], a7 = acc[7], a8 = acc[8], a9 = acc[9], a10 = acc[10], a11 = acc[11];
        #pragma omp barrier
        #pragma omp master
        t0 = omp_get_wtime();
        for (long i = 0; i < iters; i++) {
            a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
            a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
            a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
        }
        vec t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
        float s = 0;
        for (int k = 0; k < LANES; k++) s += t[k];
        #pragma omp atomic
        sink += s;
        #pragma omp barrier
        #pragma omp master
        t1 = omp_get_wtime();
    }
    return 2.0 * CHAINS * LANES * (double)iters * threads / (t1 - t0) / 1e9;
}

/* Triad a = b + s*c over n floats: 12 bytes per element moved (write-allocate not counted). */
double cnncc_triad_gbs(long n, int reps, int threads) {
    void *pa = 0, *pb = 0, *pc = 0;
    if (posix_memalign(&pa, 64, n * sizeof(float)) || posix_memalign(&pb, 64, n * sizeof(float))
        || posix_memalign(&pc, 64, n * sizeof(float))) {
        free(pa); free(pb); free(pc);
        return 0.0;
    }
    float *a = pa, *b = pb, *c = pc;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime();
        #pragma omp parallel for num_threads(threads) schedule(static)
        for (long i = 0; i < n; i++) a[i] = b[i] + 0.5f * c[i];
        double t = omp_get_wtime() - t0;
        if (t < best) best = t;
    }
    volatile float keep = a[n / 2];
    (void)keep;
    free(a); free(b); free(c);
    return 12.0 * (double)n / best / 1e9;
}
"""

@dataclass
class Roofline:
    """Ceilings of this machine for float32 work on ``threads`` threads."""

    peak_gflops: float
    bandwidth_gbs: float
    threads: int
    cpu: str
    measured_at: str

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the bandwidth slope meets the FLOP roof."""
        return self.peak_gflops / self.bandwidth_gbs

    def attainable(self, intensity: float) -> float:
        """GFLOP/s the roofline allows at ``intensity`` FLOP/byte."""
        return min(self.peak_gflops, self.bandwidth_gbs * intensity)

    def position(self, gflops: float, gbs: float) -> dict:
        """Where a measured kernel sits: its intensity, the bound that applies, % of that bound.

        A fraction is never above 1. A memory-bound kernel faster than the DRAM slope reads its
        operands from cache: its bound is "cache" (the DRAM roof does not apply) and the fraction
        is left at 1. A kernel above the FLOP roof means the probe under-measured this machine:
        the bound is "above probe" so the report can say so instead of printing "154% of roof".
        """
        intensity = gflops / gbs if gbs > 0 else float("inf")
        bound = "compute" if intensity >= self.ridge else "memory"
        roof = self.attainable(intensity) if intensity != float("inf") else self.peak_gflops
        fraction = gflops / roof if roof > 0 else 0.0
        if fraction > 1.0:
            bound = "above probe" if bound == "compute" else "cache"
            fraction = 1.0
        return {"intensity": intensity, "bound": bound, "fraction": fraction}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else (len(os.sched_getaffinity(0))
                                                            if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def describe_machine() -> str:
    """One line for reports: CPU model, cores we may use, OS, compiler."""
    try:
        version = toolchain.compiler_version(toolchain.compiler())
    except CompileError:
        version = "unknown compiler"
    return f"{cpu_name()}, {default_threads()} threads, {platform.system()} {platform.release()}, {version}"


def _cache_file(threads: int) -> Path:
    key = hashlib.sha256(f"{cpu_name()}|{threads}|{' '.join(toolchain.FLAGS)}|{PROBE_C}".encode()).hexdigest()[:16]
    return toolchain.cache_dir() / f"roofline-{key}.json"


def _build_probe(tmp: Path) -> ctypes.CDLL:
    dll = toolchain.load_probe(PROBE_C, tmp, "roofline probe")
    dll.cnncc_fma_gflops.restype = ctypes.c_double
    dll.cnncc_fma_gflops.argtypes = [ctypes.c_long, ctypes.c_int]
    dll.cnncc_triad_gbs.restype = ctypes.c_double
    dll.cnncc_triad_gbs.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_int]
    return dll


#: FMA probe runs whose best is the peak (each ~4 ms on a 2-core AVX-512 Xeon)
PROBE_RUNS = 20


def measure(threads: int | None = None, *, quick: bool = False) -> Roofline:
    """Run the probe now (about a second; ``quick`` trims it for tests)."""
    threads = threads or default_threads()
    with tempfile.TemporaryDirectory(prefix="cnncc-roofline-") as tmp:
        dll = _build_probe(Path(tmp))
        iters = 200_000 if quick else 2_000_000
        # the best of many short runs: one run is a few milliseconds, and on a shared VM a run
        # that the host interrupts reads low (best of 3 read 357 and 381 GFLOP/s minutes either
        # side of 483, 2026-12-04 01:16 UTC, while the kernels ran at 440-500)
        peak = max(dll.cnncc_fma_gflops(iters, threads) for _ in range(3 if quick else PROBE_RUNS))
        n = (4 if quick else 32) * 1024 * 1024   # 3 arrays x 128 MiB: far beyond any cache
        bw = dll.cnncc_triad_gbs(n, 3 if quick else 5, threads)
    if bw <= 0:
        raise CnnccError(f"the roofline probe could not allocate its 3 x {n * 4 >> 20} MiB triad arrays")
    return Roofline(peak, bw, threads, cpu_name(), time.strftime("%Y-%m-%d %H:%M:%S"))


#: a cached roofline older than this (seconds) is measured again: the probe takes a fraction of
#: a second, while the clocks of a cloud machine drift over hours -- the 2-core VM of our
#: measurements probed 362 GFLOP/s at 17:50 and 471-495 at 19:47 the same day, and with the old
#: figure `cnncc bench` read kernels against a roof 25% too low.
MAX_AGE_S = 600


def _age_s(roof: Roofline) -> float:
    try:
        return time.time() - time.mktime(time.strptime(roof.measured_at, "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return float("inf")


def machine_roofline(threads: int | None = None, *, refresh: bool = False) -> Roofline:
    """The roofline for this machine and thread count: the cached one while it is younger than
    MAX_AGE_S, else (or with ``refresh``) measured now and cached."""
    threads = threads or default_threads()
    path = _cache_file(threads)
    if path.is_file() and not refresh:
        try:
            roof = Roofline(**json.loads(path.read_text()))
            if 0 <= _age_s(roof) <= MAX_AGE_S:
                return roof
        except (ValueError, TypeError):
            pass  # a damaged cache entry is simply measured again
    roof = measure(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(roof), indent=2))
    os.replace(tmp, path)
    return roof
