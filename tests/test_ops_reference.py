"""Every operator's numpy reference against PyTorch, over grids of attributes.

Criterion (issue 2, item 6): the maximum relative error

    rel = max|ours - torch| / max(max|torch|, 1e-30)

is at most 1e-5. Both sides compute in float32 from the same inputs; the error is taken
relative to the largest output magnitude so tiny outputs near zero do not inflate it. Every
call also checks the output shape and dtype against the operator's sympy shape rule, so the
shape formulas are exercised on the same grids.

Hypothesis draws the attributes; shapes stay small and each property runs ~20 examples.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hyp = pytest.importorskip("hypothesis")
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cnncc  # noqa: E402
from cnncc import ops  # noqa: E402
from cnncc.ir import Node, TensorType  # noqa: E402
from helpers import rel_err  # noqa: E402

TOL = 1e-5
FAST = settings(max_examples=20, deadline=None, derandomize=True)
FEW = settings(max_examples=10, deadline=None, derandomize=True)


def assert_close(ours, ref):
    err = rel_err(ours, ref, floor=1e-30)
    assert err <= TOL, f"max relative error {err:.3g} > {TOL}"


def run(op: str, xs: list[np.ndarray], attrs: dict | None = None, params: dict | None = None) -> np.ndarray:
    """Check + infer + run one operator; the result must have the inferred shape and dtype."""
    node = Node("layer", op, [f"in{i}" for i in range(len(xs))], dict(attrs or {}),
                {k: np.asarray(v) for k, v in (params or {}).items()})
    opdef = ops.get(op)
    opdef.check(node)
    out_type = opdef.infer(node, [TensorType(x.shape, str(x.dtype)) for x in xs])
    y = opdef.ref(node, xs)
    assert y.shape == out_type.concrete(), f"{op}: reference gives {y.shape}, shape rule says {out_type}"
    assert str(y.dtype) == out_type.dtype, f"{op}: reference gives {y.dtype}, shape rule says {out_type.dtype}"
    return y


def randn(seed: int, *shape, positive: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return np.abs(x) + np.float32(0.1) if positive else x


def T(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x))


seeds = st.integers(0, 2**16)


# ---------------------------------------------------------------------------------------------
# convolution
@st.composite
def conv_case(draw, nd: int):
    groups_kind = draw(st.sampled_from(["one", "two", "depthwise"]))
    if groups_kind == "one":
        groups, cin, cout = 1, draw(st.integers(1, 4)), draw(st.integers(1, 4))
    elif groups_kind == "two":
        groups, cin, cout = 2, 2 * draw(st.integers(1, 2)), 2 * draw(st.integers(1, 3))
    else:
        cin = draw(st.integers(2, 4))
        groups, cout = cin, cin * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    kind = draw(st.sampled_from(["int", "pair", "asym", "same", "valid", "full"]))
    stride = (1,) * nd if kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(nd))
    if kind == "same":      # symmetric 'same' needs an even total padding: an odd effective kernel
        k = tuple(kk if (d * (kk - 1)) % 2 == 0 else kk + 1 for kk, d in zip(k, dil))
    if kind == "int":
        padding = draw(st.integers(0, 2))
    elif kind == "pair":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
    elif kind == "asym":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(2 * nd))
    else:
        padding = kind
    eff = [d * (kk - 1) + 1 for kk, d in zip(k, dil)]
    size = tuple(e + draw(st.integers(0, 5)) for e in eff)
    return dict(groups=groups, cin=cin, cout=cout, k=k, dil=dil, stride=stride, padding=padding, size=size,
                bias=draw(st.booleans()), n=draw(st.integers(1, 2)), seed=draw(seeds))


def _torch_conv(nd, x, w, b, c):
    """Torch spelling of our padding forms: int/pair/'same'/'valid' natively, the others via F.pad."""
    conv = F.conv1d if nd == 1 else F.conv2d
    padding = c["padding"]
    kw = dict(stride=c["stride"], dilation=c["dil"], groups=c["groups"])
    if padding == "full":
        padding = tuple(d * (k - 1) for k, d in zip(c["k"], c["dil"]))
    if isinstance(padding, tuple) and len(padding) == 2 * nd:    # ONNX order: begins, then ends
        lo, hi = padding[:nd], padding[nd:]
        torch_pad = sum(((lo[i], hi[i]) for i in reversed(range(nd))), ())
        return conv(F.pad(x, torch_pad), w, b, padding=0, **kw)
    return conv(x, w, b, padding=padding, **kw)


@pytest.mark.parametrize("nd", [1, 2])
@FAST
@given(data=st.data())
def test_conv(nd, data):
    c = data.draw(conv_case(nd))
    x = randn(c["seed"], c["n"], c["cin"], *c["size"])
    w = randn(c["seed"] + 1, c["cout"], c["cin"] // c["groups"], *c["k"])
    b = randn(c["seed"] + 2, c["cout"]) if c["bias"] else None
    params = {"weight": w, **({"bias": b} if b is not None else {})}
    ours = run(f"conv{nd}d", [x], dict(stride=c["stride"], padding=c["padding"], dilation=c["dil"],
                                      groups=c["groups"]), params)
    assert_close(ours, _torch_conv(nd, T(x), T(w), None if b is None else T(b), c))


@FAST
@given(groups=st.sampled_from([1, 2]), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), k=st.tuples(
    st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dil=st.tuples(st.integers(1, 2), st.integers(1, 2)), pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    size=st.tuples(st.integers(1, 5), st.integers(1, 5)), bias=st.booleans(), seed=seeds, data=st.data())
def test_conv_transpose2d(groups, cin_g, cout_g, k, stride, dil, pad, size, bias, seed, data):
    outpad = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dil))
    full = [(n - 1) * s + d * (kk - 1) + 1 for n, s, d, kk in zip(size, stride, dil, k)]
    pad = tuple(min(p, (f - 1) // 2) for p, f in zip(pad, full))          # keep the output non-empty
    x = randn(seed, 2, cin_g * groups, *size)
    w = randn(seed + 1, cin_g * groups, cout_g, *k)
    b = randn(seed + 2, cout_g * groups) if bias else None
    params = {"weight": w, **({"bias": b} if bias else {})}
    ours = run("conv_transpose2d", [x], dict(stride=stride, padding=pad, output_padding=outpad, dilation=dil,
                                             groups=groups), params)
    ref = F.conv_transpose2d(T(x), T(w), None if b is None else T(b), stride=stride, padding=pad,
                             output_padding=outpad, groups=groups, dilation=dil)
    assert_close(ours, ref)


@FEW
@given(pads=st.tuples(*[st.integers(0, 2)] * 4), stride=st.integers(1, 2), seed=seeds)
def test_conv_transpose2d_asymmetric_padding_crops(pads, stride, seed):
    """Asymmetric (begins, ends) padding = torch's unpadded result cropped on each side."""
    x, w = randn(seed, 1, 2, 4, 3), randn(seed + 1, 2, 3, 3, 3)
    ours = run("conv_transpose2d", [x], dict(stride=stride, padding=pads), {"weight": w})
    full = F.conv_transpose2d(T(x), T(w), stride=stride)
    h, wd = full.shape[2:]
    assert_close(ours, full[:, :, pads[0]:h - pads[2], pads[1]:wd - pads[3]])


