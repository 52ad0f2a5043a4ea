"""PyTorch import: trace an ``nn.Module`` with torch.fx and map it onto the registry operators.

Why torch.fx: a symbolic trace sees the forward pass as written (modules, functional calls,
tensor methods, ``+``/``*``), without running a compiler stack, and it records the source line of
every node, so an unsupported construct can be reported where the user wrote it. Values flowing
through the trace are runtime tensors (cnncc graph nodes) or Python values known at import
(ints, ``x.size(0)`` = the batch symbol ``N``, tuples), so ``x.view(x.size(0), -1)`` resolves.
Weights are copied from the module (PyTorch layout is the registry's layout).
"""
from __future__ import annotations

import operator
import re
from typing import Any, Callable

import numpy as np
import sympy

from cnncc import names, ops, resize
from cnncc.contracts import NodeOrigin
from cnncc.errors import CnnccError, ModelError, UnsupportedError
from cnncc.ir import N, Graph, Node
from cnncc.shapes import batch_reshape_spec

__all__ = ["from_torch", "register_module"]


def from_torch(module, example_input, *, batch_symbolic: bool = True, name: str | None = None,
               batch=None, fixed_inputs=()) -> Graph:
    """Trace ``module`` (eval mode) and build a cnncc Graph.

    ``example_input`` (a tensor, or a tuple/list of tensors for several inputs) fixes the
    non-batch sizes; the batch dimension becomes ``cnncc.N`` unless ``batch_symbolic=False``.
    ``batch="N"`` also restates views written for the example's batch (``x.view(1, -1)`` traced
    at batch 1) for ``N``, and refuses, naming the node, a view that mixes the batch into other
    dimensions. ``fixed_inputs``: forward() arguments (positions or names) whose leading size is
    fixed, not the batch -- e.g. RoI boxes (K, 5)."""
    import torch
    import torch.fx

    if batch is not None and not (batch == "N" or batch is N):
        raise ModelError(f"batch={batch!r}: the only choice is batch='N' (a symbolic batch)",
                         fix="pass batch='N', or leave it out")

    if module.training:
        raise ModelError("the module is in training mode", fix="call module.eval() first (BatchNorm and Dropout "
                                                                 "behave differently when training)")
    examples = list(example_input) if isinstance(example_input, (tuple, list)) else [example_input]
    tracer = _leaf_tracer()
    tracer.record_stack_traces = True
    try:
        fx_graph = tracer.trace(module)
    except Exception as e:
        raise UnsupportedError(f"torch.fx could not trace {type(module).__name__}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}{_trace_location(e)}\n"
                               "  fix: keep forward() free of data-dependent Python control flow") from None
    gm = torch.fx.GraphModule(tracer.root, fx_graph)
    tracer = _Tracer(gm, examples, batch_symbolic or batch is not None, name or type(module).__name__,
                     set(fixed_inputs))
    if batch is not None and examples and len(examples[0].shape):
        tracer.literal_batch = int(examples[0].shape[0])
    return tracer.run()


#: module types mapped by ``register_module`` (a user's own layers), checked before the built-in table
CUSTOM_MODULES: dict[type, Callable] = {}


def register_module(module_type: type, emit: Callable | None = None):
    """Map a module type of your own onto registry operators: torch.fx then keeps it a leaf (its
    forward() is not traced, so it may loop over data or call torchvision) and ``emit(t, module,
    *inputs)`` builds its nodes, ``t.emit(op, [inputs], attrs, params)`` returning the node name::

        @register_module(RoIPool)
        def _roi_pool(t, m, x, boxes):
            return t.emit("roi_pool", [x, boxes], {"output_size": m.output_size,
                                                   "spatial_scale": m.spatial_scale})

    Usable as a decorator (``emit`` omitted) or a call; returns ``emit``."""
    def deco(fn: Callable) -> Callable:
        CUSTOM_MODULES[module_type] = fn
        return fn
    return deco if emit is None else deco(emit)


def _leaf_tracer():
    """torch.fx's tracer, with the module types of ``register_module`` (and torchvision's RoIPool /
    RoIAlign when installed) kept as leaves."""
    import torch.fx

    class LeafTracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname: str) -> bool:
            return _custom_module(m) is not None or super().is_leaf_module(m, qualname)

    return LeafTracer()


def _custom_module(m) -> Callable | None:
    for cls in type(m).__mro__:
        if cls in CUSTOM_MODULES:
            return CUSTOM_MODULES[cls]
    return _torchvision_roi(m)


def _torchvision_roi(m) -> Callable | None:
    """torchvision.ops.RoIPool / RoIAlign (boxes as a Tensor[K, 5]), recognized by class name and
    module so torchvision stays optional."""
    if not type(m).__module__.startswith("torchvision.ops"):
        return None
    if type(m).__name__ == "RoIPool":
        return lambda t, m, x, boxes: t.emit("roi_pool", [x, boxes], {
            "output_size": _pair(m.output_size), "spatial_scale": float(m.spatial_scale)})
    if type(m).__name__ == "RoIAlign":
        return lambda t, m, x, boxes: t.emit("roi_align", [x, boxes], {
            "output_size": _pair(m.output_size), "spatial_scale": float(m.spatial_scale),
            "sampling_ratio": int(m.sampling_ratio), "aligned": bool(m.aligned)})
    return None


