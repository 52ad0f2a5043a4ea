"""The cnncc DSL: a small functional language for writing CNNs in Python.

    from cnncc.frontends import dsl
    x = dsl.input("image", (dsl.N, 1, 32, 32))
    x = dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 6, 5)), 2)
    g = dsl.graph(x)

Layers are named automatically (``conv1``, ``relu1``, ...) or by ``name=``. Weights are
initialized deterministically (He init seeded by the layer name, so adding a layer never changes
another layer's weights) or loaded from an ``.npz`` keyed ``"<layer>.<param>"``. BatchNorm
running statistics are then scaled to one random forward pass (``calibrate_batch_norm``), so
random models stay as well-conditioned as trained ones.
A model file is a Python file defining ``model()``; loading it runs it: it is trusted code.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import sympy

from cnncc import ops, resize
from cnncc.errors import CnnccError, ModelError
from cnncc.ir import N, Graph, Node, TensorType, sym

__all__ = ["N", "sym", "Tensor", "input", "graph", "load_model", "apply_weights", "calibrate_batch_norm"]

SEED = 0


class _Builder:
    """Collects the nodes of one model as its layers are called."""

    def __init__(self, name: str = "model"):
        self.graph = Graph(name)
        self.counters: dict[str, int] = {}

    def name_for(self, base: str, name: str | None) -> str:
        if name is not None:
            if name in self.graph:
                raise ModelError(f"a layer named '{name}' already exists", node=name,
                                 fix="give every layer a unique name")
            return name
        while True:
            self.counters[base] = self.counters.get(base, 0) + 1
            candidate = f"{base}{self.counters[base]}"
            if candidate not in self.graph:
                return candidate


class Tensor:
    """The output of a layer: a handle to a node of the model being built."""

    def __init__(self, builder: _Builder, name: str):
        self._b = builder
        self.name = name

    @property
    def node(self) -> Node:
        return self._b.graph[self.name]

    @property
    def shape(self) -> tuple:
        return self.node.type.shape

    @property
    def channels(self) -> int:
        c = sympy.sympify(self.shape[1])
        if not c.is_number:
            raise ModelError(f"channel count of '{self.name}' is symbolic ({c})", node=self.name)
        return int(c)

    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(other, self)

    def __sub__(self, other):
        return sub(self, other)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(other, self)

    def __truediv__(self, other):
        return div(self, other)

    def __getitem__(self, index):
        """``x[:, 2:6]``, ``x[..., ::2]``, ``x[:, 3]``: constant slicing (numpy rules, negative
        steps included) -> a ``slice`` node, plus a reshape when an int drops an axis."""
        try:
            attrs, drop = ops.index_to_slice(index, len(self.shape))
        except ValueError as e:
            raise ModelError(f"cannot index a tensor with {index!r}: {e}", node=self.name, op="slice") from None
        y = layer("slice", [self], attrs) if attrs["axes"] else self
        if drop:
            y = layer("reshape", [y], {"shape": tuple(0 if i == 0 else d for i, d in enumerate(y.shape)
                                                      if i not in drop)})
        return y

    def __repr__(self):
        return f"Tensor({self.name}: {self.node.type})"


def _seed_for(name: str, param: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(f"{name}.{param}".encode())])


def he_normal(name: str, param: str, shape: tuple, fan_in: int) -> np.ndarray:
    std = np.sqrt(2.0 / max(fan_in, 1))
    return (_seed_for(name, param).standard_normal(shape) * std).astype(np.float32)


def small_uniform(name: str, param: str, shape: tuple, lo=-0.1, hi=0.1) -> np.ndarray:
    """Biases and BN statistics start non-trivial so tests notice a dropped term."""
    return _seed_for(name, param).uniform(lo, hi, shape).astype(np.float32)


def _builder_of(*xs) -> _Builder:
    for x in xs:
        if isinstance(x, Tensor):
            return x._b
        if isinstance(x, (list, tuple)):
            for y in x:
                if isinstance(y, Tensor):
                    return y._b
    raise CnnccError("a layer needs at least one DSL tensor as input (start from dsl.input)")


def layer(op: str, inputs: Sequence[Tensor], attrs: dict | None = None, params: dict | None = None,
          name: str | None = None, base: str | None = None) -> Tensor:
    """Add one node of registry operator ``op``; shapes are inferred (and checked) at once."""
    if name is not None and not isinstance(name, str):
        attrs_hint = ", ".join(f"{a}=..." for a in ops.get(op).attrs) or "no attributes"
        raise ModelError(f"dsl.{op}: the name must be a string, got {name!r}", op=op,
                         fix=f"attributes are keywords: dsl.{op}(x, {attrs_hint})")
    b = _builder_of(*inputs)
    for x in inputs:
        if x._b is not b:
            raise CnnccError(f"'{x.name}' belongs to another model; layers cannot mix models")
    node = Node(b.name_for(base or op, name), op, [x.name for x in inputs],
                {k: v for k, v in (attrs or {}).items()}, dict(params or {}))
    opdef = ops.get(op, node=node.name)
    opdef.check(node)
    node.type = opdef.infer(node, [b.graph[x.name].type for x in inputs])
    b.graph.add(node)
    return Tensor(b, node.name)


def _as_tensor(like: Tensor, value, name: str | None = None) -> Tensor:
    if isinstance(value, Tensor):
        return value
    return _constant(like._b, np.asarray(value, dtype=np.float32), name)


def _constant(b: _Builder, arr: np.ndarray, name: str | None = None) -> Tensor:
    node = Node(b.name_for("const", name), "constant", [], {}, {"value": arr})
    node.type = TensorType(arr.shape, str(arr.dtype))
    b.graph.add(node)
    return Tensor(b, node.name)


# ---------------------------------------------------------------------------------------------
# model boundary
def input(name: str = "input", shape: tuple = (N, 3, 224, 224), dtype: str = "float32",
          model: str | None = None, like: Tensor | None = None) -> Tensor:  # noqa: A001 - DSL name
    """A graph input. The first input starts a new model unless ``like`` names a tensor of one."""
    b = like._b if like is not None else _Builder(model or "model")
    node = Node(name, "input", [], {"shape": tuple(shape), "dtype": dtype})
    ops.get("input").check(node)
    node.type = ops.get("input").infer(node, [])         # checks the sizes: positive ints or symbols
    b.graph.add(node)
    return Tensor(b, name)


def constant(like: Tensor, value, name: str | None = None) -> Tensor:
    return _constant(like._b, np.asarray(value, dtype=np.float32), name)


def graph(*outputs: Tensor, name: str | None = None, weights: str | Path | None = None) -> Graph:
    """Turn output tensors into a verified cnncc.Graph (optionally loading weights)."""
    if len(outputs) == 1 and isinstance(outputs[0], (list, tuple)):
        outputs = tuple(outputs[0])
    if not outputs:
        raise CnnccError("dsl.graph needs at least one output tensor")
    b = _builder_of(*outputs)
    g = b.graph
    if name:
        g.name = name
    g.outputs = [o.name for o in outputs]
    g.verify()
    calibrate_batch_norm(g)
    if weights is not None:
        apply_weights(g, weights)
    return g


def calibrate_batch_norm(g: Graph, batch: int = 2) -> Graph:
    """Scale every batch_norm's running statistics to the activations it sees in one forward pass
    of random inputs: variance = the layer's mean square, mean = a small offset of that scale.

    Why: with made-up statistics BN normalizes nothing, activations grow block by block (to
    ~1e3 through ResNet-50 at 224) and the sigmoid gates of SE blocks turn float32 rounding
    into 1e-3 output differences between equally correct engines. Scaled, activations stay O(1)
    like a trained network's and float32 stays ~1e-6 from float64 on every example. Why not the
    per-channel batch mean/variance: in a random deep net different inputs look alike, so the
    batch variance is tiny and dividing by it amplifies rounding (ResNet-50 at 32x32: 3e-4).
    The random draws remain as per-channel jitter (variance x U(0.5, 1.5), mean U(-0.1, 0.1)
    root-mean-squares) so a dropped BN term still shows. Skipped when an input has a symbolic
    size other than the batch or is not float32."""
    bns = [n for n in g if n.op == "batch_norm"]
    if not bns:
        return g
    from cnncc.reference import NumpyInterpreter, random_inputs

    if any(g[i].type.dtype != "float32" for i in g.inputs):
        return g
    try:
        feeds = random_inputs(g, batch, np.random.default_rng([SEED, 0]))
    except ModelError:          # a symbolic size besides N: nothing concrete to run
        return g

    class Calibrate(NumpyInterpreter):
        def run_node(self, node, args):
            if node.op == "batch_norm":
                ms = float(np.mean(np.square(args[0], dtype=np.float64)))
                if ms > 0 and node.calibrated_mean_square is None:   # once: dsl.graph may run twice
                    p = node.params
                    p["mean"] = (p["mean"] * np.sqrt(ms)).astype(np.float32)
                    p["var"] = (p["var"] * ms).astype(np.float32)
                    node.calibrated_mean_square = ms
            return super().run_node(node, args)

    Calibrate(g).run(feeds, until=bns[-1].name)
    return g


def apply_weights(g: Graph, path_or_dict) -> Graph:
    """Replace weights from an .npz (or dict) keyed ``"<layer>.<param>"``; shapes must match."""
    data = dict(np.load(path_or_dict)) if isinstance(path_or_dict, (str, Path)) else dict(path_or_dict)
    for key, arr in data.items():
        if "." not in key:
            raise ModelError(f"weight key '{key}' is not of the form '<layer>.<param>'")
        layer_name, param = key.rsplit(".", 1)
        if layer_name not in g:
            raise ModelError(f"weights file names layer '{layer_name}', which the model does not have",
                             fix=f"layers are: {', '.join(n.name for n in g if n.params)}")
        node = g[layer_name]
        if param not in node.params:
            raise ModelError(f"has no weight '{param}' (has: {', '.join(node.params)})", node=layer_name, op=node.op)
        if node.params[param].shape != arr.shape:
            raise ModelError(f"weight '{param}' has shape {node.params[param].shape}, file gives {arr.shape}",
                             node=layer_name, op=node.op, attr=param)
        node.params[param] = np.ascontiguousarray(arr, dtype=np.float32)
    return g


def graph_of(out, name: str) -> Graph:
    """What a model() returned, as a Graph: a Graph as it is, or its output tensor(s) finalized;
    a graph left with the default name gets ``name``."""
    if isinstance(out, Graph):
        g = out
    else:
        g = graph(*(out if isinstance(out, (list, tuple)) else (out,)), name=name)
    if g.name == "model":
        g.name = name
    return g


def run_model_file(path: str | Path, module_name: str | None = None):
    """Execute a model file (trusted Python!) and return it as a module. While it runs, its folder
    is on ``sys.path``, as for ``python file.py``: a model file may import its siblings (the
    ResNet examples share ``examples/_resnet.py``)."""
    path = Path(path)
    if not path.exists():
        raise CnnccError(f"model file '{path}' does not exist")
    spec = importlib.util.spec_from_file_location(module_name or "cnncc_model_" + re.sub(r"\W", "_", path.stem),
                                                  path)
    if spec is None:
        raise CnnccError(f"cannot load '{path}' as a Python model file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ModelError(f"{path}:{e.lineno}: syntax error: {e.msg}", fix="a DSL model file is Python code defining "
                         "model(); fix the line shown") from None
    except CnnccError:
        raise
    except Exception as e:
        raise ModelError(f"running {path} raised {type(e).__name__}: {e}",
                         fix="fix the model file (run with --debug to see the traceback)") from e
    finally:
        if added:
            sys.path.remove(folder)
    return module


def load_model(path: str | Path, weights: str | Path | None = None, **kwargs) -> Graph:
    """Run a DSL model file (trusted Python!) and return its Graph. ``kwargs`` go to ``model()``."""
    path = Path(path)
    module = run_model_file(path)
    if not hasattr(module, "model"):
        raise CnnccError(f"{path} defines no model() function", )
    try:
        out = module.model(**kwargs)
    except CnnccError:
        raise
    except Exception as e:
        raise ModelError(f"{path}: model() raised {type(e).__name__}: {e}",
                         fix="fix the model file (run with --debug to see the traceback)") from e
    g = graph_of(out, path.stem)
    if weights is not None:
        apply_weights(g, weights)
    return g.verify()


# ---------------------------------------------------------------------------------------------
# layers with weights
def conv2d(x: Tensor, out_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1,
           bias: bool = True, name: str | None = None) -> Tensor:
    return _conv(x, 2, out_channels, kernel_size, stride, padding, dilation, groups, bias, name)


def conv1d(x: Tensor, out_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1,
           bias: bool = True, name: str | None = None) -> Tensor:
    return _conv(x, 1, out_channels, kernel_size, stride, padding, dilation, groups, bias, name)


def _conv(x, nd, out_channels, kernel_size, stride, padding, dilation, groups, bias, name):
    b = x._b
    lname = b.name_for("conv", name)
    k = ops.tup(kernel_size, nd)
    cin = x.channels
    if cin % groups:
        raise ModelError(f"input channels {cin} are not divisible by groups {groups}", node=lname,
                         op=f"conv{nd}d", attr="groups", fix="groups must divide both the input and the output channels")
    wshape = (out_channels, cin // groups, *k)
    fan_in = int(np.prod(wshape[1:]))
    params = {"weight": he_normal(lname, "weight", wshape, fan_in)}
    if bias:
        params["bias"] = small_uniform(lname, "bias", (out_channels,))
    return layer(f"conv{nd}d", [x], {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups},
                 params, name=lname)


def dense(x: Tensor, units: int, bias: bool = True, name: str | None = None) -> Tensor:
    b = x._b
    lname = b.name_for("fc", name)
    fin = sympy.sympify(x.shape[-1])
    if not fin.is_number:
        raise ModelError(f"dense needs a concrete feature count, input has {fin}", node=lname, op="dense")
    params = {"weight": he_normal(lname, "weight", (units, int(fin)), int(fin))}
    if bias:
        params["bias"] = small_uniform(lname, "bias", (units,))
    return layer("dense", [x], {}, params, name=lname)


def batch_norm(x: Tensor, eps: float = 1e-5, name: str | None = None) -> Tensor:
    b = x._b
    lname = b.name_for("bn", name)
    c = x.channels
    params = {"weight": small_uniform(lname, "weight", (c,), 0.5, 1.5),
              "bias": small_uniform(lname, "bias", (c,)),
              "mean": small_uniform(lname, "mean", (c,)),
              "var": small_uniform(lname, "var", (c,), 0.5, 1.5)}
    return layer("batch_norm", [x], {"eps": eps}, params, name=lname)


def prelu(x: Tensor, per_channel: bool = True, init: float = 0.25, name: str | None = None) -> Tensor:
    n = x.channels if per_channel else 1
    return layer("prelu", [x], {}, {"slope": np.full((n,), init, np.float32)}, name=name)


# ---------------------------------------------------------------------------------------------
# pooling
def _pool(kind, nd):
    def fn(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
           name: str | None = None, **extra) -> Tensor:
        attrs = {"kernel_size": kernel_size, "stride": stride, "padding": padding, "dilation": dilation,
                 "ceil_mode": ceil_mode, **extra}
        return layer(f"{kind}_pool{nd}d", [x], attrs, name=name, base="pool")
    fn.__name__ = f"{kind}_pool{nd}d"
    fn.__doc__ = f"{kind} pooling ({nd}-D); stride defaults to kernel_size."
    return fn


max_pool1d, max_pool2d = _pool("max", 1), _pool("max", 2)
avg_pool1d, avg_pool2d = _pool("avg", 1), _pool("avg", 2)
min_pool1d, min_pool2d = _pool("min", 1), _pool("min", 2)
sum_pool1d, sum_pool2d = _pool("sum", 1), _pool("sum", 2)


def global_avg_pool(x: Tensor, name: str | None = None) -> Tensor:
    return layer("global_avg_pool", [x], name=name, base="gap")


def global_max_pool(x: Tensor, name: str | None = None) -> Tensor:
    return layer("global_max_pool", [x], name=name, base="gmp")


# ---------------------------------------------------------------------------------------------
# elementwise
def _unary(op):
    def fn(x: Tensor, name: str | None = None, **attrs) -> Tensor:
        return layer(op, [x], attrs, name=name)
    fn.__name__ = op
    fn.__doc__ = f"elementwise {op} (attributes: {', '.join(ops.get(op).attrs) or 'none'})"
    return fn


relu = _unary("relu")
leaky_relu = _unary("leaky_relu")
relu6 = _unary("relu6")
clip = _unary("clip")
sigmoid = _unary("sigmoid")
tanh = _unary("tanh")
elu = _unary("elu")
selu = _unary("selu")
hardswish = _unary("hardswish")
hardsigmoid = _unary("hardsigmoid")
silu = _unary("silu")
gelu = _unary("gelu")
softplus = _unary("softplus")
mish = _unary("mish")
pow = _unary("pow")   # noqa: A001 - dsl.pow(x, exponent=2.0), elementwise by a constant exponent
identity = _unary("identity")


def dropout(x: Tensor, p: float = 0.5, name: str | None = None) -> Tensor:
    return layer("dropout", [x], {"p": p}, name=name)


def _binary(op):
    def fn(a, b, name: str | None = None) -> Tensor:
        like = a if isinstance(a, Tensor) else b
        return layer(op, [_as_tensor(like, a), _as_tensor(like, b)], name=name)
    fn.__name__ = op
    fn.__doc__ = f"elementwise {op} with numpy broadcasting; either side may be a constant"
    return fn


add, sub, mul, div = _binary("add"), _binary("sub"), _binary("mul"), _binary("div")


def softmax(x: Tensor, axis: int = 1, name: str | None = None) -> Tensor:
    return layer("softmax", [x], {"axis": axis}, name=name)


def log_softmax(x: Tensor, axis: int = 1, name: str | None = None) -> Tensor:
    return layer("log_softmax", [x], {"axis": axis}, name=name)


# ---------------------------------------------------------------------------------------------
# shape
def flatten(x: Tensor, axis: int = 1, name: str | None = None) -> Tensor:
    return layer("flatten", [x], {"axis": axis}, name=name)


def reshape(x: Tensor, shape: tuple, name: str | None = None) -> Tensor:
    return layer("reshape", [x], {"shape": tuple(shape)}, name=name)


def concat(xs: Sequence[Tensor], axis: int = 1, name: str | None = None) -> Tensor:
    return layer("concat", list(xs), {"axis": axis}, name=name)


def transpose(x: Tensor, perm: Sequence[int] | None = None, name: str | None = None) -> Tensor:
    """Permute the axes (default: reverse them, as ONNX does)."""
    return layer("transpose", [x], {"perm": None if perm is None else tuple(perm)}, name=name)


def slice(x: Tensor, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None = None,
          steps: Sequence[int] | None = None, name: str | None = None) -> Tensor:
    """x[starts:ends:steps] along ``axes`` (Python/ONNX clamping; negative counts from the end).
    A channel slice with step 1 costs nothing at opt level 2: readers take it in place."""
    return layer("slice", [x], {"starts": [int(v) for v in starts], "ends": [int(v) for v in ends],
                                "axes": None if axes is None else [int(v) for v in axes],
                                "steps": None if steps is None else [int(v) for v in steps]}, name=name)


def split(x: Tensor, sections, axis: int = 1, name: str | None = None) -> list[Tensor]:
    """Split along ``axis`` into ``sections`` equal parts (an int; torch.chunk's rule: the last
    part may be smaller) or parts of the given sizes (a list). One ``slice`` node per part,
    named ``<name>_0``, ``<name>_1``, ..."""
    size = sympy.sympify(x.shape[axis])
    if not size.is_number:
        raise ModelError(f"split along axis {axis} of symbolic size {size}", op="split",
                         fix="split an axis of concrete size")
    size = int(size)
    if isinstance(sections, int):
        step = -(-size // sections)
        sizes = [min(step, size - i) for i in range(0, size, step)]
    else:
        sizes = [int(s) for s in sections]
        if sum(sizes) != size:
            raise ModelError(f"sizes {sizes} add up to {sum(sizes)}, not the axis size {size}", op="split",
                             fix="give sizes that sum to the axis size")
    base = _builder_of(x).name_for("split", name)
    out, at = [], 0
    for i, s in enumerate(sizes):
        out.append(slice(x, [at], [at + s], [axis], name=f"{base}_{i}"))
        at += s
    return out


def gather(x: Tensor, indices, axis: int = 0, name: str | None = None) -> Tensor:
    """np.take(x, indices, axis) with constant indices (an int drops the axis)."""
    idx = np.asarray(indices, dtype=np.int64)
    return layer("gather", [x], {"axis": int(axis), "indices": idx.tolist() if idx.ndim else int(idx)}, name=name)


def pad(x: Tensor, pads, mode: str = "constant", value: float = 0.0, name: str | None = None) -> Tensor:
    """Pad: an int (every spatial axis), ONNX begins..ends, or (before, after) pairs; mode
    'constant', 'reflect' or 'edge'."""
    pads = pads if isinstance(pads, int) else tuple(tuple(p) if isinstance(p, (tuple, list)) else p for p in pads)
    return layer("pad", [x], {"pads": pads, "mode": mode, "value": value}, name=name)


# ---------------------------------------------------------------------------------------------
# more layers with weights
def conv_transpose2d(x: Tensor, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                     dilation=1, groups: int = 1, bias: bool = True, name: str | None = None) -> Tensor:
    """Transposed 2-D convolution (PyTorch ConvTranspose2d); weight is (in, out/groups, kH, kW)."""
    b = x._b
    lname = b.name_for("deconv", name)
    k = ops.tup(kernel_size, 2)
    cin = x.channels
    for what, count in (("input", cin), ("output", out_channels)):
        if count % groups:
            raise ModelError(f"{what} channels {count} are not divisible by groups {groups}", node=lname,
                             op="conv_transpose2d", attr="groups",
                             fix="groups must divide both the input and the output channels")
    wshape = (cin, out_channels // groups, *k)
    params = {"weight": he_normal(lname, "weight", wshape, (cin // groups) * int(np.prod(k)))}
    if bias:
        params["bias"] = small_uniform(lname, "bias", (out_channels,))
    attrs = {"stride": stride, "padding": padding, "output_padding": output_padding, "dilation": dilation,
             "groups": groups}
    return layer("conv_transpose2d", [x], attrs, params, name=lname)


def matmul(a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
    """Matrix product with numpy semantics; either side may be a constant array."""
    like = a if isinstance(a, Tensor) else b
    return layer("matmul", [_as_tensor(like, a), _as_tensor(like, b)], name=name)


def instance_norm(x: Tensor, eps: float = 1e-5, name: str | None = None) -> Tensor:
    b = x._b
    lname = b.name_for("inorm", name)
    c = x.channels
    params = {"weight": small_uniform(lname, "weight", (c,), 0.5, 1.5), "bias": small_uniform(lname, "bias", (c,))}
    return layer("instance_norm", [x], {"eps": eps}, params, name=lname)


def scale_shift(x: Tensor, scale, shift, name: str | None = None) -> Tensor:
    """Per-channel x * scale[c] + shift[c]."""
    c = x.channels
    params = {"scale": np.broadcast_to(np.asarray(scale, np.float32), (c,)).copy(),
              "shift": np.broadcast_to(np.asarray(shift, np.float32), (c,)).copy()}
    return layer("scale_shift", [x], {}, params, name=name)


def lrn(x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
        name: str | None = None) -> Tensor:
    """Local response normalization across channels (PyTorch LocalResponseNorm)."""
    return layer("lrn", [x], {"size": size, "alpha": alpha, "beta": beta, "k": k}, name=name)


# ---------------------------------------------------------------------------------------------
# more pooling and resizing
def lp_pool2d(x: Tensor, p: float, kernel_size, stride=None, ceil_mode: bool = False,
              name: str | None = None) -> Tensor:
    """Lp pooling: (sum of |x|^p over the window)^(1/p)."""
    return layer("lp_pool2d", [x], {"p": p, "kernel_size": kernel_size, "stride": stride, "ceil_mode": ceil_mode},
                 name=name, base="pool")


def max_pool2d_with_indices(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
                            name: str | None = None) -> tuple[Tensor, Tensor]:
    """Max pooling that also returns the argmax indices (for max_unpool2d): (y, indices)."""
    attrs = {"kernel_size": kernel_size, "stride": stride, "padding": padding, "dilation": dilation,
             "ceil_mode": ceil_mode}
    y = layer("max_pool2d", [x], attrs, name=name, base="pool")
    idx = layer("max_pool2d_indices", [x], dict(attrs), name=f"{y.name}_indices")
    return y, idx


def max_unpool2d(x: Tensor, indices: Tensor, kernel_size, stride=None, padding=0, output_size=None,
                 name: str | None = None) -> Tensor:
    """'Bed of nails' unpooling with the indices of max_pool2d_with_indices."""
    attrs = {"kernel_size": kernel_size, "stride": stride, "padding": padding,
             "output_size": None if output_size is None else tuple(int(v) for v in output_size)}
    return layer("max_unpool2d", [x, indices], attrs, name=name, base="unpool")


def roi_pool(x: Tensor, boxes: Tensor, output_size, spatial_scale: float = 1.0, name: str | None = None) -> Tensor:
    """Max pooling of each box (torchvision.ops.roi_pool): ``boxes`` is a (K, 5) float32 input, one row
    [batch_index, x1, y1, x2, y2] per box in image coordinates; output (K, C, out_h, out_w)."""
    return layer("roi_pool", [x, boxes], {"output_size": output_size, "spatial_scale": spatial_scale},
                 name=name, base="roi_pool")


def roi_align(x: Tensor, boxes: Tensor, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False, mode: str = "avg", name: str | None = None) -> Tensor:
    """Bilinear RoI pooling (torchvision.ops.roi_align; mode='max' is ONNX RoiAlign's): boxes as in
    ``roi_pool``; ``sampling_ratio`` samples per bin and axis (<= 0: ceil(box / output) adaptive)."""
    return layer("roi_align", [x, boxes], {"output_size": output_size, "spatial_scale": spatial_scale,
                                          "sampling_ratio": sampling_ratio, "aligned": aligned, "mode": mode},
                 name=name, base="roi_align")


def unpool_nearest2d(x: Tensor, scale=2, name: str | None = None) -> Tensor:
    """Nearest-neighbour unpooling: each value becomes a scale x scale block."""
    return layer("unpool_nearest2d", [x], {"scale": scale}, name=name, base="unpool")


def interpolate(x: Tensor, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                recompute_scale_factor=None, antialias: bool = False, name: str | None = None) -> Tensor:
    """F.interpolate over H and W with PyTorch's semantics: mode 'nearest', 'nearest-exact', 'bilinear',
    'bicubic' or 'area'; size or scale_factor; align_corners, recompute_scale_factor, antialias."""
    try:
        attrs = resize.interpolate_attrs(x.shape[2:], size, scale_factor, mode, align_corners,
                                         recompute_scale_factor, antialias)
    except resize.InterpolateError as e:
        raise ModelError(str(e), node=name or "up", op="resize2d", attr=e.attr, fix=e.fix) from None
    return layer("resize2d", [x], attrs, name=name, base="up")


def upsample2d(x: Tensor, scale_factor=2, mode: str = "nearest", align_corners: bool = False,
               size=None, name: str | None = None) -> Tensor:
    """nn.Upsample: by scale_factor or (when size is given) to a size; modes as in interpolate."""
    return interpolate(x, size=size, scale_factor=None if size is not None else scale_factor, mode=mode,
                       align_corners=align_corners or None, name=name)


def resize2d(x: Tensor, size=None, scale_factor=None, mode: str = "nearest", coordinate_mode: str = "half_pixel",
             nearest_mode: str = "round_prefer_floor", cubic_coeff_a: float = -0.75, exclude_outside: bool = False,
             antialias: bool = False, roi=None, extrapolation_value: float = 0.0, name: str | None = None) -> Tensor:
    """ONNX Resize over H and W with ONNX's attribute names (mode 'nearest', 'linear', 'cubic' or 'area');
    ``roi`` = ((h_start, h_end), (w_start, w_end)) for coordinate_mode 'tf_crop_and_resize'."""
    return layer("resize2d", [x], {"size": size, "scale_factor": scale_factor, "mode": mode,
                                   "coordinate_mode": coordinate_mode, "nearest_mode": nearest_mode,
                                   "cubic_coeff_a": cubic_coeff_a, "exclude_outside": exclude_outside,
                                   "antialias": antialias, "roi": roi, "extrapolation_value": extrapolation_value},
                 name=name, base="up")


def depth_to_space(x: Tensor, block: int, mode: str = "DCR", name: str | None = None) -> Tensor:
    """Channels -> block x block spatial blocks (ONNX DepthToSpace; mode='CRD' is pixel_shuffle)."""
    return layer("depth_to_space", [x], {"block": block, "mode": mode}, name=name)


def space_to_depth(x: Tensor, block: int, mode: str = "DCR", name: str | None = None) -> Tensor:
    """block x block spatial blocks -> channels (ONNX SpaceToDepth; mode='CRD' is pixel_unshuffle)."""
    return layer("space_to_depth", [x], {"block": block, "mode": mode}, name=name)
