"""A cnncc Graph as a PyTorch module built from torch.nn.functional calls.

This is the *peer* the benchmarks compare against: the same model, same weights, run by
PyTorch eager (cuDNN / oneDNN) or torch.compile, on CPU or CUDA. It is also a second oracle:
tests check it against cnncc.reference. Fused groups run their members one by one, so any
snapshot of the pass pipeline exports.

    from cnncc.codegen.torch_export import to_torch
    module = to_torch(graph, device="cuda")      # a torch.nn.Module
    y = module(torch.randn(8, 1, 32, 32, device="cuda"))
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np
import sympy

from cnncc import ops, resize
from cnncc.errors import UnsupportedError
from cnncc.registry import registrar
from cnncc.interpreter import Interpreter
from cnncc.ir import Graph, Node, TensorType

try:  # optional extra: importing this module without torch gives a clear error on use
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - exercised only without the extra
    torch = None
    F = None

Step = Callable[[list], "torch.Tensor"]


def _require_torch() -> None:
    if torch is None:
        raise UnsupportedError("the PyTorch peer needs the 'torch' extra: pip install 'cnncc[torch]'")


class GraphModule(torch.nn.Module if torch is not None else object):
    """Runs the graph's nodes in topological order; weights are tensors on ``device``."""

    def __init__(self, graph: Graph, device: str = "cpu"):
        _require_torch()
        super().__init__()
        self.graph_name = graph.name
        self.input_names = list(graph.inputs)
        self.output_names = list(graph.outputs)
        self.device = torch.device(device)
        self.steps: list[tuple[str, Step, list[str]]] = _Steps(graph, self.device).build()

    def forward(self, *inputs):
        env = dict(zip(self.input_names, inputs))
        for name, fn, args in self.steps:
            env[name] = fn([env[a] for a in args])
        outs = [env[o] for o in self.output_names]
        return outs[0] if len(outs) == 1 else tuple(outs)


class _Steps(Interpreter):
    """The walk that builds a GraphModule's steps: values are TensorTypes, each operator (each
    member of a fused group) appends its step."""

    def __init__(self, graph: Graph, device):
        super().__init__(graph)
        self.device = device
        self.steps: list[tuple[str, Step, list[str]]] = []

    def build(self) -> list[tuple[str, Step, list[str]]]:
        self.run({name: self.graph[name].type for name in self.graph.inputs})
        return self.steps

    def run_node(self, node: Node, in_types: list[TensorType]) -> TensorType:
        self.steps.append((node.name, _build(node, in_types, self.device), list(node.inputs)))
        return node.type

    def run_fused(self, node: Node, args: list[TensorType]) -> TensorType:
        super().run_fused(node, args)
        # the group's tensor is named like the group; alias it to its last member
        self.steps.append((node.name, (lambda xs: xs[0]), [node.members[-1].name]))
        return node.type


def to_torch(graph: Graph, device: str = "cpu") -> "GraphModule":
    """Build the PyTorch peer of ``graph`` (raises UnsupportedError listing every unmapped op)."""
    _require_torch()
    missing = sorted({n.op for n in _flat(graph) if n.op not in BUILDERS and n.op != "input"})
    if missing:
        raise UnsupportedError(f"the PyTorch exporter has no mapping for: {', '.join(missing)}")
    return GraphModule(graph, device).eval()


def run_torch(graph: Graph, x, device: str = "cpu"):
    """Convenience: numpy in, numpy out (dict when several outputs), like cnncc.reference."""
    module = to_torch(graph, device)
    feeds = x if isinstance(x, (list, tuple)) else [x[i] for i in graph.inputs] if isinstance(x, dict) else [x]
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in feeds])
    if isinstance(out, tuple):
        return {o: t.cpu().numpy() for o, t in zip(graph.outputs, out)}
    return out.cpu().numpy()


def _flat(graph: Graph):
    for n in graph:
        if n.op == "fused":
            yield from n.members
        else:
            yield n


# -------------------------------------------------------------------------------------------
# builders: (node, input types, device) -> step(list of tensors) -> tensor
BUILDERS: dict[str, Callable] = {}


builds = registrar(BUILDERS)


