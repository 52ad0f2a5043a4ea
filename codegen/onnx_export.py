"""A cnncc Graph as an ONNX ModelProto, so onnxruntime can run any DSL model as the peer.

Weights become initializers, the batch dimension N becomes the symbolic ONNX dim "N", fused
groups are written out member by member (onnxruntime does its own fusion). Every operator maps
onto standard ONNX (opset 18); where ONNX lacks a parameter (softplus beta, sum pooling) the
export spells the formula with basic ops rather than approximate it.

    from cnncc.codegen.onnx_export import to_onnx
    proto = to_onnx(graph)                       # onnx.ModelProto, checked
    session = onnxruntime.InferenceSession(proto.SerializeToString())
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import sympy

from cnncc import ops
from cnncc.errors import UnsupportedError
from cnncc.registry import registrar
from cnncc.interpreter import Interpreter
from cnncc.ir import Graph, Node, TensorType

OPSET = 18


class _Emitter(Interpreter):
    """Collects ONNX nodes and initializers; hands out unique names for intermediate tensors.
    As an Interpreter its values are TensorTypes: each operator emits its ONNX nodes."""

    def __init__(self, onnx_mod, graph: Graph):
        super().__init__(graph)
        self.onnx = onnx_mod
        self.helper = onnx_mod.helper
        self.nodes = []
        self.inits = []
        self._n = 0

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}__{self._n}"

    def const(self, base: str, arr) -> str:
        arr = np.asarray(arr)
        name = self.fresh(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, base: str = "t", **attrs) -> str:
        out = output or self.fresh(base)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=self.fresh(op), **attrs))
        return out

    def run_node(self, node: Node, in_types: list[TensorType]) -> TensorType:
        EMITTERS[node.op](self, node, in_types, node.name)
        return node.type

    def run_fused(self, node: Node, args: list[TensorType]) -> TensorType:
        super().run_fused(node, args)                  # the members, one by one
        self.node("Identity", [node.members[-1].name], node.name)
        return node.type


def to_onnx(graph: Graph, opset: int = OPSET):
    """Export ``graph`` (any pass snapshot) to a checked onnx.ModelProto."""
    try:
        import onnx
    except ImportError:  # pragma: no cover
        raise UnsupportedError("the ONNX exporter needs the 'onnx' extra: pip install 'cnncc[onnx]'") from None
    flat = [m for n in graph for m in (n.members if n.op == "fused" else [n])]
    missing = sorted({n.op for n in flat if n.op not in EMITTERS and n.op != "input"})
    if missing:
        raise UnsupportedError(f"the ONNX exporter has no mapping for: {', '.join(missing)}")
    em = _Emitter(onnx, graph)
    em.run({name: graph[name].type for name in graph.inputs})
    inputs = [_value_info(onnx, name, graph[name].type) for name in graph.inputs]
    outputs = [_value_info(onnx, name, graph[name].type) for name in graph.outputs]
    g = onnx.helper.make_graph(em.nodes, graph.name, inputs, outputs, em.inits)
    model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="cnncc")
    model.ir_version = min(model.ir_version, 10)  # onnxruntime releases lag the newest IR version
    onnx.checker.check_model(model)
    return model


def _value_info(onnx, name: str, ttype: TensorType):
    dims = []
    for d in ttype.shape:
        d = sympy.sympify(d)
        dims.append(int(d) if d.is_number else str(d))
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(ttype.dtype))
    return onnx.helper.make_tensor_value_info(name, elem, dims)


# -------------------------------------------------------------------------------------------
# emitters: (emitter, node, input types, output name) -> None
EMITTERS: dict[str, Callable] = {}


emits = registrar(EMITTERS)


def _onnx_pads(pads) -> list[int]:
    """cnncc [(lo, hi) per dim] -> ONNX [begins..., ends...]."""
    return [int(lo) for lo, _ in pads] + [int(hi) for _, hi in pads]


def _channel_shape(rank: int) -> tuple:
    return (-1,) + (1,) * (rank - 2)


@emits("constant")
def _constant(em, node, ins, out):
    value = em.onnx.numpy_helper.from_array(np.ascontiguousarray(node.params["value"]), out + "_value")
    em.node("Constant", [], out, value=value)


def _with_weights(em, node) -> list[str]:
    """A layer's inputs as ONNX Conv / ConvTranspose / Gemm take them: x, weight, bias if any."""
    args = [node.inputs[0], em.const(node.name + "_weight", node.params["weight"])]
    if "bias" in node.params:
        args.append(em.const(node.name + "_bias", node.params["bias"]))
    return args