def _trace_location(e: Exception) -> str:
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/torch/" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno}: {f.line})"


#: a torch.fx name as a graph node name: cnncc/names.py
_c_name = names.graph_name


class _Unsupported(Exception):
    pass


class _Tracer:
    def __init__(self, gm, examples, batch_symbolic: bool, name: str, fixed_inputs: set = frozenset()):
        self.fixed_inputs = fixed_inputs
        self.gm = gm
        self.examples = examples
        self.batch_symbolic = batch_symbolic
        self.graph = Graph(_c_name(name))
        self.env: dict[str, Any] = {}
        self.problems: list[str] = []
        self.modules = dict(gm.named_modules())
        self.fx = None
        self.literal_batch: int | None = None     # batch="N": the example's batch, restated as N in views

    # -- driver ------------------------------------------------------------------------------
    def run(self) -> Graph:
        placeholders = 0
        for fx in self.gm.graph.nodes:
            self.fx = fx
            if fx.op == "placeholder":
                self._placeholder(fx, placeholders)
                placeholders += 1
                continue
            if fx.op == "output":
                self._output(fx)
                continue
            if any(isinstance(a, _Poison) for a in _flat(self._args(fx.args)) + _flat(self._args(list(fx.kwargs.values())))):
                if not self._known(fx):        # downstream of a problem: report it only if unsupported itself
                    self.problems.append(f"  - {fx.name} ({_describe(fx, self.modules)}){_where(fx)}")
                self.env[fx.name] = _Poison()
                continue
            try:
                self.env[fx.name] = self._convert(fx)
            except _Unsupported as e:
                self.problems.append(f"  - {fx.name} ({_describe(fx, self.modules)}){': ' + str(e) if str(e) else ''}"
                                     f"{_where(fx)}")
                self.env[fx.name] = _Poison()
            except CnnccError as e:       # the message names the layer already when it is a ModelError
                raise ModelError(f"{e}{_where(fx)}", node=None if getattr(e, "node", None) else fx.name) from None
        if self.problems:
            raise UnsupportedError(f"{len(self.problems)} construct(s) of the traced module are not supported:\n"
                                   + "\n".join(self.problems))
        return self.graph

    def _known(self, fx) -> bool:
        if fx.op == "call_module":
            m = self.modules[fx.target]
            return _custom_module(m) is not None or MODULES.get(type(m)) is not None
        if fx.op == "call_function":
            return FUNCTIONS.get(fx.target) is not None
        if fx.op == "call_method":
            return METHODS.get(fx.target) is not None
        return True

    def _placeholder(self, fx, i: int) -> None:
        if i >= len(self.examples):
            raise ModelError(f"forward() takes input '{fx.name}' but only {len(self.examples)} example input(s) "
                             "were given", fix="pass one example tensor per forward() argument")
        x = self.examples[i]
        shape = tuple(int(d) for d in x.shape)
        if self.batch_symbolic and shape and not ({i, fx.target} & self.fixed_inputs):
            shape = (N,) + shape[1:]
        dtype = str(x.dtype).replace("torch.", "")
        node = Node(self.graph.unique_name(_c_name(fx.name)), "input", [], {"shape": shape, "dtype": dtype})
        ops.get("input").check(node)
        node.type = ops.get("input").infer(node, [])
        self.graph.add(node)
        self.env[fx.name] = node.name

    def _output(self, fx) -> None:
        outs = _flat(self._args(fx.args[0]))
        names = []
        for v in outs:
            if isinstance(v, _Poison):
                continue
            t = self.tensor(v)
            if t in self.graph.inputs or t in names:
                t = self.emit("identity", [t], name=f"output_{len(names)}")
            names.append(t)
        self.graph.outputs = names

    def _args(self, a):
        import torch.fx

        if isinstance(a, torch.fx.Node):
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self._args(x) for x in a)
        if isinstance(a, dict):
            return {k: self._args(v) for k, v in a.items()}
        return a

    def _convert(self, fx):
        args = self._args(fx.args)
        kwargs = self._args(dict(fx.kwargs))
        if fx.op == "get_attr":
            return _get_attr(self.gm, fx.target)
        if fx.op == "call_module":
            mod = self.modules[fx.target]
            fn = _custom_module(mod) or MODULES.get(type(mod))
            if fn is None:
                raise _Unsupported(f"module type nn.{type(mod).__name__}")
            return fn(self, mod, *args, **kwargs)
        if fx.op == "call_function":
            fn = FUNCTIONS.get(fx.target)
            if fn is None:
                raise _Unsupported(f"function {_qualname(fx.target)}")
            return fn(self, *args, **kwargs)
        if fx.op == "call_method":
            fn = METHODS.get(fx.target)
            if fn is None:
                raise _Unsupported(f"tensor method .{fx.target}()")
            return fn(self, *args, **kwargs)
        raise _Unsupported(f"fx op {fx.op}")

    # -- building blocks -----------------------------------------------------------------------
    def emit(self, op: str, inputs: list, attrs: dict | None = None, params: dict | None = None,
             name: str | None = None) -> str:
        names = [self.tensor(i) for i in inputs]
        base = _c_name(name or self.fx.name)
        node = Node(self.graph.unique_name(base), op, names, dict(attrs or {}),
                    {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in (params or {}).items()})
        opdef = ops.get(op, node=node.name)
        opdef.check(node)
        node.type = opdef.infer(node, [self.graph[i].type for i in names])
        node.origin = NodeOrigin(fx_node=self.fx.name)
        self.graph.add(node)
        return node.name

    def tensor(self, v) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return self.constant(np.array(v, np.float32))
        if isinstance(v, np.ndarray):
            return self.constant(v)
        raise _Unsupported(f"expected a tensor, got {type(v).__name__} {v!r}")

    def constant(self, value: np.ndarray) -> str:
        node = Node(self.graph.unique_name(_c_name(self.fx.name + "_const")), "constant", [], {},
                    {"value": np.ascontiguousarray(value, np.float32)})
        ops.get("constant").check(node)
        node.type = ops.get("constant").infer(node, [])
        self.graph.add(node)
        return node.name

    def shape(self, x) -> tuple:
        return tuple(self.graph[self.tensor(x)].type.shape)

    def rank(self, x) -> int:
        return len(self.shape(x))

    def reshape(self, x, shape) -> str:
        old = self.shape(x)
        shape = tuple(sympy.sympify(d) for d in shape)
        if self.literal_batch is not None and old and N in sympy.sympify(old[0]).free_symbols and (
                not shape or sympy.simplify(shape[0] - old[0]) != 0 or any(N in d.free_symbols for d in shape[1:])):
            raise ModelError(f"reshapes {tuple(old)} to {shape}: with batch='N' that mixes the batch into other "
                             "dimensions", fix="keep the batch as the leading dimension, or trace without batch='N'")
        if len(old) == len(shape) and all(sympy.simplify(a - b) == 0 for a, b in zip(old, shape)):
            return self.tensor(x)
        symbolic = [i for i, d in enumerate(shape) if not d.is_number]
        if len(symbolic) == 1:
            spec = tuple(-1 if i == symbolic[0] else int(d) for i, d in enumerate(shape))
        else:
            spec = tuple(int(d) if d.is_number else d for d in shape)
        return self.emit("reshape", [x], {"shape": spec})

    def view(self, x, sizes) -> str:
        """x.view / reshape with PyTorch semantics (-1 inferred; sizes may be sympy like N)."""
        sizes = list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else list(sizes)
        if self.literal_batch is not None:
            sizes = batch_reshape_spec(self.shape(x), sizes, self.literal_batch, N)
        total = sympy.Mul(*self.shape(x))
        known = sympy.Mul(*[sympy.sympify(s) for s in sizes if s != -1])
        out = [sympy.simplify(total / known) if s == -1 else sympy.sympify(s) for s in sizes]
        return self.reshape(x, out)


