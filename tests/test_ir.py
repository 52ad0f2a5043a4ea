"""The IR: verification, topological iteration, the printout, several inputs and outputs, and the
rewiring helpers (replace_uses, rename) the passes rely on."""
from __future__ import annotations

import numpy as np
import pytest
import sympy

import cnncc
from cnncc import Graph, ModelError, N, Node, TensorType
from cnncc.frontends import dsl


def small_net() -> Graph:
    x = dsl.input("image", (dsl.N, 1, 12, 12))
    c = dsl.conv2d(x, 4, 3, name="conv")
    r = dsl.relu(c, name="act")
    p = dsl.max_pool2d(r, 2, name="pool")
    return dsl.graph(dsl.dense(dsl.flatten(p, name="flat"), 3, name="fc"))


def test_a_dsl_graph_verifies_and_has_typed_shapes():
    g = small_net()
    assert g.verify() is g
    assert g["conv"].type == TensorType((N, 4, 10, 10))
    assert g["fc"].type.shape == (N, 3)
    assert g["conv"].type.concrete({N: 2}) == (2, 4, 10, 10)
    assert g.inputs == ["image"] and g.outputs == ["fc"]


def test_verify_rejects_a_stored_shape_that_differs_from_the_inferred_one():
    g = small_net()
    g["act"].type = TensorType((N, 4, 9, 9))
    with pytest.raises(ModelError, match=r"layer 'act'.*differs from inferred"):
        g.verify()


def test_verify_rejects_bad_arity_and_bad_attributes():
    g = small_net()
    g.set_inputs("act", ["conv", "image"])
    with pytest.raises(ModelError, match=r"layer 'act' \(relu\).*takes 1 inputs, got 2"):
        g.verify()
    g = small_net()
    g["pool"].attrs["kernel_size"] = -2
    with pytest.raises(ModelError, match=r"layer 'pool' \(max_pool2d\) attribute 'kernel_size'"):
        g.verify()


def test_verify_rejects_an_unknown_operator_and_a_missing_output():
    g = small_net()
    g["act"].op = "swish_typo"
    with pytest.raises(ModelError, match="unknown operator 'swish_typo'"):
        g.verify()
    g = small_net()
    g.outputs = ["nowhere"]
    with pytest.raises(ModelError, match="'nowhere' is not a node"):
        g.verify()


def test_a_cycle_is_reported_with_its_path_layer_and_operator():
    g = small_net()
    g.set_inputs("conv", ["pool"])
    with pytest.raises(ModelError) as info:
        g.verify()
    assert "cycle" in str(info.value)
    assert set(str(info.value).split(": ", 2)[-1].split("\n")[0].split(" -> ")) == {"conv", "act", "pool"}
    assert info.value.op == g[info.value.node].op and info.value.fix
    with pytest.raises(ModelError, match="cycle"):
        list(g)


def test_topological_iteration_after_rewiring():
    """Iteration order follows the edges even when a node added early comes to read a later one."""
    g = Graph("t")
    g.add(Node("x", "input", attrs={"shape": (N, 2, 4, 4)}))
    g.add(Node("a", "relu", ["x"]))
    g.add(Node("b", "sigmoid", ["x"]))
    g.set_inputs("a", ["b"])                              # now a depends on b, added after it
    g.outputs = ["a"]
    order = [n.name for n in g]
    assert order == ["x", "b", "a"]
    for i, node in enumerate(g):
        assert all(order.index(src) < i for src in node.inputs)
    g.infer_shapes().verify()
    assert g["a"].shape == (N, 2, 4, 4)


def test_iteration_is_deterministic_in_insertion_order_among_independent_nodes():
    x = dsl.input("x", (N, 2, 4, 4))
    branches = [dsl.relu(x, name=f"r{i}") for i in range(5)]
    g = dsl.graph(dsl.concat(branches, name="cat"))
    assert [n.name for n in g] == ["x", "r0", "r1", "r2", "r3", "r4", "cat"]


def test_printout_has_one_line_per_node_like_torch_fx():
    g = small_net()
    text = str(g)
    lines = text.splitlines()
    assert lines[0] == "graph model(image):"
    assert lines[-1] == "  return %fc"
    assert len(lines) == len(g) + 2
    conv_line = next(line for line in lines if line.lstrip().startswith("%conv "))
    assert conv_line.startswith("  %conv : (N, 4, 10, 10) float32 = conv2d(image, ")
    assert "stride=1" in conv_line and "weight[4, 1, 3, 3]" in conv_line and "bias[4]" in conv_line
    assert "  %act : (N, 4, 10, 10) float32 = relu(conv)" in lines


def test_several_inputs_and_outputs():
    a = dsl.input("a", (N, 3, 6, 6))
    b = dsl.input("b", (N, 3, 6, 6), like=a)
    s = dsl.add(a, b, name="sum")
    m = dsl.max_pool2d(s, 2, name="pooled")
    g = dsl.graph(s, m)
    assert g.inputs == ["a", "b"] and g.outputs == ["sum", "pooled"]
    assert "graph model(a, b):" in str(g) and "return %sum, %pooled" in str(g)
    rng = np.random.default_rng(0)
    av, bv = rng.standard_normal((2, 2, 3, 6, 6)).astype(np.float32)
    out = cnncc.reference(g, {"a": av, "b": bv})
    assert set(out) == {"sum", "pooled"}
    np.testing.assert_allclose(out["sum"], av + bv)
    assert out["pooled"].shape == (2, 3, 3, 3)
    np.testing.assert_allclose(cnncc.reference(g, [av, bv])["sum"], av + bv)
    with pytest.raises(ModelError, match="2 inputs"):
        cnncc.reference(g, av)
    with pytest.raises(ModelError, match="missing input"):
        cnncc.reference(g, {"a": av})


