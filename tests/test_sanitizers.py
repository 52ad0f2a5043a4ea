"""Memory safety of the generated code: the C kernels of the examples built with
``-fsanitize=address,undefined`` (the C toolchain's ``CNNCC_SANITIZE`` option) and the CUDA
source through the emulation under the same sanitizers (every arena slot its own allocation
there, so a write past a tensor's end is caught), each run at batch 1 and 3 against the
reference, at the small spatial sizes of tests/test_codegen_c.py and opt 2 (one build per
example and target). Any finding aborts the child process, which fails the test.

Sanitized builds are slow (UBSan triples gcc's time on the unrolled tiles; the emulation runs
every GPU thread as a call under ASan), so CI runs C_EXAMPLES and EMU_EXAMPLES, which together
use every C and CUDA template family (direct, GEMM, blocked, pointwise, grouped-row and
transposed convolutions, fused pools, dense + softmax, concat, global pooling, upsampling,
residual adds); ``CNNCC_SANITIZE_ALL=1`` runs both targets on every example.

The sanitized libraries need libasan loaded first, so the work runs in a child Python with
LD_PRELOAD (runtime/emu.py's ``asan_environment``)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from test_codegen_c import _examples

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import cnncc
    from helpers import assert_matches_reference
    from test_codegen_c import example_graph, _examples

    for path in [p for p in _examples() if p.stem in {names!r}]:
        g = example_graph(path)
        for target in {targets!r}:
            t0 = time.time()
            mod = cnncc.compile(g, target=target, opt_level=2)
            for batch in (1, 3):
                assert_matches_reference(g, mod, (batch,), rtol=1e-3, seed=batch, what=f"{{path.stem}} {{target}} ")
            print(f"SANITIZED-OK {{path.stem}} {{target}} {{time.time() - t0:.1f}}s", flush=True)
""")


C_EXAMPLES = ("lenet5", "squeezenet1_1", "unet", "mobilenet_v2", "resnet18")
EMU_EXAMPLES = ("lenet5", "squeezenet1_1", "unet")


def chosen(subset):
    names = [p.stem for p in _examples()]
    return names if os.environ.get("CNNCC_SANITIZE_ALL") == "1" else [n for n in names if n in subset]


def run_sanitized(names, targets):
    from cnncc.runtime import emu

    env = emu.asan_environment()
    env["CNNCC_SANITIZE"] = "address,undefined"          # target c: runtime/cpu.py flags()
    env["CNNCC_EMU_SANITIZE"] = "address,undefined"      # target cuda-emu: runtime/emu.py flags()
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["OMP_NUM_THREADS"] = "2"
    script = SCRIPT.format(tests=os.path.dirname(__file__), names=set(names), targets=tuple(targets))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=3600)
    done = [line for line in proc.stdout.splitlines() if line.startswith("SANITIZED-OK")]
    print("\n".join(done))
    assert proc.returncode == 0 and len(done) == len(targets) * len(names), \
        "\n".join(done) + "\n" + proc.stderr[-6000:]


def test_c_kernels_under_address_and_undefined_behaviour_sanitizers(shared_kernel_cache):
    run_sanitized(chosen(C_EXAMPLES), ["c"])


def test_emulated_cuda_under_address_and_undefined_behaviour_sanitizers(shared_kernel_cache):
    run_sanitized(chosen(EMU_EXAMPLES), ["cuda-emu"])
