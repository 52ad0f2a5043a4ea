"""The typed records stages leave for each other (cnncc/contracts.py, docs/DESIGN.md Contracts):
no meta dict left, snapshots never change under a later pass, one kernel predicate shared by
lowering and the traffic model, and rendering a pure function of (Program, CTarget)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cnncc
from cnncc import contracts
from cnncc.codegen import c as c_codegen
from cnncc.codegen.lower import lower_program
from cnncc.codegen.target import CTarget
from cnncc.frontends import dsl
from cnncc.graph_io import graph_from_json, graph_to_json
from cnncc.ir import N


def concat_model():
    x = dsl.input("x", (N, 3, 8, 8))
    a = dsl.relu(dsl.conv2d(x, 4, 3, padding=1, name="a"), name="a_relu")
    b = dsl.conv2d(x, 4, 1, name="b")
    cat = dsl.concat([a, b], name="cat")
    y = dsl.max_pool2d(dsl.relu(dsl.conv2d(cat, 16, 3, padding=1, name="c"), name="c_relu"), 2, name="pool")
    return dsl.graph(dsl.relu(dsl.flatten(y, name="flat"), name="out"))


@pytest.fixture(scope="module")
def opt():
    return cnncc.optimize(concat_model(), opt_level=2)


def test_no_meta_dict_and_every_record_typed(opt):
    with pytest.raises(AttributeError, match="contracts.py"):
        opt.meta
    with pytest.raises(AttributeError, match="node.placement"):
        opt["cat"].meta
    assert isinstance(opt.memory_plan, contracts.MemoryPlan) and isinstance(opt.traffic, contracts.Traffic)
    assert isinstance(opt.fusion, contracts.FusionNotes) and opt.opt_level == 2
    assert all(isinstance(w, contracts.WhyNot) for w in opt.fusion.why_not)
    assert opt["cat"].placement.eliminated
    assert {n.placement.write_into.tensor for n in opt if n.placement.write_into} == {"cat"}
    groups = [n for n in opt if n.op == "fused"]
    assert groups and all(isinstance(n.group, contracts.GroupNotes) and n.group.bytes_fused is not None
                          for n in groups)


def test_snapshots_keep_the_records_they_were_taken_with(opt):
    """Passes replace frozen records; the snapshot after fuse has no placement yet."""
    before = opt.pass_report.snapshot("fuse")
    assert not any(n.placement.eliminated or n.placement.write_into for n in before)
    assert before.memory_plan is None and opt.memory_plan is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        opt["cat"].placement.eliminated = False


def test_one_kernel_predicate_for_lowering_and_traffic(opt):
    program = lower_program(opt)
    kernels = [n.name for n in opt if contracts.is_kernel(n, opt)]
    assert [k.name for k in program.kernels] == kernels
    assert opt.traffic.kernels == len(kernels)
    assert "cat" not in kernels and "flat" not in kernels    # eliminated concat, a view


def test_graph_json_keeps_the_frontend_origin():
    g = concat_model()
    g.origin = contracts.GraphOrigin({"input.1": "x"}, {"y": "out"}, 17, 1)
    doc, arrays = graph_to_json(g)
    back = graph_from_json(doc, arrays)
    assert back.origin == g.origin
    doc.pop("origin")
    doc["meta"] = {"onnx_inputs": {"dict": {"i": "x"}}, "renamed": {"dict": {}}}   # a folder saved before
    assert graph_from_json(doc, arrays).origin == contracts.GraphOrigin(onnx_inputs={"i": "x"})


def test_rendering_is_a_pure_function_of_program_and_target(opt):
    program = lower_program(opt)
    blob, layout = program.blob.copy(), dict(program.blob_layout)
    weights = [dict(k.weights) for k in program.kernels]
    wide, narrow = CTarget("avx512", 16, 32), CTarget("generic", 4, 16)
    first = c_codegen.render(program, wide)
    c_codegen.render(program, narrow)
    again = c_codegen.render(program, wide)
    np.testing.assert_array_equal(program.blob, blob)          # the Program given is untouched
    assert program.blob_layout == layout and [dict(k.weights) for k in program.kernels] == weights
    assert first[0] == again[0]                                # same inputs, same source
    packed = first[2]
    assert packed is not program and any(".c_" in key for key in packed.blob_layout)
    assert c_codegen.render(packed, wide)[0] == first[0]       # a packed Program renders the same


def test_the_targets_threads_size_the_pool_bands():
    """A conv + pool kernel is split into at least 16 tasks, and two per thread of the target."""
    from cnncc.codegen import c_conv

    x = dsl.input("x", (N, 3, 32, 32))
    y = dsl.max_pool2d(dsl.conv2d(x, 64, 3, padding=1, name="c"), 2, name="p")
    spec = next(k for k in lower_program(cnncc.optimize(dsl.graph(y), opt_level=2)).kernels if k.pool)
    few, many = (c_conv.plan(spec, CTarget("avx2", 8, 16, threads=t)) for t in (2, 32))
    assert few.NCB * few.NBAND >= 16 and many.NCB * many.NBAND >= 64 and many.BR < few.BR


def test_no_stage_reads_a_meta_dict():
    """The acceptance of issue 10 point 3, statically: no library module reads ``x.meta`` (the
    typed records replaced the string-key protocol; Node/Graph.meta only raise to say so)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = [f"{f.relative_to(root)}:{n.lineno}"
             for d in ("cnncc", "codegen", "runtime", "frontends") for f in sorted((root / d).rglob("*.py"))
             for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Attribute) and n.attr == "meta"]
    assert found == [], f"meta dict read at {found}"