def test_replace_uses_rewires_consumers_and_outputs():
    g = small_net()
    g.add(Node("act2", "sigmoid", ["conv"], type=g["conv"].type))
    g.replace_uses("act", "act2")
    assert g["pool"].inputs == ["act2"]
    assert [c.name for c in g.consumers("act")] == []
    g.remove("act")
    assert "act" not in g
    g.verify()
    # outputs follow too, and `exclude` keeps chosen consumers on the old tensor
    g.add(Node("tail", "identity", ["fc"], type=g["fc"].type))
    g.replace_uses("fc", "tail", exclude={"tail"})
    assert g.outputs == ["tail"] and g["tail"].inputs == ["fc"]
    g.verify()


def test_replace_node_keeps_the_place_and_redraws_the_edges():
    g = small_net()
    before = [n.name for n in g]
    g.replace_node(Node("act", "sigmoid", ["conv"], type=g["act"].type))
    assert g["act"].op == "sigmoid" and [n.name for n in g] == before and g["pool"].inputs == ["act"]
    g.replace_node(Node("act", "constant", [], params={"value": np.zeros((1, 4, 10, 10), np.float32)},
                        type=g["act"].type))
    assert [c.name for c in g.consumers("conv")] == [] and g.ancestors("pool") == {"act"}
    with pytest.raises(KeyError, match="no node named 'nope'"):
        g.replace_node(Node("nope", "relu", ["conv"]))


def test_verify_checks_fused_groups_and_stores_nothing():
    opt = cnncc.optimize(small_net())
    grp = next(n for n in opt if n.op == "fused")
    types = [m.type for m in grp.members] + [grp.type]
    opt.verify()
    assert all(a is b for a, b in zip([m.type for m in grp.members] + [grp.type], types))
    grp.type = TensorType((N, 99))
    with pytest.raises(ModelError, match="differs from inferred"):
        opt.verify()
    grp.type = types[-1]
    grp.inputs = grp.inputs + grp.inputs[:1]          # the one verifier has the group rules too
    with pytest.raises(ModelError, match="group contract: inputs"):
        opt.verify()


def test_consumers_come_in_graph_order_whatever_the_edge_order():
    g = small_net()
    for name in ("z_first", "a_second"):
        g.add(Node(name, "relu", ["act"], type=g["act"].type))
    g.set_inputs("pool", ["act"])   # redrawn: pool's edge from act is now the newest
    assert [c.name for c in g.consumers("act")] == ["pool", "z_first", "a_second"]


def test_remove_refuses_a_node_that_is_still_read():
    g = small_net()
    with pytest.raises(ModelError, match="still read by pool"):
        g.remove("act")


def test_rename_updates_consumers_inputs_outputs_and_keeps_order():
    g = small_net()
    before = [n.name for n in g]
    g.rename("act", "relu_0")
    g.rename("image", "pixels")
    g.rename("fc", "logits")
    assert g["pool"].inputs == ["relu_0"] and g["conv"].inputs == ["pixels"]
    assert g.inputs == ["pixels"] and g.outputs == ["logits"]
    assert [n.name for n in g] == [{"act": "relu_0", "image": "pixels", "fc": "logits"}.get(n, n) for n in before]
    g.verify()


def test_add_rejects_duplicates_and_dangling_inputs():
    g = small_net()
    with pytest.raises(ModelError, match="already exists"):
        g.add(Node("conv", "relu", ["image"]))
    with pytest.raises(ModelError, match="'ghost' does not exist"):
        g.add(Node("z", "relu", ["ghost"]))


def test_copy_is_deep():
    g = small_net()
    h = g.copy()
    h["conv"].params["weight"][...] = 0
    h.rename("act", "other")
    assert np.abs(g["conv"].params["weight"]).sum() > 0 and "act" in g


def test_shapes_stay_symbolic_in_batch_and_totals_are_sympy():
    g = small_net()
    flops = g.flops()
    assert flops.free_symbols == {N}
    assert sympy.expand(flops.subs(N, 2) - 2 * flops.subs(N, 1)) == 0
    assert g.param_count() == 4 * 9 + 4 + 3 * 100 + 3


def test_interpreter_walks_in_order_runs_groups_member_by_member_and_stops_at_until():
    from cnncc.interpreter import Interpreter

    class Trace(Interpreter):
        def run_node(self, node, args):
            seen.append(node.name)
            return (node.name, *args)

    g = small_net()
    opt = cnncc.optimize(small_net())
    grp = next(n for n in opt if n.op == "fused")
    seen = []
    env = Trace(opt).run({i: i for i in opt.inputs})
    assert [n for n in seen if n in {m.name for m in grp.members}] == [m.name for m in grp.members]
    assert env[grp.name][0] == grp.members[-1].name and set(env) == {n.name for n in opt}
    seen = []
    order = [n.name for n in g if n.op != "input"]
    env = Trace(g).run({i: i for i in g.inputs}, until=order[1])
    assert seen == order[:2] and order[2] not in env
