"""Acceptance of the pass pipeline on every example model (examples/*.py at a small input size):
no pass changes results, and the fusions the classic networks call for all happen."""
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import sympy

import cnncc
from cnncc import N
from cnncc.passes import PIPELINES
from cnncc.frontends.dsl import load_model
from helpers import rel_err

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# DSL model files define model(); the other examples are usage scripts (ONNX import, tracing)
ALL = sorted(p.stem for p in EXAMPLES.glob("*.py") if "\ndef model(" in p.read_text())
SIZES = (32, 64, 75, 96)      # 75: the smallest input Inception-v3/v4 accept


@lru_cache(maxsize=None)
def optimized(name: str):
    """(original, optimized at opt 2) of an example at the smallest input size it accepts."""
    from test_codegen_c import SMALL_KWARGS     # Fast R-CNN: narrow fc6/fc7

    path = EXAMPLES / f"{name}.py"
    for size in SIZES:
        try:
            g = load_model(path, size=size, **SMALL_KWARGS.get(name, {}))
            break
        except (cnncc.CnnccError, TypeError):
            continue
    else:
        pytest.skip(f"{name} builds at none of the sizes {SIZES}")
    return g, cnncc.optimize(g)


def example(name: str):
    if not (EXAMPLES / f"{name}.py").exists():
        pytest.skip(f"examples/{name}.py is not there yet")
    return optimized(name)


def feed(g, batch=1):
    from cnncc.reference import random_inputs

    return random_inputs(g, batch, np.random.default_rng(0))     # standard normal; valid RoI boxes


def outputs(g, x):
    env = cnncc.reference(g, x, keep_all=True)
    back = {new: old for old, new in g.renamed.items()}
    return {back.get(o, o): env[o] for o in g.outputs}


def fingerprint(g):
    """Everything the reference's result depends on (meta annotations are not)."""
    def one(n):
        return (n.name, n.op, tuple(n.inputs), repr(sorted(n.attrs.items())),
                tuple((k, id(v)) for k, v in sorted(n.params.items())), tuple(one(m) for m in n.members or ()))
    return tuple(one(n) for n in g), tuple(g.outputs)


@pytest.mark.parametrize("name", ALL)
def test_no_pass_changes_results(name):
    g, opt = example(name)
    x = feed(g)
    before, prev = outputs(g, x), fingerprint(g)
    for rec in opt.pass_report:
        fp = fingerprint(rec.snapshot)
        if fp == prev:
            continue   # only annotations changed: the reference result is the same by construction
        after = outputs(rec.snapshot, x)
        err = rel_err(after, before, floor=1e-30)
        # BN folding rounds the folded weights once to float32; the examples' calibrated BN
        # statistics (dsl.calibrate_batch_norm) keep that ~1e-6, so one bound holds for all
        assert err <= 1e-5, (rec.name, err)
        before, prev = after, fp


@pytest.mark.parametrize("name", ALL)
def test_every_unfused_edge_has_a_reason_and_memory_never_overlaps(name):
    g, opt = example(name)
    owner = {m.name: n.name for n in opt for m in (n.members or [n])}
    pre = opt.pass_report.snapshot(PIPELINES[2][PIPELINES[2].index("fuse") - 1])   # the graph fuse saw
    reasons = {(p, c): why for p, c, why in opt.fusion.why_not}
    for node in pre:
        for src in node.inputs:
            if pre[src].op not in ("input", "constant") and owner[src] != owner[node.name]:
                assert reasons.get((src, node.name)), (src, node.name)
    mp = opt.memory_plan
    at = {N: 2}
    spans = sorted((lo, hi, int(mp.offsets[b].subs(at)), int(mp.sizes[b].subs(at)), b)
                   for b, (lo, hi) in mp.lifetimes.items())
    for i, (lo, hi, off, size, b) in enumerate(spans):
        for lo2, hi2, off2, size2, b2 in spans[i + 1:]:
            if lo2 > hi:
                break
            assert off + size <= off2 or off2 + size2 <= off, (b, b2)
    t = opt.traffic
    assert sympy.simplify(t.bytes_unfused - t.bytes_fused).subs(N, 1) >= 0


def group_ops(opt):
    return [[m.op for m in n.members] for n in opt if n.op == "fused"]


def test_lenet5_two_conv_pool_groups_and_dense_with_activation():
    g, opt = example("lenet5")
    convs = [ops for ops in group_ops(opt) if ops[0] == "conv2d"]
    assert convs == [["conv2d", "relu", "max_pool2d"]] * 2
    dense = [n for n in g if n.op == "dense"]
    activated = [d for d in dense if [c.op for c in g.consumers(d.name)] == ["relu"]]
    assert [ops for ops in group_ops(opt) if ops[0] == "dense"] == [["dense", "relu"]] * len(activated)
    assert len(activated) == 2


def test_vgg16_five_conv_relu_pool_groups():
    g, opt = example("vgg16")
    assert group_ops(opt).count(["conv2d", "relu", "max_pool2d"]) == 5


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_residual_add_in_the_conv_epilogue_with_its_relu(name):
    g, opt = example(name)
    assert "batch_norm" not in {n.op for n in opt} and "batch_norm" in {n.op for n in g}
    adds = [n.name for n in g if n.op == "add"]
    assert adds
    for grp in (n for n in opt if n.op == "fused"):
        names = [m.name for m in grp.members]
        for a in set(adds) & set(names):
            i = names.index(a)
            assert grp.members[0].op == "conv2d" and [m.op for m in grp.members[i:]] == ["add", "relu"]
            adds.remove(a)
    assert not adds, f"residual adds outside a conv epilogue: {adds}"


@pytest.mark.parametrize("name", ["googlenet", "densenet121"])
def test_no_concat_copy(name):
    g, opt = example(name)
    concats = [n for n in opt if n.op == "concat"]
    assert concats and all(n.placement.eliminated for n in concats)


def test_resnet50_memory_peak_below_naive():
    g, opt = example("resnet50")
    mp = opt.memory_plan
    assert sympy.simplify(mp.naive_bytes - mp.arena_bytes).subs(N, 1) > 0