def _build(node: Node, in_types: list[TensorType], device) -> Step:
    try:
        builder = BUILDERS[node.op]
    except KeyError:
        raise UnsupportedError(f"the PyTorch exporter has no mapping for '{node.op}' (layer '{node.name}')") from None
    return builder(node, in_types, device)


def _t(arr, device):
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device)


def _channel_shape(rank: int) -> tuple:
    return (1, -1) + (1,) * (rank - 2)


def _symmetric(pads) -> list[int] | None:
    """[p per dim] when every (lo, hi) is balanced, else None (then we pad explicitly)."""
    return [int(lo) for lo, hi in pads] if all(int(lo) == int(hi) for lo, hi in pads) else None


def _torch_pad(pads) -> list[int]:
    """cnncc [(lo, hi) per dim, outermost first] -> F.pad's (last dim first) flat list."""
    flat = []
    for lo, hi in reversed(pads):
        flat += [int(lo), int(hi)]
    return flat


@builds("constant")
def _constant(node, ins, device):
    value = _t(node.params["value"], device)
    return lambda xs: value


@builds("conv1d", "conv2d")
def _conv(node, ins, device):
    g = ops.conv_geometry(node, ins[0])
    w = _t(node.params["weight"], device)
    b = _t(node.params["bias"], device) if "bias" in node.params else None
    conv = F.conv1d if g["nd"] == 1 else F.conv2d
    sym = _symmetric(g["pads"])
    if sym is not None:
        return lambda xs: conv(xs[0], w, b, g["stride"], sym, g["dilation"], g["groups"])
    pad = _torch_pad(g["pads"])
    return lambda xs: conv(F.pad(xs[0], pad), w, b, g["stride"], 0, g["dilation"], g["groups"])


@builds("conv_transpose2d")
def _conv_transpose(node, ins, device):
    g = ops.conv_geometry(node, ins[0])
    w = _t(node.params["weight"], device)
    b = _t(node.params["bias"], device) if "bias" in node.params else None
    k, s, d, groups, opad = g["kernel"], g["stride"], g["dilation"], g["groups"], g["output_padding"]
    sym = _symmetric(g["pads"])
    if sym is not None:
        return lambda xs: F.conv_transpose2d(xs[0], w, b, s, sym, opad, groups, d)
    # asymmetric padding crops the full output unevenly: compute it whole, then cut the window
    out_hw = [int(v) for v in node.type.shape[2:]]
    lo = [int(p[0]) for p in g["pads"]]

    def cropped(xs):
        full = F.conv_transpose2d(xs[0], w, None, s, 0, 0, groups, d)
        short = [max(0, lo[i] + out_hw[i] - full.shape[2 + i]) for i in range(2)]
        if any(short):
            full = F.pad(full, [0, short[1], 0, short[0]])
        y = full[:, :, lo[0]:lo[0] + out_hw[0], lo[1]:lo[1] + out_hw[1]]
        return y if b is None else y + b.reshape(1, -1, 1, 1)
    return cropped


@builds("dense")
def _dense(node, ins, device):
    w = _t(node.params["weight"], device)
    b = _t(node.params["bias"], device) if "bias" in node.params else None
    return lambda xs: F.linear(xs[0], w, b)


@builds("matmul")
def _matmul(node, ins, device):
    return lambda xs: torch.matmul(xs[0], xs[1])


def _pool_call(kind: str, nd: int, g: dict, count_include_pad: bool, node: Node):
    """One of torch's pools with cnncc's (possibly asymmetric) padding and dilation."""
    k, s, d, ceil = g["kernel"], g["stride"], g["dilation"], g["ceil_mode"]
    sym = _symmetric(g["pads"])
    explicit = None if sym is not None else _torch_pad(g["pads"])
    padding = sym if sym is not None else [0] * nd
    if kind in ("max", "min"):
        mp = F.max_pool1d if nd == 1 else F.max_pool2d

        def maxpool(x):
            if explicit is not None:
                x = F.pad(x, explicit, value=-math.inf)
            return mp(x, k, s, padding, d, ceil)
        return maxpool if kind == "max" else (lambda x: -maxpool(-x))
    if any(v != 1 for v in d):
        raise UnsupportedError(f"layer '{node.name}': dilated {kind} pooling has no PyTorch equivalent")
    if explicit is not None and not count_include_pad:
        raise UnsupportedError(f"layer '{node.name}': asymmetric padding with count_include_pad=False")
    divisor = 1 if kind == "sum" else None  # divisor_override=1: the window sum

    def avgpool(x):
        if explicit is not None:
            x = F.pad(x, explicit)
        if nd == 1:  # avg_pool1d has no divisor_override: run it as a 2-D pool of height 1
            return F.avg_pool2d(x.unsqueeze(2), (1, k[0]), (1, s[0]), (0, padding[0]), ceil, count_include_pad,
                                divisor).squeeze(2)
        return F.avg_pool2d(x, k, s, padding, ceil, count_include_pad, divisor)
    return avgpool


