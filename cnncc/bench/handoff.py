"""The cross-core handoff probe: does data one thread wrote reach the other as fast as its own?

Why the per-kernel profiles need it. On the 2-core Zen 4 VM we measure on, the two vCPUs spend
most of the time on cores that share a cache and, for stretches of ten to twenty seconds, on
cores that do not (2026-12-04: this probe's remote read 13.5 us against 38 us, local 13.4 us
throughout). Then a kernel that reads what the other thread wrote pays the move of those bytes
-- DenseNet-121's blocked BatchNorm + ReLU groups at batch 1 read the concatenated buffer the
convolutions of both threads wrote, and took 7.6 ms in all instead of 1.55 -- while at opt 0 a
concat copy before them pays it, and their members read what that copy wrote on their own
thread (2.2 -> 2.7 ms). The whole forward stays faster fused (33 ms against 40 at opt 0), but
per fused group the cost lands on one side only: 0.22-0.65x "slower" groups that are not. A
round timed in that state is told apart by this probe, not by the kernels' own times (the whole
process may be in it).

The probe: thread 1 (then, for the local figure, thread 0) writes 1 MiB, a barrier, and thread 0
reads one float of every cache line; the best of ``reps`` reads each way. :func:`handoff_ratio`
is remote over local: ~1.0 with a shared cache on that VM, 2.8 without one.

What counts is the change, not the figure: a 2-core Xeon VM (2026-12-05) reads 4.1-4.8 all the
time -- its two vCPUs never share a cache level the 1 MiB fits in -- and has no second state. A
fixed threshold made every one of its rounds "split" and each profile wait its whole budget in
vain. :func:`relative_handoff` is the ratio over the median of those this process has read, the
machine's usual state: ~1.0 on both machines in that state, ~2.8 on the Zen 4 VM out of it. (Not
the lowest: the Xeon read one 3.1 among 159 reads of 3.9-4.7 over 40 s, against which its usual
reads came within 5% of the threshold.)
"""
from __future__ import annotations

import ctypes
import statistics
import tempfile
from pathlib import Path

import numpy as np

from ..runtime import toolchain

PROBE_C = r"""
#include <omp.h>

/* Seconds (the best of reps) for thread 0 to read one float of every cache line of buf[0..n)
 * after thread `writer` (0 or 1) wrote all of it. */
double cnncc_handoff_s(float* buf, long n, int writer, int reps)
{
    double best = 1e30;
    volatile float sink = 0.0f;
    for (int r = 0; r < reps; ++r) {
        double t0 = 0.0, t1 = 0.0;
        #pragma omp parallel num_threads(2)
        {
            const int me = omp_get_thread_num();
            if (me == writer)
                for (long i = 0; i < n; ++i) buf[i] = (float)(i + r);
            #pragma omp barrier
            if (me == 0) {
                float s = 0.0f;
                t0 = omp_get_wtime();
                for (long i = 0; i < n; i += 16) s += buf[i];
                t1 = omp_get_wtime();
                sink += s;
            }
            #pragma omp barrier
        }
        if (t1 - t0 < best) best = t1 - t0;
    }
    return best;
}
"""

#: a round is timed with the caches split (not shared) when the remote read takes this many times
#: the local one over the machine's usual (:func:`relative_handoff`); the two states of the Zen 4
#: VM read 1.0 and 2.8
SPLIT_RATIO = 1.6
CALIBRATION_PROBES = 5      # probes read before the first round, for the machine's usual ratio
PROBE_FLOATS = 1 << 18      # 1 MiB: beyond L1, within one core's L2
PROBE_REPS = 20             # each read ~13-40 us: the probe costs about 2 ms

_probe: ctypes.CDLL | None = None
_buf: np.ndarray | None = None
_seen: list[float] = []         # every handoff_ratio this process has read


def _load() -> ctypes.CDLL:
    global _probe, _buf
    if _probe is None:
        with tempfile.TemporaryDirectory(prefix="cnncc-handoff-") as tmp:   # loaded, the file may go
            dll = toolchain.load_probe(PROBE_C, Path(tmp), "handoff probe")
        dll.cnncc_handoff_s.restype = ctypes.c_double
        dll.cnncc_handoff_s.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_int]
        _probe, _buf = dll, np.zeros(PROBE_FLOATS, np.float32)
    return _probe


def handoff_seconds(reps: int = PROBE_REPS) -> tuple[float, float]:
    """(local, remote): seconds for thread 0 to read 1 MiB it wrote itself / thread 1 wrote."""
    dll = _load()
    local = dll.cnncc_handoff_s(_buf.ctypes.data, _buf.size, 0, reps)
    remote = dll.cnncc_handoff_s(_buf.ctypes.data, _buf.size, 1, reps)
    return local, remote


def handoff_ratio(reps: int = PROBE_REPS) -> float:
    """Remote over local read time now (see the module docstring); above SPLIT_RATIO: split caches."""
    local, remote = handoff_seconds(reps)
    return remote / local if local > 0 else 1.0


def relative_handoff(reps: int = PROBE_REPS) -> float:
    """:func:`handoff_ratio` over the median of those this process has read (the machine's usual
    state; see the module docstring); above SPLIT_RATIO: the cores share less cache than they
    usually do. A process that spends most of its probes in the unusual state takes it for the
    usual one."""
    ratio = handoff_ratio(reps)
    _seen.append(ratio)
    usual = statistics.median(_seen)
    return ratio / usual if usual > 0 else 1.0


def calibrate(probes: int = CALIBRATION_PROBES) -> None:
    """Read the probe a few times, so that the first round is judged against the machine's usual."""
    for _ in range(probes):
        relative_handoff()
