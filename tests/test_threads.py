"""Thread safety: one compiled module called from 16 Python threads x 20 calls at once, each
call with its own input (and batch sizes 1-3 mixed, so calls of different sizes overlap), and
every call gets its own correct result, on target c (arena pool, kernel scratch in each arena) and
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


def compiled_with_inputs(target: str, seed: int):
    """model() compiled at opt 2, one input per thread (batch 1, 2 or 3) and its reference output."""
    g = model()
    mod = cnncc.compile(g, target=target, opt_level=2)
    rng = np.random.default_rng(seed)
    feeds = [rng.standard_normal((1 + i % 3, 3, 12, 12)).astype(np.float32) for i in range(THREADS)]
    return mod, feeds, [cnncc.reference(g, {"x": x}) for x in feeds]


@pytest.mark.parametrize("target", ["c", "cuda-emu"])
def test_concurrent_calls_each_get_their_own_result(shared_kernel_cache, target):
    mod, feeds, want = compiled_with_inputs(target, seed=0)
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
    mod, feeds, want = compiled_with_inputs("c", seed=1)
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


def test_kernel_scratch_is_planned_with_the_arena(shared_kernel_cache, monkeypatch):
    """No kernel allocates during a call: each asks for its scratch while it renders
    (Program.workspace) and every call's arena holds it after the tensors, a slot per OpenMP
    thread. A context made for fewer threads than a call runs on is refused by the generated code
    before any kernel runs (CNNCC_ESLOTS); the runtime grows it and calls again."""
    import ctypes

    from cnncc.codegen import c_small
    from cnncc.runtime.cpu import ESLOTS, CallContext

    for plan in ("plan_conv", "plan_dense", "plan_pool_band"):   # this model's layers are small: the
        monkeypatch.setattr(c_small, plan, lambda *a, **k: None)  # scratch-using kinds, as for big layers
    g = model()
    mod = cnncc.compile(g, target="c", opt_level=2)
    assert "malloc" not in mod.source and "free(" not in mod.source
    ws = {w.kernel: w for w in mod.program.workspace}
    assert len(ws) >= 3, ws                           # the blocked, grouped and dense kernels at least
    assert any(a > 0 for w in ws.values() for a, _ in w.per_thread), "the dense partial sums grow with N"
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 12)).astype(np.float32)
    want = cnncc.reference(g, {"x": x})
    runner = mod.runner()

    mod.threads = 1
    assert rel_err(mod(x), want) <= 1e-4
    assert [c.slots for c in runner.contexts[2]] == [1]
    mod.threads = 3                                   # more threads: the idle context grows before the call
    assert rel_err(mod(x), want) <= 1e-4
    assert [c.slots for c in runner.contexts[2]] == [3]
    assert runner.contexts[2][0].arena.nbytes >= mod.program.arena_bytes(2, 3) > mod.program.arena_bytes(2, 1)

    small = CallContext(runner, 2, 1)                 # the generated guard, called directly: 3 threads, 1 slot
    nowhere = (ctypes.c_void_p * 1)()                 # never dereferenced: cnncc_forward stops first
    assert runner.run(small.n, ctypes.c_int(3), nowhere, nowhere, runner.blob_p, small.arena_p) == ESLOTS

    if runner._omp_get is None:
        pytest.skip("built without OpenMP")
    mod.threads = None                                # OpenMP's choice for this thread: 3, a pooled context has 1
    before = runner._omp_get()
    runner._omp_set(3)
    try:
        runner.contexts[2] = [small]
        assert rel_err(mod(x), want) <= 1e-4          # refused, grown, called again
        assert small.slots == 3 and runner.contexts[2] == [small]
    finally:
        runner._omp_set(before)