def _pool_builder(kind, nd):
    def build(node, ins, device):
        g = ops.pool_geometry(node, ins[0])
        fn = _pool_call(kind, nd, g, bool(node.attrs.get("count_include_pad", True)), node)
        return lambda xs: fn(xs[0])
    return build


for _kind in ("max", "avg", "min", "sum"):
    for _nd in (1, 2):
        BUILDERS[f"{_kind}_pool{_nd}d"] = _pool_builder(_kind, _nd)


@builds("lp_pool2d")
def _lp_pool(node, ins, device):
    # (sum |x|^p)^(1/p) as the reference defines it (torch's lp_pool2d skips the abs for odd p)
    g = ops.pool_geometry(node, ins[0])
    p = float(node.attrs["p"])
    window_sum = _pool_call("sum", 2, g, True, node)
    return lambda xs: window_sum(xs[0].abs().pow(p)).pow(1.0 / p)


@builds("global_avg_pool")
def _gap(node, ins, device):
    return lambda xs: xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)


@builds("global_max_pool")
def _gmp(node, ins, device):
    return lambda xs: xs[0].amax(dim=tuple(range(2, xs[0].dim())), keepdim=True)


@builds("max_pool2d_indices")
def _max_pool_indices(node, ins, device):
    g = ops.pool_geometry(node, ins[0])
    sym = _symmetric(g["pads"])
    if sym is None:
        raise UnsupportedError(f"layer '{node.name}': asymmetric padding on max_pool2d_indices")
    return lambda xs: F.max_pool2d(xs[0], g["kernel"], g["stride"], sym, g["dilation"], g["ceil_mode"],
                                   return_indices=True)[1]


@builds("max_unpool2d")
def _max_unpool(node, ins, device):
    out_hw = tuple(int(v) for v in node.type.shape[2:])
    k = ops.tup(node.attrs["kernel_size"], 2)
    stride = ops.tup(node.attrs["stride"], 2) if node.attrs.get("stride") is not None else k
    padding = ops.tup(node.attrs.get("padding", 0), 2)
    return lambda xs: F.max_unpool2d(xs[0], xs[1], k, stride, padding, output_size=out_hw)


@builds("unpool_nearest2d")
def _unpool_nearest(node, ins, device):
    s = ops.tup(node.attrs["scale"], 2)
    return lambda xs: xs[0].repeat_interleave(s[0], dim=2).repeat_interleave(s[1], dim=3)


def _interpolate_call(node, in_hw) -> dict | None:
    """The F.interpolate arguments whose resize2d attributes are exactly this node's, if any."""
    out_hw = tuple(int(d) for d in node.type.shape[2:])
    scales = ops._resize_scales(node)
    for mode, align, aa in itertools.product(("nearest", "nearest-exact", "bilinear", "bicubic", "area"),
                                             (None, True), (False, True)):
        for kw in ({"size": out_hw}, {"scale_factor": scales} if scales else None):
            if kw is None:
                continue
            try:
                attrs = resize.interpolate_attrs(in_hw, mode=mode, align_corners=align, antialias=aa, **kw)
            except resize.InterpolateError:
                continue
            probe = Node(node.name, node.op, list(node.inputs), attrs)
            ops.get(node.op).check(probe)
            # (PyTorch's antialias kernel repeats the first row when an output axis has size 1)
            if probe.attrs == node.attrs and not (aa and 1 in out_hw):
                return dict(kw, mode=mode, align_corners=align, antialias=aa)
    return None


