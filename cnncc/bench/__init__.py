"""The benchmark harness behind `cnncc bench` and benchmarks/*.py: honest, same-run comparisons.

Every engine (cnncc at opt 0/1/2, onnxruntime, PyTorch eager) runs the SAME graph with the
SAME weights and input, and its output is checked against cnncc.reference before it is timed:
a fast wrong answer is reported as a mismatch, not as a speedup. Timing is interleaved: each
round times every engine once, in a rotated order, so thermal or neighbour drift hits all of
them alike. One sample repeats the call until it lasts at least ``min_sample_s`` (small models
take microseconds), and we report median, min and max over the samples.

Two thread pools on two cores slow each other badly when one spins while the other works, so
OpenMP gets a short ``GOMP_SPINCOUNT`` and onnxruntime runs with intra-op spinning off
(``session.intra_op.allow_spinning=0``, ``session.force_spinning_stop=1``). Both are stated in
every report.

Per-kernel times come from ``module.profile(inputs, repeat=R) -> [(kernel name, seconds)]``
when the runtime offers it; otherwise each kernel of the optimized graph is compiled as its
own one-kernel module (its inputs become graph inputs) and timed alone, which adds one call's
overhead to each kernel; the report says which method was used.

Per-kernel profiles (the fusion verdict: a fused group against its members at opt 0) are taken
in interleaved rounds too, each after a cross-core handoff probe (handoff.py): rounds timed while
the two cores shared no cache are left out (a fused kernel that is the first to read the other
core's bytes pays their move alone there), and where a fused group reads slower than its members
as many rounds again are pooled with the first before the verdict.

engines.py (cnncc, onnxruntime, PyTorch; threads), timing.py (interleaved samples), handoff.py,
kernels.py (per-kernel times, fusion summary), harness.py (bench_model), report.py (text, plot).
"""
from .engines import ENGINES, SPINCOUNT, Engine, configure_threads, prepare_engine, torch_precision
from .harness import CHECK_RTOL, bench_model
from .kernels import KernelRow, ProfiledTimes, interleaved_kernel_times, kernel_table, profile_kernels, quiet_rounds
from .report import format_report, plot_result
from .timing import interleaved, rel_error, stats

__all__ = ["CHECK_RTOL", "ENGINES", "SPINCOUNT", "Engine", "KernelRow", "ProfiledTimes", "bench_model",
           "configure_threads", "format_report", "interleaved", "interleaved_kernel_times", "kernel_table",
           "plot_result", "prepare_engine", "profile_kernels", "quiet_rounds", "rel_error", "stats",
           "torch_precision"]
