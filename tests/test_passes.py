"""The pass manager and each pass on small DSL graphs built here: results never change, and each
pass does exactly its job (fold, fuse with the contract's chain shape, write concats in place,
plan memory without overlaps)."""
import numpy as np
import pytest
import sympy

import cnncc
from cnncc import N, ops
from cnncc.errors import CnnccError
from cnncc.frontends import dsl
from cnncc.passes import PIPELINES, optimize
from cnncc.passes.fuse import MAX_RECOMPUTE
from cnncc.passes.plan_memory import plan
from helpers import rel_err


def feed(g, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal([int(sympy.sympify(d).subs(N, batch)) for d in g[i].type.shape]).astype(np.float32)
            for i in g.inputs}


def outputs(g, x):
    """The graph's outputs keyed by their ORIGINAL names (passes may rename an output)."""
    env = cnncc.reference(g, x, keep_all=True)
    back = {new: old for old, new in g.renamed.items()}
    return {back.get(o, o): env[o] for o in g.outputs}


def assert_same_results(g, opt, tol=1e-5):
    x = feed(g)
    want, got = outputs(g, x), outputs(opt, x)
    assert set(want) == set(got)
    for k in want:
        assert rel_err(got[k], want[k], floor=1e-30) <= tol, k


def fused(g):
    return [n for n in g if n.op == "fused"]


# -- small models --------------------------------------------------------------------------------
def resnet_block(downsample=False, shortcut_first=False):
    x = dsl.input("x", (N, 8, 8, 8))
    h = dsl.relu(dsl.batch_norm(dsl.conv2d(x, 8, 3, padding=1, bias=False)))
    h = dsl.batch_norm(dsl.conv2d(h, 8, 3, padding=1, bias=False))
    s = dsl.batch_norm(dsl.conv2d(x, 8, 1, bias=False, name="down")) if downsample else x
    y = dsl.add(s, h, name="res") if shortcut_first else dsl.add(h, s, name="res")
    return dsl.graph(dsl.relu(y, name="out_relu"))