@emits("conv1d", "conv2d", "conv_transpose2d")
def _conv(em, node, ins, out):
    g = ops.conv_geometry(node, ins[0])
    transposed = node.op == "conv_transpose2d"
    extra = {"output_padding": list(g["output_padding"])} if transposed else {}
    em.node("ConvTranspose" if transposed else "Conv", _with_weights(em, node), out, kernel_shape=list(g["kernel"]),
            strides=list(g["stride"]), dilations=list(g["dilation"]), pads=_onnx_pads(g["pads"]),
            group=g["groups"], **extra)


@emits("dense")
def _dense(em, node, ins, out):
    w = node.params["weight"]
    if ins[0].rank == 2:
        em.node("Gemm", _with_weights(em, node), out, transB=1)
        return
    y = em.node("MatMul", [node.inputs[0], em.const(node.name + "_weightT", np.ascontiguousarray(w.T))],
                None if "bias" in node.params else out)
    if "bias" in node.params:
        em.node("Add", [y, em.const(node.name + "_bias", node.params["bias"])], out)


@emits("matmul")
def _matmul(em, node, ins, out):
    em.node("MatMul", list(node.inputs), out)


def _pool_emitter(kind: str):
    def emit(em, node, ins, out):
        g = ops.pool_geometry(node, ins[0])
        common = dict(kernel_shape=list(g["kernel"]), strides=list(g["stride"]), pads=_onnx_pads(g["pads"]),
                      ceil_mode=int(g["ceil_mode"]))
        x = node.inputs[0]
        if kind in ("max", "min"):
            src = em.node("Neg", [x]) if kind == "min" else x
            y = em.node("MaxPool", [src], out if kind == "max" else None, dilations=list(g["dilation"]), **common)
            if kind == "min":
                em.node("Neg", [y], out)
            return
        if kind == "avg":
            if any(d != 1 for d in g["dilation"]):
                raise UnsupportedError(f"layer '{node.name}': dilated average pooling is not exported to ONNX")
            em.node("AveragePool", [x], out, count_include_pad=int(bool(node.attrs.get("count_include_pad", True))),
                    **common)
            return
        _sum_pool(em, node, ins, x, out)
    return emit


def _sum_pool(em, node, ins, x: str, out: str) -> None:
    """Window sums as a 1-filled depthwise convolution (exact with padding and dilation)."""
    g = ops.pool_geometry(node, ins[0])
    c = int(ins[0].shape[1])
    pads = list(g["pads"])
    if g["ceil_mode"]:  # the extra (ceil) window reads zeros: pad the far end by what it lacks
        for i in range(g["nd"]):
            n, (lo, hi) = int(ins[0].shape[2 + i]), pads[i]
            out_i = int(node.type.shape[2 + i])
            eff = g["dilation"][i] * (g["kernel"][i] - 1) + 1
            pads[i] = (lo, hi + max(0, (out_i - 1) * g["stride"][i] + eff - (n + lo + hi)))
    w = np.ones((c, 1, *g["kernel"]), np.float32)
    em.node("Conv", [x, em.const(node.name + "_ones", w)], out, kernel_shape=list(g["kernel"]),
            strides=list(g["stride"]), dilations=list(g["dilation"]), pads=_onnx_pads(pads), group=c)


for _kind in ("max", "avg", "min", "sum"):
    for _nd in (1, 2):
        EMITTERS[f"{_kind}_pool{_nd}d"] = _pool_emitter(_kind)


@emits("lp_pool2d")
def _lp_pool(em, node, ins, out):
    # spelled as (sum-pool of |x|^p)^(1/p): ONNX LpPool takes only an integer p
    p = float(node.attrs["p"])
    powered = em.node("Pow", [em.node("Abs", [node.inputs[0]]), _f(em, p)])
    summed = em.fresh(node.name + "_sum")
    _sum_pool(em, node, ins, powered, summed)
    em.node("Pow", [summed, _f(em, 1.0 / p)], out)


@emits("global_avg_pool")
def _gap(em, node, ins, out):
    em.node("GlobalAveragePool", [node.inputs[0]], out)


