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
from cnncc.ir import Graph, Node, TensorType

OPSET = 18


class _Emitter:
    """Collects ONNX nodes and initializers; hands out unique names for intermediate tensors."""

    def __init__(self, onnx_mod, graph: Graph):
        self.onnx = onnx_mod
        self.helper = onnx_mod.helper
        self.graph = graph
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
    types: dict[str, TensorType] = {n.name: n.type for n in graph}
    for node in graph:
        if node.op == "input":
            continue
        if node.op == "fused":
            for m in node.members:
                types[m.name] = m.type
                EMITTERS[m.op](em, m, [types[i] for i in m.inputs], m.name)
            em.node("Identity", [node.members[-1].name], node.name)
        else:
            EMITTERS[node.op](em, node, [types[i] for i in node.inputs], node.name)
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


def emits(*names):
    def deco(fn):
        for n in names:
            EMITTERS[n] = fn
        return fn
    return deco


def _onnx_pads(pads) -> list[int]:
    """cnncc [(lo, hi) per dim] -> ONNX [begins..., ends...]."""
    return [int(lo) for lo, _ in pads] + [int(hi) for _, hi in pads]


def _channel_shape(rank: int) -> tuple:
    return (-1,) + (1,) * (rank - 2)


@emits("constant")
def _constant(em, node, ins, out):
    value = em.onnx.numpy_helper.from_array(np.ascontiguousarray(node.params["value"]), out + "_value")
    em.node("Constant", [], out, value=value)


@emits("conv1d", "conv2d")
def _conv(em, node, ins, out):
    g = ops.conv_geometry(node, ins[0])
    args = [node.inputs[0], em.const(node.name + "_weight", node.params["weight"])]
    if "bias" in node.params:
        args.append(em.const(node.name + "_bias", node.params["bias"]))
    em.node("Conv", args, out, kernel_shape=list(g["kernel"]), strides=list(g["stride"]),
            dilations=list(g["dilation"]), pads=_onnx_pads(g["pads"]), group=g["groups"])


@emits("conv_transpose2d")
def _conv_transpose(em, node, ins, out):
    a = node.attrs
    if isinstance(a.get("padding", 0), str):
        raise UnsupportedError(f"layer '{node.name}': string padding on conv_transpose2d is not exported")
    w = node.params["weight"]
    p = ops.tup(a.get("padding", 0), 2)
    args = [node.inputs[0], em.const(node.name + "_weight", w)]
    if "bias" in node.params:
        args.append(em.const(node.name + "_bias", node.params["bias"]))
    em.node("ConvTranspose", args, out, kernel_shape=list(w.shape[2:]), strides=list(ops.tup(a.get("stride", 1), 2)),
            dilations=list(ops.tup(a.get("dilation", 1), 2)), pads=list(p) + list(p),
            output_padding=list(ops.tup(a.get("output_padding", 0), 2)), group=int(a.get("groups", 1)))


@emits("dense")
def _dense(em, node, ins, out):
    w = node.params["weight"]
    if ins[0].rank == 2:
        args = [node.inputs[0], em.const(node.name + "_weight", w)]
        if "bias" in node.params:
            args.append(em.const(node.name + "_bias", node.params["bias"]))
        em.node("Gemm", args, out, transB=1)
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
        if any(d != 1 for d in g["dilation"]):
            raise UnsupportedError(f"layer '{node.name}': dilated {kind} pooling is not exported to ONNX")
        if kind == "avg":
            em.node("AveragePool", [x], out, count_include_pad=int(bool(node.attrs.get("count_include_pad", True))),
                    **common)
            return
        # sum pooling: a 1-filled depthwise convolution (exact, also for padding and ceil mode)
        c = int(ins[0].shape[1])
        w = np.ones((c, 1, *g["kernel"]), np.float32)
        if g["ceil_mode"]:
            raise UnsupportedError(f"layer '{node.name}': ceil-mode sum pooling is not exported to ONNX")
        em.node("Conv", [x, em.const(node.name + "_ones", w)], out, kernel_shape=list(g["kernel"]),
                strides=list(g["stride"]), pads=_onnx_pads(g["pads"]), group=c)
    return emit


for _kind in ("max", "avg", "min", "sum"):
    for _nd in (1, 2):
        EMITTERS[f"{_kind}_pool{_nd}d"] = _pool_emitter(_kind)


