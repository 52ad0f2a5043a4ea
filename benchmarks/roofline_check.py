"""Check the roofline probe against a hand-written FMA loop on this machine.

The probe (cnncc/roofline.py) is the instrument `cnncc bench` reads every kernel against, so it
is checked against something written by hand: 10 independent FMA chains in AVX-512 or AVX2
intrinsics (whichever `-march=native` offers), compiled with plain `cc -O2 -march=native
-fopenmp`. Both run in this process, interleaved, for 1 thread and for all threads; the best of
each is kept. The probe should reach >= 95% of the hand-written loop.

    python benchmarks/roofline_check.py [--rounds 7] [--json out.json]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HAND_C = r"""
#include <immintrin.h>
#include <omp.h>
#if defined(__AVX512F__)
typedef __m512 V;
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define LANES 16
static float hsum(V v) { return _mm512_reduce_add_ps(v); }
#elif defined(__FMA__)
typedef __m256 V;
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define LANES 8
static float hsum(V v) { float t[8]; _mm256_storeu_ps(t, v); return t[0] + t[3] + t[7]; }
#else
#error "no FMA on this machine: the check needs AVX2+FMA or AVX-512"
#endif
int hand_lanes(void) { return LANES; }
double hand_fma_gflops(long iters, int threads) {
    double t0 = 0, t1 = 0;
    volatile float sink = 0;
    #pragma omp parallel num_threads(threads)
    {
        V m = SET1(0.999999f), c = SET1(1e-7f);
        V a0 = SET1(1.0f), a1 = SET1(1.1f), a2 = SET1(1.2f), a3 = SET1(1.3f), a4 = SET1(1.4f),
          a5 = SET1(1.5f), a6 = SET1(1.6f), a7 = SET1(1.7f), a8 = SET1(1.8f), a9 = SET1(1.9f);
        #pragma omp barrier
        #pragma omp master
        t0 = omp_get_wtime();
        for (long i = 0; i < iters; i++) {
            a0 = FMA(a0, m, c); a1 = FMA(a1, m, c); a2 = FMA(a2, m, c); a3 = FMA(a3, m, c);
            a4 = FMA(a4, m, c); a5 = FMA(a5, m, c); a6 = FMA(a6, m, c); a7 = FMA(a7, m, c);
            a8 = FMA(a8, m, c); a9 = FMA(a9, m, c);
        }
        V t = ADD(ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7))), ADD(a8, a9));
        float s = hsum(t);
        #pragma omp atomic
        sink += s;
        #pragma omp barrier
        #pragma omp master
        t1 = omp_get_wtime();
    }
    return 2.0 * 10 * LANES * (double)iters * threads / (t1 - t0) / 1e9;
}
"""


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cnncc import roofline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=2_000_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cnncc-roofcheck-") as tmp:
        tmp = Path(tmp)
        (tmp / "hand.c").write_text(HAND_C)
        subprocess.run(["cc", "-O2", "-march=native", "-fopenmp", "-shared", "-fPIC", str(tmp / "hand.c"),
                        "-o", str(tmp / "hand.so")], check=True)
        hand = ctypes.CDLL(str(tmp / "hand.so"))
        hand.hand_fma_gflops.restype = ctypes.c_double
        hand.hand_fma_gflops.argtypes = [ctypes.c_long, ctypes.c_int]
        probe = roofline._build_probe(tmp)
        all_threads = roofline.default_threads()
        rows = []
        for threads in sorted({1, all_threads}):
            best_hand = best_probe = 0.0
            for _ in range(args.rounds):   # interleaved: a slow minute hits both
                best_hand = max(best_hand, hand.hand_fma_gflops(args.iters, threads))
                best_probe = max(best_probe, probe.cnncc_fma_gflops(args.iters, threads))
            rows.append({"threads": threads, "hand_gflops": best_hand, "probe_gflops": best_probe,
                         "ratio": best_probe / best_hand})
    machine = roofline.describe_machine()
    print(f"machine: {machine}; lanes per vector: {hand.hand_lanes()}")
    print(f"{'threads':>7} {'hand GFLOP/s':>13} {'probe GFLOP/s':>14} {'probe/hand':>11}")
    for r in rows:
        print(f"{r['threads']:>7} {r['hand_gflops']:>13.1f} {r['probe_gflops']:>14.1f} {r['ratio']:>10.1%}")
    ok = all(r["ratio"] >= 0.95 for r in rows)
    print("probe within 5% of the hand-written loop" if ok else "PROBE BELOW 95% of the hand-written loop")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "ok": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