@builds("resize2d")
def _resize(node, ins, device):
    """F.interpolate where one call means exactly this resize (the peer then runs PyTorch's own kernel);
    otherwise the registry's per-axis filter tables as two gathers + weighted sums (exact for every mode)."""
    import torch

    in_hw = [int(d) for d in ins[0].shape[2:]]
    call = _interpolate_call(node, in_hw)
    if call is not None:
        return lambda xs: F.interpolate(xs[0], **call)
    th, tw = ops.resize_tables(node, in_hw, [int(d) for d in node.type.shape[2:]])
    fill = float(node.attrs["extrapolation_value"])
    ih, iw = (torch.as_tensor(t.index, device=device) for t in (th, tw))
    wh, ww = (torch.as_tensor(t.weight, dtype=torch.float32, device=device) for t in (th, tw))
    outside = torch.as_tensor(th.outside[:, None] | tw.outside[None, :], device=device)

    def run(xs):
        x = xs[0]
        rows = (x[:, :, ih, :] * wh[:, :, None]).sum(3)                 # (N, C, OH, W)
        y = (rows[:, :, :, iw] * ww).sum(4)                              # (N, C, OH, OW)
        return torch.where(outside, torch.full_like(y, fill), y) if bool(outside.any()) else y
    return run


@builds("batch_norm")
def _batch_norm(node, ins, device):
    p = {k: _t(v, device) for k, v in node.params.items()}
    eps = float(node.attrs["eps"])
    return lambda xs: F.batch_norm(xs[0], p["mean"], p["var"], p["weight"], p["bias"], False, 0.0, eps)


@builds("instance_norm")
def _instance_norm(node, ins, device):
    w = _t(node.params["weight"], device) if "weight" in node.params else None
    b = _t(node.params["bias"], device) if "bias" in node.params else None
    eps = float(node.attrs.get("eps", 1e-5))
    return lambda xs: F.instance_norm(xs[0], weight=w, bias=b, eps=eps)


@builds("scale_shift")
def _scale_shift(node, ins, device):
    shape = _channel_shape(ins[0].rank)
    scale = _t(node.params["scale"], device).reshape(shape)
    shift = _t(node.params["shift"], device).reshape(shape)
    return lambda xs: xs[0] * scale + shift


@builds("lrn")
def _lrn(node, ins, device):
    a = node.attrs
    return lambda xs: F.local_response_norm(xs[0], int(a["size"]), float(a["alpha"]), float(a["beta"]), float(a["k"]))


def _unary(fn):
    return lambda node, ins, device: (lambda xs: fn(xs[0], node.attrs))


BUILDERS.update({
    "leaky_relu": _unary(lambda x, a: F.leaky_relu(x, float(a["alpha"]))),
    "relu6": _unary(lambda x, a: F.relu6(x)),
    "clip": _unary(lambda x, a: torch.clamp(x, a["min"], a["max"])),
    "elu": _unary(lambda x, a: F.elu(x, float(a["alpha"]))),
    "hardsigmoid": _unary(lambda x, a: torch.clamp(float(a["alpha"]) * x + float(a["beta"]), 0, 1)),
    "gelu": _unary(lambda x, a: F.gelu(x, approximate=a["approximate"])),
    "softplus": _unary(lambda x, a: F.softplus(x, float(a["beta"]), float(a["threshold"]))),
    "pow": _unary(lambda x, a: torch.pow(x, float(a["exponent"]))),
    "softmax": _unary(lambda x, a: F.softmax(x, dim=int(a["axis"]))),
    "log_softmax": _unary(lambda x, a: F.log_softmax(x, dim=int(a["axis"]))),
    "dropout": _unary(lambda x, a: x),
    "identity": _unary(lambda x, a: x),
    "flatten": _unary(lambda x, a: torch.flatten(x, int(a["axis"])) if int(a["axis"]) > 0 else x.reshape(1, -1)),
})
# every operator the registry maps onto one torch.nn.functional call of x alone (OpDef.torch)
for _name, _opdef in ops.REGISTRY.items():
    if _opdef.torch and F is not None:
        BUILDERS.setdefault(_name, (lambda fn: _unary(lambda x, a: fn(x)))(getattr(F, _opdef.torch)))


