"""Random small CNN graphs for property tests (issue 12 point 6), reusable by any test file.

A graph is drawn as a *spec*: plain data (tuples, dicts, strings) that ``build`` replays through
the DSL, so a failing spec printed by hypothesis is itself a regression test
(``check_specs([spec])``). The operators come from the registry, read through their traits:

- every unary ``ACTIVATION`` (numeric attributes drawn around their defaults and kept only if
  the registry's own ``Attr.check`` accepts them; string attributes from ``STRING_CHOICES``),
  every ``IDENTITY`` op (dropout, identity) and prelu (per channel or shared),
- every binary ``ELEMENTWISE`` operator (residual add/sub/mul, div by a positive tensor),
- every 2-D ``POOL`` operator (kernel, stride, padding, dilation, ceil_mode, count_include_pad),
  plus lp_pool2d and the global pools,
- the ``ANCHOR``s conv2d (kernel/stride/padding/dilation/groups), conv_transpose2d and dense
  (after flatten), batch_norm, instance_norm, lrn, scale_shift, concat, pad, upsample2d,
  depth_to_space / space_to_depth, unpool_nearest2d, transpose, max_pool2d_indices +
  max_unpool2d, softmax / log_softmax.

Names are drawn too (``names=``): plain DSL names, or hostile ones: template locals, C/CUDA
keywords, names differing only in case, names that are not identifiers at all.

Compiling is what costs (one gcc call is ~0.3 s plus ~0.1 s per kernel), so ``check_specs``
builds MANY specs into ONE graph (independent subgraphs, each with its own input and outputs),
compiles that once per configuration (target c at opt 0 and opt 2, the CUDA source through the
cuda-emu target), and compares every output with the numpy reference. When the combined module
disagrees it falls back to one module per spec, so the failure names the offending spec alone
(and later shrink steps, which re-run single specs, hit the kernel cache).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

import cnncc
from cnncc import ops
from cnncc.frontends import dsl
from cnncc.reference import random_inputs, reference

# -- the registry, read through traits ----------------------------------------------------------
ACTIVATIONS = sorted((n for n, o in ops.REGISTRY.items()
                      if o.has(ops.ACTIVATION) and o.arity == (1, 1) and not o.required_params),
                     key=lambda n: (n != "relu", n))          # the simplest first: shrinking goes there
BINARY = sorted(n for n, o in ops.REGISTRY.items() if o.has(ops.ELEMENTWISE) and o.arity == (2, 2))
POOLS = sorted((n for n, o in ops.REGISTRY.items() if o.has(ops.POOL) and n.endswith("2d")
                and "kernel_size" in o.attrs), key=lambda n: (n != "max_pool2d", n))
IDENTITIES = sorted(n for n, o in ops.REGISTRY.items() if o.has(ops.IDENTITY) and o.arity == (1, 1))
#: string-valued attributes have no numeric neighbourhood to draw from; their legal values
STRING_CHOICES = {("gelu", "approximate"): ["none", "tanh"]}

#: hostile tensor names: locals of the C and CUDA templates, keywords, libc/libm names, names that
#: are not identifiers, names that a sanitizer could map alike (issue 12 point 1 is the fix)
HOSTILE_NAMES = ["src", "dst", "input", "x", "data", "tile", "buf", "xpad", "px", "h", "w", "f", "n", "i", "j",
                 "k", "oc", "ic", "acc", "out", "in", "weights", "arena", "inputs", "outputs", "N", "batch",
                 "int", "float", "for", "if", "return", "static", "const", "restrict", "__global__", "main",
                 "exp", "expf", "max", "min", "fmaxf", "malloc", "free", "threadIdx", "blockIdx", "_", "__x",
                 "Conv", "conv", "CONV", "a.b", "a-b", "a b", "1x", "0", "/layer1/conv1/Conv", "x:0", "ü", "a$b",
                 "cnncc_forward", "omp", "size_t", "t0", "t1"]


@dataclass
class Spec:
    """One random graph: input (C, H, W) and layers; layer i reads tensors by index (0 = input)."""

    input_shape: tuple
    layers: tuple          # ((op, (input indices), attrs, name or None), ...)
    outputs: tuple         # indices of the tensors returned
    input_name: str = "x"

    def code(self) -> str:
        """The spec as a literal, to paste into a regression test."""
        return (f"Spec(input_shape={self.input_shape!r}, input_name={self.input_name!r},\n"
                f"     layers={self.layers!r},\n     outputs={self.outputs!r})")


# -- replaying a spec through the DSL ------------------------------------------------------------
def _apply(op: str, xs: list, attrs: dict, name: str | None):
    a = dict(attrs)
    if op == "conv2d":
        return dsl.conv2d(xs[0], a.pop("out_channels"), a.pop("kernel_size"), name=name, **a)
    if op == "conv_transpose2d":
        return dsl.conv_transpose2d(xs[0], a.pop("out_channels"), a.pop("kernel_size"), name=name, **a)
    if op == "dense":
        return dsl.dense(xs[0], a["units"], name=name)
    if op == "batch_norm":
        return dsl.batch_norm(xs[0], name=name)
    if op == "instance_norm":
        return dsl.instance_norm(xs[0], name=name)
    if op == "scale_shift":
        c = xs[0].channels
        return dsl.scale_shift(xs[0], np.linspace(0.5, 1.5, c), np.linspace(-0.2, 0.2, c), name=name)
    if op == "div_positive":       # a / (sigmoid(b) + 0.5): the denominator stays in (0.5, 1.5)
        den = dsl.add(dsl.sigmoid(xs[1]), 0.5)
        return dsl.div(xs[0], den, name=name)
    if op == "prelu":
        return dsl.prelu(xs[0], per_channel=a["per_channel"], init=a["init"], name=name)
    if op == "max_pool_unpool":    # max_pool2d_with_indices -> max_unpool2d: the indices travel as int64
        y, idx = dsl.max_pool2d_with_indices(xs[0], a["kernel_size"], name=name)
        # the indices count in the pooled input's plane, so the unpooled output must have its size
        # (as in PyTorch, whose default output size drops the floor-mode remainder and rejects them)
        return dsl.max_unpool2d(y, idx, a["kernel_size"], output_size=_shape(xs[0])[1:])
    if op == "concat":
        return dsl.concat(xs, name=name, **a)
    if op == "pad":
        return dsl.pad(xs[0], name=name, **a)
    if op == "upsample2d":
        return dsl.upsample2d(xs[0], name=name, **a)
    return dsl.layer(op, xs, a, name=name)


def build_into(spec: Spec, like=None, taken: set | None = None) -> list:
    """Add the spec's layers to the model of ``like`` (a new model when None); returns the output
    tensors. Names already ``taken`` (by an earlier spec of the same model) get a suffix."""
    taken = set() if taken is None else taken

    def fresh(name):
        if name is None:
            return None
        base, k = name, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    x = dsl.input(fresh(spec.input_name), (dsl.N, *spec.input_shape), like=like)
    tensors = [x]
    for op, ins, attrs, name in spec.layers:
        y = _apply(op, [tensors[i] for i in ins], attrs, fresh(name))
        taken.add(y.name)
        tensors.append(y)
    return [tensors[i] for i in spec.outputs]


def build(specs: list[Spec]) -> cnncc.Graph:
    """One graph holding every spec as an independent subgraph."""
    taken: set = set()
    outs, first = [], None
    for spec in specs:
        o = build_into(spec, like=first, taken=taken)
        first = first or o[0]
        taken |= set(first._b.graph.nx.nodes)
        outs += o
    return dsl.graph(*outs)


# -- drawing specs ---------------------------------------------------------------------------------
def _shape(t) -> tuple:
    return tuple(int(d) for d in t.shape[1:])


def names(hostile: bool = True):
    """Layer names: None (the DSL names it), plain identifiers, or hostile names."""
    plain = st.sampled_from(["y", "conv_a", "block1_out", "Out", "features", "stage2"])
    options = [st.none(), plain]
    if hostile:
        options += [st.sampled_from(HOSTILE_NAMES), st.text(min_size=1, max_size=6)]
    return st.one_of(*options)


#: values for attributes without a default (a new one fails here, loudly, until it gets its choices)
REQUIRED_CHOICES = {("pow", "exponent"): [2.0, 3.0]}


def _numeric_near(default: float, draw):
    return draw(st.sampled_from([default, default * 0.5, default * 2 + 0.1, -default - 0.25, 0.0, 1.0]))


def _activation_attrs(draw, op: str) -> dict:
    attrs = {}
    for key, spec in ops.get(op).attrs.items():
        if (op, key) in STRING_CHOICES:
            attrs[key] = draw(st.sampled_from(STRING_CHOICES[(op, key)]))
        elif op == "clip":
            continue
        elif spec.default is ops.REQUIRED:       # a required number (pow's exponent): small integers keep signs exact
            attrs[key] = draw(st.sampled_from(REQUIRED_CHOICES[(op, key)]))
        elif isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            v = float(_numeric_near(float(spec.default), draw))
            if spec.check is None or ops._safe_check(spec.check, v):
                attrs[key] = v
    if op == "clip":
        lo = draw(st.sampled_from([None, -1.0, 0.0, 0.5]))
        hi = draw(st.sampled_from([None, 0.75, 1.0, 6.0]))
        if lo is not None and hi is not None and hi < lo:
            lo, hi = hi, lo
        attrs = {"min": lo, "max": hi}
    return attrs


def _conv_attrs(draw, c: int, h: int, w: int) -> dict:
    k = draw(st.integers(1, min(5, max(1, max(h, w)))))
    kernel = (k, draw(st.sampled_from([k, 1, 3])))
    dilation = draw(st.sampled_from([1, 1, 2]))
    stride = draw(st.sampled_from([1, 1, 2, (1, 2), 3]))
    pads = []
    for n, kk in zip((h, w), kernel):
        eff = dilation * (kk - 1) + 1
        need = max(0, math.ceil((eff - n) / 2))
        pads.append(draw(st.integers(need, need + min(2, kk))))
    groups = draw(st.sampled_from([g for g in (1, 1, 2, 3, c) if c % g == 0]))
    out = groups * draw(st.integers(1, 3))
    return {"out_channels": out, "kernel_size": kernel, "stride": stride, "padding": tuple(pads),
            "dilation": dilation, "groups": groups}


def _pool_attrs(draw, op: str, h: int, w: int) -> dict | None:
    k = draw(st.integers(1, max(1, min(3, h, w))))
    stride = draw(st.sampled_from([None, 1, 2, 3]))
    pad = draw(st.integers(0, k // 2))
    dilation = 1
    if op.startswith(("max", "min")) and min(h, w) + 2 * pad >= 2 * (k - 1) + 1:
        dilation = draw(st.sampled_from([1, 2]))
    attrs = {"kernel_size": k, "stride": stride, "padding": pad, "dilation": dilation,
             "ceil_mode": draw(st.booleans())}
    if "count_include_pad" in ops.get(op).attrs:
        attrs["count_include_pad"] = draw(st.booleans())
    return attrs


@st.composite
def specs(draw, max_layers: int = 6, hostile_names: bool = True) -> Spec:
    """A random small CNN: a chain with branches (residual ops, concats) over a small input."""
    c = draw(st.integers(1, 4))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    name_st = names(hostile_names)
    input_name = draw(st.one_of(st.just("x"), name_st.filter(lambda v: v is not None)))
    x = dsl.input(input_name, (dsl.N, c, h, w))
    tensors = [x]
    layers = []
    n_layers = draw(st.integers(1, max_layers))
    flat = False                                # after flatten/dense: rank 2, only a few ops apply
    for _ in range(n_layers):
        i = len(tensors) - 1 if draw(st.integers(0, 3)) else draw(st.integers(0, len(tensors) - 1))
        t = tensors[i]
        rank4 = len(t.shape) == 4
        if not rank4:
            kinds = ["activation", "dense", "binary", "softmax"]
        else:
            kinds = ["activation", "conv", "pool", "binary", "batch_norm", "concat", "global_pool", "norm",
                     "flatten_dense", "conv_transpose", "resize", "softmax", "pad"]
        kind = draw(st.sampled_from(kinds))
        name = draw(name_st)
        op, ins, attrs = None, (i,), {}
        if kind == "activation":
            op = draw(st.sampled_from(ACTIVATIONS + IDENTITIES + ["prelu"]))
            if op == "prelu":
                attrs = {"per_channel": rank4 and draw(st.booleans()), "init": draw(st.sampled_from([0.25, -0.5]))}
            else:
                attrs = _activation_attrs(draw, op)
        elif kind == "conv":
            op, attrs = "conv2d", _conv_attrs(draw, *_shape(t))
            attrs["bias"] = draw(st.booleans())
        elif kind == "conv_transpose":
            cin, hh, ww = _shape(t)
            k = draw(st.integers(1, 4))
            s = draw(st.integers(1, 3))
            p = draw(st.integers(0, (k - 1) // 1 // 2))
            g = draw(st.sampled_from([gg for gg in (1, cin) if cin % gg == 0]))
            op = "conv_transpose2d"
            attrs = {"out_channels": g * draw(st.integers(1, 2)), "kernel_size": k, "stride": s, "padding": p,
                     "output_padding": draw(st.integers(0, s - 1)), "groups": g}
        elif kind == "pool":
            op = draw(st.sampled_from(POOLS + ["lp_pool2d"]))
            _, hh, ww = _shape(t)
            attrs = _pool_attrs(draw, op, hh, ww)
            if op == "lp_pool2d":
                attrs = {"kernel_size": attrs["kernel_size"], "stride": attrs["stride"],
                         "ceil_mode": attrs["ceil_mode"], "p": draw(st.sampled_from([1.0, 2.0, 3.0]))}
        elif kind == "binary":
            same = [j for j, u in enumerate(tensors) if tuple(u.shape) == tuple(t.shape) and j != i]
            j = draw(st.sampled_from(same)) if same else i
            op = draw(st.sampled_from(BINARY))
            if op == "div":
                op = "div_positive"
            ins = (i, j)
        elif kind == "concat":
            same = [j for j, u in enumerate(tensors) if len(u.shape) == 4 and tuple(u.shape[2:]) == tuple(t.shape[2:])]
            others = draw(st.lists(st.sampled_from(same), min_size=1, max_size=3))
            op, ins, attrs = "concat", (i, *others), {"axis": 1}
        elif kind == "batch_norm":
            op = "batch_norm"
        elif kind == "norm":
            op = draw(st.sampled_from(["instance_norm", "lrn", "scale_shift"]))
            if op == "lrn":
                attrs = {"size": draw(st.integers(1, 5)), "alpha": 1e-2, "beta": 0.75, "k": 1.0}
            if op == "instance_norm" and t.shape[2] * t.shape[3] == 1:
                op = "scale_shift"          # a 1x1 plane has zero variance: instance norm is all bias
        elif kind == "global_pool":
            op = draw(st.sampled_from(["global_avg_pool", "global_max_pool"]))
        elif kind == "flatten_dense":
            flat_name = _unused(draw(name_st), tensors)
            layers.append(("flatten", (i,), {}, flat_name))
            tensors.append(_apply("flatten", [t], {}, flat_name))
            i, t = len(tensors) - 1, tensors[-1]
            op, ins, attrs = "dense", (i,), {"units": draw(st.integers(1, 12))}
        elif kind == "dense":
            op, attrs = "dense", {"units": draw(st.integers(1, 12))}
        elif kind == "softmax":
            op = draw(st.sampled_from(["softmax", "log_softmax"]))
            attrs = {"axis": 1}
        elif kind == "pad":
            op = "pad"
            mode = draw(st.sampled_from(["constant", "edge", "reflect"]))
            _, hh, ww = _shape(t)
            limit = min(hh, ww) - 1 if mode == "reflect" else 2
            p = draw(st.integers(0, max(0, min(2, limit))))
            attrs = {"pads": p, "mode": mode, "value": draw(st.sampled_from([0.0, -1.5]))}
        elif kind == "resize":
            cin, hh, ww = _shape(t)
            choice = draw(st.sampled_from(["nearest", "bilinear", "d2s", "s2d", "unpool", "transpose", "max_unpool"]))
            if choice == "unpool":
                op, attrs = "unpool_nearest2d", {"scale": draw(st.sampled_from([2, (1, 2)]))}
            elif choice == "transpose":
                op, attrs = "transpose", {"perm": (0, 1, 3, 2)}
            elif choice == "max_unpool" and hh >= 2 and ww >= 2:
                op, attrs = "max_pool_unpool", {"kernel_size": 2}
            elif choice == "d2s" and cin % 4 == 0:
                op, attrs = "depth_to_space", {"block": 2, "mode": draw(st.sampled_from(["DCR", "CRD"]))}
            elif choice == "s2d" and hh % 2 == 0 and ww % 2 == 0:
                op, attrs = "space_to_depth", {"block": 2, "mode": draw(st.sampled_from(["DCR", "CRD"]))}
            else:
                mode = "bilinear" if choice == "bilinear" else "nearest"
                op, attrs = "upsample2d", {"scale_factor": draw(st.sampled_from([2, 3])), "mode": mode,
                                           "align_corners": mode == "bilinear" and draw(st.booleans())}
        name = _unused(name, tensors)
        tensors.append(_apply(op, [tensors[k] for k in ins], attrs, name))
        layers.append((op, ins, attrs, name))
    # outputs: the last tensor, and sometimes an earlier one too (a graph with two outputs)
    outputs = [len(tensors) - 1]
    if len(tensors) > 2 and draw(st.booleans()):
        extra = draw(st.integers(1, len(tensors) - 2))
        outputs.append(extra)
    return Spec((c, h, w), tuple(layers), tuple(outputs), input_name)


def _unused(name, tensors):
    """A drawn name that the model being drawn already has becomes None (the DSL names it)."""
    if name is None:
        return None
    graph = tensors[0]._b.graph
    return None if name in graph else name


# -- checking specs against the reference -----------------------------------------------------------
#: ("c", 2, "blocked"): opt 2 with the blocked layout (the C target's default) by a channel block of
#: FUZZ_BLOCK = 2, so the fuzzer's few channels (1-12) block often (NCHW2c; passes/layout.py,
#: compiler.layout_vector's CNNCC_LAYOUT_BLOCK) while odd channel counts keep NCHW kernels in the
#: same graphs. It stands in for a plain ("c", 2), whose default layout would block nothing here
#: (16 or 8 floats per block), keeping the fuzzer's CI time (a 4th configuration cost +40% of it).
CONFIGS = (("c", 0), ("c", 2, "blocked"), ("cuda-emu", 2))
FUZZ_BLOCK = "2"


class Mismatch(AssertionError):
    pass


def _compare(g, mod, feeds, expected, label: str) -> list[str]:
    got = mod(feeds)
    if not isinstance(got, dict):
        got = {g.outputs[0]: got}
    if not isinstance(expected, dict):
        expected = {g.outputs[0]: expected}
    bad = []
    for k, want in expected.items():
        out = got[k]
        scale = max(1.0, float(np.nanmax(np.abs(want))) if want.size and np.isfinite(want).any() else 1.0)
        if out.shape != want.shape:
            bad.append(f"{label}: output '{k}' shape {out.shape} != reference {want.shape}")
        elif not np.allclose(out, want, rtol=1e-3, atol=1e-4 * scale, equal_nan=True):
            err = float(np.nanmax(np.abs(out.astype(np.float64) - want)))
            bad.append(f"{label}: output '{k}' differs from the reference by {err:.3g} (scale {scale:.3g})")
    return bad


def check_graph(g, configs=CONFIGS, batch: int = 2, seed: int = 0) -> list[str]:
    """Compile ``g`` for every (target, opt) and compare with the reference; returns the problems."""
    feeds = random_inputs(g, batch, np.random.default_rng(seed))
    expected = reference(g, feeds)
    problems = []
    for target, opt, *layout in configs:
        if layout:
            old = os.environ.get("CNNCC_LAYOUT_BLOCK")
            os.environ["CNNCC_LAYOUT_BLOCK"] = FUZZ_BLOCK
            try:
                mod = cnncc.compile(g, target=target, opt_level=opt, layout=layout[0])
            finally:
                if old is None:
                    del os.environ["CNNCC_LAYOUT_BLOCK"]
                else:
                    os.environ["CNNCC_LAYOUT_BLOCK"] = old
            problems += _compare(g, mod, feeds, expected, f"{target} opt {opt} layout {layout[0]}")
            continue
        mod = cnncc.compile(g, target=target, opt_level=opt)
        problems += _compare(g, mod, feeds, expected, f"{target} opt {opt}")
    return problems


#: set once a combined module has failed in this process: from then on (hypothesis shrinking)
#: every spec is checked in its own module, which the kernel cache serves when unchanged
_PER_SPEC = False
_SEEN: dict[str, list[str]] = {}         # spec code -> its problems, for per-spec re-checks


def check_specs(spec_list: list[Spec], configs=CONFIGS, batch: int = 2) -> None:
    """All specs in one module per configuration; on a mismatch or a crash, one module per spec so
    the error names the offending spec alone, with its code to paste into a regression test."""
    global _PER_SPEC
    if not _PER_SPEC and len(spec_list) > 1:
        try:
            if not check_graph(build(spec_list), configs, batch):
                return
        except Exception:
            pass
        _PER_SPEC = True
    for spec in spec_list:
        key = f"{spec.code()} {configs} {batch}"
        if key not in _SEEN:
            try:
                _SEEN[key] = check_graph(build([spec]), configs, batch)
            except Exception as e:
                _SEEN[key] = [f"{type(e).__name__}: {str(e)[-3000:]}"]
        problems = _SEEN[key]
        if problems:
            raise Mismatch("\n".join(problems) + "\nspec:\n" + spec.code())
