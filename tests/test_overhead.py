"""Small models without per-call overhead (target c): input checks once per shape signature
(and still every wrong input refused), ``out=`` writing into the caller's arrays, OpenMP
regions only above the target's work threshold, and modules without the one-call entry
(saved before it existed) still running. Timing lives in benchmarks/overhead.py, not here."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cnncc
from cnncc import inputs
from cnncc.codegen.c import parallel_if, parallel_work, render
from cnncc.codegen.target import PARALLEL_WORK_PER_FLOAT, CTarget
from cnncc.frontends import dsl
from cnncc.ir import N
from cnncc.runtime.cpu import host_target


def two_outputs():
    x = dsl.input("x", (N, 3, 8, 8))
    y = dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 8, 3, padding=1, name="c1"), name="r1"), 2, name="p1")
    logits = dsl.dense(dsl.flatten(y, name="flat"), 10, name="fc")
    return dsl.graph(logits, dsl.softmax(logits, name="prob"), name="overhead")


@pytest.fixture(scope="module")
def compiled(shared_kernel_cache):
    g = two_outputs()
    return g, cnncc.compile(g, target="c", opt_level=2)


def rel(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / max(np.abs(want).max(), 1e-30))


def test_inputs_are_checked_once_per_shape_and_a_wrong_input_is_still_refused(compiled, monkeypatch):
    g, mod = compiled
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = cnncc.reference(g, {"x": x})
    calls = []
    real = inputs.coerce
    monkeypatch.setattr(inputs, "coerce", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    mod(x)
    checked = len(calls)
    for got in (mod(x.copy()), mod({"x": x}), mod(x=x)):   # positional, a dict, a keyword
        assert rel(got["fc"], want["fc"]) < 1e-4
    assert len(calls) == checked, "an array of a shape and dtype already checked was checked again"
    with pytest.raises(inputs.InputError, match="unknown input name"):
        mod(y=x)
    with pytest.raises(inputs.InputError, match="either positionally or by name"):
        mod(x, x=x)
    # the same shape in any other form goes through every check again: converted, or refused
    assert rel(mod(x.astype(np.float64))["fc"], want["fc"]) < 1e-4
    assert rel(mod(np.asfortranarray(x))["fc"], want["fc"]) < 1e-4
    assert rel(mod(x.astype(">f4"))["fc"], want["fc"]) < 1e-4
    ro = x.copy()
    ro.flags.writeable = False
    assert rel(mod(ro)["fc"], want["fc"]) < 1e-4
    assert len(calls) == checked + 3
    with pytest.raises(inputs.InputError, match="int32"):
        mod(x.astype(np.int32))
    with pytest.raises(inputs.InputError, match="axis 1"):
        mod(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(inputs.InputError, match="beyond float32"):
        mod(np.full((2, 3, 8, 8), 1e300))
    with pytest.raises(inputs.InputError):
        mod(x, x)


def test_out_fills_the_callers_arrays(compiled):
    g, mod = compiled
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    want = mod(x)
    fc, prob = np.full((3, 10), np.nan, np.float32), np.full((3, 10), np.nan, np.float32)
    got = mod(x, out={"prob": prob, "fc": fc})
    assert got["fc"] is fc and got["prob"] is prob
    np.testing.assert_array_equal(fc, want["fc"])
    np.testing.assert_array_equal(prob, want["prob"])
    fc2, prob2 = np.empty_like(fc), np.empty_like(prob)
    got = mod(x, out=[fc2, prob2])
    assert got["fc"] is fc2 and np.array_equal(prob2, want["prob"])
    # a crooked (not 64-byte aligned) but otherwise fine buffer is written in place too
    buf = np.empty(31, np.float32)
    crooked = buf[1:31].reshape(3, 10)
    mod(x, out=[crooked, prob2])
    np.testing.assert_array_equal(crooked, want["fc"])
    bad = {
        "shape": ([np.empty((2, 10), np.float32), prob2], "this call writes float32 \\(3, 10\\)"),
        "dtype": ([np.empty((3, 10), np.float64), prob2], "float64"),
        "layout": ([np.empty((10, 3), np.float32).T, prob2], "C-contiguous"),
        "count": ([fc2], "1 array\\(s\\) for 2 output"),
        "same buffer twice": ([fc2, fc2], "overlaps"),
        "names": ({"fc": fc2}, "misses prob"),
    }
    readonly = np.empty((3, 10), np.float32)
    readonly.flags.writeable = False
    bad["read-only"] = ([readonly, prob2], "writable")
    for what, (out, message) in bad.items():
        with pytest.raises(inputs.InputError, match=message):
            mod(x, out=out)
    # an output buffer that is (a view of) the input is refused: the kernels would read their own writes
    g1 = dsl.graph(dsl.relu(dsl.input("x", (N, 16)), name="act"), name="inplace")
    m1 = cnncc.compile(g1, target="c", opt_level=2)
    v = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    with pytest.raises(inputs.InputError, match="overlaps an input"):
        m1(v, out=v)
    o = np.empty_like(v)
    assert m1(v, out=o) is o and np.array_equal(o, np.maximum(v, 0))


def test_small_kernels_run_on_the_calling_thread(compiled):
    """Every parallel region's condition is the call's work against the target's threshold, which
    follows the vector width unless given; a kernel's work is its multiply-adds."""
    g, mod = compiled
    assert CTarget("avx2", 8, 16).parallel_work == 8 * PARALLEL_WORK_PER_FLOAT
    conv = next(k for k in mod.program.kernels if k.family == "conv")
    assert parallel_work(conv) == 8 * 8 * 8 * 3 * 3 * 3
    host = host_target()   # the program's weights are packed for its vector width: render for the same
    for threshold in (1, 12345678):
        target = dataclasses.replace(host, parallel_work=threshold)
        source, _, _ = render(mod.program, target)
        lines = source.splitlines()   # the condition: the region's `if`, or the C `if` right before it (small kernels)
        regions = [line + before for line, before in zip(lines[1:], lines) if "#pragma omp parallel" in line]
        assert regions and all(f">= {threshold}L)" in line for line in regions), regions
        assert parallel_if(parallel_work(conv), target) in source