class _Poison:
    pass


def _flat(v) -> list:
    if isinstance(v, (list, tuple)):
        return [y for x in v for y in _flat(x)]
    if isinstance(v, dict):
        return [y for x in v.values() for y in _flat(x)]
    return [v]


def _get_attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach().cpu().numpy().astype(np.float32) if hasattr(obj, "detach") else obj


def _where(fx) -> str:
    trace = getattr(fx, "stack_trace", None) or ""
    found = [f for f in re.findall(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.*)', trace)
             if "/torch/" not in f[0]]
    if not found:
        return ""
    path, line, func, code = found[-1]
    return f" at {path}:{line} in {func}: {code.strip()}"


def _qualname(fn) -> str:
    mod = getattr(fn, "__module__", None) or ""
    return f"{mod}.{getattr(fn, '__name__', repr(fn))}".lstrip(".")


def _describe(fx, modules) -> str:
    if fx.op == "call_module":
        return f"nn.{type(modules[fx.target]).__name__} '{fx.target}'"
    if fx.op == "call_function":
        return _qualname(fx.target)
    if fx.op == "call_method":
        return f".{fx.target}()"
    return fx.op


def _pair(v, n: int = 2) -> tuple:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _np(p):
    return None if p is None else p.detach().cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------------
# layers shared by modules and their functional forms
def _conv(t: _Tracer, x, weight, bias, stride, padding, dilation, groups, padding_mode="zeros"):
    nd = weight.ndim - 2
    if nd not in (1, 2):
        raise _Unsupported(f"{nd}-D convolution")
    if padding_mode != "zeros":
        if isinstance(padding, str):
            raise _Unsupported(f"padding_mode '{padding_mode}' with padding='{padding}'")
        pads = _pair(padding, nd)
        if any(pads):
            mode = {"reflect": "reflect", "replicate": "edge"}.get(padding_mode)
            if mode is None:
                raise _Unsupported(f"padding_mode '{padding_mode}'")
            x = t.emit("pad", [x], {"pads": tuple([0, 0] + list(pads) + [0, 0] + list(pads)), "mode": mode},
                       name=t.fx.name + "_pad")
        padding = 0
    params = {"weight": weight}
    if bias is not None:
        params["bias"] = bias
    attrs = {"stride": _pair(stride, nd), "dilation": _pair(dilation, nd), "groups": int(groups),
             "padding": padding if isinstance(padding, str) else _pair(padding, nd)}
    return t.emit(f"conv{nd}d", [x], attrs, params)


