"""Shape and data movement: flatten, reshape, concat, slice, gather, transpose, pad, depth/space rearrangement."""
from __future__ import annotations

import numpy as np
import sympy

from ..errors import ModelError
from ..node import Node
from .core import Attr, OpDef, REQUIRED, VIEW, _axis_check, is_int, is_number, pos_int, register


# ---------------------------------------------------------------------------------------------
# shape and data movement
def _flatten_shape(node, ins):
    x = ins[0]
    ax = node.attrs["axis"] % max(x.rank, 1) if x.rank else 0
    return (sympy.Mul(*x.shape[:ax]) if ax else 1, sympy.Mul(*x.shape[ax:]))


register(OpDef("flatten", (1, 1), _flatten_shape,
               lambda node, xs: xs[0].reshape(int(np.prod(xs[0].shape[:node.attrs["axis"]])), -1),
               attrs={"axis": Attr(1, is_int, "an int axis")}, traits=frozenset({VIEW}),
               doc="collapse dims [axis:] into one (and [:axis] into one)", kernel="copy"))


def _reshape_shape(node, ins):
    x = ins[0]
    spec = list(node.attrs["shape"])
    total = x.numel()
    out = []
    for i, d in enumerate(spec):
        if isinstance(d, int) and d == 0:
            out.append(x.shape[i])
        else:
            out.append(sympy.sympify(d))
    if sum(1 for d in out if d == -1) > 1:
        raise ModelError("at most one dimension may be -1", node=node.name, op=node.op, attr="shape")
    known = sympy.Mul(*[d for d in out if d != -1])
    if any(d == -1 for d in out):
        rest = sympy.simplify(total / known)
        if rest.is_number and rest != int(rest):
            raise ModelError(f"cannot reshape {x.shape} ({total} elements) to {tuple(spec)}",
                             node=node.name, op=node.op, attr="shape")
        out = [rest if d == -1 else d for d in out]
    elif sympy.simplify(known - total) != 0:
        raise ModelError(f"cannot reshape {x.shape} ({total} elements) to {tuple(spec)}",
                         node=node.name, op=node.op, attr="shape",
                         fix="the number of elements must stay the same; use -1 for one inferred dimension")
    return tuple(out)


def _reshape_ref(node, xs):
    x = xs[0]
    spec = [x.shape[i] if (isinstance(d, int) and d == 0) else d for i, d in enumerate(node.attrs["shape"])]
    spec = [x.shape[0] if (isinstance(d, sympy.Basic) and not d.is_number) else int(d) for d in spec]
    return x.reshape(spec)


register(OpDef("reshape", (1, 1), _reshape_shape, _reshape_ref,
               attrs={"shape": Attr(REQUIRED, lambda v: isinstance(v, (tuple, list)),
                                    "a tuple; 0 copies the input dimension, -1 is inferred, N is the batch")},
               traits=frozenset({VIEW}), doc="reshape (row-major)", kernel="copy"))


def _concat_shape(node, ins):
    rank = ins[0].rank
    ax = _axis_check(node, rank)
    for t in ins[1:]:
        if t.rank != rank or any(sympy.simplify(a - b) != 0 for i, (a, b) in enumerate(zip(t.shape, ins[0].shape))
                                 if i != ax):
            raise ModelError(f"inputs {[tuple(x.shape) for x in ins]} differ outside the concat axis {ax}",
                             node=node.name, op=node.op, attr="axis")
    return tuple(sum((t.shape[ax] for t in ins), sympy.Integer(0)) if i == ax else d
                 for i, d in enumerate(ins[0].shape))


register(OpDef("concat", (1, None), _concat_shape,
               lambda node, xs: np.concatenate(xs, axis=node.attrs["axis"]),
               attrs={"axis": Attr(1, is_int, "an int axis")}, doc="concatenate along an axis", kernel="concat"))

# the layout pass's conversion (passes/layout.py): the values are the input's, only the order in
# memory changes (NCHW <-> NCHW[V]c), so the reference is the identity
register(OpDef("reorder", (1, 1), lambda node, ins: tuple(ins[0].shape), lambda node, xs: xs[0],
               attrs={"to": Attr(REQUIRED, lambda v: v in ("nchw", "blocked"), "'nchw' or 'blocked'"),
                      "vector": Attr(REQUIRED, pos_int, "floats per channel block, a positive int")},
               doc="the same tensor in another memory layout (NCHW <-> NCHW[V]c), inserted by the layout pass",
               kernel="reorder"))