def conv_pool(kernel, stride, cin=2, k=1):
    x = dsl.input("x", (N, cin, 12, 12))
    return dsl.graph(dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 4, k, padding=k // 2)), kernel, stride=stride, name="pool"))


# -- manager ---------------------------------------------------------------------------------------
def test_levels_run_their_pipelines_and_keep_the_input_graph():
    g = resnet_block()
    before = str(g)
    for level, names in PIPELINES.items():
        opt = optimize(g, opt_level=level)
        assert opt.pass_report.names() == names
        assert_same_results(g, opt)
    assert str(g) == before


def test_opt0_does_not_rewrite_and_opt1_fuses_only_elementwise():
    g = resnet_block()
    o0 = optimize(g, opt_level=0)
    assert [n.op for n in o0] == [n.op for n in g]
    o1 = optimize(g, opt_level=1)
    assert fused(o1) and all(n.attrs["kind"] == "elementwise" for n in fused(o1))
    assert "batch_norm" not in {n.op for n in o1}


def test_passes_and_disable_override_the_pipeline():
    g = resnet_block()
    only = optimize(g, passes=["fold_batchnorm"])
    assert only.pass_report.names() == ["infer_shapes", "fold_batchnorm"] and not fused(only)
    no_fuse = optimize(g, disable=["fuse"])
    assert "fuse" not in no_fuse.pass_report.names() and not fused(no_fuse)
    with pytest.raises(CnnccError, match="unknown pass"):
        optimize(g, passes=["fold_everything"])


def test_records_time_counts_and_executable_snapshots():
    g = resnet_block()
    opt = optimize(g)
    rec = opt.pass_report["fold_batchnorm"]
    assert rec.nodes_before - rec.nodes_after == 2 and rec.counts == {"batch norms folded into weights": 2}
    assert all(r.seconds >= 0 for r in opt.pass_report)
    assert "fold_batchnorm" in str(opt.pass_report)
    x = feed(g)
    want = cnncc.reference(g, x)
    for r in opt.pass_report:
        assert rel_err(cnncc.reference(r.snapshot, x), want, floor=1e-30) <= 1e-5, r.name
    # an earlier snapshot does not change when later passes run
    assert not fused(opt.pass_report.snapshot("fold_batchnorm"))


# -- folding and dead code --------------------------------------------------------------------------
def test_batchnorm_folds_into_conv_dense_and_transposed_conv():
    x = dsl.input("x", (N, 4, 6, 6))
    y = dsl.batch_norm(dsl.layer("conv_transpose2d", [dsl.conv2d(x, 6, 3)],
                                 {"stride": 2}, {"weight": np.random.default_rng(1).standard_normal((6, 3, 3, 3))
                                                 .astype(np.float32)}))
    z = dsl.batch_norm(dsl.dense(dsl.flatten(dsl.global_avg_pool(y)), 5))
    g = dsl.graph(z)
    opt = optimize(g, passes=["fold_batchnorm"])
    assert not any(n.op in ("batch_norm", "scale_shift") for n in opt)
    assert_same_results(g, opt)


def test_batchnorm_without_foldable_producer_becomes_scale_shift():
    x = dsl.input("x", (N, 4, 6, 6))
    c = dsl.conv2d(x, 4, 3)
    g = dsl.graph(dsl.batch_norm(x, name="bn_in"), dsl.batch_norm(c, name="bn_c"), c)  # c has two readers
    opt = optimize(g, passes=["fold_batchnorm"])
    assert opt["bn_in"].op == "scale_shift" and opt["bn_c"].op == "scale_shift"
    assert_same_results(g, opt)


def test_average_pool_moves_before_a_pointwise_conv_only_where_it_is_exact():
    x = dsl.input("x", (N, 8, 8, 8))
    t = dsl.conv2d(dsl.relu(x, name="act"), 4, 1, name="trans")     # DenseNet's transition layer
    moved = dsl.avg_pool2d(t, 2, name="tpool")
    kept = [dsl.avg_pool2d(dsl.conv2d(x, 4, 3, padding=1, name="c3"), 2, name="p3"),          # 3x3: no
            dsl.avg_pool2d(dsl.conv2d(x, 4, 1, name="c1p"), 3, stride=2, padding=1, name="pp"),  # padded
            dsl.max_pool2d(dsl.conv2d(x, 4, 1, name="c1m"), 2, name="pm")]                     # max: no
    shared = dsl.conv2d(x, 4, 1, name="c1s")                                                   # read twice
    g = dsl.graph([moved, *kept, dsl.avg_pool2d(shared, 2, name="ps"), shared], name="commute")
    opt = optimize(g, passes=["infer_shapes", "commute_pool"])
    assert opt["tpool"].inputs == ["act"] and opt["trans"].inputs == ["tpool"]
    assert opt["trans"].type.shape[2:] == (4, 4)
    assert opt.pass_report.records[-1].counts == {"pools moved before a 1x1 conv": 1}
    for pool, conv in (("p3", "c3"), ("pp", "c1p"), ("pm", "c1m"), ("ps", "c1s")):
        assert opt[pool].inputs == [conv], pool
    assert_same_results(g, opt)      # the moved pool's output is now read under the conv's name


def test_constants_fold_and_dead_code_goes():
    x = dsl.input("x", (N, 3))
    k = dsl.add(dsl.constant(x, [1.0, 2.0, 3.0]), dsl.constant(x, [0.5, 0.5, 0.5]), name="k")
    unused = dsl.relu(x, name="unused")  # noqa: F841 - an unused branch
    y = dsl.dropout(dsl.identity(dsl.mul(x, k)), name="drop")
    g = dsl.graph(y)
    opt = optimize(g, opt_level=1)
    assert opt["k"].op == "constant" and np.allclose(opt["k"].params["value"], [1.5, 2.5, 3.5])
    assert not {"dropout", "identity"} & {n.op for n in opt} and "unused" not in opt
    assert_same_results(g, opt)


# -- fusion ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shortcut_first", [False, True])
def test_residual_add_and_relu_fuse_into_the_conv_before(shortcut_first):
    g = resnet_block(shortcut_first=shortcut_first)
    opt = optimize(g)
    groups = fused(opt)
    assert [[m.op for m in grp.members] for grp in groups] == [["conv2d", "relu"], ["conv2d", "add", "relu"]]
    res = groups[1]
    assert res.members[1].inputs[0] == res.members[0].name  # the chain reads the conv first (swapped if needed)
    assert res.inputs == [groups[0].name, "x"]
    assert_same_results(g, opt)


def test_downsample_block_gives_the_add_to_its_first_operand():
    g = resnet_block(downsample=True)
    opt = optimize(g)
    owner = next(grp for grp in fused(opt) if "res" in [m.name for m in grp.members])
    main_conv = g[g["res"].inputs[0]].inputs[0]      # res = add(bn(conv), shortcut)
    assert owner.members[0].name == main_conv
    assert "down" in opt and opt["down"].op == "conv2d"
    assert any(p == "down" and c == "res" and "first operand" in why for p, c, why in opt.fusion.why_not)
    assert_same_results(g, opt)


def test_non_commutative_op_reached_through_its_second_operand_is_not_fused():
    x = dsl.input("x", (N, 4, 6, 6))
    c = dsl.conv2d(x, 4, 3, padding=1, name="c")
    g = dsl.graph(dsl.sub(x, c, name="s"))
    opt = optimize(g)
    assert not fused(opt)
    assert ("c", "s", "s (sub) reads c as its second operand") in opt.fusion.why_not


def test_a_tensor_read_outside_is_never_fused_away():
    x = dsl.input("x", (N, 4, 6, 6))
    r = dsl.relu(dsl.conv2d(x, 4, 3, padding=1), name="relu3")
    g = dsl.graph(dsl.max_pool2d(r, 2, name="pool1"), dsl.add(r, x, name="add2"))
    opt = optimize(g)
    assert ("relu3", "pool1", "relu3 feeds 2 consumers: pool1, add2") in opt.fusion.why_not
    for grp in fused(opt):
        for m in grp.members[:-1]:
            readers = [n for n in opt if m.name in n.inputs or any(m.name in mm.inputs for mm in n.members or [] if mm
                                                                     not in grp.members)]
            assert not readers and m.name not in opt.outputs
    assert_same_results(g, opt)


def test_pool_fusion_follows_the_recompute_rule():
    plain = optimize(conv_pool(2, 2))
    assert [m.op for m in fused(plain)[0].members] == ["conv2d", "relu", "max_pool2d"]
    nine = optimize(conv_pool(3, 1))
    assert any(why == f"pool kernel 3 stride 1: recompute 9x > limit {MAX_RECOMPUTE:g}x" for _, _, why in nine.fusion.why_not)
    cheap = optimize(conv_pool(3, 2, cin=2, k=1))          # 1x1 conv over 2 channels: recompute pays
    assert fused(cheap)[0].members[-1].op == "max_pool2d" and fused(cheap)[0].group.recompute == 2.25
    costly = optimize(conv_pool(3, 2, cin=16, k=3))       # 3x3 conv over 16 channels: it does not
    assert fused(costly)[0].members[-1].op == "relu"
    assert any("recompute 2.25x adds" in why for _, _, why in costly.fusion.why_not)
    for g in (conv_pool(2, 2), conv_pool(3, 2)):
        assert_same_results(g, optimize(g))


def test_the_recompute_rule_weighs_the_targets_balance():
    """ShuffleNetV2's stem: 3x3 conv over 3 channels + 3x3/2 max pool (1.25 x 54 extra FLOPs per
    conv output). The H200's balance (14 FLOP/byte) fuses it; the C target's (4) refuses it, and
    compile() / inspect hand each target its own."""
    from cnncc.compiler import fuse_balance

    g = conv_pool(3, 2, cin=3, k=3)
    assert fuse_balance("cuda") == fuse_balance("cuda-emu") == 14.0 and fuse_balance("c") == 4.0
    gpu = optimize(g)                                            # the default: the GPU's balance
    assert fused(gpu)[0].members[-1].op == "max_pool2d"
    cpu = optimize(g, fuse_balance=fuse_balance("c"))
    assert fused(cpu)[0].members[-1].op == "relu"
    assert any(why.endswith("> 32 that the 8 bytes saved are worth at 4 FLOP/byte") for _, _, why in cpu.fusion.why_not)
    cheap = optimize(conv_pool(3, 2, cin=2, k=1), fuse_balance=fuse_balance("c"))   # 5 extra FLOPs: still fuses
    assert fused(cheap)[0].members[-1].op == "max_pool2d"
    mod = cnncc.compile(g, target="c", opt_level=2)
    assert [m.op for m in fused(mod.report["graph"])[0].members][-1] == "relu"


def test_dense_softmax_and_elementwise_groups():
    x = dsl.input("x", (N, 6))
    y = dsl.softmax(dsl.tanh(dsl.dense(x, 5)), axis=1)
    z = dsl.relu(dsl.mul(dsl.sigmoid(x, name="sg"), x, name="m"), name="r")
    g = dsl.graph(y, z)
    opt = optimize(g)
    kinds = {grp.attrs["kind"]: [m.op for m in grp.members] for grp in fused(opt)}
    assert kinds == {"dense": ["dense", "tanh", "softmax"], "elementwise": ["sigmoid", "mul", "relu"]}
    assert_same_results(g, opt)


def test_unfused_edges_all_have_a_reason_and_lrn_has_no_fused_form():
    x = dsl.input("x", (N, 4, 8, 8))
    h = dsl.relu(dsl.conv2d(x, 4, 3, padding=1))
    h = dsl.layer("lrn", [h], {"size": 3}, name="norm")
    h = dsl.relu(dsl.conv2d(h, 4, 3, padding=1))
    g = dsl.graph(dsl.concat([h, dsl.max_pool2d(h, 3, stride=1, padding=1)]))
    opt = optimize(g)
    owner = {m.name: n.name for n in opt for m in (n.members or [n])}
    edges = {(p, c) for p, c, _ in opt.fusion.why_not}
    pre = opt.pass_report.snapshot("fold_batchnorm")
    for node in pre:
        for src in node.inputs:
            if pre[src].op in ("input", "constant") or owner[src] == owner[node.name]:
                continue
            assert (src, node.name) in edges
    assert any(why == "operator lrn has no fused form" for _, _, why in opt.fusion.why_not)


# -- concat elimination and views --------------------------------------------------------------------
def test_inception_concat_is_written_in_place():
    x = dsl.input("x", (N, 4, 8, 8))
    stem = dsl.relu(dsl.conv2d(x, 4, 1))
    a = dsl.relu(dsl.conv2d(stem, 3, 1))
    b = dsl.relu(dsl.conv2d(stem, 5, 3, padding=1))
    c = dsl.max_pool2d(stem, 3, stride=1, padding=1)
    cat = dsl.concat([a, b, c], name="cat")
    g = dsl.graph(dsl.dense(dsl.flatten(dsl.relu(cat, name="r"), name="flat"), 2))
    opt = optimize(g)
    assert opt["cat"].placement.eliminated
    assert ("r", "flat", "flat (flatten) is a view of r (no copy left to fuse)") in opt.fusion.why_not
    offsets = sorted((n.placement.write_into.channel_offset, n.name) for n in opt if n.placement.write_into)
    assert [o for o, _ in offsets] == [0, 3, 8]
    assert all(n.placement.write_into.channels_total == 12 for n in opt if n.placement.write_into)
    why = {(p, c): reason for p, c, reason in opt.fusion.why_not if c == "cat"}   # no copy left to explain
    assert len(why) == 3 and all(r.startswith("cat is eliminated: ") for r in why.values())
    assert_same_results(g, opt)


def test_densenet_running_concats_share_one_buffer():
    x = dsl.input("x", (N, 4, 6, 6))
    h = dsl.relu(dsl.conv2d(x, 4, 3, padding=1), name="stem")
    for i in range(3):
        new = dsl.relu(dsl.conv2d(dsl.relu(h), 2, 3, padding=1))
        h = dsl.concat([h, new], name=f"cat{i}")
    g = dsl.graph(dsl.global_avg_pool(h))
    opt = optimize(g)
    assert all(opt[f"cat{i}"].placement.eliminated for i in range(3))
    roots = {n.placement.write_into.tensor for n in opt if n.placement.write_into}
    assert roots == {"cat2"}
    assert_same_results(g, opt)


def test_concat_of_a_graph_input_stays_a_copy():
    x = dsl.input("x", (N, 2, 4, 4))
    g = dsl.graph(dsl.relu(dsl.concat([x, dsl.conv2d(x, 2, 1)], name="cat")))
    opt = optimize(g)
    assert not opt["cat"].placement.eliminated and not any(n.placement.write_into for n in opt)
    assert ("conv1", "cat", "operator concat has no fused form; cat stays a copy: x is a graph input, constant, view "
            "or graph output") in opt.fusion.why_not


# -- memory plan ----------------------------------------------------------------------------------------
def _overlaps(mp, batch=3):
    bufs = list(mp.lifetimes)
    at = {N: batch}
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            (la, ha), (lb, hb) = mp.lifetimes[a], mp.lifetimes[b]
            if ha < lb or hb < la:
                continue
            oa, ob = int(mp.offsets[a].subs(at)), int(mp.offsets[b].subs(at))
            sa, sb = int(mp.sizes[a].subs(at)), int(mp.sizes[b].subs(at))
            if oa < ob + sb and ob < oa + sa:
                yield a, b


def test_memory_plan_reuses_without_overlap_and_works_in_place():
    x = dsl.input("x", (N, 4, 8, 8))
    h = x
    for _ in range(4):
        h = dsl.relu(dsl.conv2d(h, 4, 3, padding=1))
    h = dsl.max_pool2d(h, 3, stride=1, padding=1, name="pool")   # 9x recompute: stays its own kernel
    h = dsl.sigmoid(dsl.batch_norm(h))   # after a pool: a scale_shift, in an elementwise group
    g = dsl.graph(dsl.global_avg_pool(dsl.tanh(h)))
    opt = optimize(g)
    mp = opt.memory_plan
    assert not list(_overlaps(mp))
    assert sympy.simplify(mp.naive_bytes - mp.arena_bytes).is_positive
    assert all(sympy.simplify(mp.offsets[b] / N).is_number for b in mp.lifetimes)
    assert "x" not in mp.offsets and opt.outputs[0] not in mp.offsets
    assert list(mp.inplace.values()) == ["pool"]   # the elementwise group overwrites the pool's output


def test_traffic_model_counts_the_saved_intermediates():
    opt = optimize(conv_pool(2, 2))
    grp = fused(opt)[0]
    conv_out = 4 * 4 * 12 * 12 * N   # 4 channels, 12x12, float32
    assert sympy.simplify(grp.group.bytes_unfused - grp.group.bytes_fused - 4 * conv_out) == 0
    assert sympy.simplify(grp.group.flops - sum(ops._cost(m, [opt["x"].type] if i == 0 else [grp.members[i - 1].type],
                                                           m.type)["flops"] for i, m in enumerate(grp.members))) == 0
    t = opt.traffic
    assert t.groups == 1 and sympy.simplify(t.bytes_unfused - t.bytes_fused).is_positive


def test_only_batch_keeping_reshapes_become_views():
    x = dsl.input("x", (N, 4, 6))
    merged = dsl.relu(dsl.reshape(dsl.relu(x), (-1, 6), name="merge"))
    kept = dsl.relu(dsl.flatten(dsl.relu(x, name="r2"), name="flat"))
    opt = optimize(dsl.graph(merged, kept))
    assert opt["flat"].placement.view_of == "r2" and opt["merge"].placement.view_of is None
