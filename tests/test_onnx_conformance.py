"""ONNX's own backend conformance cases, run through from_onnx -> cnncc.compile(target="c").

The node cases come from ``onnx.backend.test.case.node`` (the generators the onnx package ships;
the installed wheel carries no node/*.pb files) and the ``pytorch-converted`` cases from the
package's data folder. Inputs that real models carry as initializers (weights, shapes, pads,
scales) are baked into initializers from the case's own data, as an exporter would emit them.
Many small cases compile as ONE merged graph per operator so the C compiler runs a few dozen
times, not hundreds.

The report (printed in pytest's terminal summary, and by ``python tests/test_onnx_conformance.py``;
``--markdown docs/conformance.md`` regenerates the docs page) counts per operator the cases that pass,
fail and are skipped, and gives every skip its reason. A skip is either out of cnncc's scope (a
non-float element type, a 3-D operator, training mode) or a known gap listed in ``KNOWN_GAPS``
with its reason; any other skip fails ``test_skips_are_explained``.
"""
from __future__ import annotations

import collections
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import cnncc  # noqa: E402
from cnncc.errors import CnnccError  # noqa: E402
from cnncc.ir import Graph  # noqa: E402

#: the operators issue 5 covers
OPERATORS = ["Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
             "MaxUnpool", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization", "LRN", "Relu",
             "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "HardSwish", "HardSigmoid", "Elu", "Selu",
             "Softplus", "Softmax", "LogSoftmax", "Add", "Sub", "Mul", "Div", "Sum", "Flatten", "Reshape",
             "Transpose", "Concat", "Pad", "Upsample", "Resize", "DepthToSpace", "SpaceToDepth", "Identity",
             "Dropout", "RoiAlign"]
#: MaxRoiPool has no node case in the onnx package: tests/test_roi.py checks it against onnxruntime
#: input positions that stay runtime tensors; every other input is baked into an initializer
RUNTIME_INPUTS = {"MatMul": None, "Add": None, "Sub": None, "Mul": None, "Div": None, "Sum": None,
                  "Concat": None, "MaxUnpool": {0, 1}, "RoiAlign": {0, 1, 2}}
RTOL, ATOL = 1e-4, 1e-5
#: cases whose stored expected data are not the operator's exact result; checked against onnxruntime instead
KNOWN_DATA_ISSUES = {
    "test_averagepool_2d_ceil_last_window_starts_on_pad": "expected values are rounded to 4 decimals in onnx's "
                                                          "generator (its own rtol is 1e-3)",
    "test_maxunpool_export_with_output_shape": "expected data place indices in the default 4x4 frame; onnxruntime "
                                               "and PyTorch index the 5x5 output_shape frame",
}
#: what cnncc does not cover on purpose: a skip reason containing the key -> the category reported
OUT_OF_SCOPE = {"element type": "non-float32 element type (cnncc computes in float32)",
                "3-D": "3-D convolution / pooling (cnncc is 1-D and 2-D)",
                "training mode": "training mode (cnncc compiles inference)",
                "cnncc graphs carry tensors": "sequence / optional values (cnncc graphs carry tensors)"}
#: in-scope cases cnncc still skips, each with the reason a user gets
KNOWN_GAPS = {
    "test_reshape_allowzero_reordered": "a zero-size input dimension (cnncc tensors have positive sizes)",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool indices in column-major order (storage_order=1)",
}
#: the acceptance bar: share of the in-scope cases (not OUT_OF_SCOPE) that pass
MIN_PASS_RATE = 0.98
#: the same, but onnxruntime has no kernel for the case's opset: checked against onnx's own reference evaluator
KNOWN_DATA_ISSUES_ONNX_REFERENCE = {
    "test_roialign_aligned_false": "expected values are rounded to 4 decimals (8.4e-5 from onnx.reference's "
                                   "RoiAlign); onnxruntime has no RoiAlign-22",
    "test_roialign_aligned_true": "expected values are rounded to 4 decimals; onnxruntime has no RoiAlign-22",
}
PYTORCH_CONVERTED = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "pytorch-converted"
#: pytorch-converted case name prefix -> the ONNX operator it exercises
PYTORCH_OPS = {"AvgPool": "AveragePool", "BatchNorm": "BatchNormalization", "ConstantPad": "Pad", "Conv1d": "Conv",
               "Conv2d": "Conv", "Conv3d": "Conv", "ConvTranspose": "ConvTranspose", "ELU": "Elu",
               "LeakyReLU": "LeakyRelu", "Linear": "Gemm", "LogSoftmax": "LogSoftmax", "MaxPool": "MaxPool",
               "PReLU": "PRelu", "PixelShuffle": "DepthToSpace", "ReLU": "Relu", "ReflectionPad": "Pad",
               "ReplicationPad": "Pad", "SELU": "Selu", "Sigmoid": "Sigmoid", "Softmax": "Softmax",
               "Softplus": "Softplus", "Tanh": "Tanh", "ZeroPad": "Pad", "log_softmax": "LogSoftmax",
               "softmax": "Softmax"}