def slice_bounds(node: Node, shape: tuple) -> list[tuple[int, int, int]]:
    """(start, stop, step) per sliced axis after Python/ONNX clamping, as ints; negative starts and
    ends count from the end, out-of-range values clamp, a negative step walks backwards."""
    a = node.attrs
    starts, ends = list(a["starts"]), list(a["ends"])
    axes = list(a["axes"]) if a["axes"] is not None else list(range(len(starts)))
    steps = list(a["steps"]) if a["steps"] is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ModelError(f"starts {starts}, ends {ends}, axes {axes}, steps {steps} differ in length",
                         node=node.name, op=node.op, fix="give one start, end, axis and step per sliced axis")
    rank = len(shape)
    out = {}
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        if not -rank <= ax < rank or ax % rank in out:
            raise ModelError(f"axis {ax} is out of range for rank {rank} or repeated", node=node.name,
                             op=node.op, attr="axes")
        ax %= rank
        if sp == 0:
            raise ModelError("a step of 0", node=node.name, op=node.op, attr="steps", fix="use a non-zero step")
        d = sympy.sympify(shape[ax])
        if not d.is_number:
            if st == 0 and sp == 1 and en >= 2 ** 31:
                continue               # the whole (symbolic) axis: nothing sliced
            raise ModelError(f"slicing axis {ax} of symbolic size {d} (the batch N stays whole)",
                             node=node.name, op=node.op, attr="axes",
                             fix="slice only axes of concrete size; cnncc keeps the batch dimension whole")
        out[ax] = slice(int(st), int(en), int(sp)).indices(int(d))
    return [out.get(i, None) for i in range(rank)]


def _slice_shape(node, ins):
    shape = ins[0].shape
    bounds = slice_bounds(node, shape)
    return tuple(d if b is None else len(range(*b)) for d, b in zip(shape, bounds))


def _slice_ref(node, xs):
    x = xs[0]
    bounds = slice_bounds(node, x.shape)
    # .indices() may give stop -1 for a backwards walk to the front; as a slice that would mean "the end"
    return np.ascontiguousarray(x[tuple(slice(None) if b is None else slice(b[0], b[1] if b[1] >= 0 else None, b[2])
                                        for b in bounds)])


_int_seq = lambda v: isinstance(v, (tuple, list)) and all(is_int(x) for x in v)  # noqa: E731
register(OpDef("slice", (1, 1), _slice_shape, _slice_ref,
               attrs={"starts": Attr(REQUIRED, _int_seq, "a list of ints (negative: from the end)"),
                      "ends": Attr(REQUIRED, _int_seq, "a list of ints (clamped to the axis)"),
                      "axes": Attr(None, lambda v: v is None or _int_seq(v), "a list of axes (default 0, 1, ...)"),
                      "steps": Attr(None, lambda v: v is None or _int_seq(v), "a list of non-zero steps")},
               doc="x[starts:ends:steps] along axes, Python/ONNX clamping (a channel slice is a view)",
               kernel="gather"))


def index_to_slice(index, rank: int) -> tuple[dict, list[int]]:
    """Python indexing ``x[...]`` (ints, slices with int bounds and steps, one Ellipsis) -> the
    ``slice`` attributes and the axes an int index drops (a reshape after the slice). Raises
    ValueError for what a constant slice cannot express (None, tensors, two Ellipses)."""
    index = index if isinstance(index, tuple) else (index,)
    if sum(1 for i in index if i is Ellipsis) > 1 or any(i is None for i in index):
        raise ValueError("indexing with None or more than one Ellipsis")
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (rank - len(index) + 1) + index[at + 1:]
    if len(index) > rank:
        raise ValueError(f"{len(index)} indices for a rank-{rank} tensor")
    attrs = {"starts": [], "ends": [], "axes": [], "steps": []}
    drop = []
    for ax, i in enumerate(index):
        if isinstance(i, slice):
            if i == slice(None):
                continue
            if not all(v is None or is_int(v) for v in (i.start, i.stop, i.step)):
                raise ValueError("slicing with bounds that are not constant ints")
            step = 1 if i.step is None else int(i.step)
            big = 2 ** 62
            start = (0 if step > 0 else big) if i.start is None else int(i.start)
            stop = (big if step > 0 else -big) if i.stop is None else int(i.stop)
        elif is_int(i):
            start, stop, step = int(i), (int(i) + 1 if int(i) != -1 else 2 ** 62), 1
            drop.append(ax)
        else:
            raise ValueError(f"indexing with {type(i).__name__} (constant ints and slices only)")
        for key, v in zip(("starts", "ends", "axes", "steps"), (start, stop, ax, step)):
            attrs[key].append(v)
    return attrs, drop


