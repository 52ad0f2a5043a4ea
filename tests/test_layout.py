"""The blocked activation layout NCHW[V]c (passes/layout.py, docs/cpu.md "Blocked layout"): which
tensors the pass blocks and where it puts reorders (and why) on a tiny graph, no compile; then the
blocked kernels against the numpy reference, on a graph that meets every kernel with a blocked
form (and one without), and on examples at small sizes."""
from __future__ import annotations

import dataclasses
import re
import shutil

import pytest

import cnncc
from cnncc import N
from cnncc.codegen import c_conv
from cnncc.codegen.target import CTarget
from cnncc.frontends import dsl
from cnncc.passes import optimize
from cnncc.runtime.cpu import host_target

from helpers import assert_matches_reference
from test_codegen_c import check, example_graph
from test_winograd import EXAMPLES

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
pytestmark = pytest.mark.usefixtures("shared_kernel_cache")


def tiny(c: int = 8):
    """conv (3-channel image in) -> conv + residual add + relu + 2x2 max pool -> a concat of two
    branches (conv, max pool) -> grouped conv of 2 channels a group (no blocked kernel) ->
    depthwise conv (NCHW in, blocked out), and 1x1 conv -> 3x3 conv -> elementwise -> global pool,
    and a second head that flattens a blocked tensor into a dense layer."""
    x = dsl.input("x", (N, 3, 12, 12))
    a = dsl.relu(dsl.conv2d(x, c, 3, padding=1, name="c1"), name="a")
    b = dsl.conv2d(a, c, 3, padding=1, name="c2")
    s = dsl.max_pool2d(dsl.relu(dsl.add(b, a, name="res"), name="s"), 2, stride=2, name="pool")
    left = dsl.conv2d(s, c, 1, name="left")
    right = dsl.max_pool2d(s, 3, stride=1, padding=1, name="right")
    cat = dsl.concat([left, right], name="cat")
    gc = dsl.conv2d(cat, 2 * c, 3, padding=1, groups=c, name="gc")
    dw = dsl.conv2d(gc, 2 * c, 3, padding=1, groups=2 * c, name="dw")
    pw = dsl.conv2d(dw, c, 3, padding=1, name="pw")     # 3x3: a narrow 1x1 here would stay NCHW (the next test)
    mix = dsl.conv2d(cat, c, 1, name="mix")
    e = dsl.sigmoid(dsl.mul(pw, mix, name="sq"), name="e")
    g1 = dsl.global_avg_pool(e, name="gap")
    head = dsl.dense(dsl.flatten(pw, name="flat"), 12, name="fc")
    return dsl.graph(g1, head, name="tiny")


def test_the_pass_blocks_conv_chains_and_reorders_only_at_kernels_without_a_blocked_form():
    g = optimize(tiny(), 2, layout_vector=4)
    lay = g.layout
    assert lay.vector == 4
    producer = {m.name: n.name for n in g if n.op == "fused" for m in n.members}
    name = lambda t: producer.get(t, t)    # noqa: E731  (the fused group that now produces t)
    blocked = set(lay.blocked)
    # conv chains, the fused residual + pool, concat of blocked parts, pool, elementwise: blocked
    for t in ("a", "pool", "left", "right", "cat", "dw", "pw", "mix", "e"):
        assert name(t) in blocked, (t, sorted(blocked))
    # the 3-channel image, the grouped conv's output (its rows kernel is NCHW) and outputs: NCHW
    assert "x" not in blocked and name("gc") not in blocked
    assert not blocked & set(g.outputs)
    # one reorder before the grouped conv, one before flatten (-> dense); each says why
    assert len(lay.reorders) == 2, lay.reorders
    gc = [r for r in lay.reorders if name("gc") in r.consumers]
    assert gc and gc[0].tensor == name("cat") and "grouped convolution (groups 8, 2 -> 2 channels a group" in gc[0].reason
    flat = [r for r in lay.reorders if "flat" in r.consumers]
    assert flat and flat[0].tensor == name("pw") and "view" in flat[0].reason
    for r in lay.reorders:
        node = g[r.node]
        assert node.op == "reorder" and node.attrs == {"to": "nchw", "vector": 4} and node.inputs == [r.tensor]
    # the pass table says what it did
    rec = g.pass_report["layout"]
    assert rec.counts["reorders to NCHW"] == 2 and rec.counts["tensors NCHW4c"] == len(blocked)


def test_the_pass_keeps_nchw_without_a_vector_width_and_where_nobody_reads_blocked():
    g = optimize(tiny(), 2)
    assert g.layout.vector == 0 and not g.layout.blocked and not any(n.op == "reorder" for n in g)
    # C % V != 0 everywhere: nothing blocked, no reorder
    g = optimize(tiny(c=5), 2, layout_vector=4)
    assert not g.layout.blocked and not g.layout.reorders
    # a conv whose only reader has no blocked form writes NCHW (no reorder for nothing)
    x = dsl.input("x", (N, 8, 6, 6))
    y = dsl.conv2d(dsl.conv2d(x, 8, 3, padding=1, name="k"), 8, 3, padding=1, groups=4, name="gc")
    g = optimize(dsl.graph(y), 2, layout_vector=4)
    assert not g.layout.blocked and not g.layout.reorders
    # blocks of 1 channel (CNNCC_LAYOUT_BLOCK=1): the depthwise kind needs 2 lanes, so such a conv
    # keeps NCHW (the rows kernel has no blocked form), and what feeds it writes NCHW too
    x = dsl.input("x", (N, 8, 6, 6))
    y = dsl.conv2d(dsl.conv2d(x, 8, 3, padding=1, name="k"), 8, 3, padding=1, groups=8, name="dw")
    g = optimize(dsl.graph(y), 2, layout_vector=1)
    assert not g.layout.blocked and not g.layout.reorders