@dataclass
class Case:
    name: str
    op: str
    model: object                    # onnx.ModelProto with parameters baked in
    feeds: list[dict] = field(default_factory=list)       # per data set: {onnx input name: array}
    expected: list[dict] = field(default_factory=list)    # per data set: {onnx output name: array}


# -- collecting ----------------------------------------------------------------------------------
def _bake(model, op: str, inputs: list[np.ndarray]):
    """Turn the non-data inputs of a one-operator model into initializers (as exporters emit)."""
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    keep = RUNTIME_INPUTS.get(op, {0})
    node = g.node[0]
    runtime = set(node.input) if keep is None else {node.input[i] for i in keep if i < len(node.input)}
    feeds, names = {}, [vi.name for vi in g.input]
    for name, value in zip(names, inputs):
        if name in runtime:
            feeds[name] = value
        else:
            g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    for vi in list(g.input):
        if vi.name not in runtime:
            g.input.remove(vi)
    return model, feeds


def _node_cases() -> tuple[list[Case], list[tuple[str, str, str]]]:
    from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = node_cases.collect_testcases()
    cases, skipped = [], []
    for tc in raw:
        ops_in = [n.op_type for n in tc.model.graph.node]
        if len(ops_in) != 1 or ops_in[0] not in OPERATORS or tc.name.endswith("_expanded"):
            continue
        op = ops_in[0]
        reason = _float32_reason(tc.model)
        if reason:
            skipped.append((tc.name, op, reason))
            continue
        case = Case(tc.name, op, None)
        for inputs, outputs in tc.data_sets:
            model, feeds = _bake(tc.model, op, list(inputs))
            case.model = model
            case.feeds.append(feeds)
            case.expected.append({vo.name: np.asarray(o) for vo, o in zip(tc.model.graph.output, outputs)})
        cases.append(case)
    return cases, skipped


def _float32_reason(model) -> str | None:
    from onnx import TensorProto

    for vi in list(model.graph.input) + list(model.graph.output):
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            return f"a {kind.replace('_type', '')} value (cnncc graphs carry tensors, not sequences or optionals)"
        t = vi.type.tensor_type.elem_type
        if t not in (TensorProto.FLOAT, TensorProto.INT64):
            return f"element type {TensorProto.DataType.Name(t).lower()} (cnncc computes in float32)"
    return None


def _pytorch_converted_cases() -> list[Case]:
    from onnx import numpy_helper

    cases = []
    for folder in sorted(PYTORCH_CONVERTED.glob("test_*")):
        stem = folder.name[5:]
        op = next((o for p, o in PYTORCH_OPS.items() if stem.startswith(p)), None)
        if op is None:
            continue
        model = onnx.load(str(folder / "model.onnx"))
        init = {i.name for i in model.graph.initializer}
        ins = [vi.name for vi in model.graph.input if vi.name not in init]
        case = Case(folder.name, op, model)
        for ds in sorted(folder.glob("test_data_set_*")):
            arrays = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(ds.glob("input_*.pb"))]
            outs = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(ds.glob("output_*.pb"))]
            case.feeds.append(dict(zip(ins, arrays)))
            case.expected.append({vo.name: o for vo, o in zip(model.graph.output, outs)})
        cases.append(case)
    return cases


# -- running ---------------------------------------------------------------------------------------
def _merge(graphs: list[tuple[str, Graph]]) -> Graph:
    """Disjoint union of several imported graphs (names prefixed) so they compile as one module."""
    merged = Graph("conformance")
    for prefix, g in graphs:
        for node in g:
            node = node.__class__(f"{prefix}_{node.name}", node.op, [f"{prefix}_{i}" for i in node.inputs],
                                  dict(node.attrs), dict(node.params), node.type, origin=node.origin)
            merged.add(node)
        merged.outputs += [f"{prefix}_{o}" for o in g.outputs]
    return merged