def gather_indices(node: Node, shape: tuple) -> tuple[int, np.ndarray]:
    """The (axis, indices) of a gather, negative indices resolved; indices out of range are an error."""
    rank = len(shape)
    ax = node.attrs["axis"]
    if not -rank <= ax < rank:
        raise ModelError(f"axis {ax} is out of range for rank {rank}", node=node.name, op=node.op, attr="axis")
    ax %= rank
    d = sympy.sympify(shape[ax])
    if not d.is_number:
        raise ModelError(f"gathering along axis {ax} of symbolic size {d}", node=node.name, op=node.op,
                         attr="axis", fix="gather along an axis of concrete size")
    idx = np.asarray(node.attrs["indices"], dtype=np.int64)
    if idx.size and (idx.min() < -int(d) or idx.max() >= int(d)):
        raise ModelError(f"indices {idx.tolist()} are out of range for axis {ax} of size {d}",
                         node=node.name, op=node.op, attr="indices")
    return ax, np.where(idx < 0, idx + int(d), idx)


def _gather_shape(node, ins):
    shape = ins[0].shape
    ax, idx = gather_indices(node, shape)
    return tuple(shape[:ax]) + tuple(idx.shape) + tuple(shape[ax + 1:])


def _gather_ref(node, xs):
    ax, idx = gather_indices(node, xs[0].shape)
    return np.ascontiguousarray(np.take(xs[0], idx, axis=ax))


register(OpDef("gather", (1, 1), _gather_shape, _gather_ref,
               attrs={"axis": Attr(0, is_int, "an int axis"),
                      "indices": Attr(REQUIRED, lambda v: is_int(v) or (isinstance(v, (tuple, list))
                                                                        and np.asarray(v).dtype.kind == "i"),
                                      "an int or a (nested) list of ints (constant indices)")},
               doc="np.take(x, indices, axis) with constant indices (ONNX Gather, torch index_select)",
               kernel="gather"))

# ---------------------------------------------------------------------------------------------
# data movement: transpose, pad, upsampling, depth/space rearrangement
def _perm(node, rank: int) -> tuple[int, ...]:
    perm = node.attrs["perm"]
    if perm is None:
        return tuple(range(rank))[::-1]
    perm = tuple(int(p) % rank if -rank <= int(p) < rank else int(p) for p in perm)
    if sorted(perm) != list(range(rank)):
        raise ModelError(f"perm {tuple(node.attrs['perm'])} is not a permutation of the {rank} axes",
                         node=node.name, op=node.op, attr="perm", fix=f"give each of 0..{rank - 1} exactly once")
    return perm


register(OpDef("transpose", (1, 1), lambda node, ins: tuple(ins[0].shape[p] for p in _perm(node, ins[0].rank)),
               lambda node, xs: np.ascontiguousarray(np.transpose(xs[0], _perm(node, xs[0].ndim))),
               attrs={"perm": Attr(None, lambda v: v is None or (isinstance(v, (tuple, list)) and all(map(is_int, v))),
                                   "a permutation of the axes (default: reversed)")},
               doc="permute the axes (ONNX Transpose)", kernel="gather"))


def pad_widths(node: Node, rank: int) -> list[tuple[int, int]]:
    """[(before, after)] for every axis from the ``pads`` attribute.

    Accepted forms: an int (every spatial axis, both sides); ONNX order begins..ends over all
    axes (2*rank ints) or over the spatial axes (2*(rank-2) ints); or (before, after) pairs,
    one per axis or one per spatial axis."""
    pads = node.attrs["pads"]
    spatial = rank - 2
    if is_int(pads):
        widths = [(0, 0)] * 2 + [(int(pads), int(pads))] * spatial
    elif all(isinstance(p, (tuple, list)) for p in pads):
        widths = [tuple(int(v) for v in p) for p in pads]
        if any(len(p) != 2 for p in widths) or len(widths) not in (rank, spatial):
            raise ModelError(f"got {len(widths)} pairs {pads}, expected {rank} or {spatial} (before, after) pairs",
                             node=node.name, op=node.op, attr="pads")
        widths = [(0, 0)] * (rank - len(widths)) + widths
    else:
        flat = [int(p) for p in pads]
        if len(flat) not in (2 * rank, 2 * spatial):
            raise ModelError(f"got {len(flat)} values, expected {2 * rank} (ONNX begins then ends for every axis) "
                             f"or {2 * spatial} (spatial axes only)", node=node.name, op=node.op, attr="pads")
        half = len(flat) // 2
        widths = [(0, 0)] * (rank - half) + [(flat[i], flat[i + half]) for i in range(half)]
    if any(v < 0 for p in widths for v in p):
        raise ModelError(f"negative padding {pads} is not supported", node=node.name, op=node.op, attr="pads",
                         fix="crop with a slice before the model, or use non-negative pads")
    return widths