# ---------------------------------------------------------------------------------------------
# pooling
@st.composite
def pool_case(draw, nd: int, dilation: bool):
    k = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    pad = tuple(draw(st.integers(0, kk // 2)) for kk in k)
    dil = tuple(draw(st.integers(1, 2)) for _ in range(nd)) if dilation else (1,) * nd
    eff = [d * (kk - 1) + 1 for kk, d in zip(k, dil)]
    size = tuple(max(1, e - 2 * p) + draw(st.integers(0, 5)) for e, p in zip(eff, pad))
    return dict(k=k, stride=stride, pad=pad, dil=dil, size=size, ceil=draw(st.booleans()), seed=draw(seeds),
                cip=draw(st.booleans()))


def _pool_attrs(c, **extra):
    return dict(kernel_size=c["k"], stride=c["stride"], padding=c["pad"], dilation=c["dil"], ceil_mode=c["ceil"],
                **extra)


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("kind", ["max", "min"])
@FAST
@given(data=st.data())
def test_max_min_pool(nd, kind, data):
    c = data.draw(pool_case(nd, dilation=True))
    x = randn(c["seed"], 2, 3, *c["size"])
    ours = run(f"{kind}_pool{nd}d", [x], _pool_attrs(c))
    pool = F.max_pool1d if nd == 1 else F.max_pool2d
    sign = 1 if kind == "max" else -1
    ref = sign * pool(sign * T(x), c["k"], c["stride"], c["pad"], c["dil"], ceil_mode=c["ceil"])
    assert_close(ours, ref)


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("kind", ["avg", "sum"])
@FAST
@given(data=st.data())
def test_avg_sum_pool(nd, kind, data):
    """torch has no dilated avg pooling, so dilation is covered separately below."""
    c = data.draw(pool_case(nd, dilation=False))
    x = randn(c["seed"], 2, 3, *c["size"])
    extra = {"count_include_pad": c["cip"]} if kind == "avg" else {}
    ours = run(f"{kind}_pool{nd}d", [x], _pool_attrs(c, **extra))
    x2 = T(x) if nd == 2 else T(x)[:, :, None, :]                     # 1-D as a 1 x L image
    lift = (lambda v: v) if nd == 2 else (lambda v: (1, v[0]))
    kw = dict(ceil_mode=c["ceil"], count_include_pad=c["cip"])
    if kind == "sum":   # a divisor of 1 turns torch's average into a window sum (padding adds 0)
        kw = dict(ceil_mode=c["ceil"], divisor_override=1)
    ref = F.avg_pool2d(x2, lift(c["k"]), lift(c["stride"]), lift(c["pad"]) if nd == 2 else (0, c["pad"][0]), **kw)
    assert_close(ours, ref if nd == 2 else ref[:, :, 0, :])


@pytest.mark.parametrize("kind", ["avg", "sum"])
@FEW
@given(k=st.integers(1, 3), dil=st.integers(1, 3), stride=st.integers(1, 2), pad=st.integers(0, 1), seed=seeds)
def test_dilated_avg_sum_pool(kind, k, dil, stride, pad, seed):
    """A dilated window sum is a depthwise convolution with a kernel of ones."""
    pad = min(pad, k // 2)
    x = randn(seed, 1, 2, 7, 6)
    extra = {"count_include_pad": True} if kind == "avg" else {}
    ours = run(f"{kind}_pool2d", [x], dict(kernel_size=k, stride=stride, padding=pad, dilation=dil, **extra))
    ref = F.conv2d(T(x), torch.ones(2, 1, k, k), stride=stride, padding=pad, dilation=dil, groups=2)
    assert_close(ours, ref / (k * k) if kind == "avg" else ref)


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_global_pools(kind):
    x = randn(3, 2, 5, 6, 7)
    ref = F.adaptive_avg_pool2d(T(x), 1) if kind == "avg" else F.adaptive_max_pool2d(T(x), 1)
    assert_close(run(f"global_{kind}_pool", [x]), ref)
    x1 = randn(4, 2, 3, 9)
    ref1 = F.adaptive_avg_pool1d(T(x1), 1) if kind == "avg" else F.adaptive_max_pool1d(T(x1), 1)
    assert_close(run(f"global_{kind}_pool", [x1]), ref1)


@FAST
@given(p=st.sampled_from([1.0, 2.0, 3.0, 1.5]), k=st.integers(1, 3), stride=st.integers(1, 3),
       ceil=st.booleans(), size=st.integers(3, 8), seed=seeds)
def test_lp_pool2d(p, k, stride, ceil, size, seed):
    """Our Lp pool is the norm (|x|^p); torch raises x to p without |.|, so the two agree for
    p = 2 on any input and for every p on non-negative input (tested that way). In ceil mode
    torch rescales a partial window by k*k / its size; there we compare full windows only."""
    x = randn(seed, 2, 3, size, size + 1, positive=p != 2.0)
    ours = run("lp_pool2d", [x], dict(p=p, kernel_size=k, stride=stride, ceil_mode=ceil))
    ref = F.lp_pool2d(T(x), p, k, stride, ceil_mode=ceil)
    floor_rows = (size - k) // stride + 1, (size + 1 - k) // stride + 1
    assert_close(ours[:, :, :floor_rows[0], :floor_rows[1]], ref[:, :, :floor_rows[0], :floor_rows[1]])
    assert ours.shape == tuple(ref.shape)


@FAST
@given(data=st.data())
def test_max_pool2d_indices_and_unpool(data):
    c = data.draw(pool_case(2, dilation=True))
    x = randn(c["seed"], 2, 3, *c["size"])
    attrs = _pool_attrs(c)
    idx = run("max_pool2d_indices", [x], attrs)
    y = run("max_pool2d", [x], attrs)
    ref_y, ref_idx = F.max_pool2d(T(x), c["k"], c["stride"], c["pad"], c["dil"], ceil_mode=c["ceil"],
                                  return_indices=True)
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    assert_close(y, ref_y)
    if c["dil"] == (1, 1) and not c["ceil"]:
        out_size = c["size"]
        ours = run("max_unpool2d", [y, idx], dict(kernel_size=c["k"], stride=c["stride"], padding=c["pad"],
                                                 output_size=out_size))
        assert_close(ours, F.max_unpool2d(ref_y, ref_idx, c["k"], c["stride"], c["pad"], output_size=out_size))


def test_max_unpool2d_default_size():
    x = randn(5, 1, 2, 6, 8)
    y, idx = F.max_pool2d(T(x), 2, return_indices=True)
    ours = run("max_unpool2d", [y.numpy(), idx.numpy()], dict(kernel_size=2))
    assert_close(ours, F.max_unpool2d(y, idx, 2))


@pytest.mark.parametrize("scale", [1, 2, 3, (2, 3)])
def test_unpool_nearest2d(scale):
    x = randn(6, 2, 3, 4, 5)
    sf = scale if isinstance(scale, tuple) else (scale, scale)
    assert_close(run("unpool_nearest2d", [x], {"scale": scale}),
                 F.interpolate(T(x), scale_factor=sf, mode="nearest"))


# ---------------------------------------------------------------------------------------------
# normalization
@FAST
@given(size=st.integers(1, 6), alpha=st.floats(1e-4, 1.0), beta=st.floats(0.1, 1.0), k=st.floats(0.5, 2.0),
       rank=st.sampled_from([3, 4]), seed=seeds)
def test_lrn(size, alpha, beta, k, rank, seed):
    x = randn(seed, 2, 7, 4, 3)[..., 0] if rank == 3 else randn(seed, 2, 7, 4, 3)
    ours = run("lrn", [x], dict(size=size, alpha=alpha, beta=beta, k=k))
    assert_close(ours, F.local_response_norm(T(x), size, alpha, beta, k))


@FEW
@given(eps=st.sampled_from([1e-5, 1e-3, 0.1]), rank=st.sampled_from([3, 4]), seed=seeds)
def test_batch_norm(eps, rank, seed):
    x = randn(seed, 2, 4, 5, 3) if rank == 4 else randn(seed, 2, 4, 5)
    w, b, m = randn(seed + 1, 4), randn(seed + 2, 4), randn(seed + 3, 4)
    v = randn(seed + 4, 4, positive=True)
    ours = run("batch_norm", [x], {"eps": eps}, dict(weight=w, bias=b, mean=m, var=v))
    assert_close(ours, F.batch_norm(T(x), T(m), T(v), T(w), T(b), training=False, eps=eps))


@FEW
@given(eps=st.sampled_from([1e-5, 1e-3]), rank=st.sampled_from([3, 4]), seed=seeds)
def test_instance_norm(eps, rank, seed):
    x = 3 * randn(seed, 2, 4, 5, 6) + 1 if rank == 4 else randn(seed, 2, 4, 7)
    w, b = randn(seed + 1, 4), randn(seed + 2, 4)
    ours = run("instance_norm", [x], {"eps": eps}, dict(weight=w, bias=b))
    assert_close(ours, F.instance_norm(T(x), weight=T(w), bias=T(b), eps=eps))


def test_scale_shift():
    x, s, b = randn(1, 2, 3, 4, 4), randn(2, 3), randn(3, 3)
    ours = run("scale_shift", [x], {}, dict(scale=s, shift=b))
    assert_close(ours, T(x) * T(s).view(1, 3, 1, 1) + T(b).view(1, 3, 1, 1))


# ---------------------------------------------------------------------------------------------
# activations
ACTIVATION_CASES = [
    ("relu", {}, F.relu),
    ("leaky_relu", {}, lambda x: F.leaky_relu(x, 0.01)),
    ("leaky_relu", {"alpha": 0.2}, lambda x: F.leaky_relu(x, 0.2)),
    ("relu6", {}, F.relu6),
    ("clip", {"min": -0.5, "max": 1.5}, lambda x: torch.clamp(x, -0.5, 1.5)),
    ("clip", {"min": 0.0}, lambda x: torch.clamp(x, min=0.0)),
    ("clip", {"max": 0.3}, lambda x: torch.clamp(x, max=0.3)),
    ("sigmoid", {}, torch.sigmoid),
    ("tanh", {}, torch.tanh),
    ("elu", {}, F.elu),
    ("elu", {"alpha": 0.5}, lambda x: F.elu(x, 0.5)),
    ("selu", {}, F.selu),
    ("hardswish", {}, F.hardswish),
    ("hardsigmoid", {}, F.hardsigmoid),
    ("silu", {}, F.silu),
    ("gelu", {}, F.gelu),
    ("gelu", {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh")),
    ("softplus", {}, F.softplus),
    ("softplus", {"beta": 2.0, "threshold": 5.0}, lambda x: F.softplus(x, beta=2.0, threshold=5.0)),
    ("dropout", {"p": 0.3}, lambda x: F.dropout(x, 0.3, training=False)),
    ("identity", {}, lambda x: x),
]


@pytest.mark.parametrize("op,attrs,fn", ACTIVATION_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(ACTIVATION_CASES)])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_activation(op, attrs, fn, scale):
    """Inputs cover both signs, the kinks (0, +-3, 6) and, at scale 8, the saturated tails."""
    x = np.concatenate([scale * randn(11, 2, 3, 5, 5).ravel(),
                        np.array([0, -3, 3, 6, -6, 1e-3, -1e-3], np.float32)]).reshape(1, 1, -1).astype(np.float32)
    assert_close(run(op, [x], attrs), fn(T(x)))


@pytest.mark.parametrize("per_channel", [False, True])
def test_prelu(per_channel):
    x = randn(7, 2, 3, 4, 4)
    slope = randn(8, 3) if per_channel else np.array([0.25], np.float32)
    assert_close(run("prelu", [x], {}, {"slope": slope}), F.prelu(T(x), T(slope)))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [1, -1, 0, 2])
def test_softmax(op, axis):
    x = 5 * randn(9, 2, 4, 3, 5)
    fn = F.softmax if op == "softmax" else F.log_softmax
    assert_close(run(op, [x], {"axis": axis}), fn(T(x), dim=axis))


# ---------------------------------------------------------------------------------------------
# dense, matmul, broadcasting binaries
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 10), (2, 3, 10)])
def test_dense(bias, shape):
    x, w, b = randn(1, *shape), randn(2, 7, 10), randn(3, 7)
    params = {"weight": w, **({"bias": b} if bias else {})}
    assert_close(run("dense", [x], {}, params), F.linear(T(x), T(w), T(b) if bias else None))


@pytest.mark.parametrize("a_shape,b_shape", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
    ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4,)),
])
def test_matmul(a_shape, b_shape):
    a, b = randn(1, *a_shape), randn(2, *b_shape)
    assert_close(run("matmul", [a, b]), torch.matmul(T(a), T(b)))