@emits("global_max_pool")
def _gmp(em, node, ins, out):
    em.node("GlobalMaxPool", [node.inputs[0]], out)


@emits("batch_norm")
def _bn(em, node, ins, out):
    p = node.params
    args = [node.inputs[0]] + [em.const(f"{node.name}_{k}", p[k]) for k in ("weight", "bias", "mean", "var")]
    em.node("BatchNormalization", args, out, epsilon=float(node.attrs["eps"]))


@emits("instance_norm")
def _instance_norm(em, node, ins, out):
    c = int(ins[0].shape[1])
    w = node.params.get("weight", np.ones(c, np.float32))
    b = node.params.get("bias", np.zeros(c, np.float32))
    em.node("InstanceNormalization", [node.inputs[0], em.const(node.name + "_w", w), em.const(node.name + "_b", b)],
            out, epsilon=float(node.attrs.get("eps", 1e-5)))


@emits("scale_shift")
def _scale_shift(em, node, ins, out):
    shape = _channel_shape(ins[0].rank)
    s = em.const(node.name + "_scale", node.params["scale"].reshape(shape))
    t = em.const(node.name + "_shift", node.params["shift"].reshape(shape))
    em.node("Add", [em.node("Mul", [node.inputs[0], s]), t], out)


@emits("lrn")
def _lrn(em, node, ins, out):
    a = node.attrs
    em.node("LRN", [node.inputs[0]], out, size=int(a["size"]), alpha=float(a["alpha"]), beta=float(a["beta"]),
            bias=float(a["k"]))


def _f(em, v) -> str:
    return em.const("c", np.float32(v))


def _simple(onnx_op: str, **fixed):
    return lambda em, node, ins, out: em.node(onnx_op, [node.inputs[0]], out, **fixed)


# every operator the registry maps onto one ONNX operator without attributes (OpDef.onnx)
for _name, _opdef in ops.REGISTRY.items():
    if _opdef.onnx:
        EMITTERS.setdefault(_name, _simple(_opdef.onnx))


@emits("leaky_relu")
def _leaky(em, node, ins, out):
    em.node("LeakyRelu", [node.inputs[0]], out, alpha=float(node.attrs["alpha"]))


@emits("elu")
def _elu(em, node, ins, out):
    em.node("Elu", [node.inputs[0]], out, alpha=float(node.attrs["alpha"]))


@emits("hardsigmoid")
def _hardsigmoid(em, node, ins, out):
    em.node("HardSigmoid", [node.inputs[0]], out, alpha=float(node.attrs["alpha"]), beta=float(node.attrs["beta"]))


@emits("relu6", "clip")
def _clip(em, node, ins, out):
    lo, hi = (0.0, 6.0) if node.op == "relu6" else (node.attrs["min"], node.attrs["max"])
    args = [node.inputs[0], _f(em, lo) if lo is not None else "", _f(em, hi) if hi is not None else ""]
    while args and args[-1] == "":
        args.pop()
    em.node("Clip", args, out)


@emits("silu")
def _silu(em, node, ins, out):
    em.node("Mul", [node.inputs[0], em.node("Sigmoid", [node.inputs[0]])], out)


@emits("gelu")
def _gelu(em, node, ins, out):
    x = node.inputs[0]
    if node.attrs["approximate"] == "tanh":
        cube = em.node("Mul", [em.node("Mul", [x, x]), x])
        inner = em.node("Add", [x, em.node("Mul", [cube, _f(em, 0.044715)])])
        t = em.node("Tanh", [em.node("Mul", [inner, _f(em, math.sqrt(2 / math.pi))])])
    else:
        t = em.node("Erf", [em.node("Div", [x, _f(em, math.sqrt(2.0))])])
    half_x = em.node("Mul", [x, _f(em, 0.5)])
    em.node("Mul", [half_x, em.node("Add", [t, _f(em, 1.0)])], out)


@emits("softplus")
def _softplus(em, node, ins, out):
    beta, threshold = float(node.attrs["beta"]), float(node.attrs["threshold"])
    x = node.inputs[0]
    bx = em.node("Mul", [x, _f(em, beta)])
    soft = em.node("Div", [em.node("Softplus", [bx]), _f(em, beta)])
    em.node("Where", [em.node("Greater", [bx, _f(em, threshold)]), x, soft], out)