def _pad_shape(node, ins):
    x = ins[0]
    widths = pad_widths(node, x.rank)
    if node.attrs["mode"] == "reflect":
        for i, (lo, hi) in enumerate(widths):
            d = sympy.sympify(x.shape[i])
            if d.is_number and max(lo, hi) >= int(d):
                raise ModelError(f"reflect padding {max(lo, hi)} needs axis {i} longer than that (size {d})",
                                 node=node.name, op=node.op, attr="pads",
                                 fix="reflect padding must be smaller than the padded dimension; use mode 'edge'")
    return tuple(x.shape[i] + lo + hi for i, (lo, hi) in enumerate(widths))


def _pad_ref(node, xs):
    x = xs[0]
    widths = pad_widths(node, x.ndim)
    mode = node.attrs["mode"]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.float32(node.attrs["value"]))
    return np.pad(x, widths, mode=mode)


register(OpDef("pad", (1, 1), _pad_shape, _pad_ref,
               attrs={"pads": Attr(REQUIRED, lambda v: is_int(v) or isinstance(v, (tuple, list)),
                                   "an int, ONNX begins..ends, or (before, after) pairs"),
                      "mode": Attr("constant", lambda v: v in ("constant", "reflect", "edge"),
                                   "'constant', 'reflect' or 'edge'"),
                      "value": Attr(0.0, is_number, "a number (constant mode)")},
               doc="pad with a constant, a mirror image without the edge (reflect), or the edge value",
               kernel="gather"))


def _block(node) -> int:
    return int(node.attrs["block"])


def _divisible(node, dim, by: int, what: str) -> None:
    d = sympy.sympify(dim)
    if d.is_number and int(d) % by:
        raise ModelError(f"{what} {d} is not divisible by {by}", node=node.name, op=node.op, attr="block",
                         fix=f"use a block size that divides the {what}")


def _d2s_shape(node, ins):
    x, b = ins[0], _block(node)
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 input (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    _divisible(node, x.shape[1], b * b, "channel count")
    return (x.shape[0], x.shape[1] / (b * b), x.shape[2] * b, x.shape[3] * b)


def _d2s_ref(node, xs):
    x, b = xs[0], _block(node)
    n, c, h, w = x.shape
    if node.attrs["mode"] == "DCR":                      # ONNX default: channel = (i*b + j) * C' + c'
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:                                                # CRD = torch.pixel_shuffle: c' * b*b + i*b + j
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(y.reshape(n, c // (b * b), h * b, w * b))


def _s2d_shape(node, ins):
    x, b = ins[0], _block(node)
    if x.rank != 4:
        raise ModelError(f"expects a rank-4 input (N, C, H, W), got {x.shape}", node=node.name, op=node.op)
    _divisible(node, x.shape[2], b, "height")
    _divisible(node, x.shape[3], b, "width")
    return (x.shape[0], x.shape[1] * b * b, x.shape[2] / b, x.shape[3] / b)


def _s2d_ref(node, xs):
    x, b = xs[0], _block(node)
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    if node.attrs["mode"] == "DCR":                      # ONNX SpaceToDepth: inverse of DCR depth_to_space
        y = y.transpose(0, 3, 5, 1, 2, 4)
    else:                                                # CRD = torch.pixel_unshuffle
        y = y.transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(y.reshape(n, c * b * b, h // b, w // b))


_MOVE_ATTRS = {"block": Attr(REQUIRED, pos_int, "a positive int"),
               "mode": Attr("DCR", lambda v: v in ("DCR", "CRD"), "'DCR' (ONNX default) or 'CRD' (pixel shuffle)")}
register(OpDef("depth_to_space", (1, 1), _d2s_shape, _d2s_ref, attrs=dict(_MOVE_ATTRS),
               doc="move channel blocks into b x b spatial blocks (ONNX DepthToSpace; CRD = pixel_shuffle)",
               kernel="gather"))
register(OpDef("space_to_depth", (1, 1), _s2d_shape, _s2d_ref, attrs=dict(_MOVE_ATTRS),
               doc="move b x b spatial blocks into channels (ONNX SpaceToDepth; CRD = pixel_unshuffle)",
               kernel="gather"))
