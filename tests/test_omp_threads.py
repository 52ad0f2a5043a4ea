"""compile(threads=N) / mod.threads: the C target's OpenMP thread count per module, per call.

Observed from outside, in a fresh process: libgomp starts its worker threads at the first
parallel region that asks for them, so the process's thread count tells how many a call used."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np, cnncc
    from cnncc.frontends import dsl
    x = dsl.input("x", (dsl.N, 16, 24, 24))
    g = dsl.graph(dsl.relu(dsl.conv2d(x, 16, 3, padding=1)), name="omp_threads")
    mod = cnncc.compile(g, "c", 2, threads=int(sys.argv[1]))
    a = np.random.default_rng(0).standard_normal((64, 16, 24, 24)).astype(np.float32)  # above the parallel threshold
    tasks = lambda: len(os.listdir("/proc/self/task"))
    before = tasks()
    y = mod(a)
    print(tasks() - before, mod.threads, mod.runner()._omp_get())
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("threads", [1, 3])
def test_compile_threads_sets_the_openmp_team_of_each_call(threads, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2", CNNCC_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    started, setting, after = out.stdout.split()
    assert int(started) == threads - 1          # the caller is one of the team
    assert int(setting) == threads
    assert int(after) == 2                      # the calling thread's own OpenMP setting is restored


def test_threads_must_be_positive():
    import cnncc
    from cnncc.errors import CnnccError
    from cnncc.frontends import dsl

    x = dsl.input("x", (dsl.N, 2))
    mod = cnncc.compile(dsl.graph(dsl.relu(x)), "c", 0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(CnnccError, match="threads must be"):
            mod.threads = bad