@emits("prelu")
def _prelu(em, node, ins, out):
    s = node.params["slope"]
    slope = s.reshape(_channel_shape(ins[0].rank)) if s.size > 1 else s.reshape(())
    em.node("PRelu", [node.inputs[0], em.const(node.name + "_slope", slope.astype(np.float32))], out)


for _name, _op in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div")):
    EMITTERS[_name] = (lambda op: lambda em, node, ins, out: em.node(op, list(node.inputs), out))(_op)


@emits("softmax", "log_softmax")
def _softmax(em, node, ins, out):
    em.node("Softmax" if node.op == "softmax" else "LogSoftmax", [node.inputs[0]], out, axis=int(node.attrs["axis"]))


@emits("flatten")
def _flatten(em, node, ins, out):
    em.node("Flatten", [node.inputs[0]], out, axis=int(node.attrs["axis"]))


@emits("reshape")
def _reshape(em, node, ins, out):
    # ONNX Reshape: 0 copies the input dim, -1 is inferred; a symbolic size becomes one of those
    spec = []
    for i, d in enumerate(node.attrs["shape"]):
        d = sympy.sympify(d)
        if d.is_number:
            spec.append(int(d))
        elif i < ins[0].rank and sympy.simplify(d - ins[0].shape[i]) == 0:
            spec.append(0)
        else:
            spec.append(-1)
    if spec.count(-1) > 1:
        raise UnsupportedError(f"layer '{node.name}': reshape to {node.attrs['shape']} needs more than one inferred dim")
    em.node("Reshape", [node.inputs[0], em.const(node.name + "_shape", np.array(spec, np.int64))], out)


@emits("transpose")
def _transpose(em, node, ins, out):
    perm = node.attrs.get("perm")
    perm = list(range(ins[0].rank))[::-1] if perm is None else [int(p) % ins[0].rank for p in perm]
    em.node("Transpose", [node.inputs[0]], out, perm=perm)


@emits("concat")
def _concat(em, node, ins, out):
    em.node("Concat", list(node.inputs), out, axis=int(node.attrs["axis"]))


@emits("slice")
def _slice(em, node, ins, out):
    bounds = ops.slice_bounds(node, ins[0].shape)
    cut = [(ax, b) for ax, b in enumerate(bounds) if b is not None]
    if not cut:
        em.node("Identity", [node.inputs[0]], out)
        return
    # .indices() gives a backwards walk to the front as stop -1; ONNX reads -1 as "the last": use INT64_MIN
    ends = [b[1] if b[1] >= 0 else -2 ** 63 for _, b in cut]
    args = [em.const(node.name + "_starts", np.array([b[0] for _, b in cut], np.int64)),
            em.const(node.name + "_ends", np.array(ends, np.int64)),
            em.const(node.name + "_axes", np.array([ax for ax, _ in cut], np.int64)),
            em.const(node.name + "_steps", np.array([b[2] for _, b in cut], np.int64))]
    em.node("Slice", [node.inputs[0], *args], out)


@emits("gather")
def _gather(em, node, ins, out):
    ax, idx = ops.gather_indices(node, ins[0].shape)
    em.node("Gather", [node.inputs[0], em.const(node.name + "_indices", idx.astype(np.int64))], out, axis=ax)


@emits("pow")
def _pow(em, node, ins, out):
    em.node("Pow", [node.inputs[0], _f(em, float(node.attrs["exponent"]))], out)


@emits("pad")
def _pad(em, node, ins, out):
    widths = ops.pad_widths(node, ins[0].rank)
    args = [node.inputs[0], em.const(node.name + "_pads", np.array(_onnx_pads(widths), np.int64))]
    mode = node.attrs["mode"]
    if mode == "constant":
        args.append(_f(em, node.attrs["value"]))
    em.node("Pad", args, out, mode=mode)


def _resize_scales(em, node, scales, out, **attrs) -> None:
    em.node("Resize", [node.inputs[0], "", em.const(node.name + "_scales", np.array([1, 1, *scales], np.float32))],
            out, **attrs)


@emits("unpool_nearest2d")
def _unpool_nearest(em, node, ins, out):
    s = ops.tup(node.attrs["scale"], 2)
    _resize_scales(em, node, [float(v) for v in s], out, mode="nearest", coordinate_transformation_mode="asymmetric",
                   nearest_mode="floor")