def _compiled_runner():
    """cnncc.compile(target="c") once it exists (another workstream builds it), else the oracle."""
    try:
        compile_fn = cnncc.compile
    except AttributeError:
        return None
    return compile_fn


def _as_dict(graph: Graph, out) -> dict:
    return out if isinstance(out, dict) else {graph.outputs[0]: out}


def run_cases(cases: list[Case], compile_fn) -> dict[str, tuple[str, str]]:
    """Import every case, compile per operator in one merged graph, compare. -> {case: (status, detail)}."""
    results: dict[str, tuple[str, str]] = {}
    by_op: dict[str, list] = collections.defaultdict(list)
    fixed: dict[str, Graph] = {}
    for case in cases:
        try:
            g = cnncc.from_onnx(case.model)
        except CnnccError as e:
            results[case.name] = ("skip", _skip_reason(e))
            continue
        fixed[case.name] = g
        if compile_fn is not None:
            g = _dynamic_batch_graph(case) or g
        by_op[case.op].append((case, g))
    for op, items in by_op.items():
        group = _run_group(items, compile_fn)
        for case, g in items:
            status = group.get(case.name)
            if status is None:     # the group failed to build: alone, then with the fixed-size import
                status = _check(case, g, _run_group([(case, g)], compile_fn, single=True)[case.name])
                if status[0] != "pass" and fixed[case.name] is not g:
                    g = fixed[case.name]
                    status = _check(case, g, _run_group([(case, g)], compile_fn, single=True)[case.name])
            results[case.name] = status
    return results


def _run_group(items, compile_fn, single: bool = False) -> dict:
    """Run every data set of every case of one operator; one compiled module for the group."""
    prefixes = [f"c{i}" for i in range(len(items))]
    runs: dict[str, list] = {}
    try:
        if compile_fn is None:
            for (case, g) in items:
                runs[case.name] = [_as_dict(g, cnncc.reference(g, _feeds(g, f))) for f in case.feeds]
        else:
            merged = _merge(list(zip(prefixes, [g for _, g in items])))
            module = compile_fn(merged, target="c")
            n_sets = max(len(c.feeds) for c, _ in items)
            for k in range(n_sets):
                feeds = {}
                for p, (case, g) in zip(prefixes, items):
                    f = case.feeds[min(k, len(case.feeds) - 1)]
                    feeds.update({f"{p}_{n}": v for n, v in _feeds(g, f).items()})
                out = module(feeds) if len(merged.inputs) != 1 else module(next(iter(feeds.values())))
                out = _as_dict(merged, out)
                for p, (case, g) in zip(prefixes, items):
                    if k < len(case.feeds):
                        runs.setdefault(case.name, []).append({o: out[f"{p}_{o}"] for o in g.outputs})
    except Exception as e:
        if not single:
            return {}
        return {items[0][0].name: ("fail", f"compile/run: {type(e).__name__}: {_first_line(e)}")}
    if single:
        return {items[0][0].name: runs[items[0][0].name]}
    return {case.name: _check(case, g, runs[case.name]) for case, g in items}


def _dynamic_batch_graph(case: Case) -> Graph | None:
    """The case with its leading dimension made a dynamic batch (as exported models have it), when the
    import and the oracle agree that nothing changes: compiled modules are built for a batch N."""
    model = onnx.ModelProto.FromString(case.model.SerializeToString())
    weights = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in weights]
    ranks = [len(vi.type.tensor_type.shape.dim) for vi in inputs]
    if not ranks:
        return None
    lead = {vi.type.tensor_type.shape.dim[0].dim_value for vi in inputs
            if len(vi.type.tensor_type.shape.dim) == max(ranks)}
    if len(lead) != 1:
        return None
    for vi in inputs + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == max(ranks) and dims and dims[0].dim_value in lead:
            dims[0].dim_param = "N"
    try:
        g = cnncc.from_onnx(model)
        runs = [_as_dict(g, cnncc.reference(g, _feeds(g, f))) for f in case.feeds]
    except Exception:
        return None
    return g if _check(case, g, runs)[0] == "pass" else None


def _feeds(g: Graph, onnx_feeds: dict) -> dict:
    names = g.origin.onnx_inputs
    return {names[k]: v for k, v in onnx_feeds.items()}