BROADCAST_SHAPES = [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (2, 3, 1, 1)), ((2, 3, 4, 5), (1, 3, 1, 1)),
                    ((2, 3, 4, 5), (5,)), ((3, 1, 5), (2, 3, 4, 1)), ((2, 3, 4, 5), ())]


@pytest.mark.parametrize("op,fn", [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", torch.div)])
@pytest.mark.parametrize("a_shape,b_shape", BROADCAST_SHAPES)
def test_binary_broadcasting(op, fn, a_shape, b_shape):
    """Includes the squeeze-and-excitation channel-wise scale (N, C, 1, 1)."""
    a = randn(1, *a_shape)
    b = randn(2, *b_shape, positive=op == "div") if b_shape else np.array(1.7, np.float32)
    assert_close(run(op, [a, b]), fn(T(a), T(b)))


# ---------------------------------------------------------------------------------------------
# shape and data movement
@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_flatten(axis):
    x = randn(1, 2, 3, 4, 5)
    assert_close(run("flatten", [x], {"axis": axis}), torch.flatten(T(x), start_dim=axis).reshape(
        int(np.prod(x.shape[:axis])), -1))


@pytest.mark.parametrize("spec,torch_spec", [((2, -1), (2, -1)), ((0, 12, 5), (2, 12, 5)), ((-1,), (-1,)),
                                              ((2, 3, 20), (2, 3, 20))])
def test_reshape(spec, torch_spec):
    x = randn(1, 2, 3, 4, 5)
    assert_close(run("reshape", [x], {"shape": spec}), T(x).reshape(torch_spec))


@pytest.mark.parametrize("perm", [(0, 1, 3, 2), (0, 2, 3, 1), (3, 2, 1, 0), None, (-1, 0, 1, 2)])
def test_transpose(perm):
    x = randn(1, 2, 3, 4, 5)
    want = T(x).permute(*(perm if perm is not None else (3, 2, 1, 0)))
    assert_close(run("transpose", [x], {"perm": perm}), want)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_concat(axis):
    xs = [randn(i, 2, 3, 4, 5) for i in range(3)]
    assert_close(run("concat", xs, {"axis": axis}), torch.cat([T(x) for x in xs], dim=axis))


PAD_CASES = [  # (our pads, torch F.pad tuple: last axis first)
    (1, (1, 1, 1, 1)),
    ((1, 2, 0, 3), (2, 3, 1, 0)),                                   # ONNX order over H, W: begins, ends
    ((0, 0, 1, 2, 0, 0, 2, 1), (2, 1, 1, 2)),                        # ONNX order over all four axes
    (((1, 0), (2, 3)), (2, 3, 1, 0)),                                # (before, after) per spatial axis
]


@pytest.mark.parametrize("mode,torch_mode", [("constant", "constant"), ("reflect", "reflect"), ("edge", "replicate")])
@pytest.mark.parametrize("pads,torch_pads", PAD_CASES)
def test_pad(mode, torch_mode, pads, torch_pads):
    x = randn(3, 2, 3, 5, 6)
    attrs = {"pads": pads, "mode": mode, **({"value": 0.5} if mode == "constant" else {})}
    ref = F.pad(T(x), torch_pads, mode=torch_mode, **({"value": 0.5} if mode == "constant" else {}))
    assert_close(run("pad", [x], attrs), ref)


def test_pad_channels_constant():
    x = randn(3, 2, 3, 4, 4)
    ours = run("pad", [x], {"pads": (0, 1, 0, 0, 0, 2, 0, 0), "value": -1.0})
    assert_close(ours, F.pad(T(x), (0, 0, 0, 0, 1, 2), value=-1.0))


# ---------------------------------------------------------------------------------------------
# resizing and rearranging
def _onnx_depth_to_space_dcr(x, b):
    """The ONNX spec's DCR formula spelled in torch."""
    n, c, h, w = x.shape
    return x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // (b * b), h * b, w * b)


def _onnx_space_to_depth(x, b):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h // b, w // b)


@pytest.mark.parametrize("block", [1, 2, 3])
def test_depth_to_space(block):
    x = randn(5, 2, 2 * block * block, 3, 4)
    assert_close(run("depth_to_space", [x], {"block": block, "mode": "CRD"}), F.pixel_shuffle(T(x), block))
    assert_close(run("depth_to_space", [x], {"block": block}), _onnx_depth_to_space_dcr(T(x), block))


@pytest.mark.parametrize("block", [1, 2, 3])
def test_space_to_depth(block):
    x = randn(6, 2, 3, 2 * block, 3 * block)
    assert_close(run("space_to_depth", [x], {"block": block, "mode": "CRD"}), F.pixel_unshuffle(T(x), block))
    s2d = run("space_to_depth", [x], {"block": block})
    assert_close(s2d, _onnx_space_to_depth(T(x), block))
    np.testing.assert_array_equal(run("depth_to_space", [s2d], {"block": block}), x)   # DCR pair round-trips


# ---------------------------------------------------------------------------------------------
# the interpreter runs the same references through a whole graph
def test_reference_interpreter_matches_torch_on_a_small_model():
    from cnncc.frontends import dsl

    x = dsl.input("x", (dsl.N, 3, 8, 8))
    a = dsl.relu(dsl.batch_norm(dsl.conv2d(x, 4, 3, padding=1)))
    y, idx = dsl.max_pool2d_with_indices(a, 2)
    u = dsl.conv_transpose2d(y, 4, 2, stride=2)
    out = dsl.softmax(dsl.dense(dsl.flatten(dsl.concat([u, a])), 5))
    g = dsl.graph(out)
    xv = randn(0, 2, 3, 8, 8)
    p = {n.name: {k: T(v) for k, v in n.params.items()} for n in g}
    t = F.conv2d(T(xv), p["conv1"]["weight"], p["conv1"]["bias"], padding=1)
    bn = p["bn1"]
    t = F.relu(F.batch_norm(t, bn["mean"], bn["var"], bn["weight"], bn["bias"], training=False))
    up = F.conv_transpose2d(F.max_pool2d(t, 2), p["deconv1"]["weight"], p["deconv1"]["bias"], stride=2)
    want = F.softmax(F.linear(torch.cat([up, t], 1).flatten(1), p["fc1"]["weight"], p["fc1"]["bias"]), 1)
    assert_close(cnncc.reference(g, xv), want)