@emits("lp_pool2d")
def _lp_pool(em, node, ins, out):
    g = ops.pool_geometry(node, ins[0])
    em.node("LpPool", [node.inputs[0]], out, kernel_shape=list(g["kernel"]), strides=list(g["stride"]),
            pads=_onnx_pads(g["pads"]), p=int(node.attrs.get("p", node.attrs.get("norm_type", 2))))


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
    em.node("LRN", [node.inputs[0]], out, size=int(a.get("size", 5)), alpha=float(a.get("alpha", 1e-4)),
            beta=float(a.get("beta", 0.75)), bias=float(a.get("k", a.get("bias", 1.0))))


def _f(em, v) -> str:
    return em.const("c", np.float32(v))


def _simple(onnx_op: str, **fixed):
    return lambda em, node, ins, out: em.node(onnx_op, [node.inputs[0]], out, **fixed)


EMITTERS.update({
    "relu": _simple("Relu"),
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "selu": _simple("Selu"),
    "hardswish": _simple("HardSwish"),
    "dropout": _simple("Identity"),
    "identity": _simple("Identity"),
})


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
    perm = node.attrs.get("perm", node.attrs.get("axes"))
    em.node("Transpose", [node.inputs[0]], out, **({"perm": list(perm)} if perm is not None else {}))


@emits("concat")
def _concat(em, node, ins, out):
    em.node("Concat", list(node.inputs), out, axis=int(node.attrs["axis"]))


@emits("pad")
def _pad(em, node, ins, out):
    a = node.attrs
    pads = a.get("pads", a.get("padding"))
    rank = ins[0].rank
    if isinstance(pads, int):
        pads = [(pads, pads)] * (rank - 2)
    pads = [tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in pads]
    pads = [(0, 0)] * (rank - len(pads)) + pads
    args = [node.inputs[0], em.const(node.name + "_pads", np.array(_onnx_pads(pads), np.int64))]
    mode = a.get("mode", "constant")
    if mode == "constant":
        args.append(_f(em, a.get("value", 0.0)))
    em.node("Pad", args, out, mode=mode)


@emits("upsample2d", "unpool_nearest2d")
def _resize(em, node, ins, out):
    mode = node.attrs.get("mode", "nearest")
    sizes = em.const(node.name + "_sizes", np.array([1, 1] + [int(d) for d in node.type.shape[2:]], np.int64))
    shape = em.node("Shape", [node.inputs[0]])
    nc = em.node("Slice", [shape, em.const("s", np.array([0], np.int64)), em.const("e", np.array([2], np.int64))])
    hw = em.node("Slice", [sizes, em.const("s", np.array([2], np.int64)), em.const("e", np.array([4], np.int64))])
    full = em.node("Concat", [nc, hw], axis=0)
    if mode == "nearest":
        em.node("Resize", [node.inputs[0], "", "", full], out, mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        ctm = "align_corners" if node.attrs.get("align_corners", False) else "half_pixel"
        em.node("Resize", [node.inputs[0], "", "", full], out, mode="linear", coordinate_transformation_mode=ctm)


@emits("depth_to_space")
def _d2s(em, node, ins, out):
    em.node("DepthToSpace", [node.inputs[0]], out, blocksize=int(node.attrs.get("block_size", node.attrs.get("blocksize", 2))),
            mode=node.attrs.get("mode", "CRD"))


@emits("space_to_depth")
def _s2d(em, node, ins, out):
    em.node("SpaceToDepth", [node.inputs[0]], out,
            blocksize=int(node.attrs.get("block_size", node.attrs.get("blocksize", 2))))


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


@emits("max_unpool2d")
def _max_unpool(em, node, ins, out):
    # ONNX MaxUnpool wants whole-tensor indices: add each plane's offset back
    x_t = ins[0]
    c = int(x_t.shape[1])
    out_hw = [int(d) for d in node.type.shape[2:]]
    plane = out_hw[0] * out_hw[1]
    k = ops.tup(node.attrs.get("kernel_size", 2), 2)
    s = ops.tup(node.attrs.get("stride", None) or k, 2)
    shape = em.node("Shape", [node.inputs[0]])
    n = em.node("Slice", [shape, em.const("s", np.array([0], np.int64)), em.const("e", np.array([1], np.int64))])
    n_scalar = em.node("Squeeze", [n])
    ar = em.node("Range", [em.const("z", np.int64(0)), em.node("Mul", [n_scalar, em.const("c", np.int64(c))]),
                           em.const("one", np.int64(1))])
    base = em.node("Reshape", [em.node("Mul", [ar, em.const("pl", np.int64(plane))]),
                               em.const("shp", np.array([-1, c, 1, 1], np.int64))])
    idx = em.node("Add", [node.inputs[1], base])
    full = em.node("Concat", [n, em.const("rest", np.array([c] + out_hw, np.int64))], axis=0)
    em.node("MaxUnpool", [node.inputs[0], idx, full], out, kernel_shape=list(k), strides=list(s))
