"""Thread safety: one compiled module called from 16 Python threads x 20 calls at once, each
call with its own input (and batch sizes 1-3 mixed, so calls of different sizes overlap), and
every call gets its own correct result, on target c (arena pool, per-call scratch) and
cuda-emu (fresh buffers per call). Before the arena pool, 5 of 16 threads got wrong outputs."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import cnncc
from cnncc.frontends import dsl
from cnncc.ir import N
from helpers import rel_err

THREADS, CALLS = 16, 20


def run_threads(work) -> None:
    """``work(i)`` on THREADS threads at once; returns when all have finished."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def model():
    """Kernels with every kind of scratch: a blocked convolution with a fused pool (per-thread
    plane buffer + shared padded copy), a 1x1 convolution, a grouped one (row buffers), a dense
    layer (partial sums) and intermediates in the arena."""
    x = dsl.input("x", (N, 3, 12, 12))
    y = dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 16, 3, padding=1, name="c1"), name="r1"), 2, name="p1")
    y = dsl.relu(dsl.conv2d(y, 16, 1, name="c2"), name="r2")
    y = dsl.relu(dsl.conv2d(y, 16, 3, padding=1, groups=4, name="c3"), name="r3")
    y = dsl.dense(dsl.flatten(y, name="flat"), 10, name="fc")
    return dsl.graph(y, name="threads")


@pytest.mark.parametrize("target", ["c", "cuda-emu"])
def test_concurrent_calls_each_get_their_own_result(shared_kernel_cache, target):
    g = model()
    mod = cnncc.compile(g, target=target, opt_level=2)
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((1 + i % 3, 3, 12, 12)).astype(np.float32) for i in range(THREADS)]
    want = [cnncc.reference(g, {"x": x}) for x in feeds]
    bad: list[str] = []
    start = threading.Barrier(THREADS)

    def work(i: int):
        start.wait()   # all threads call at once
        for call in range(CALLS):
            j = (i + call) % THREADS          # every call a different input than its neighbours'
            y = mod(feeds[j])
            err = rel_err(y, want[j])
            if not err <= 1e-4:
                bad.append(f"thread {i} call {call} (input {j}, batch {feeds[j].shape[0]}): relative error {err:.2e}")

    run_threads(work)
    assert not bad, f"{len(bad)} of {THREADS * CALLS} calls wrong:\n" + "\n".join(bad[:10])


def test_concurrent_calls_into_their_own_out_buffers(shared_kernel_cache):
    """out=: each thread keeps one buffer per batch size and has every call write into it; the
    module's contexts (arena, pointer tables) are still per call, so no call sees another's."""
    g = model()
    mod = cnncc.compile(g, target="c", opt_level=2)
    rng = np.random.default_rng(1)
    feeds = [rng.standard_normal((1 + i % 3, 3, 12, 12)).astype(np.float32) for i in range(THREADS)]
    want = [cnncc.reference(g, {"x": x}) for x in feeds]
    bad: list[str] = []
    start = threading.Barrier(THREADS)

    def work(i: int):
        mine = {b: np.empty((b, 10), np.float32) for b in (1, 2, 3)}
        start.wait()
        for call in range(CALLS // 2):
            j = (i + call) % THREADS
            out = mine[feeds[j].shape[0]]
            y = mod(feeds[j], out=out)
            err = rel_err(out, want[j])
            if y is not out or not err <= 1e-4:
                bad.append(f"thread {i} call {call} (input {j}): relative error {err:.2e}, same array: {y is out}")

    run_threads(work)
    assert not bad, f"{len(bad)} of {THREADS * CALLS // 2} calls wrong:\n" + "\n".join(bad[:10])


def test_a_failed_scratch_allocation_is_an_error_not_a_crash(shared_kernel_cache):
    """Every scratch allocation of the generated C is checked: a dense layer first in the graph,
    called with N = 2^40 (its per-thread partial sums then need more than any address space),
    stops cnncc_forward with CNNCC_ENOMEM before anything is read, naming the kernel; the
    runtime turns that code into a CnnccError."""
    import ctypes

    x = dsl.input("x", (N, 64))   # 64 x 16384 multiply-adds: not a small layer (those have no scratch, c_small.py)
    g = dsl.graph(dsl.relu(dsl.dense(x, 16384, name="fc"), name="act"), name="alloc")
    mod = cnncc.compile(g, target="c", opt_level=2)
    assert "if (!scratch) { cnncc_failed = " in mod.source
    runner = mod.runner()
    arena = np.zeros(64, np.uint8)
    nowhere = (ctypes.c_void_p * 1)()   # input and output pointers never dereferenced: the kernel stops first
    rc = runner.lib.cnncc_forward(ctypes.c_long(1 << 40), nowhere, nowhere, ctypes.c_void_p(runner.blob.ctypes.data),
                                  ctypes.c_void_p(arena.ctypes.data))
    assert rc == 2
    failed = runner.failed_kernel().decode()
    assert failed == mod.program.kernels[0].name
    runner.run = lambda *args: 2    # the same code from a real call: a CnnccError naming the kernel
    with pytest.raises(cnncc.CnnccError, match=f"kernel '{failed}' could not allocate its scratch memory"):
        mod(np.zeros((1, 64), np.float32))
    mod.runner().run = runner.lib.cnncc_run
    np.testing.assert_allclose(mod(np.ones((2, 64), np.float32)), cnncc.reference(g, np.ones((2, 64), np.float32)),
                               rtol=1e-5, atol=1e-5)
