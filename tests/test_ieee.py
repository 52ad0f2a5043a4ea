"""IEEE semantics like the numpy reference: NaN, +Inf, -Inf and -0.0 go through every epilogue
(every activation of the registry, alone and fused after a convolution), pools (max, min, avg,
sum, lp, argmax, fused into the convolution or not), global pools, softmax / log_softmax and
dense + softmax on target c (opt 0 and 2) and the CUDA source through the emulation.

A NaN is how a user finds an upstream bug: hiding it (ReLU as ``x > 0 ? x : 0``, C's fmaxf)
is a silently wrong result. Compared: NaN positions, +Inf / -Inf positions, finite values.

Each family is one graph with many outputs, so one build per target covers it."""
from __future__ import annotations

import numpy as np
import pytest

import cnncc
from cnncc import ops
from cnncc.frontends import dsl
from cnncc.ir import N

TARGETS = [("c", 0), ("c", 2), ("cuda-emu", 2)]
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the reference computes with NaN on purpose


def special_input(shape, seed=0) -> np.ndarray:
    """Random values with a NaN, a +Inf, a -Inf and a -0.0 in every (n, c) plane at different
    places, plus planes that stay finite (so finite paths are checked too)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(shape[0], shape[1], -1)
    q = flat.shape[2]
    for n in range(shape[0]):
        for c in range(shape[1]):
            if (n + c) % 3 == 2:
                continue          # a finite plane
            picks = rng.choice(q, size=min(4, q), replace=False)
            for p, v in zip(picks, (np.nan, np.inf, -np.inf, -0.0)):
                flat[n, c, p] = v
    return x


def assert_ieee_equal(y, r, what: str):
    y, r = np.asarray(y), np.asarray(r)
    assert y.shape == r.shape, (what, y.shape, r.shape)
    if r.dtype.kind != "f":
        np.testing.assert_array_equal(y, r, err_msg=what)
        return
    for name, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        got, want = test(y), test(r)
        assert (got == want).all(), (f"{what}: {name} at {int(got.sum())} places, the reference has "
                                     f"{int(want.sum())}; first difference at "
                                     f"{np.argwhere(got != want)[0].tolist()}")
    fin = np.isfinite(r)
    if fin.any():
        scale = max(float(np.abs(r[fin]).max()), 1e-6)
        err = float(np.abs(y[fin].astype(np.float64) - r[fin]).max()) / scale
        assert err <= 1e-4, f"{what}: finite values differ, relative error {err:.2e}"


def run_all(g, feeds):
    ref = cnncc.reference(g, feeds)
    ref = ref if isinstance(ref, dict) else {g.outputs[0]: ref}
    for target, opt in TARGETS:
        mod = cnncc.compile(g, target=target, opt_level=opt)
        out = mod(feeds)
        out = out if isinstance(out, dict) else {mod.output_names[0]: out}
        for k in ref:
            assert_ieee_equal(out[k], ref[k], f"{target} opt {opt}, output {k}")


ACTIVATION_ATTRS = {"clip": {"min": -1.0, "max": 2.0}, "leaky_relu": {"alpha": 0.1}, "pow": {"exponent": 3.0}}


def activation_names():
    return list(ops.ACTIVATIONS)


def test_every_activation_alone_and_fused_after_a_convolution(shared_kernel_cache):
    """Each activation applied to the special input (elementwise kernels) and as the fused
    epilogue of a 3x3 and a 1x1 convolution, plus prelu and batch norm."""
    x = dsl.input("x", (N, 4, 6, 6))
    outs = []
    conv = dsl.conv2d(x, 8, 3, padding=1, name="conv")
    point = dsl.conv2d(x, 8, 1, name="point")
    for a in activation_names():
        fn = getattr(dsl, a)
        attrs = ACTIVATION_ATTRS.get(a, {})
        outs.append(fn(x, name=f"{a}_alone", **attrs))
        outs.append(fn(conv, name=f"{a}_conv", **attrs))
    outs.append(dsl.relu(point, name="relu_point"))
    outs.append(dsl.relu6(dsl.conv2d(x, 8, 3, padding=1, groups=2, name="grouped"), name="relu6_grouped"))
    outs.append(dsl.prelu(x, name="prelu_alone"))
    outs.append(dsl.relu(dsl.batch_norm(dsl.conv2d(x, 4, 3, padding=1, bias=False, name="bnconv"), name="bn"),
                         name="bn_relu"))
    g = dsl.graph(*outs, name="ieee_epilogues")
    run_all(g, {"x": special_input((3, 4, 6, 6))})


def test_pools_global_pools_softmax_and_dense(shared_kernel_cache):
    x = dsl.input("x", (N, 4, 6, 6))
    conv = dsl.conv2d(x, 6, 3, padding=1, name="conv")
    outs = [
        dsl.max_pool2d(x, 2, name="max"),
        dsl.min_pool2d(x, 3, stride=2, padding=1, name="min"),
        dsl.avg_pool2d(x, 2, name="avg"),
        dsl.sum_pool2d(x, 2, name="sum"),
        dsl.lp_pool2d(x, 2.0, 2, name="lp"),
        dsl.global_max_pool(x, name="gmax"),
        dsl.global_avg_pool(x, name="gavg"),
        dsl.max_pool2d(dsl.relu(conv, name="conv_relu"), 2, name="conv_relu_max"),   # fused into the conv
        dsl.max_pool2d(dsl.conv2d(x, 6, 1, name="point"), 2, name="point_max"),
        dsl.softmax(x, axis=1, name="softmax"),
        dsl.log_softmax(x, axis=3, name="log_softmax"),
        dsl.softmax(dsl.dense(dsl.flatten(x, name="flat"), 10, name="fc"), axis=1, name="fc_softmax"),
    ]
    g = dsl.graph(*outs, name="ieee_pools")
    run_all(g, {"x": special_input((3, 4, 6, 6), seed=1)})


def test_argmax_pool_points_at_the_first_nan(shared_kernel_cache):
    x = dsl.input("x", (N, 2, 4, 4))
    y, idx = dsl.max_pool2d_with_indices(x, 2, name="mp")
    g = dsl.graph(y, idx, name="ieee_argmax")
    xx = special_input((1, 2, 4, 4), seed=2)
    run_all(g, {"x": xx})


def test_nan_before_conv_relu_gives_the_reference_nan_count(shared_kernel_cache):
    """The case of issue 12: one NaN before conv + ReLU; the reference (and onnxruntime, PyTorch)
    give 72 NaN outputs (8 channels x the 3x3 neighbourhood), cnncc gave none."""
    x = dsl.input("x", (N, 3, 8, 8))
    g = dsl.graph(dsl.relu(dsl.conv2d(x, 8, 3, padding=1, name="conv"), name="relu"), name="nan_conv_relu")
    xx = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    xx[0, 1, 4, 4] = np.nan
    r = cnncc.reference(g, {"x": xx})
    assert int(np.isnan(r).sum()) == 72
    run_all(g, {"x": xx})


def test_the_c_targets_exp_is_accurate_over_the_float_range_and_calls_no_libm(shared_kernel_cache):
    """The C prelude's cnncc_expf (a polynomial, so that gcc vectorizes sigmoid / silu loops)
    against float64: softplus is log1p(exp(x)) and sigmoid(x) is about exp(x) for x << 0, so both
    carry exp's relative error from the underflow edge to the overflow edge. A loop that still
    called libm's expf would not vectorize: the built library must not import it."""
    import subprocess
    values = np.concatenate([np.linspace(-103.0, 95.0, 4093, dtype=np.float32),
                             np.float32([88.72, 88.7228, -87.33, 0.0])]).reshape(1, 1, 1, -1)
    x = dsl.input("x", (N, 1, 1, values.shape[-1]))
    g = dsl.graph(dsl.softplus(x, threshold=100.0, name="sp"), dsl.sigmoid(x, name="sig"),
                  dsl.silu(x, name="silu"), name="exp_range")
    mod = cnncc.compile(g, target="c", opt_level=0)
    out = mod({"x": values})
    v = values.astype(np.float64)
    with np.errstate(over="ignore"):
        want = {"sp": np.log1p(np.exp(v)), "sig": 1 / (1 + np.exp(-v)), "silu": v / (1 + np.exp(-v))}
    for k, w in want.items():
        y = out[k].astype(np.float64)
        normal = np.isfinite(w) & (np.abs(w) > 1.2e-38) & (np.abs(w) < 3.4e38) & (np.abs(v) < 88.7)   # exp(+-v) finite in float
        rel = np.abs(y[normal] - w[normal]) / np.abs(w[normal])
        assert rel.max() < 4.8e-7, (k, float(rel.max()), float(v[normal][rel.argmax()]))   # 4 ulp
    assert np.isposinf(out["sp"][v > 88.8]).all() and np.isfinite(out["sp"][v <= 88.72]).all()   # exp's overflow edge
    nm = subprocess.run(["nm", "-D", "--undefined-only", str(mod.artifact)], capture_output=True, text=True)
    if nm.returncode == 0:
        assert not any(line.split()[-1].startswith("expf") for line in nm.stdout.splitlines() if line.split())