def _check(case: Case, g: Graph, runs) -> tuple[str, str]:
    if isinstance(runs, tuple):
        return runs
    outs = g.origin.onnx_outputs
    worst = 0.0
    expected = case.expected
    if case.name in KNOWN_DATA_ISSUES:
        expected = _onnxruntime_expected(case)
    elif case.name in KNOWN_DATA_ISSUES_ONNX_REFERENCE:
        expected = _onnx_reference_expected(case)
    for got, want in zip(runs, expected):
        for onnx_name, expected in want.items():
            if onnx_name not in outs:
                return "fail", f"output {onnx_name} missing"
            y = np.asarray(got[outs[onnx_name]])
            if y.shape != expected.shape:
                return "fail", f"{onnx_name}: shape {y.shape} != {expected.shape}"
            if not np.allclose(y, expected, rtol=RTOL, atol=ATOL):
                err = float(np.max(np.abs(y.astype(np.float64) - expected)))
                return "fail", f"{onnx_name}: max abs error {err:.3g}"
            worst = max(worst, float(np.max(np.abs(y.astype(np.float64) - expected), initial=0.0)))
    return "pass", f"max abs error {worst:.2g}"


def _onnxruntime_expected(case: Case) -> list[dict]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(case.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, f))) for f in case.feeds]


def _skip_reason(e: Exception) -> str:
    """The reason of an import refusal: the offending node lines, without the list of supported operators."""
    text = str(e).split("  supported:")[0].strip()
    nodes = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]
    return "; ".join(nodes)[:300] if nodes else _first_line(e)
def _onnx_reference_expected(case: Case) -> list[dict]:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(case.model)
    names = [o.name for o in case.model.graph.output]
    return [dict(zip(names, evaluator.run(None, f))) for f in case.feeds]


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return " ".join(t.strip() for t in text[:3])[:200]


def _scope(reason: str) -> str | None:
    """The OUT_OF_SCOPE category of a skip reason, or None when the case is in scope."""
    return next((label for key, label in OUT_OF_SCOPE.items() if key in reason), None)


def outcomes(cases: list[Case], results: dict, skipped: list) -> list[tuple[str, str, str, str]]:
    """(case, operator, status, detail) for every case: pass / fail / skip / out of scope."""
    rows = [(n, op, "out of scope" if _scope(why) else "skip", why) for n, op, why in skipped]
    for c in cases:
        status, detail = results[c.name]
        if status == "skip" and _scope(detail):
            status = "out of scope"
        rows.append((c.name, c.op, status, detail))
    return rows


def pass_rate(rows) -> tuple[int, int]:
    """(passed, in scope): the acceptance counts every case except the out-of-scope ones."""
    in_scope = [r for r in rows if r[2] != "out of scope"]
    return sum(r[2] == "pass" for r in in_scope), len(in_scope)


