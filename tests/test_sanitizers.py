"""Memory safety of the generated code: the C kernels of every example built with
``-fsanitize=address,undefined`` (the C toolchain's ``CNNCC_SANITIZE`` option) and the CUDA
source through the emulation under the same sanitizers (every arena slot its own allocation
there, so a write past a tensor's end is caught), each run at batch 1 and 3 against the
reference, at the small spatial sizes of tests/test_codegen_c.py and opt 2 (one build per
example and target). Any finding aborts the child process, which fails the test.

The emulated CUDA runs every GPU thread as a call under ASan, slow for the big networks
(MobileNet-v2 at 32x32, batch 3: about a minute), so CI runs it on EMU_EXAMPLES (direct and
GEMM convolutions, fused pools, dense + softmax, concat, global pooling, transposed convolution,
upsampling); ``CNNCC_SANITIZE_ALL=1`` runs it on every example.

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
    import numpy as np
    sys.path.insert(0, {tests!r})
    import cnncc
    from cnncc.reference import random_inputs
    from test_codegen_c import example_graph, _examples

    for path in [p for p in _examples() if p.stem in {names!r}]:
        g = example_graph(path)
        for target in {targets!r}:
            t0 = time.time()
            mod = cnncc.compile(g, target=target, opt_level=2)
            for batch in (1, 3):
                feeds = random_inputs(g, batch, np.random.default_rng(batch))
                y, r = mod(feeds), cnncc.reference(g, feeds)
                y, r = (y, r) if isinstance(r, dict) else ({{"out": y}}, {{"out": r}})
                for k in r:
                    err = float(np.abs(y[k] - r[k]).max() / max(np.abs(r[k]).max(), 1e-6))
                    assert err <= 1e-3, (path.stem, target, batch, k, err)
            print(f"SANITIZED-OK {{path.stem}} {{target}} {{time.time() - t0:.1f}}s", flush=True)
""")


EMU_EXAMPLES = ("lenet5", "squeezenet1_1", "unet")


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


def test_c_kernels_of_every_example_under_address_and_undefined_behaviour_sanitizers(shared_kernel_cache):
    run_sanitized([p.stem for p in _examples()], ["c"])


def test_emulated_cuda_under_address_and_undefined_behaviour_sanitizers(shared_kernel_cache):
    names = [p.stem for p in _examples()]
    if os.environ.get("CNNCC_SANITIZE_ALL") != "1":
        names = [n for n in names if n in EMU_EXAMPLES]
    run_sanitized(names, ["cuda-emu"])