def test_the_fma_rate_of_the_target():
    """Two FMA units of a whole vector unless /proc/cpuinfo names AMD family 0x19 (Zen 4: 512-bit
    FMAs in two 256-bit halves); describe() says it."""
    from cnncc.runtime.cpu import _amd_family

    assert CTarget("avx512", 16, 32).fma_flops == 64 and CTarget("avx2", 8, 16).fma_flops == 32
    assert "FMA 32 FLOP/cycle" in CTarget("avx512", 16, 32, fma_flops=32).describe()
    zen4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\nprocessor\t: 1\n"
    assert _amd_family(zen4) == 25
    assert _amd_family(zen4.replace("AuthenticAMD", "GenuineIntel").replace("25", "6")) is None
    assert _amd_family("") is None


def test_a_memory_bound_kernels_work_grows_with_the_vector_width():
    """A multiply-add gets cheaper with wider vectors, an element of a memory-bound kernel does
    not: on a 16-float target an elementwise element or a pool tap counts twice what it counts on
    an 8-float one, against a threshold twice as high -- the same elements decide in both, where
    a fixed count had kept 200,000-element chains on one thread on AVX-512 (codegen/c.py)."""
    from cnncc.codegen.lower import lower_program

    x = dsl.input("x", (N, 16, 8, 8))
    g = dsl.graph(dsl.max_pool2d(dsl.relu(x, name="act"), 2, name="pool"), name="membound")
    specs = {k.family: k for k in lower_program(cnncc.optimize(g, opt_level=0)).kernels}
    chain, pool = specs["elementwise"], specs["pool"]
    assert parallel_work(chain) == 16 * 8 * 8 * 20 and parallel_work(chain, 16) == 2 * parallel_work(chain, 8)
    assert parallel_work(pool) == int(16 * 4 * 4 * 2 * 2 * 2.5) and parallel_work(pool, 16) == 2 * parallel_work(pool)
    for vec in (8, 16):
        assert (parallel_work(chain, vec) / CTarget("t", vec, 16).parallel_work ==
                parallel_work(chain) / CTarget("t", 8, 16).parallel_work)
    # DenseNet-121's last block's BN + ReLU (512 x 7 x 7 = 25,088 elements) wakes the team at batch 1
    x = dsl.input("x", (N, 512, 7, 7))
    last = lower_program(cnncc.optimize(dsl.graph(dsl.relu(x, name="act"), name="c"), opt_level=0)).kernels[0]
    for vec in (8, 16):
        per_element = parallel_work(last, vec) / 25088
        assert 25088 * per_element >= CTarget("t", vec, 16).parallel_work > 20000 * per_element
    # a depthwise convolution's multiply-adds count DEPTHWISE_WORK times a dense one's; grouped ones once
    from cnncc.codegen.c import DEPTHWISE_WORK

    def conv(groups):
        xi = dsl.input("x", (N, 16, 8, 8))
        gc = dsl.graph(dsl.conv2d(xi, 16, 3, padding=1, groups=groups, name="c"), name=f"g{groups}")
        return next(k for k in lower_program(cnncc.optimize(gc, opt_level=0)).kernels if k.family == "conv")

    assert DEPTHWISE_WORK > 1
    assert parallel_work(conv(16)) == 16 * 8 * 8 * 1 * 9 * DEPTHWISE_WORK
    assert parallel_work(conv(8)) == 16 * 8 * 8 * 2 * 9 and parallel_work(conv(1)) == 16 * 8 * 8 * 16 * 9


def test_every_kernel_parallel_still_correct_and_old_modules_still_run(shared_kernel_cache, monkeypatch):
    """With a threshold of 1 every region runs on the team (3 threads); a module without
    cnncc_run (saved before it existed) is called through cnncc_forward, threads set from Python."""
    from cnncc.runtime import cpu

    g = two_outputs()
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = cnncc.reference(g, {"x": x})
    monkeypatch.setattr(cpu, "host_target", lambda: dataclasses.replace(host_target(), parallel_work=1))
    mod = cnncc.compile(g, target="c", opt_level=2, threads=3)
    assert "if (N * 13824L >= 1L)" in mod.source
    assert rel(mod(x)["prob"], want["prob"]) < 1e-4
    runner = mod.runner()
    runner.run = None
    assert rel(mod(x)["prob"], want["prob"]) < 1e-4
    assert rel(mod(x, out=[np.empty((2, 10), np.float32), np.empty((2, 10), np.float32)])["fc"], want["fc"]) < 1e-4