@needs_cc
def test_blocked_kernels_match_the_reference(monkeypatch):
    """Every blocked kernel once, with V = 4 (so small channel counts block) on this machine's tiles."""
    monkeypatch.setenv("CNNCC_LAYOUT_BLOCK", "4")
    g = tiny()
    mod = cnncc.compile(g, "c", 2, layout="blocked")
    assert mod.report["graph"].layout.vector == 4 and len(mod.report["graph"].layout.reorders) == 2
    check(g, mod, batches=(2,))
    monkeypatch.delenv("CNNCC_LAYOUT_BLOCK")
    g16 = tiny(c=16)      # the machine's own vector width: 16 on AVX-512, 8 on AVX2 (both block)
    mod = cnncc.compile(g16, "c", 2, layout="blocked")
    opt = mod.report["graph"]
    assert opt.layout.blocked and opt.layout.reorders
    kinds = {c_conv.plan(k, host_target()).kind for k in mod.program.kernels if k.family == "conv"}
    assert {"channels", "rows", "depthwise"} <= kinds and "pixels" not in kinds   # 1x1 convs: channels kind, blocked
    text = "\n".join(src for _, src, _ in mod.kernels)
    assert "read in place" in text and "reorder" in text
    check(g16, mod, batches=(1, 3))


c_in_wide = 8