def _pool(t: _Tracer, kind: str, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
          count_include_pad=True, divisor_override=None, return_indices=False):
    nd = t.rank(x) - 2
    if nd not in (1, 2):
        raise _Unsupported(f"{nd}-D pooling")
    if divisor_override:
        raise _Unsupported("avg pooling with divisor_override")
    stride = kernel_size if stride in (None, [], ()) else stride
    attrs = {"kernel_size": _pair(kernel_size, nd), "stride": _pair(stride, nd), "padding": _pair(padding, nd),
             "ceil_mode": bool(ceil_mode)}
    if kind == "max":
        attrs["dilation"] = _pair(dilation, nd)
    if kind == "avg":
        attrs["count_include_pad"] = bool(count_include_pad)
    y = t.emit(f"{kind}_pool{nd}d", [x], attrs)
    if return_indices:
        if nd != 2:
            raise _Unsupported("return_indices on a 1-D max pool")
        return (y, t.emit("max_pool2d_indices", [x], attrs, name=t.fx.name + "_indices"))
    return y


def _adaptive(t: _Tracer, kind: str, x, output_size):
    shape = t.shape(x)
    nd = len(shape) - 2
    out = _pair(output_size, nd) if output_size is not None else None
    out = tuple(int(shape[2 + i]) if o is None else o for i, o in enumerate(out))
    if all(o == 1 for o in out):
        return t.emit(f"global_{kind}_pool", [x])
    sizes = [sympy.sympify(d) for d in shape[2:]]
    if all(s.is_number and int(s) % o == 0 for s, o in zip(sizes, out)):
        k = tuple(int(s) // o for s, o in zip(sizes, out))
        return t.emit(f"{kind}_pool{nd}d", [x], {"kernel_size": k, "stride": k})
    if kind == "avg" and nd == 2 and all(s.is_number for s in sizes):   # windows of unequal size: area resize
        return t.emit("resize2d", [x], {"size": tuple(int(o) for o in out), "mode": "area"})
    raise _Unsupported(f"adaptive {kind} pooling to {out} from {tuple(shape[2:])} (windows of unequal size)")


def _batch_norm(t: _Tracer, x, mean, var, weight, bias, eps):
    c = mean.shape[0]
    params = {"weight": weight if weight is not None else np.ones(c, np.float32),
              "bias": bias if bias is not None else np.zeros(c, np.float32), "mean": mean, "var": var}
    return t.emit("batch_norm", [x], {"eps": float(eps)}, params)


def _upsample(t: _Tracer, x, size=None, scale_factor=None, mode="nearest", align_corners=None,
              recompute_scale_factor=None, antialias=False):
    """F.interpolate / nn.Upsample, every mode, as one resize2d (cnncc/resize.py holds the mapping)."""
    if t.rank(x) != 4:
        raise _Unsupported(f"interpolation of a rank-{t.rank(x)} tensor (cnncc resizes NCHW)")
    try:
        attrs = resize.interpolate_attrs(t.shape(x)[2:], size, scale_factor, mode, align_corners,
                                         recompute_scale_factor, antialias)
    except resize.InterpolateError as e:
        raise _Unsupported(f"F.interpolate {e.attr}: {e} ({e.fix})") from None
    return t.emit("resize2d", [x], attrs)


def _softmax(op):
    def fn(t: _Tracer, x, dim=None, _stacklevel=3, dtype=None):
        if dim is None:
            raise _Unsupported(f"{op} without dim")
        return t.emit(op, [x], {"axis": int(dim) % t.rank(x)})
    return fn


def _unary(op, **fixed):
    def fn(t: _Tracer, x, *args, **kwargs):
        return t.emit(op, [x], dict(fixed))
    return fn


def _binary(op, reverse=False):
    def fn(t: _Tracer, a, b, alpha=None):
        if alpha not in (None, 1):
            raise _Unsupported("add/sub with alpha")
        if not isinstance(a, str) and not isinstance(b, str):      # plain Python arithmetic on sizes
            return {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
                    "div": operator.truediv}[op](a, b)
        if reverse:
            a, b = b, a
        return t.emit(op, [a, b])
    return fn


def _flatten(t: _Tracer, x, start_dim=1, end_dim=-1):
    shape = t.shape(x)
    rank = len(shape)
    s, e = start_dim % rank, end_dim % rank
    if e == rank - 1 and s <= 1 and rank >= 2:
        return t.emit("flatten", [x], {"axis": 1}) if s == 1 else t.reshape(x, (sympy.Mul(*shape),))
    return t.reshape(x, tuple(shape[:s]) + (sympy.Mul(*shape[s:e + 1]),) + tuple(shape[e + 1:]))


def _cat(t: _Tracer, tensors, dim=0):
    rank = t.rank(tensors[0])
    return t.emit("concat", list(tensors), {"axis": int(dim) % rank})


def _mean(t: _Tracer, x, dim=None, keepdim=False, dtype=None):
    rank = t.rank(x)
    dims = sorted(int(d) % rank for d in (dim if isinstance(dim, (tuple, list)) else [dim])) \
        if dim is not None else list(range(rank))
    if rank < 3 or dims != list(range(2, rank)):
        raise _Unsupported(f"mean over dims {dims} (cnncc averages all spatial dims: a global pool)")
    y = t.emit("global_avg_pool", [x])
    return y if keepdim else t.reshape(y, t.shape(y)[:2])


def _size(t: _Tracer, x, dim=None):
    shape = tuple(sympy.sympify(d) for d in t.shape(x))
    shape = tuple(int(d) if d.is_number else d for d in shape)
    return shape if dim is None else shape[int(dim)]


def _getitem(t: _Tracer, obj, index):
    if isinstance(obj, (tuple, list)):
        return obj[index]
    if isinstance(obj, str):
        return _index_tensor(t, obj, index)
    raise _Unsupported("indexing or slicing a tensor")


def _index_tensor(t: _Tracer, x: str, index):
    """x[...] with ints, slices (constant bounds and steps) and Ellipsis -> one ``slice`` node plus
    a reshape that drops the int-indexed axes."""
    try:
        attrs, drop = ops.index_to_slice(index, t.rank(x))
    except ValueError as e:
        raise _Unsupported(str(e)) from None
    if any(s <= 0 for s in attrs["steps"]):
        raise _Unsupported("a non-positive slice step (PyTorch rejects it too)")
    y = t.emit("slice", [x], attrs) if attrs["axes"] else x
    if drop:
        y = t.reshape(y, [d for ax, d in enumerate(t.shape(y)) if ax not in drop])
    return y


def _split(t: _Tracer, x, sizes, dim=0) -> tuple:
    """torch.split / chunk / narrow: one ``slice`` node per part along ``dim``."""
    rank = t.rank(x)
    dim = int(dim) % rank
    out, at = [], 0
    for size in sizes:
        out.append(t.emit("slice", [x], {"starts": [at], "ends": [at + int(size)], "axes": [dim], "steps": [1]}))
        at += int(size)
    return tuple(out)


def _axis_size(t: _Tracer, x, dim) -> int:
    d = sympy.sympify(t.shape(x)[int(dim)])
    if not d.is_number:
        raise _Unsupported(f"splitting dim {dim} of symbolic size {d}")
    return int(d)


def _chunk(t: _Tracer, x, chunks, dim=0):
    n = _axis_size(t, x, dim)
    step = -(-n // int(chunks))
    return _split(t, x, [min(step, n - i) for i in range(0, n, step)], dim)


def _split_by(t: _Tracer, x, split_size_or_sections, dim=0):
    if isinstance(split_size_or_sections, int):
        n, step = _axis_size(t, x, dim), split_size_or_sections
        return _split(t, x, [min(step, n - i) for i in range(0, n, step)], dim)
    return _split(t, x, list(split_size_or_sections), dim)


def _narrow(t: _Tracer, x, dim, start, length):
    start = int(start) % _axis_size(t, x, dim) if int(start) < 0 else int(start)
    dim = int(dim) % t.rank(x)
    return t.emit("slice", [x], {"starts": [start], "ends": [start + int(length)], "axes": [dim], "steps": [1]})


def _index_select(t: _Tracer, x, dim, index):
    if not isinstance(index, np.ndarray):
        raise _Unsupported("index_select with a runtime index (constant indices only)")
    return t.emit("gather", [x], {"axis": int(dim) % t.rank(x), "indices": np.asarray(index, np.int64).tolist()})


def _permute(t: _Tracer, x, *dims):
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    return t.emit("transpose", [x], {"perm": tuple(int(d) % t.rank(x) for d in dims)})


def _transpose(t: _Tracer, x, d0, d1):
    perm = list(range(t.rank(x)))
    d0, d1 = d0 % len(perm), d1 % len(perm)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return t.emit("transpose", [x], {"perm": tuple(perm)})


def _pad(t: _Tracer, x, pad, mode="constant", value=None):
    rank = t.rank(x)
    pad = [int(p) for p in pad]
    widths = [(0, 0)] * rank
    for i in range(len(pad) // 2):                       # F.pad lists the last dim first
        widths[rank - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}.get(mode)
    if mode is None:
        raise _Unsupported("pad mode")
    return t.emit("pad", [x], {"pads": tuple(widths), "mode": mode, "value": float(value or 0.0)})


def _identity(t: _Tracer, x, *args, **kwargs):
    return x


def _clamp(t: _Tracer, x, min=None, max=None):
    if min == 0 and max == 6:
        return t.emit("relu6", [x])
    return t.emit("clip", [x], {"min": None if min is None else float(min), "max": None if max is None else float(max)})


# ---------------------------------------------------------------------------------------------
# nn modules
def _m_unary(op, **fixed):
    return lambda t, m, x, *args, **kwargs: t.emit(op, [x], dict(fixed))


def _m_identity(t, m, x, *args, **kwargs):
    return x


def _modules() -> dict:
    from torch import nn

    def conv(t, m, x):
        if isinstance(m, nn.ConvTranspose2d):
            return conv_t(t, m, x)
        return _conv(t, x, _np(m.weight), _np(m.bias), m.stride, m.padding, m.dilation, m.groups, m.padding_mode)

    def conv_t(t, m, x, output_size=None):
        if output_size is not None:
            raise _Unsupported("ConvTranspose2d called with output_size")
        params = {"weight": _np(m.weight)}
        if m.bias is not None:
            params["bias"] = _np(m.bias)
        attrs = {"stride": _pair(m.stride), "padding": _pair(m.padding), "output_padding": _pair(m.output_padding),
                 "dilation": _pair(m.dilation), "groups": int(m.groups)}
        return t.emit("conv_transpose2d", [x], attrs, params)

    def bn(t, m, x):
        if m.running_mean is None:
            raise _Unsupported("BatchNorm without running statistics (track_running_stats=False)")
        return _batch_norm(t, x, _np(m.running_mean), _np(m.running_var), _np(m.weight), _np(m.bias), m.eps)

    def inorm(t, m, x):
        if m.track_running_stats:
            raise _Unsupported("InstanceNorm with running statistics")
        c = t.shape(x)[1]
        w = _np(m.weight) if m.affine else np.ones(int(c), np.float32)
        b = _np(m.bias) if m.affine else np.zeros(int(c), np.float32)
        return t.emit("instance_norm", [x], {"eps": float(m.eps)}, {"weight": w, "bias": b})

    def linear(t, m, x):
        params = {"weight": _np(m.weight)}
        if m.bias is not None:
            params["bias"] = _np(m.bias)
        return t.emit("dense", [x], {}, params)

    def maxpool(t, m, x):
        return _pool(t, "max", x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                     return_indices=m.return_indices)

    def avgpool(t, m, x):
        return _pool(t, "avg", x, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode, m.count_include_pad,
                     m.divisor_override)

    def lppool(t, m, x):
        if t.rank(x) != 4:
            raise _Unsupported("LPPool1d")
        k = _pair(m.kernel_size)
        s = _pair(m.stride if m.stride is not None else m.kernel_size)
        return t.emit("lp_pool2d", [x], {"kernel_size": k, "stride": s, "ceil_mode": bool(m.ceil_mode),
                                         "p": float(m.norm_type)})

    def unpool(t, m, x, indices, output_size=None):
        attrs = {"kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride), "padding": _pair(m.padding)}
        if output_size is not None:
            attrs["output_size"] = tuple(int(v) for v in tuple(output_size)[-2:])   # x.size() leads with N
        return t.emit("max_unpool2d", [x, indices], attrs)

    def flatten(t, m, x):
        return _flatten(t, x, m.start_dim, m.end_dim)

    def prelu(t, m, x):
        return t.emit("prelu", [x], {}, {"slope": _np(m.weight).reshape(-1)})

    def upsample(t, m, x):
        return _upsample(t, x, m.size, m.scale_factor, m.mode, m.align_corners, m.recompute_scale_factor)

    def pad(mode):
        def fn(t, m, x):
            value = getattr(m, "value", 0.0)
            return _pad(t, x, m.padding, mode, value)
        return fn

    table = {
        nn.Conv1d: conv, nn.Conv2d: conv, nn.ConvTranspose2d: conv_t, nn.BatchNorm1d: bn, nn.BatchNorm2d: bn,
        nn.InstanceNorm1d: inorm, nn.InstanceNorm2d: inorm, nn.Linear: linear,
        nn.MaxPool1d: maxpool, nn.MaxPool2d: maxpool, nn.AvgPool1d: avgpool, nn.AvgPool2d: avgpool,
        nn.LPPool2d: lppool, nn.MaxUnpool2d: unpool,
        nn.AdaptiveAvgPool1d: lambda t, m, x: _adaptive(t, "avg", x, m.output_size),
        nn.AdaptiveAvgPool2d: lambda t, m, x: _adaptive(t, "avg", x, m.output_size),
        nn.AdaptiveMaxPool2d: lambda t, m, x: _adaptive(t, "max", x, m.output_size)
        if not m.return_indices else (_ for _ in ()).throw(_Unsupported("adaptive max pool indices")),
        nn.ReLU: _m_unary("relu"), nn.ReLU6: _m_unary("relu6"), nn.Sigmoid: _m_unary("sigmoid"), nn.Tanh: _m_unary("tanh"),
        nn.SELU: _m_unary("selu"), nn.Hardswish: _m_unary("hardswish"), nn.SiLU: _m_unary("silu"),
        nn.Mish: _m_unary("mish"), nn.Hardsigmoid: _m_unary("hardsigmoid", alpha=1 / 6, beta=0.5),
        nn.LeakyReLU: lambda t, m, x: t.emit("leaky_relu", [x], {"alpha": float(m.negative_slope)}),
        nn.ELU: lambda t, m, x: t.emit("elu", [x], {"alpha": float(m.alpha)}),
        nn.GELU: lambda t, m, x: t.emit("gelu", [x], {"approximate": m.approximate}),
        nn.Softplus: lambda t, m, x: t.emit("softplus", [x], {"beta": float(m.beta), "threshold": float(m.threshold)}),
        nn.Hardtanh: lambda t, m, x: _clamp(t, x, m.min_val, m.max_val),
        nn.PReLU: prelu,
        nn.Softmax: lambda t, m, x: _softmax("softmax")(t, x, m.dim),
        nn.LogSoftmax: lambda t, m, x: _softmax("log_softmax")(t, x, m.dim),
        nn.Dropout: _m_identity, nn.Dropout1d: _m_identity, nn.Dropout2d: _m_identity, nn.Identity: _m_identity,
        nn.AlphaDropout: _m_identity,
        nn.Flatten: flatten, nn.Upsample: upsample, nn.UpsamplingNearest2d: upsample,
        nn.UpsamplingBilinear2d: lambda t, m, x: _upsample(t, x, m.size, m.scale_factor, "bilinear", True),
        nn.PixelShuffle: lambda t, m, x: t.emit("depth_to_space", [x], {"block": int(m.upscale_factor), "mode": "CRD"}),
        nn.PixelUnshuffle: lambda t, m, x: t.emit("space_to_depth", [x],
                                                  {"block": int(m.downscale_factor), "mode": "CRD"}),
        nn.LocalResponseNorm: lambda t, m, x: t.emit("lrn", [x], {"size": int(m.size), "alpha": float(m.alpha),
                                                                  "beta": float(m.beta), "k": float(m.k)}),
        nn.ZeroPad2d: pad("constant"), nn.ConstantPad2d: pad("constant"), nn.ConstantPad1d: pad("constant"),
        nn.ReflectionPad2d: pad("reflect"), nn.ReflectionPad1d: pad("reflect"),
        nn.ReplicationPad2d: pad("replicate"), nn.ReplicationPad1d: pad("replicate"),
    }
    return table


def _functions() -> dict:
    import torch
    import torch.nn.functional as F

    def conv(t, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if not isinstance(weight, np.ndarray):
            raise _Unsupported("convolution with a runtime weight")
        return _conv(t, x, weight, bias, stride, padding, dilation, groups)

    def linear(t, x, weight, bias=None):
        if not isinstance(weight, np.ndarray):
            raise _Unsupported("linear with a runtime weight")
        return t.emit("dense", [x], {}, {"weight": weight, **({"bias": bias} if bias is not None else {})})

    def max_pool(t, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        return _pool(t, "max", x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=return_indices)

    def avg_pool(t, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        return _pool(t, "avg", x, kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override)

    def batch_norm(t, x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        if training:
            raise _Unsupported("batch_norm with training=True")
        return _batch_norm(t, x, running_mean, running_var, weight, bias, eps)

    def leaky(t, x, negative_slope=0.01, inplace=False):
        return t.emit("leaky_relu", [x], {"alpha": float(negative_slope)})

    def elu(t, x, alpha=1.0, inplace=False):
        return t.emit("elu", [x], {"alpha": float(alpha)})

    def gelu(t, x, approximate="none"):
        return t.emit("gelu", [x], {"approximate": approximate})

    def hardtanh(t, x, min_val=-1.0, max_val=1.0, inplace=False):
        return _clamp(t, x, min_val, max_val)

    def unpool(t, x, indices, kernel_size, stride=None, padding=0, output_size=None):
        attrs = {"kernel_size": _pair(kernel_size), "stride": _pair(stride if stride is not None else kernel_size),
                 "padding": _pair(padding)}
        if output_size is not None:
            attrs["output_size"] = tuple(int(v) for v in tuple(output_size)[-2:])   # x.size() leads with N
        return t.emit("max_unpool2d", [x, indices], attrs)

    table = {
        F.conv1d: conv, F.conv2d: conv, F.linear: linear, F.batch_norm: batch_norm,
        F.max_pool1d: max_pool, F.max_pool2d: max_pool, F.avg_pool1d: avg_pool, F.avg_pool2d: avg_pool,
        F.max_pool2d_with_indices: lambda t, *a, **k: max_pool(t, *a, **{**k, "return_indices": True}),
        F.adaptive_avg_pool2d: lambda t, x, output_size: _adaptive(t, "avg", x, output_size),
        F.adaptive_avg_pool1d: lambda t, x, output_size: _adaptive(t, "avg", x, output_size),
        F.adaptive_max_pool2d: lambda t, x, output_size, return_indices=False: _adaptive(t, "max", x, output_size),
        F.max_unpool2d: unpool,
        F.relu: _unary("relu"), torch.relu: _unary("relu"), F.relu6: _unary("relu6"),
        F.sigmoid: _unary("sigmoid"), torch.sigmoid: _unary("sigmoid"), F.tanh: _unary("tanh"),
        torch.tanh: _unary("tanh"), F.silu: _unary("silu"), F.mish: _unary("mish"), F.hardswish: _unary("hardswish"),
        F.hardsigmoid: _unary("hardsigmoid", alpha=1 / 6, beta=0.5), F.selu: _unary("selu"),
        F.leaky_relu: leaky, F.elu: elu, F.gelu: gelu, F.hardtanh: hardtanh,
        F.softplus: lambda t, x, beta=1.0, threshold=20.0: t.emit("softplus", [x], {"beta": float(beta),
                                                                                     "threshold": float(threshold)}),
        F.softmax: _softmax("softmax"), torch.softmax: _softmax("softmax"),
        F.log_softmax: _softmax("log_softmax"), torch.log_softmax: _softmax("log_softmax"),
        F.dropout: _identity, F.dropout2d: _identity, F.dropout1d: _identity,
        torch.cat: _cat, torch.concat: _cat, torch.flatten: _flatten, torch.reshape: lambda t, x, s: t.view(x, [s]),
        torch.mean: _mean, torch.permute: _permute, torch.transpose: _transpose,
        torch.clamp: _clamp, torch.clip: _clamp,
        torch.chunk: _chunk, torch.split: _split_by, torch.narrow: _narrow, torch.index_select: _index_select,
        F.interpolate: _upsample, F.upsample: _upsample, F.pad: _pad,
        F.upsample_nearest: lambda t, x, size=None, scale_factor=None: _upsample(t, x, size, scale_factor),
        F.upsample_bilinear: lambda t, x, size=None, scale_factor=None: _upsample(t, x, size, scale_factor,
                                                                                  "bilinear", True),
        F.pixel_shuffle: lambda t, x, r: t.emit("depth_to_space", [x], {"block": int(r), "mode": "CRD"}),
        F.pixel_unshuffle: lambda t, x, r: t.emit("space_to_depth", [x], {"block": int(r), "mode": "CRD"}),
        operator.add: _binary("add"), operator.iadd: _binary("add"), torch.add: _binary("add"),
        operator.sub: _binary("sub"), operator.isub: _binary("sub"), torch.sub: _binary("sub"),
        operator.mul: _binary("mul"), operator.imul: _binary("mul"), torch.mul: _binary("mul"),
        operator.truediv: _binary("div"), operator.itruediv: _binary("div"), torch.div: _binary("div"),
        operator.floordiv: lambda t, a, b: a // b if not isinstance(a, str) and not isinstance(b, str)
        else (_ for _ in ()).throw(_Unsupported("floor division of tensors")),
        torch.matmul: lambda t, a, b: t.emit("matmul", [a, b]),
        operator.matmul: lambda t, a, b: t.emit("matmul", [a, b]),
        operator.getitem: _getitem,
        getattr: lambda t, obj, attr: _size(t, obj) if attr == "shape" else
        (_ for _ in ()).throw(_Unsupported(f"attribute .{attr}")),
    }
    return table


def _methods() -> dict:
    return {
        "view": lambda t, x, *s: t.view(x, s), "reshape": lambda t, x, *s: t.view(x, s),
        "flatten": _flatten, "mean": _mean, "size": _size, "permute": _permute, "transpose": _transpose,
        "contiguous": _identity, "clone": _identity, "detach": _identity,
        "relu": _unary("relu"), "relu_": _unary("relu"), "sigmoid": _unary("sigmoid"), "tanh": _unary("tanh"),
        "softmax": _softmax("softmax"), "log_softmax": _softmax("log_softmax"),
        "add": _binary("add"), "add_": _binary("add"), "mul": _binary("mul"), "mul_": _binary("mul"),
        "sub": _binary("sub"), "div": _binary("div"), "clamp": _clamp, "clip": _clamp,
        "matmul": lambda t, a, b: t.emit("matmul", [a, b]),
        "chunk": _chunk, "split": _split_by, "narrow": _narrow, "index_select": _index_select,
        "unsqueeze": lambda t, x, d: t.reshape(x, _unsqueezed(t.shape(x), d)),
        "squeeze": lambda t, x, d=None: t.reshape(x, [s for i, s in enumerate(t.shape(x))
                                                      if not (s == 1 and (d is None or i == d % t.rank(x)))]),
    }


def _unsqueezed(shape, d):
    shape = list(shape)
    shape.insert(d % (len(shape) + 1), 1)
    return shape


class _LazyTable(dict):
    """Tables keyed by torch objects, built on first use so importing cnncc never imports torch."""

    def __init__(self, factory: Callable[[], dict]):
        super().__init__()
        self.factory = factory
        self.ready = False

    def get(self, key, default=None):
        if not self.ready:
            self.update(self.factory())
            self.ready = True
        return super().get(key, default)


MODULES = _LazyTable(_modules)
FUNCTIONS = _LazyTable(_functions)
METHODS = _LazyTable(_methods)