#: resize2d's PyTorch nearest rules as ONNX spells them (checked table by table before export)
_ONNX_NEAREST = {"pytorch": ("asymmetric", "floor"), "pytorch_exact": ("half_pixel", "round_prefer_ceil")}


@emits("resize2d")
def _resize(em, node, ins, out):
    """ONNX Resize (opset 18) with the node's attributes; the index/weight tables that ONNX's semantics
    give are compared with ours first, so a model is exported only where both pick the same pixels."""
    a = node.attrs
    if a["mode"] == "area":
        raise UnsupportedError(f"layer '{node.name}': resize mode 'area' (adaptive average pooling) has no "
                               "ONNX Resize equivalent")
    coord, rule = a["coordinate_mode"], a["nearest_mode"]
    if rule in _ONNX_NEAREST:
        coord, rule = _ONNX_NEAREST[rule]
    elif rule == "simple":
        scales = ops._resize_scales(node) or [o / i for o, i in zip(node.type.shape[2:], ins[0].shape[2:])]
        rule = "ceil" if all(s < 1 for s in scales) else "floor"
    attrs = dict(mode=a["mode"], coordinate_transformation_mode=coord, cubic_coeff_a=float(a["cubic_coeff_a"]),
                 exclude_outside=int(a["exclude_outside"]), antialias=int(a["antialias"]),
                 extrapolation_value=float(a["extrapolation_value"]))
    if a["mode"] == "nearest":
        attrs["nearest_mode"] = rule
    in_hw = [int(d) for d in ins[0].shape[2:]]
    out_hw = [int(d) for d in node.type.shape[2:]]
    given = ops._resize_scales(node)
    as_scales = given is not None and [math.floor(n * s) for n, s in zip(in_hw, given)] == out_hw
    probe = Node(node.name, node.op, list(node.inputs), {**a, "coordinate_mode": coord, "nearest_mode": rule,
                                                         "scale_factor": given if as_scales else None})
    ours = ops.resize_tables(node, in_hw, out_hw)
    theirs = ops.resize_tables(probe, in_hw, out_hw)
    for t0, t1 in zip(ours, theirs):
        if t0.index.shape != t1.index.shape or not (np.array_equal(t0.index, t1.index) and
                                                    np.allclose(t0.weight, t1.weight, atol=1e-6)):
            raise UnsupportedError(f"layer '{node.name}': ONNX Resize cannot express this resize exactly "
                                   f"(nearest_mode '{a['nearest_mode']}', scales {given}, size {tuple(out_hw)})")
    roi = ""
    if coord == "tf_crop_and_resize":
        (h0, h1), (w0, w1) = a["roi"]
        roi = em.const(node.name + "_roi", np.array([0, 0, h0, w0, 1, 1, h1, w1], np.float32))
    if as_scales:
        em.node("Resize", [node.inputs[0], roi, em.const(node.name + "_scales", np.array([1, 1, *given], np.float32))],
                out, **attrs)
        return
    sizes = em.const(node.name + "_hw", np.array(out_hw, np.int64))
    nc = em.node("Slice", [em.node("Shape", [node.inputs[0]]), em.const("s", np.array([0], np.int64)),
                           em.const("e", np.array([2], np.int64))])
    em.node("Resize", [node.inputs[0], roi, "", em.node("Concat", [nc, sizes], axis=0)], out, **attrs)


@emits("depth_to_space")
def _d2s(em, node, ins, out):
    em.node("DepthToSpace", [node.inputs[0]], out, blocksize=int(node.attrs["block"]), mode=node.attrs["mode"])