def tally(cases: list[Case], results: dict, skipped: list, markdown: bool = False) -> str:
    rows = outcomes(cases, results, skipped)
    count: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, op, status, _ in rows:
        count[op][status] += 1
    cols = ["pass", "fail", "skip", "out of scope"]
    passed, total = pass_rate(rows)
    head = (f"ONNX conformance (onnx {onnx.__version__}: node cases + pytorch-converted, target c): "
            f"{passed} / {total} in-scope cases pass ({100 * passed / max(total, 1):.1f}%), "
            f"{len(rows) - total} out of scope")
    if markdown:
        lines = [head, "", "| operator | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        lines += [f"| {op} | " + " | ".join(str(count[op][k]) for k in cols) + " |" for op in OPERATORS]
    else:
        lines = [head, f"{'operator':<22}" + "".join(f"{k:>14}" for k in cols)]
        lines += [f"{op:<22}" + "".join(f"{count[op][k]:>14}" for k in cols) for op in OPERATORS]
    bullet = "- " if markdown else "  "
    scope = collections.Counter(_scope(why) for _, _, st, why in rows if st == "out of scope")
    lines += ["", "out of scope:"] + [f"{bullet}{n} case(s): {label}" for label, n in scope.most_common()]
    lines += ["", "compared with onnxruntime instead of the stored data:"]
    lines += [f"{bullet}{n}: {why}" for n, why in KNOWN_DATA_ISSUES.items()]
    lines += ["", "skipped and failed (in scope):"]
    lines += [f"{bullet}{st.upper()} {n} ({op}): {KNOWN_GAPS.get(n, why)}" for n, op, st, why in rows
              if st in ("skip", "fail")] or [f"{bullet}none"]
    return "\n".join(lines)
def tally(cases: list[Case], results: dict, skipped: list) -> str:
    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for case in cases:
        rows[case.op][results[case.name][0]] += 1
    for _, op, _ in skipped:
        rows[op]["skip"] += 1
    lines = [f"{'operator':<22}{'pass':>6}{'fail':>6}{'skip':>6}"]
    for op in OPERATORS:
        c = rows.get(op, collections.Counter())
        lines.append(f"{op:<22}{c['pass']:>6}{c['fail']:>6}{c['skip']:>6}")
    notes = [f"  SKIP {n}: {why}" for n, _, why in skipped]
    notes += [f"  vs onnxruntime {n}: {why}" for n, why in KNOWN_DATA_ISSUES.items()]
    notes += [f"  vs onnx.reference {n}: {why}" for n, why in KNOWN_DATA_ISSUES_ONNX_REFERENCE.items()]
    notes += [f"  {results[c.name][0].upper()} {c.name}: {results[c.name][1]}" for c in cases
              if results[c.name][0] != "pass"]
    return "\n".join(lines + ["skipped / failed cases:"] + notes)


@pytest.fixture(scope="module")
def conformance(shared_kernel_cache):
    node, skipped = _node_cases()
    cases = node + _pytorch_converted_cases()
    results = run_cases(cases, _compiled_runner())
    return cases, results, skipped


def test_every_listed_operator_has_passing_cases(conformance, record_property):
    cases, results, skipped = conformance
    record_property("onnx_conformance", tally(cases, results, skipped))   # tests/conftest.py prints it
    passed = collections.Counter(c.op for c in cases if results[c.name][0] == "pass")
    missing = [op for op in OPERATORS if not passed[op]]
    assert not missing, f"operators with no passing conformance case: {missing}"


@pytest.fixture(scope="module")
def oracle(conformance):
    """The same imports run by the numpy reference: separates import errors from codegen errors."""
    cases, results, _ = conformance
    return run_cases([c for c in cases if results[c.name][0] != "skip"], None)


def test_imported_semantics_match_onnx(oracle):
    failed = {name: detail for name, (status, detail) in oracle.items() if status != "pass"}
    assert not failed, failed


def test_compiled_c_matches_onnx(conformance, oracle):
    cases, results, _ = conformance
    failed = {c.name: results[c.name][1] for c in cases if results[c.name][0] == "fail"}
    assert not failed, (f"{len(failed)} case(s) import correctly (the reference passes) but the compiled C "
                        f"module fails: {failed}")


def test_skips_are_explained(conformance):
    """Every skip is out of scope or a KNOWN_GAPS entry with its reason: a new skip fails here."""
    cases, results, skipped = conformance
    rows = outcomes(cases, results, skipped)
    unexplained = {n: why for n, _, st, why in rows if st == "skip" and n not in KNOWN_GAPS}
    assert not unexplained, unexplained
    stale = set(KNOWN_GAPS) - {n for n, _, st, _ in rows if st == "skip"}
    assert not stale, f"KNOWN_GAPS entries that no longer skip (remove them): {stale}"


def test_pass_rate_and_every_resize_case(conformance):
    """The acceptance: >= 98% of the in-scope cases pass, and every Resize/Upsample case does."""
    cases, results, skipped = conformance
    rows = outcomes(cases, results, skipped)
    passed, total = pass_rate(rows)
    assert passed >= MIN_PASS_RATE * total, f"{passed} / {total} in-scope cases pass"
    resize = {n: (st, why) for n, op, st, why in rows if op in ("Resize", "Upsample") and st != "pass"}
    assert not resize, resize


if __name__ == "__main__":
    import sys

    node, skipped = _node_cases()
    cases = node + _pytorch_converted_cases()
    report = tally(cases, run_cases(cases, _compiled_runner()), skipped, markdown="--markdown" in sys.argv)
    if "--markdown" in sys.argv:
        path = Path(sys.argv[sys.argv.index("--markdown") + 1])
        path.write_text("# ONNX conformance\n\nGenerated by `python tests/test_onnx_conformance.py --markdown "
                        f"{path.as_posix()}`; `pytest tests/test_onnx_conformance.py` prints the same table.\n\n"
                        + report + "\n")
    print(report)