@builds("prelu")
def _prelu(node, ins, device):
    slope = _t(node.params["slope"], device)
    if slope.numel() > 1:
        slope = slope.reshape(_channel_shape(ins[0].rank))
    return lambda xs: torch.where(xs[0] >= 0, xs[0], xs[0] * slope)


BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div} if torch is not None else {}
for _name, _fn in BINARY.items():
    BUILDERS[_name] = (lambda fn: lambda node, ins, device: (lambda xs: fn(xs[0], xs[1])))(_fn)


@builds("reshape")
def _reshape(node, ins, device):
    spec = list(node.attrs["shape"])
    in_shape = ins[0].shape

    def dim(i, d, x):
        if isinstance(d, (int, np.integer)):
            return x.shape[i] if d == 0 else int(d)
        d = sympy.sympify(d)
        if d.is_number:
            return int(d)
        # a symbolic size (the batch N): evaluate it against the actual input's dims
        binding = {s: x.shape[j] for j, s in enumerate(in_shape) if isinstance(s, sympy.Symbol)}
        return int(d.subs(binding))
    return lambda xs: xs[0].reshape([dim(i, d, xs[0]) for i, d in enumerate(spec)])


@builds("transpose")
def _transpose(node, ins, device):
    perm = node.attrs.get("perm")
    perm = list(range(ins[0].rank))[::-1] if perm is None else [int(p) % ins[0].rank for p in perm]
    return lambda xs: xs[0].permute(*perm)


@builds("concat")
def _concat(node, ins, device):
    return lambda xs: torch.cat(xs, dim=int(node.attrs["axis"]))


@builds("slice")
def _slice(node, ins, device):
    bounds = ops.slice_bounds(node, ins[0].shape)

    def run(xs):
        x = xs[0]
        for ax, b in enumerate(bounds):
            if b is not None:       # torch slicing takes no negative step: index with the positions
                x = x.index_select(ax, torch.arange(*b, device=x.device))
        return x
    return run


@builds("gather")
def _gather(node, ins, device):
    ax, idx = ops.gather_indices(node, ins[0].shape)
    flat = torch.as_tensor(idx.reshape(-1), device=device)
    return lambda xs: xs[0].index_select(ax, flat).reshape(
        tuple(xs[0].shape[:ax]) + tuple(idx.shape) + tuple(xs[0].shape[ax + 1:]))


@builds("pad")
def _pad(node, ins, device):
    widths = ops.pad_widths(node, ins[0].rank)
    flat = _torch_pad(widths)
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[node.attrs["mode"]]
    if mode == "constant":
        value = float(node.attrs["value"])
        return lambda xs: F.pad(xs[0], flat, mode="constant", value=value)
    # torch pads only the trailing (spatial) dims in reflect/replicate mode
    spatial = _torch_pad(widths[2:])
    if any(v for p in widths[:2] for v in p):
        raise UnsupportedError(f"layer '{node.name}': {node.attrs['mode']} padding of the batch or channel axis")
    return lambda xs: F.pad(xs[0], spatial, mode=mode)


@builds("depth_to_space")
def _depth_to_space(node, ins, device):
    r = int(node.attrs["block"])
    if node.attrs["mode"] == "CRD":
        return lambda xs: F.pixel_shuffle(xs[0], r)

    def dcr(xs):  # ONNX's default order: channel = (i*r + j) * C' + c'
        x = xs[0]
        n, c, h, w = x.shape
        x = x.reshape(n, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(n, c // (r * r), h * r, w * r)
    return dcr


@builds("space_to_depth")
def _space_to_depth(node, ins, device):
    r = int(node.attrs["block"])
    if node.attrs["mode"] == "CRD":
        return lambda xs: F.pixel_unshuffle(xs[0], r)

    def dcr(xs):  # ONNX SpaceToDepth: (N, C, H/r, r, W/r, r) -> (N, r, r, C, H/r, W/r)
        x = xs[0]
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // r, r, w // r, r).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(n, c * r * r, h // r, w // r)
    return dcr