def rowtile_zoo(c: int = c_in_wide, wide: int = 10):
    """Convolutions that read an NCHW[V]c input in place (c_conv's rowtiles kind), one awkward
    geometry each: rows longer than a tile with edge tiles at both ends and a shorter last tile,
    stride 2, dilation 2, several channel blocks (grouped by weight size, or block by block), a window taller and wider than the input plus padding (every tile an edge
    tile, rows with kernel rows in the border at both ends), a partial channel block, a residual
    operand, an NCHW output (read by a grouped conv), and fused max / avg pools computed in
    bands (the avg pool's epilogue after it)."""
    x = dsl.input("x", (N, 3, 9, 37))
    a = dsl.relu(dsl.conv2d(x, c, 3, padding=1, name="c1"), name="a")        # NCHW in, blocked out
    outs = [dsl.conv2d(a, c + 4, 3, padding=1, name="edges"),                 # 37 = tiles of P + a shorter one
            dsl.conv2d(a, 2 * c, 3, stride=2, padding=1, name="stride2"),
            dsl.conv2d(a, c, 3, padding=2, dilation=2, name="dilated"),
            dsl.conv2d(a, c, (11, 5), padding=(5, 2), name="tall"),
            dsl.conv2d(a, wide * c, 1, name="wide"),                              # several channel blocks
            dsl.relu(dsl.add(dsl.conv2d(a, c, 3, padding=1, name="res"), a, name="resadd"), name="resrelu"),
            dsl.max_pool2d(dsl.relu(dsl.conv2d(a, 5 * c, 3, padding=1, name="mp")), 2, stride=2, name="mpool"),
            dsl.avg_pool2d(dsl.conv2d(a, 4 * c, 3, stride=(1, 2), name="ap"), 3, stride=2, ceil_mode=True,
                           name="apool")]
    gc = dsl.conv2d(dsl.conv2d(a, c, 1, name="to_nchw"), c, 3, padding=1, groups=c // 2, name="gc")
    return dsl.graph(*outs, gc, name="rowtiles")


@needs_cc
@pytest.mark.parametrize("vec_regs,chunked", [(None, True), (None, False), ((8, 16), True)],
                         ids=["native", "native-rows", "avx2-plan"])
def test_rowtile_convolutions_match_the_reference(monkeypatch, vec_regs, chunked):
    """chunked: these small planes are tasks of whole planes summed chunk by chunk (c_conv's KS);
    else (PLANE_BYTES = 0) tasks of rows."""
    monkeypatch.setenv("CNNCC_LAYOUT_BLOCK", "4")
    monkeypatch.setattr(c_conv, "ONE_GROUP_BYTES", 0)      # these tiny weights would make one group each
    monkeypatch.setattr(c_conv, "ROW_TASK_WEIGHT_BYTES", 0)   # planes of few blocks chunked too
    if not chunked:
        monkeypatch.setattr(c_conv, "PLANE_BYTES", 0)
    if vec_regs:     # and every channel block a group of its own: tasks run block by block
        monkeypatch.setenv("CNNCC_C_VECTOR", f"{vec_regs[0]},{vec_regs[1]}")
        monkeypatch.setattr(c_conv, "GROUP_WEIGHT_BYTES", 1)
    elif chunked:    # "wide" (1x1, 8 -> 80: 5 blocks of 16) in groups of 3 would leave the last one
        # short: whole-plane tasks take a group per block instead (c_conv._rowtiles)
        monkeypatch.setattr(c_conv, "GROUP_WEIGHT_BYTES", 2 * 4 * c_in_wide * 32)
        # (its flat plane's own rule, c_conv._choose_flat, would take 2 blocks of 48: test_small_planes's)
        monkeypatch.setattr(c_conv, "_choose_flat",
                            lambda c_out, ow, vec, regs, threads, fpl: c_conv._choose_row(c_out, ow, vec, regs, threads))
    else:            # row tasks: "wide" (1x1, 8 -> 224: 7 blocks of 32) in groups of 3, the last one short
        monkeypatch.setattr(c_conv, "GROUP_WEIGHT_BYTES", 3 * 4 * c_in_wide * 32)
    host_target.cache_clear()
    try:
        g = rowtile_zoo(wide=10 if chunked else 28)
        mod = cnncc.compile(g, "c", 2, layout="blocked", conv_algorithm="direct")
        target = host_target()
        plans = {k.name: c_conv.plan(k, target) for k in mod.program.kernels if k.family == "conv"}
        rows = {n: b for n, b in plans.items() if b.kind == "rowtiles"}
        assert len(rows) >= 8, sorted((n, b.kind) for n, b in plans.items())
        assert any(len(b.tiles) >= 3 for b in rows.values())        # left edge, middle, right edge
        assert any(b.NBAND > 1 for b in rows.values())              # pool bands and their seams
        assert any(b.tiles[r.fn].pixels < b.P for b in rows.values() for r in b.runs)   # a shorter last tile
        assert any((b.CBG > 1) if not vec_regs else (b.NCB > 1 and b.CBG == 1) for b in rows.values()) \
            or (chunked and not vec_regs)
        assert all(bool(b.KS) == chunked for b in rows.values() if b.NBAND == 0), [(n, b.KS) for n, b in rows.items()]
        if chunked:        # whole-plane tasks: never a short last group (test_whole_plane_tasks_...)
            assert all(b.NCB % b.CBG == 0 for b in rows.values()), [(n, b.NCB, b.CBG) for n, b in rows.items()]
            if not vec_regs and rows["wide"].COB == 16:
                assert rows["wide"].NCB > 1 and rows["wide"].CBG == 1, rows["wide"]
        elif not vec_regs:
            assert rows["wide"].COB == 32 and rows["wide"].NCB % rows["wide"].CBG, rows["wide"]
        check(g, mod, batches=(1, 2))
    finally:
        host_target.cache_clear()


def test_groups_of_whole_channel_blocks_are_blocked():
    """A grouped convolution whose groups are whole blocks (input channels a group a multiple of
    the block, output channels a group of the kernels' register) is blocked like an ungrouped
    one; with a block smaller than the register (CNNCC_LAYOUT_BLOCK) groups of fewer output
    channels than a register keep NCHW and say why."""
    x = dsl.input("x", (N, 3, 8, 8))
    a = dsl.relu(dsl.conv2d(x, 32, 3, padding=1, name="k"), name="a")
    gc = dsl.relu(dsl.conv2d(a, 32, 3, padding=1, groups=4, name="gc"), name="gr")    # 8 -> 8 a group
    g = dsl.graph(dsl.conv2d(gc, 16, 3, padding=1, name="after"), dsl.conv2d(a, 16, 3, padding=1, name="beside"),
                  name="grouped")
    opt = optimize(g, 2, layout_vector=8)
    producer = {m.name: n.name for n in opt if n.op == "fused" for m in n.members}
    assert {producer["a"], producer["gr"]} <= set(opt.layout.blocked) and not opt.layout.reorders
    opt = optimize(g, 2, layout_vector=8, layout_register=16)     # AVX-512 registers, blocks of 8
    assert producer["gr"] not in opt.layout.blocked
    why = [r.reason for r in opt.layout.reorders if producer["gr"] in r.consumers]
    assert why and "groups 4, 8 -> 8 channels a group: not whole blocks of 8 in and 16 out" in why[0], why


@needs_cc
@pytest.mark.parametrize("block", [None, "4"], ids=["native", "block4"])
def test_reorders_to_nchw_write_whole_runs_and_match_the_reference(monkeypatch, block):
    """A reorder to NCHW goes V positions at a time through a V x V tile, so each channel's run is
    written whole (U-Net's 16 x 4096 skip: 0.277 -> 0.043 ms); planes that are not whole tiles end
    position by position. Here 16 x 13 = 208 positions (whole tiles at V = 4, 8, 16) and 7 x 7 = 49
    (one left over), each read by a grouped convolution of 2 channels a group (no blocked form)."""
    if block:
        monkeypatch.setenv("CNNCC_LAYOUT_BLOCK", block)
    x = dsl.input("x", (N, 3, 16, 13))
    a = dsl.relu(dsl.conv2d(x, 16, 3, padding=1, name="a"), name="ar")
    b = dsl.conv2d(a, 16, (3, 1), stride=2, name="b")                        # 7 x 7
    outs = [dsl.conv2d(t, 16, 3, padding=1, groups=8, name=f"g_{t}") for t in (a, b)]
    g = dsl.graph(*outs, dsl.conv2d(b, 16, 1, name="bb"), name="reorders")
    mod = cnncc.compile(g, "c", 2, layout="blocked")
    lay = mod.report["graph"].layout
    assert len(lay.reorders) == 2, lay.reorders
    text = {name: src for name, src, _ in mod.kernels}
    whole = next(src for src in text.values() if "x 208 positions NCHW" in src)
    part = next(src for src in text.values() if "x 49 positions NCHW" in src)
    assert "for (long q0 = 0; q0 < 208;" in whole and "one at a time" not in whole
    assert "for (long q0 = 0; q0 < 48;" in part and "for (long q = 48; q < 49; ++q)" in part
    check(g, mod, batches=(1, 2))


def grouped_zoo(c: int = 96):
    """Grouped convolutions whose groups are whole channel blocks (c_conv.grouped_in_place), one
    awkward case each (on AVX-512's 16 lanes and AVX2's 8): stride 2 on odd sizes, a residual
    operand, a taller-than-wide dilated window, a 1x1 (a flat plane when chunked), and an NCHW
    output (a graph output); groups of 16, 32, 48 channels (blocks of 1 to 3 vectors)."""
    x = dsl.input("x", (N, 3, 9, 37))
    a = dsl.relu(dsl.conv2d(x, c, 3, padding=1, name="stem"), name="a")     # NCHW in, blocked out
    s2 = dsl.relu(dsl.conv2d(a, c, 3, stride=2, padding=1, groups=c // 16, name="g_s2"), name="s2")
    res = dsl.relu(dsl.add(dsl.conv2d(a, c, 3, padding=1, groups=c // 32, name="g_res"), a, name="gadd"), name="rr")
    dil = dsl.conv2d(a, c, (3, 5), padding=(2, 2), dilation=(2, 1), groups=2, name="g_dil")
    one = dsl.conv2d(a, 2 * c, 1, groups=c // 32, name="g_1x1")
    out = dsl.conv2d(a, c // 2, 3, padding=1, groups=c // 32, name="g_out")     # 32 -> 16 a group, NCHW out
    after = [dsl.conv2d(t, 16, 3, padding=1, name=f"after_{t}") for t in (s2, res, dil, one)]
    return dsl.graph(*after, out, name="grouped")


@needs_cc
@pytest.mark.parametrize("case", ["native", "native-rows", "avx2-plan", "block4"])
def test_grouped_convolutions_of_whole_blocks_read_their_groups_in_place(monkeypatch, case):
    """Each block reads its group's input blocks from the NCHW[V]c input as it is (the rowtiles
    kind, its input pointer at the group's first block); every output matches the reference.
    native-rows: tasks of rows (PLANE_BYTES = 0) rather than chunked planes; block4: NCHW4c
    activations (CNNCC_LAYOUT_BLOCK=4) under 16- or 8-float registers, 4 to 12 input blocks a group."""
    if case == "avx2-plan":
        monkeypatch.setenv("CNNCC_C_VECTOR", "8,16")
    if case == "block4":
        monkeypatch.setenv("CNNCC_LAYOUT_BLOCK", "4")
    if case == "native-rows":
        monkeypatch.setattr(c_conv, "PLANE_BYTES", 0)
    host_target.cache_clear()
    try:
        g = grouped_zoo()
        mod = cnncc.compile(g, "c", 2, layout="blocked", conv_algorithm="direct")
        target = host_target()
        plans = {k.name: (k, c_conv.plan(k, target)) for k in mod.program.kernels if k.family == "conv"}
        grouped = {n: b for n, (k, b) in plans.items() if k.geometry["groups"] > 1}
        assert len(grouped) == 5 and all(b.kind == "rowtiles" for b in grouped.values()), grouped
        assert all(c_conv.grouped_in_place(k, target.vector_floats) for k, _ in plans.values() if k.geometry["groups"] > 1)
        assert any(b.V > 1 for b in grouped.values())                     # blocks of several vectors in a group
        assert all(bool(b.KS) == (case != "native-rows") for b in grouped.values() if not b.flat)
        out = next(k for n, (k, b) in plans.items() if n.startswith("g_out"))
        assert out.inputs[0].block and not out.output.block
        text = "\n".join(src for _, src, _ in mod.kernels)
        assert "Blocks never straddle groups" in text and "the group's first input block" in text
        check(g, mod, batches=(1, 2))
    finally:
        host_target.cache_clear()


def depthwise_zoo(c: int = 8):
    """Depthwise convolutions in NCHW[V]c (c_conv's depthwise kind), one awkward case each: an NCHW
    input (the graph's, transposed into lanes) with ReLU6, stride 2 on odd sizes, dilation 2 with a
    blocked residual operand, a 5x5 window on rows of several tiles and a short last one into an
    NCHW output (a graph output), and one with a fused max pool (no blocked form: rows kind after
    a reorder)."""
    x = dsl.input("x", (N, c, 9, 37))
    d0 = dsl.relu6(dsl.conv2d(x, c, 3, padding=1, groups=c, name="dw_in"), name="d0")   # NCHW in, blocked out
    a = dsl.conv2d(d0, c, 1, name="a")
    s2 = dsl.conv2d(a, c, 3, stride=2, padding=1, groups=c, name="dw_s2")
    dil = dsl.relu(dsl.add(dsl.conv2d(a, c, 3, padding=2, dilation=2, groups=c, name="dw_dil"), a, name="dres"),
                   name="drelu")
    out5 = dsl.conv2d(a, c, 5, padding=2, groups=c, name="dw_out")                          # blocked in, NCHW out
    pooled = dsl.max_pool2d(dsl.conv2d(a, c, 3, padding=1, groups=c, name="dw_pool"), 2, stride=2, name="dpool")
    return dsl.graph(dsl.conv2d(s2, c, 1, name="after_s2"), dsl.conv2d(dil, c, 3, padding=1, name="after_dil"),
                     out5, dsl.conv2d(pooled, c, 1, name="after_pool"), name="depthwise")


@needs_cc
@pytest.mark.parametrize("vec_regs", [None, (8, 16)], ids=["native", "avx2-plan"])
def test_depthwise_convolutions_in_channel_blocks_match_the_reference(monkeypatch, vec_regs):
    monkeypatch.setenv("CNNCC_LAYOUT_BLOCK", "4")
    monkeypatch.setattr(c_conv, "DEPTHWISE_BAND_BYTES", 4 * 1024)    # several bands of rows, and their seams
    if vec_regs:
        monkeypatch.setenv("CNNCC_C_VECTOR", f"{vec_regs[0]},{vec_regs[1]}")
    host_target.cache_clear()
    try:
        g = depthwise_zoo()
        mod = cnncc.compile(g, "c", 2, layout="blocked")
        target = host_target()
        specs = {k.name: k for k in mod.program.kernels if k.family == "conv"}
        kinds = {n: c_conv.plan(k, target).kind for n, k in specs.items()}
        dw = {n: c_conv.plan(k, target) for n, k in specs.items() if kinds[n] == "depthwise"}
        first = lambda pre: next(n for n in specs if n.startswith(pre))    # noqa: E731
        assert set(dw) == {first(p) for p in ("dw_in", "dw_s2", "dw_dil", "dw_out")}, kinds
        assert kinds[first("dw_pool")] == "rows"
        assert not specs[first("dw_in")].inputs[0].block and specs[first("dw_in")].output.block == 4
        assert specs[first("dw_out")].inputs[0].block == 4 and not specs[first("dw_out")].output.block
        assert any(b.NBAND > 1 for b in dw.values()) and any(37 % b.P for b in dw.values())
        assert "reorder" in "\n".join(src for _, src, _ in mod.kernels)   # before the pooled one
        check(g, mod, batches=(1, 2))
    finally:
        host_target.cache_clear()


def test_whole_plane_tasks_split_evenly_over_the_threads():
    """A small plane's tasks are whole planes (no rows in the task loop): channel blocks in groups
    with a short last group would leave the empty slots to the last thread of the static split.
    Inception-v3's 1x1 1280->448 on 8x8 on AVX-512: 7 blocks of 64 in groups of 3 ran 5 blocks on
    one thread and 2 on the other (0.54 ms; a group per block 0.39 ms, 2-core Zen 4)."""
    from cnncc.codegen.lower import lower_program
    from cnncc.codegen.target import CTarget

    x = dsl.input("x", (N, 64, 8, 8))
    y = dsl.conv2d(dsl.conv2d(x, 1280, 1, name="pre"), 448, 1, name="k")
    g = dsl.graph(dsl.conv2d(y, 64, 1, name="post"), name="mixed7b")
    spec = next(k for k in lower_program(optimize(g, 2, layout_vector=16)).kernels if k.name.startswith("k"))
    for target in (CTarget("avx512", 16, 32, threads=2), CTarget("avx2", 8, 16, threads=2)):
        b = c_conv.plan(spec, target)
        assert b.kind == "rowtiles" and b.KS and b.NCB > 1 and b.NCB % b.CBG == 0, (target.isa, b.NCB, b.CBG)


@needs_cc
def test_small_planes_run_chunk_by_chunk(monkeypatch):
    """Small planes (c_conv's KS): a block's whole plane summed chunk by chunk of input channels,
    the weights prefetched ahead (a slice before each tile of a flat row), a last chunk shorter than the rest, a 1x1 plane tiled as one
    row (flat), a residual operand and a stride-2 1x1."""
    monkeypatch.setenv("CNNCC_LAYOUT_BLOCK", "4")
    real = c_conv._chunk
    monkeypatch.setattr(c_conv, "_chunk", lambda spec, COB, XB: min(5, real(spec, COB, XB)))   # 12 blocks: 5 + 5 + 2
    monkeypatch.setattr(c_conv, "PREFETCH_CHUNKS", 1)
    monkeypatch.setattr(c_conv, "ROW_TASK_WEIGHT_BYTES", 0)   # planes of few blocks chunked too
    host_target.cache_clear()
    try:
        x = dsl.input("x", (N, 48, 6, 7))
        a = dsl.relu(dsl.conv2d(x, 48, 3, padding=1, name="k0"), name="ka")                 # NCHW in, blocked out
        b = dsl.relu(dsl.conv2d(a, 48, 3, padding=1, name="k3"), name="kb")                 # 3x3, chunked
        c = dsl.relu(dsl.add(dsl.conv2d(b, 48, 1, name="k1"), a, name="kres"), name="kc")  # 1x1 flat + residual
        d = dsl.conv2d(c, 20, 1, stride=2, name="ks2")
        e = dsl.conv2d(c, 128, 1, name="kwide")                                             # flat, its own tile rule
        g = dsl.graph(d, e, name="chunked")
        mod = cnncc.compile(g, "c", 2, layout="blocked", conv_algorithm="direct")
        plans = {k.name: c_conv.plan(k, host_target()) for k in mod.program.kernels if k.family == "conv"}
        chunked = {n: b for n, b in plans.items() if b.kind == "rowtiles" and b.KS}
        assert len(chunked) == 4 and all(1 < b.KS < 12 and b.PF == 1 for b in chunked.values()), plans
        assert any(12 % b.KS for b in chunked.values())
        assert sum(b.flat for b in chunked.values()) == 2
        t = host_target()
        assert (plans["kwide"].V, plans["kwide"].P) == c_conv._choose_flat(
            128, 42, t.vector_floats, t.vector_registers, t.threads, c_conv._fma_per_load(t))
        # a flat plane's row holds several tiles: each prefetches its slice of the chunk ahead
        flat = next(src for name, src, _ in mod.kernels if name.startswith("k1"))
        assert "this tile's slice of the weights" in flat and "a slice per row" not in flat
        check(g, mod, batches=(1, 2))
    finally:
        host_target.cache_clear()


def test_flat_planes_keep_the_fma_units_busy_with_blocks_for_every_thread():
    """c_conv._choose_flat on ResNet-50's 7x7 and 14x14 1x1 layers (AVX-512: 32 registers of 16
    floats, 2 threads): 4 weight vectors x 6 pixels (10 loads per 24 FMAs) rather than the row
    rule's 2 x 13 (15 per 26); every tile fits the registers; a single block would idle a thread.
    Where loads keep up with the FMAs anyway (Zen 4's AVX-512: half an FMA a load), blocks that
    split evenly over the threads win: Inception-v3's 1280->448 on 8x8 takes 14 blocks of 32
    channels, not 7 of 64; GoogLeNet's 512->160 ten of 16, not 4 of 48 (a third of one padding)."""
    for fpl in (1.0, 0.5):
        for c_out in (256, 512, 1024, 2048):
            for plane in (49, 196):
                assert c_conv._choose_flat(c_out, plane, 16, 32, 2, fpl) == (4, 6)
        for vec, regs in ((16, 32), (8, 16)):
            V, P = c_conv._choose_flat(256, 49, vec, regs, 2, fpl)
            assert V * P + V + 1 <= regs and 4 * V * P >= 3 * (regs - 4)
        assert c_conv._choose_flat(48, 42, 16, 32, 2, fpl)[0] == 2      # 3 x 16 would be one block: one thread
        assert c_conv._choose_flat(448, 64, 16, 32, 2, fpl) == (2, 13)  # 7 blocks of 64 split 4 + 3
    for fpl in (1.0, 0.5):   # 29 loads per 28 FMAs: (nearly) FMA-bound, and 10 blocks split evenly
        assert c_conv._choose_flat(160, 196, 16, 32, 2, fpl) == (1, 28)
    zen4 = CTarget("avx512", 16, 32, threads=2, fma_flops=32)
    assert c_conv._fma_per_load(zen4) == 0.5 and c_conv._fma_per_load(CTarget("avx2", 8, 16)) == 1.0


def test_small_plane_rows_count_accumulators_and_loads_by_the_cores_fma_rate():
    """c_conv._choose_row for chunked planes (tasks are whole channel blocks at batch 1): where a
    core runs half an FMA per load (Zen 4's AVX-512) half the accumulators hide the latency, so
    blocks that split evenly over 2 threads win over big tiles in few blocks: Inception-v4's 7x1
    224->224 on 17-wide rows takes 1 x 17 (14 blocks) rather than 3 x 9 (5 blocks of 48), and
    DenseNet's 3x3 128->32 on 7x7 two vectors (one block of 32) rather than four (half padding).
    With two FMA units per two loads 16 accumulators are enough (c_conv.ACC_ENOUGH): the same
    1 x 17 (Inception-v4's 7x1 layers at batch 1 on a 2-core Xeon: 0.58 -> 0.45 ms), and U-Net's
    64-channel 16-wide rows 2 x 8 (two full blocks of 32) rather than 3 x 8 (two blocks of 48, a
    third of them padding: 0.53 -> 0.37 ms at batch 8). Ties keep the larger tile (4 x 7 on
    ResNet's 512-channel 7x7 layers)."""
    for fpl in (1.0, 0.5):
        assert c_conv._choose_row(224, 17, 16, 32, 2, fpl) == (1, 17)
        assert c_conv._choose_row(64, 16, 16, 32, 2, fpl) == (2, 8)
    assert c_conv._choose_row(32, 7, 16, 32, 2, 0.5) == (2, 7)
    assert c_conv._choose_row(384 - 128, 8, 16, 32, 2, 0.5) == (2, 8)       # 8 blocks, not 6 of 48
    for fpl in (1.0, 0.5):
        assert c_conv._choose_row(512, 7, 16, 32, 2, fpl) == (4, 7)
        assert c_conv._choose_row(512, 7, 16, 32, 1, fpl) == (4, 7)
    for c_out in (64, 96, 224, 448):      # AVX2: every tile fits the 16 registers
        V, P = c_conv._choose_row(c_out, 17, 8, 16, 2, 1.0)
        assert V * P + V + 1 <= 16


@needs_cc
def test_a_plane_with_fewer_channel_blocks_than_threads_runs_in_row_tasks(monkeypatch):
    """GoogLeNet's 1x1 192->16 on 28x28: one channel block, so whole-plane tasks (a chunked small
    plane) ran on one thread at batch 1; with its 12 KiB of weights it runs in row tasks instead
    (0.046 -> 0.030 ms on 2-core Zen 4). DenseNet's 3x3 128->32 on 7x7 (147 KiB a block) stays
    chunked: every row would re-read its weights. Both match the reference on 2 threads."""
    import cnncc.runtime.cpu as cpu
    x = dsl.input("x", (N, 32, 28, 28))
    a = dsl.relu(dsl.conv2d(x, 192, 1, name="a"), name="ar")
    b = dsl.relu(dsl.conv2d(a, 16, 1, name="few"), name="fr")
    c = dsl.max_pool2d(dsl.conv2d(a, 128, 1, name="c"), 4, name="cp")                       # 7x7
    d = dsl.relu(dsl.conv2d(c, 32, 3, padding=1, name="heavy"), name="hr")
    g = dsl.graph(b, d, name="few_blocks")
    two = dataclasses.replace(host_target(), threads=2)
    monkeypatch.setattr(cpu, "host_target", lambda: two)
    mod = cnncc.compile(g, "c", 2, layout="blocked", conv_algorithm="direct", threads=2)
    plans = {k.name.split("_")[0]: c_conv.plan(k, two) for k in mod.program.kernels if k.family == "conv"}
    assert plans["few"].kind == "rowtiles" and plans["few"].KS == 0 and not plans["few"].flat, plans["few"]
    assert plans["heavy"].kind == "rowtiles" and plans["heavy"].KS, plans["heavy"]
    check(g, mod, batches=(1, 2))


@needs_cc
def test_a_narrow_1x1_after_a_grouped_conv_stays_nchw():
    """A 1x1 convolution reading a grouped convolution's output (NCHW: 4 channels a group) keeps
    NCHW when it has few outputs (the pixels GEMM, no blocked copy), and is blocked when it has many."""
    x = dsl.input("x", (N, 32, 12, 12))
    e = dsl.relu(dsl.conv2d(x, 64, 1, name="expand"), name="e")
    d = dsl.relu(dsl.conv2d(e, 64, 3, padding=1, groups=16, name="gc"), name="d")
    narrow = dsl.add(dsl.conv2d(d, 32, 1, name="project"), x, name="res")
    wide = dsl.conv2d(d, 256, 1, name="wide1x1")
    g = dsl.graph(dsl.conv2d(narrow, 32, 3, padding=1, name="after"), dsl.conv2d(wide, 16, 3, padding=1, name="after2"),
                  name="grouped_then_1x1")
    mod = cnncc.compile(g, "c", 2, layout="blocked")
    blocked = mod.report["graph"].layout.blocked
    fused = {n.members[0].name: n.name for n in mod.report["graph"] if n.op == "fused"}
    assert fused.get("project", "project") not in blocked and "wide1x1" in blocked
    kinds = {k.name: c_conv.plan(k, host_target()).kind for k in mod.program.kernels if k.family == "conv"}
    assert kinds[fused.get("project", "project")] == "pixels"
    check(g, mod, batches=(2,))


@needs_cc
@pytest.mark.parametrize("size", [10, 24], ids=["chunked", "rows"])
def test_a_1x1_after_a_grouped_conv_reads_nchw_in_place(size):
    """ResNeXt's conv3: a 1x1 convolution reading a grouped convolution's NCHW output (no blocked
    kernel for groups narrower than a vector) into an NCHW[V]c output with a residual add runs
    the rowtiles kind on the input as it is, NCHW1c (c_conv.nchw_in_place), not a channels-last
    copy: on a small plane chunk by chunk of input channels as one flat row, on a larger one row by row."""
    x = dsl.input("x", (N, 24, size, size))
    a = dsl.relu(dsl.conv2d(x, 256, 1, name="stem"), name="sa")
    b = dsl.relu(dsl.conv2d(a, 64, 1, name="conv1"), name="ba")
    gc = dsl.relu(dsl.conv2d(b, 64, 3, padding=1, groups=16, name="grouped"), name="ga")
    y = dsl.relu(dsl.add(dsl.conv2d(gc, 256, 1, name="conv3"), a, name="res"), name="ya")   # > POINTWISE_NCHW_MAX_COUT
    g = dsl.graph(dsl.conv2d(y, 32, 3, padding=1, name="next"), name="resnextish")
    mod = cnncc.compile(g, "c", 2, layout="blocked", conv_algorithm="direct")
    plans = {k.name: (k, c_conv.plan(k, host_target())) for k in mod.program.kernels if k.family == "conv"}
    spec, b = next(v for n, v in plans.items() if n.startswith("conv3"))
    assert not spec.inputs[0].block and spec.output.block and c_conv.nchw_in_place(spec)
    assert b.kind == "rowtiles" and b.XB == 1 and bool(b.KS) == (size == 10) and b.flat == (size == 10), b
    text = "\n".join(src for _, src, _ in mod.kernels)
    assert "The input is NCHW, read in place" in text
    check(g, mod, batches=(1, 2))


def wino(c: int = 64):
    """Winograd convolutions in blocked layout: plain (blocked out), and with a blocked residual
    operand and the 2x2 max pool fused into the output transform."""
    x = dsl.input("x", (N, c, 10, 10))
    a = dsl.relu(dsl.conv2d(x, c, 3, padding=1, name="w1"), name="wa")
    s = dsl.relu(dsl.add(dsl.conv2d(a, c, 3, padding=1, name="w2"), a, name="wres"), name="ws")
    p = dsl.max_pool2d(s, 2, stride=2, name="wpool")
    return dsl.graph(dsl.global_max_pool(dsl.conv2d(p, c, 3, padding=1, name="w3"), name="wgap"), name="wino")


@needs_cc
def test_winograd_reads_and_writes_blocked():
    g = wino()
    mod = cnncc.compile(g, "c", 2, layout="blocked", conv_algorithm="winograd")
    opt = mod.report["graph"]
    assert len(opt.layout.blocked) == 3 and not opt.layout.reorders
    kinds = {c_conv.plan(k, host_target(), "winograd").kind for k in mod.program.kernels if k.family == "conv"}
    assert kinds == {"winograd"}
    check(g, mod, batches=(2,))


def test_blocked_text_reads_like_a_person_wrote_it(tmp_path, monkeypatch):
    """Rendered for AVX-512 (no build): no `* 1`, no loop of one trip, no unused local (gcc -Wall);
    Winograd fused and in whole planes."""
    import subprocess

    from cnncc.codegen import c as c_render
    from cnncc.codegen import c_winograd
    from cnncc.codegen.lower import lower_program
    from cnncc.codegen.target import CTarget
    from test_generated_text import problems

    for g, algorithm in ((tiny(16), "auto"), (wino(), "winograd"), (wino(), "planes")):
        if algorithm == "planes":
            monkeypatch.setattr(c_winograd, "planes_pay", lambda g, m: True)
            algorithm = "winograd"
        program = lower_program(optimize(g, 2, layout_vector=16))
        program.conv_algorithm = algorithm
        src, _, _ = c_render.render(program, CTarget("avx512", 16, 32))
        assert not problems(src), problems(src)[:10]
        if shutil.which("gcc"):
            path = tmp_path / f"{g.name}_{algorithm}.c"
            path.write_text(src)
            r = subprocess.run(["gcc", "-std=gnu99", "-fopenmp", "-fsyntax-only", "-Wall", "-Wunused-variable",
                                "-Wunused-but-set-variable", "-Werror", str(path)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-3000:]


#: examples compiled blocked in CI (concat, concat elimination, depthwise reorders, Winograd + fused
#: pool); CNNCC_SLOW=1 runs every example
QUICK = ("resnet18", "googlenet", "densenet121", "mobilenet_v2", "vgg16")


def _example_cases():
    for path in sorted(p for p in EXAMPLES.glob("*.py") if "\ndef model(" in p.read_text()):
        marks = () if path.stem in QUICK else (pytest.mark.slow,)
        yield pytest.param(path, id=path.stem, marks=marks)


@needs_cc
@pytest.mark.parametrize("path", list(_example_cases()))
def test_example_blocked(path):
    g = example_graph(path)
    mod = cnncc.compile(g, "c", 2, layout="blocked")
    opt = mod.report["graph"]
    if path.stem in QUICK and path.stem != "mobilenet_v2":
        assert opt.layout.blocked, "nothing blocked"
    if path.stem == "mobilenet_v2":      # depthwise convolutions read and write NCHW[V]c (c_conv's depthwise
        # kind) where their planes have more than one position: at this small size the 2x2 ones
        dw = [n for n in opt if n.op == "fused" and n.members[0].attrs.get("groups", 1) > 1]
        big = [n for n in dw if int(n.type.shape[2]) * int(n.type.shape[3]) > 1 and int(n.type.shape[1]) % opt.layout.vector == 0]
        assert big and all(n.name in opt.layout.blocked and n.inputs[0] in opt.layout.blocked for n in big)
        kinds = {c_conv.plan(k, host_target()).kind for k in mod.program.kernels if k.family == "conv"
                 and k.geometry["groups"] > 1}
        assert "depthwise" in kinds, kinds
    if path.stem == "densenet121":
        assert any(n.placement.eliminated for n in opt if n.op == "concat" and n.name in opt.layout.blocked)
    assert_matches_reference(g, mod, (2,), against=(opt, g), rtol=1e-4)


MODEL = """
from cnncc import N
from cnncc.frontends import dsl


def model():
    x = dsl.input("x", (N, 16, 8, 8))
    a = dsl.relu(dsl.conv2d(x, 16, 3, padding=1, name="c1"), name="a")
    d = dsl.conv2d(a, 16, 3, padding=1, groups=8, name="gc")
    return dsl.graph(dsl.add(dsl.conv2d(a, 16, 3, padding=1, name="c2"), d, name="out"))
"""


def test_inspect_lists_every_reorder_and_why(capsys, tmp_path):
    from cnncc.cli import main

    path = tmp_path / "branch.py"
    path.write_text(MODEL)
    assert main(["inspect", str(path), "--layout", "blocked"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^layout\s+\d+ -> \d+\s+nodes .*1 reorders to NCHW", out, re.M)       # the pass table
    assert re.search(r"^layout: 1 tensors NCHW\d+c, 1 reorder\(s\) to NCHW$", out, re.M)
    assert re.search(r"^  c1_a__nchw: c1_a -> NCHW for gc: gc is a grouped convolution", out, re.M), out[-600:]
    assert main(["inspect", str(path), "--layout", "nchw"]) == 0
    assert "layout: every tensor NCHW" in capsys.readouterr().out
