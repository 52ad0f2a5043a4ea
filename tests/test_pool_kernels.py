"""The standalone 2D pooling kernels (codegen/c_pool.py, templates/c/pool.c.j2): interior windows
without checks, border rows and columns through the checked window, in NCHW and NCHW[V]c, at
opt 0 and 2, against the numpy reference (the spec). One graph holds every geometry: a plane
with an interior and borders on every side, and tiny planes (1x1, 2x3) whose interior is empty."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import cnncc
from cnncc import N
from cnncc.codegen import c_pool
from cnncc.frontends import dsl

from helpers import assert_matches_reference

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
pytestmark = pytest.mark.usefixtures("shared_kernel_cache")

#: (pool, kernel_size, keyword arguments) on the 9x11 plane: stride 1/2, padding 0/1, ceil-mode
#: overhang, count_include_pad both ways, dilation, a non-square window
GEOMETRIES = [
    ("max", 3, dict(stride=1, padding=1)),                     # GoogLeNet's inception branch 4
    ("max", 3, dict(stride=2, ceil_mode=True)),                 # GoogLeNet's maxpool1
    ("max", 3, dict(stride=2, padding=1)),                      # ResNet's stem pool
    ("max", 2, dict(stride=2)),
    ("max", 3, dict(stride=1, padding=1, dilation=2)),
    ("max", (2, 3), dict(stride=(1, 2), padding=(1, 1))),
    ("avg", 3, dict(stride=1, padding=1)),                      # count_include_pad=True
    ("avg", 3, dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg", 3, dict(stride=2, padding=1, ceil_mode=True)),
    ("avg", 2, dict(stride=2, ceil_mode=True)),                 # the overhang never counts
    ("avg", 3, dict(stride=1, dilation=2)),
]
#: on the 2x3 and 1x1 planes no window lies wholly inside: every output is a border one
TINY = [("max", 3, dict(stride=1, padding=1)), ("avg", 3, dict(stride=1, padding=1)),
        ("avg", 3, dict(stride=1, padding=1, count_include_pad=False))]


def pools_graph(c: int = 8):
    """Every geometry between two convs (blocked at opt 2: the pools read and write NCHW[V]c) and
    on the graph's input (NCHW), plus the tiny planes and an Lp pool (NCHW only)."""
    outs, first = [], None
    for name, (h, w), cases in (("x", (9, 11), GEOMETRIES), ("t", (2, 3), TINY + [("max", 2, dict(ceil_mode=True))]),
                                ("u", (1, 1), TINY)):
        x = first = dsl.input(name, (N, c, h, w), like=first)
        conv = dsl.conv2d(x, c, 3, padding=1, name=f"{name}_conv")   # a narrow 1x1 on the NCHW input would stay NCHW
        for i, (kind, k, kw) in enumerate(cases):
            pool = getattr(dsl, f"{kind}_pool2d")
            # read by a conv: the pool writes NCHW[V]c too (a graph output is NCHW)
            outs.append(dsl.conv2d(pool(conv, k, name=f"{name}_blocked{i}", **kw), c, 1, name=f"{name}_out{i}"))
            outs.append(pool(x, k, name=f"{name}_nchw{i}", **kw))
    x = dsl.input("lp", (N, c, 9, 11), like=first)
    outs += [dsl.lp_pool2d(x, 2.0, 2, name="lp2"), dsl.lp_pool2d(x, 3.0, 3, stride=2, ceil_mode=True, name="lp3")]
    return dsl.graph(*outs, name="pools")


def test_interior_ranges():
    # 3x3, stride 1, pad 1 on 28: outputs 1..26 have their window inside
    assert c_pool.interior(28, 1, 1, 3, 1, 28) == (1, 27)
    # 3x3 stride 2 ceil mode 112 -> 56: the last window overhangs
    assert c_pool.interior(56, 2, 0, 3, 1, 112) == (0, 55)
    # dilation 2, pad 2: taps h0, h0 + 2, h0 + 4
    assert c_pool.interior(9, 1, 2, 3, 2, 9) == (2, 7)
    # nothing inside: a 3-tap window on 2 rows
    assert c_pool.interior(2, 1, 1, 3, 1, 2) == (0, 0)


@needs_cc
@pytest.mark.parametrize("opt,layout", [(0, "auto"), (2, "blocked")])   # opt 2 blocked runs NCHW pools too
def test_pool_kernels_match_the_reference(opt, layout, monkeypatch):
    monkeypatch.setenv("CNNCC_LAYOUT_BLOCK", "4")    # 8 channels: two blocks of 4
    g = pools_graph()
    mod = cnncc.compile(g, "c", opt, layout=layout)
    pools = [k for k in mod.program.kernels if k.family == "pool"]
    assert len(pools) == 2 * (len(GEOMETRIES) + 2 * len(TINY) + 1) + 2    # none fused away
    blocked = [k for k in pools if k.inputs[0].block]
    # the 1x1 planes stay NCHW in either layout (one position per channel)
    assert len(blocked) == (len(GEOMETRIES) + len(TINY) + 1 if opt == 2 else 0)
    plans = {k.name: c_pool.plan(k) for k in pools}
    x0 = plans["x_blocked0"]
    assert (x0.OH_LO, x0.OH_HI, x0.OW_LO, x0.OW_HI) == (1, 8, 1, 10) and not plans["u_nchw0"].interior
    assert plans["x_nchw0"].along_row and plans["x_nchw6"].along_row     # border rows along the row too
    assert_matches_reference(g, mod, batches=(1, 2), rtol=1e-5)

    # a NaN anywhere in a window makes a max pool's output NaN (numpy), in the interior and on borders
    rng = np.random.default_rng(1)
    feeds = {name: rng.standard_normal((2, *shape[1:])).astype(np.float32)
             for name, shape in (("x", (N, 8, 9, 11)), ("t", (N, 8, 2, 3)), ("u", (N, 8, 1, 1)), ("lp", (N, 8, 9, 11)))}
    feeds["x"][0, 1, 4, 5] = feeds["x"][1, 6, 0, 0] = feeds["t"][0, 3, 1, 2] = np.nan
    got, want = mod(feeds), list(cnncc.reference(g, feeds).values())
    for name, ref in zip(g.outputs, want):
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=name)   # outputs O(1-5): 3x3 sums of 72 terms
    assert np.isnan(got["x_out0"][0, :, 3:6, 4:7]).all() and np.isnan(got["x_nchw0"][1, 6, :2, :2]).all()