@emits("space_to_depth")
def _s2d(em, node, ins, out):
    b = int(node.attrs["block"])
    if node.attrs["mode"] == "DCR":
        em.node("SpaceToDepth", [node.inputs[0]], out, blocksize=b)
        return
    # CRD (pixel_unshuffle) has no ONNX operator: reshape, transpose, reshape
    c, h, w = (int(d) for d in ins[0].shape[1:])
    six = em.node("Reshape", [node.inputs[0], em.const("shape6", np.array([-1, c, h // b, b, w // b, b], np.int64))])
    moved = em.node("Transpose", [six], perm=[0, 1, 3, 5, 2, 4])
    em.node("Reshape", [moved, em.const("shape4", np.array([-1, c * b * b, h // b, w // b], np.int64))], out)


@emits("max_pool2d_indices")
def _mp_indices(em, node, ins, out):
    # ONNX MaxPool's second output indexes the whole (N, C, H, W) tensor; PyTorch's is per plane
    g = ops.pool_geometry(node, ins[0])
    vals, idx = em.fresh("vals"), em.fresh("idx")
    em.nodes.append(em.helper.make_node("MaxPool", [node.inputs[0]], [vals, idx], name=em.fresh("MaxPool"),
                                        kernel_shape=list(g["kernel"]), strides=list(g["stride"]),
                                        pads=_onnx_pads(g["pads"]), dilations=list(g["dilation"]),
                                        ceil_mode=int(g["ceil_mode"])))
    plane = int(ins[0].shape[2]) * int(ins[0].shape[3])
    em.node("Mod", [idx, em.const("plane", np.int64(plane))], out)


@emits("roi_pool")
def _roi_pool(em, node, ins, out):
    args = list(node.inputs[:2])
    if len(node.inputs) == 3:                  # ONNX's rois + batch_indices -> MaxRoiPool's (K, 5) rows
        col = em.node("Unsqueeze", [em.node("Cast", [node.inputs[2]], to=1), em.const("ax", np.array([1], np.int64))])
        args = [node.inputs[0], em.node("Concat", [col, node.inputs[1]], axis=1)]
    em.node("MaxRoiPool", args, out, pooled_shape=list(ops.tup(node.attrs["output_size"], 2)),
            spatial_scale=float(node.attrs["spatial_scale"]))


@emits("roi_align")
def _roi_align(em, node, ins, out):
    a = node.attrs
    if len(node.inputs) == 3:
        rois, idx = node.inputs[1], em.node("Cast", [node.inputs[2]], to=7)
    else:                                      # (K, 5) rows -> rois (K, 4) + int64 batch_indices (K,)
        cols = lambda lo, hi: em.node("Slice", [node.inputs[1], em.const("s", np.array([lo], np.int64)),  # noqa: E731
                                                em.const("e", np.array([hi], np.int64)),
                                                em.const("a", np.array([1], np.int64))])
        rois = cols(1, 5)
        idx = em.node("Cast", [em.node("Squeeze", [cols(0, 1), em.const("ax", np.array([1], np.int64))])], to=7)
    oh, ow = ops.tup(a["output_size"], 2)
    em.node("RoiAlign", [node.inputs[0], rois, idx], out, output_height=oh, output_width=ow,
            spatial_scale=float(a["spatial_scale"]), sampling_ratio=max(int(a["sampling_ratio"]), 0),
            mode=a["mode"], coordinate_transformation_mode="half_pixel" if a["aligned"] else "output_half_pixel")


@emits("max_unpool2d")
def _max_unpool(em, node, ins, out):
    # ONNX MaxUnpool wants whole-tensor indices: add each plane's offset back
    c = int(ins[0].shape[1])
    out_hw = [int(d) for d in node.type.shape[2:]]
    plane = out_hw[0] * out_hw[1]
    k = ops.tup(node.attrs["kernel_size"], 2)
    s = ops.tup(node.attrs["stride"], 2) if node.attrs.get("stride") is not None else k
    p = ops.tup(node.attrs.get("padding", 0), 2)
    n = em.node("Slice", [em.node("Shape", [node.inputs[0]]), em.const("s", np.array([0], np.int64)),
                          em.const("e", np.array([1], np.int64))])
    planes = em.node("Mul", [em.node("Squeeze", [n]), em.const("c", np.int64(c))])
    ar = em.node("Range", [em.const("z", np.int64(0)), planes, em.const("one", np.int64(1))])
    base = em.node("Reshape", [em.node("Mul", [ar, em.const("pl", np.int64(plane))]),
                               em.const("shp", np.array([-1, c, 1, 1], np.int64))])
    idx = em.node("Add", [node.inputs[1], base])
    full = em.node("Concat", [n, em.const("rest", np.array([c] + out_hw, np.int64))], axis=0)
    em.node("MaxUnpool", [node.inputs[0], idx, full], out, kernel_shape=list(k), strides=list(s),
            pads=list(p) + list(p))
