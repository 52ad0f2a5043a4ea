"""The lowering registry: one function per kernel family builds a node's KernelSpec.

``@lowers("family", ...)`` registers a function ``(lw, spec, node) -> KernelSpec`` for the
operators whose OpDef.kernel is that family (the same style as the ONNX importer's
``@handles``); codegen/lower.py's walk looks the family up, so an operator joins a kernel by its
registry entry, not by a name list here. ``lw`` is the walk (codegen/lower.py, _Lowering): it
resolves tensors (``lw.ref``, ``lw.operand``, ``lw.concrete``) and appends weights
(``lw.weight``). ``lower_fused`` builds a fused group: the anchor's kernel plus its epilogue chain
and pooling.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import sympy

from cnncc import ops
from cnncc.errors import UnsupportedError
from cnncc.registry import registrar
from cnncc.ir import N, Node

from .movement import gather_tables
from .spec import EpilogueOp, KernelSpec, PoolSpec, TensorRef

#: kernel family (OpDef.kernel) -> its lowering (lw, spec, node) -> KernelSpec
LOWERINGS: dict[str, Callable] = {}


lowers = registrar(LOWERINGS, "the lowering of kernel family")   # @lowers("conv", ...)


@lowers("conv", "conv_transpose", "dense", "matmul")
def lower_anchor_kernel(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    lower_anchor(lw, spec, node)
    return finish(lw, spec)


def lower_anchor(lw, spec: KernelSpec, node: Node) -> None:
    x = lw.ref(node.inputs[0])
    spec.inputs = [x]
    p = node.params
    family = ops.get(node.op, node=node.name).kernel
    if family in ("conv", "conv_transpose"):
        g = ops.conv_geometry(node, lw.g[node.inputs[0]].type)
        w = p["weight"]
        if g["nd"] == 1:
            g = {"kernel": (1,) + g["kernel"], "stride": (1,) + g["stride"],
                 "dilation": (1,) + g["dilation"], "pads": [(0, 0)] + list(g["pads"]), "groups": g["groups"]}
            xs = (x.shape[0], x.shape[1], 1, x.shape[2])
            w = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
        else:
            xs = x.shape
        (ph, ph_hi), (pw, pw_hi) = [(int(a), int(b)) for a, b in g["pads"]]
        geo = {"C_in": xs[1], "H": xs[2], "W": xs[3], "KH": g["kernel"][0], "KW": g["kernel"][1],
               "SH": g["stride"][0], "SW": g["stride"][1], "DH": g["dilation"][0], "DW": g["dilation"][1],
               "PH": ph, "PW": pw, "PH_hi": ph_hi, "PW_hi": pw_hi, "groups": g["groups"]}
        os_ = lw.concrete(node)[0]
        if len(os_) == 3:
            os_ = (os_[0], os_[1], 1, os_[2])
        geo.update(C_out=os_[1], OH=os_[2], OW=os_[3])
        spec.family = family
        if family == "conv_transpose":
            opad = ops.tup(node.attrs.get("output_padding", 0), 2 if len(xs) == 4 else 1)
            geo.update(OPH=opad[0] if len(opad) == 2 else 0, OPW=opad[-1])
        spec.geometry = geo
        spec.weights["weight"] = lw.weight(f"{node.name}.weight", w)
    elif family == "dense":
        if len(x.shape) != 2:
            raise UnsupportedError(f"layer '{node.name}' (dense): input {tuple(x.shape)} is not 2-D; "
                                   f"flatten it first")
        spec.family = "dense"
        spec.geometry = {"K": p["weight"].shape[1], "M": p["weight"].shape[0]}
        spec.weights["weight"] = lw.weight(f"{node.name}.weight", p["weight"])
    elif family == "matmul":
        lower_matmul(lw, spec, node, x)
        return
    else:
        raise UnsupportedError(f"layer '{node.name}' ({node.op}): no kernel family for this anchor yet")
    if "bias" in p:
        spec.epilogue.append(EpilogueOp("bias", node.name, params={"bias": lw.weight(f"{node.name}.bias",
                                                                                     p["bias"])},
                                        per_channel=True))


def lower_matmul(lw, spec: KernelSpec, node: Node, a: TensorRef) -> None:
    """numpy matmul with literal shapes: 1-D operands promoted (and their unit dim dropped from
    the result), batch dims broadcast. Per kernel item the output is MB blocks of R x M; block i
    reads a at ``a_off[i]`` and b at ``b_off[i]`` (tables), plus ``n * item stride`` for an
    operand that carries the batch N. A static output runs as one whole-tensor item."""
    b = lw.ref(node.inputs[1])
    whole = not lw.concrete(node)[1]
    A = [None if (i == 0 and a.batched) else d for i, d in enumerate(a.shape)]   # None: the batch N
    B = [None if (i == 0 and b.batched) else d for i, d in enumerate(b.shape)]
    if len(A) == 1:
        A = [1] + A
    if len(B) == 1:
        B = B + [1]
    R, K, M = A[-2], A[-1], B[-1]
    if None in (K, B[-2], M) or (R is None and len(B) > 2):
        raise UnsupportedError(f"layer '{node.name}' (matmul): {tuple(a.shape)} @ {tuple(b.shape)} puts the "
                               f"batch N inside the matrices; cnncc keeps N as the leading dimension")
    rank = max(len(A), len(B)) - 2
    ab = [1] * (rank - len(A) + 2) + A[:-2]
    bb = [1] * (rank - len(B) + 2) + B[:-2]
    a_item = b_item = 0
    if R is None:                      # a (N, K): N is the row dim, one row per item
        R, a_item = 1, a.item_stride
    elif rank and (ab[0] is None or bb[0] is None):
        a_item = a.item_stride if ab[0] is None else 0
        b_item = b.item_stride if bb[0] is None else 0
        if (ab[0] is None and bb[0] not in (None, 1)) or (bb[0] is None and ab[0] not in (None, 1)):
            raise UnsupportedError(f"layer '{node.name}' (matmul): the batch N of one operand meets a fixed "
                                   f"size of the other ({tuple(a.shape)} @ {tuple(b.shape)})")
        ab, bb = ab[1:], bb[1:]
    if None in ab or None in bb:
        raise UnsupportedError(f"layer '{node.name}' (matmul): {tuple(a.shape)} @ {tuple(b.shape)} does not "
                               f"keep the batch N as the leading dimension")
    blocks = [max(x, y) for x, y in zip(ab, bb)]

    def offsets(dims: list[int], matrix: int) -> list[int]:
        strides = [int(np.prod(dims[i + 1:], dtype=np.int64)) * matrix if d != 1 else 0
                   for i, d in enumerate(dims)]
        return [int(sum(i * s for i, s in zip(idx, strides))) for idx in np.ndindex(*blocks)] if blocks else [0]

    a_off, b_off = offsets(ab, R * K), offsets(bb, K * M)
    spec.family = "matmul"
    spec.inputs = [a, b]
    spec.geometry = {"MB": len(a_off), "R": R, "K": K, "M": M, "a_off": a_off, "b_off": b_off,
                     "a_item": a_item, "b_item": b_item, "b_batched": bool(b_item),
                     "C": spec.out_C if len(spec.output.shape) > 1 else 1, "Q": spec.out_Q, "whole": whole}


def epilogue_op(lw, m: Node, prev: str | None, out_shape: tuple[int, ...]) -> EpilogueOp:
    """One chain member as an EpilogueOp; ``prev`` names the running value's tensor."""
    op = m.op
    e = EpilogueOp(op, m.name, attrs=dict(m.attrs))
    p = m.params
    if op == "batch_norm":
        inv = (p["weight"] / np.sqrt(p["var"] + np.float32(m.attrs["eps"]))).astype(np.float32)
        e.params = {"mean": lw.weight(f"{m.name}.mean", p["mean"]),
                    "inv": lw.weight(f"{m.name}.inv_std_weight", inv),
                    "bias": lw.weight(f"{m.name}.bias", p["bias"])}
        e.per_channel = True
    elif op == "scale_shift":
        e.params = {"scale": lw.weight(f"{m.name}.scale", p["scale"]),
                    "shift": lw.weight(f"{m.name}.shift", p["shift"])}
        e.per_channel = True
    elif op == "prelu":
        e.params = {"slope": lw.weight(f"{m.name}.slope", p["slope"])}
        e.per_channel = p["slope"].size > 1
    elif op in ops.BINARY:
        others = [i for i in m.inputs if i != prev] if prev is not None else list(m.inputs[1:])
        if prev is not None and len(others) != 1:
            return e      # x + x: both sides are the running value (no operand)
        e.operand = lw.operand(others[0], out_shape)
        e.swap = prev is not None and m.inputs[0] != prev
    elif ops.get(op, node=m.name).has(ops.IDENTITY):
        pass
    elif not ops.get(op, node=m.name).has(ops.ACTIVATION):
        raise UnsupportedError(f"layer '{m.name}' ({op}) cannot be part of an elementwise epilogue")
    return e


def elementwise_chain(lw, spec: KernelSpec, members: list[Node]) -> None:
    spec.family = "elementwise"
    out = spec.output
    first = members[0]
    spec.operands = [lw.operand(first.inputs[0], out.shape)]
    prev = None
    for m in members:
        e = epilogue_op(lw, m, prev, out.shape)
        if prev is None and m.op in ops.BINARY:
            e.operand = lw.operand(m.inputs[1], out.shape)
            e.swap = False
        spec.epilogue.append(e)
        prev = m.name
    spec.geometry = {"C": spec.out_C, "Q": spec.out_Q}


def pool_spec(lw, node: Node) -> PoolSpec:
    in_node_type = _type_of(lw, node.inputs[0])
    g = ops.pool_geometry(node, in_node_type)
    shape_in = tuple(int(sympy.sympify(d).subs(N, 1)) for d in in_node_type.shape)
    shape_out = tuple(int(sympy.sympify(d).subs(N, 1)) for d in node.type.shape)
    k, s, d, pads = list(g["kernel"]), list(g["stride"]), list(g["dilation"]), [tuple(map(int, p)) for p in g["pads"]]
    if g["nd"] == 1:
        k, s, d, pads = [1] + k, [1] + s, [1] + d, [(0, 0)] + pads
        shape_in = shape_in[:2] + (1,) + shape_in[2:]
        shape_out = shape_out[:2] + (1,) + shape_out[2:]
    return PoolSpec(node.name, node.op.split("_")[0], k[0], k[1], s[0], s[1], d[0], d[1], pads[0][0],
                    pads[1][0], shape_in[2], shape_in[3], shape_out[2], shape_out[3],
                    bool(node.attrs.get("count_include_pad", True)), pads[0][1], pads[1][1])


def _layout_name(t: TensorRef) -> str:
    return f"NCHW{t.block}c" if t.block else "NCHW"


def _type_of(lw, name: str):
    if getattr(lw, "_member_types", None) and name in lw._member_types:
        return lw._member_types[name]
    return lw.g[name].type


@lowers("concat")
def lower_concat(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    out = spec.output
    ax = node.attrs["axis"] % len(out.shape)
    whole = ax == 0         # static tensors joined along their leading dim: one pass over everything
    if whole and out.batched:
        raise UnsupportedError(f"layer '{node.name}' (concat): concatenation along the batch axis")
    spec.family = "concat"
    spec.inputs = [lw.ref(i) for i in node.inputs]
    if any(t.block != out.block for t in spec.inputs):   # blocked parts copy like NCHW ones: whole channel blocks
        raise UnsupportedError(f"layer '{node.name}' (concat): its parts and output differ in layout "
                               f"({', '.join(_layout_name(t) for t in spec.inputs)} -> {_layout_name(out)})")
    inner = int(np.prod(out.shape[ax + 1:], dtype=np.int64))
    outer = int(np.prod(out.shape[0 if whole else 1:ax], dtype=np.int64))
    parts, off = [], 0
    for t in spec.inputs:
        chunk = t.shape[ax] * inner
        parts.append({"chunk": chunk, "offset": off})
        off += chunk
    spec.geometry = {"outer": outer, "row": off, "parts": parts, "whole": whole}
    return spec


def lower_fused(lw, node: Node) -> KernelSpec:
    members = node.members
    lw._member_types = {m.name: m.type for m in members}
    try:
        out = lw.ref(node.name)
        spec = KernelSpec(node.name, "", [(m.name, m.op) for m in members], out)
        for m in members:
            spec.shapes[m.name] = tuple(str(d) for d in m.type.shape)
        kind = node.attrs.get("kind")
        if kind == "elementwise":
            if any(ops.get(m.op).has(ops.POOL) for m in members):
                raise UnsupportedError(f"fused group '{node.name}': pooling after an elementwise chain")
            elementwise_chain(lw, spec, members)
            return spec
        anchor = members[0]
        # the anchor reads the fused node's external input; build its spec on the anchor's own shape
        saved = spec.output
        spec.output = TensorRef(anchor.name, saved.cname, _member_shape(lw, anchor), True)
        lower_anchor(lw, spec, anchor)
        anchor_shape = spec.output.shape
        spec.output = saved
        prev = anchor.name
        for m in members[1:]:
            opdef = ops.get(m.op, node=m.name)
            if opdef.has(ops.POOL):
                spec.pool = pool_spec(lw, m)
            elif opdef.has(ops.GROUP_TAIL):
                spec.tail = m.op
            else:
                if spec.pool is not None:
                    raise UnsupportedError(f"fused group '{node.name}': '{m.name}' follows the pooling member")
                spec.epilogue.append(epilogue_op(lw, m, prev, anchor_shape))
            prev = m.name
        if spec.pool is not None:
            spec.pool.post_epilogue = commutes_with_pool(lw, spec)
        spec.geometry["anchor_shape"] = anchor_shape
        return finish(lw, spec)
    finally:
        lw._member_types = None


def _member_shape(lw, m: Node) -> tuple[int, ...]:
    shape = tuple(int(sympy.sympify(d).subs(N, 1)) for d in m.type.shape)
    return shape


def commutes_with_pool(lw, spec: KernelSpec) -> bool:
    """Max/min pooling commutes with per-channel non-decreasing maps: apply them after the pool."""
    if spec.pool.kind not in ("max", "min"):
        return False
    blob = np.concatenate(lw.blob_parts) if lw.blob_parts else None
    for e in spec.epilogue:
        if e.op == "bias":
            continue
        if e.op in ("scale_shift", "batch_norm"):
            ref = e.params["scale" if e.op == "scale_shift" else "inv"]
            vals = blob[ref.offset: ref.offset + ref.item_numel]
            if (vals < 0).any():
                return False
            continue
        if e.op in ("add", "sub") and e.operand is not None and not e.swap \
                and e.operand.stride_n == 0 and e.operand.stride_q == 0 and e.operand.general is None:
            continue
        if e.op in ops.REGISTRY and ops.get(e.op).has(ops.MONOTONE):
            continue
        return False
    return True


def finish(lw, spec: KernelSpec) -> KernelSpec:
    if spec.family in ("conv", "conv_transpose"):
        spec.geometry.setdefault("anchor_shape", (1, spec.geometry["C_out"], spec.geometry["OH"],
                                                  spec.geometry["OW"]))
    return spec


# -- kernels of their own ---------------------------------------------------------------------
@lowers("copy")
def lower_copy(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    """A view that must materialize (a graph output, a reshape at opt 0): one copy."""
    spec.family = "copy"
    spec.inputs = [lw.ref(node.inputs[0])]
    spec.geometry = {"numel": spec.output.item_numel}
    return spec


@lowers("reorder")
def lower_reorder(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    """NCHW <-> NCHW[V]c (the layout pass's reorder): the same values, another order in memory."""
    x = lw.ref(node.inputs[0])
    spec.family = "reorder"
    spec.inputs = [x]
    to, V = node.attrs["to"], int(node.attrs["vector"])
    blocked = spec.output if to == "blocked" else x
    if blocked.block != V or (x if to == "blocked" else spec.output).block:
        raise UnsupportedError(f"layer '{node.name}' (reorder to {to}): its tensors are not laid out as the layout "
                               f"pass planned (NCHW{V}c on the blocked side)")
    spec.geometry = {"to": to, "V": V, "C": x.shape[1], "Q": int(np.prod(x.shape[2:], dtype=np.int64))}
    return spec


@lowers("elementwise")
def lower_elementwise(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    elementwise_chain(lw, spec, [node])
    return spec


@lowers("pool")
def lower_pool(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    spec.family = "pool"
    spec.inputs = [lw.ref(node.inputs[0])]
    if spec.inputs[0].block != spec.output.block:
        raise UnsupportedError(f"layer '{node.name}' ({node.op}): pooling keeps its input's layout, yet the input is "
                               f"{_layout_name(spec.inputs[0])} and the output {_layout_name(spec.output)}")
    spec.pool = pool_spec(lw, node)
    if node.op == "lp_pool2d":
        spec.pool.kind, spec.pool.p = "lp", float(node.attrs["p"])
    elif node.op == "max_pool2d_indices":
        spec.pool.kind = "argmax"
    return spec


@lowers("global_pool")
def lower_global_pool(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    x = lw.ref(node.inputs[0])
    spec.family = "global_pool"
    spec.inputs = [x]
    spec.geometry = {"kind": node.op.split("_")[1], "C": x.shape[1],
                     "Q": int(np.prod(x.shape[2:], dtype=np.int64))}
    return spec


@lowers("softmax")
def lower_softmax(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    x = lw.ref(node.inputs[0])
    out = spec.output
    ax = node.attrs["axis"] % len(x.shape)
    whole = ax == 0
    if whole and (x.batched or out.batched):
        raise UnsupportedError(f"layer '{node.name}' ({node.op}): softmax over the batch axis")
    spec.family = "softmax"
    spec.inputs = [x]
    spec.geometry = {"log": node.op == "log_softmax",
                     "outer": int(np.prod(x.shape[0 if whole else 1:ax], dtype=np.int64)),
                     "axis_len": x.shape[ax], "inner": int(np.prod(x.shape[ax + 1:], dtype=np.int64)),
                     "whole": whole}
    return spec


@lowers("resize")
def lower_resize(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    x = lw.ref(node.inputs[0])
    out = spec.output
    spec.inputs = [x]
    th, tw = ops.resize_tables(node, x.shape[2:], out.shape[2:])
    if th.taps == tw.taps == 1:      # nearest: pure data movement
        return lower_gather(lw, spec, node, (th, tw))
    spec.family = "resize"
    spec.geometry = {"C": x.shape[1], "H": x.shape[2], "W": x.shape[3], "OH": out.shape[2],
                     "OW": out.shape[3], "KH": th.taps, "KW": tw.taps,
                     "ih": resize_index(th), "wh": [float(v) for v in th.weight.ravel()],
                     "iw": resize_index(tw), "ww": [float(v) for v in tw.weight.ravel()],
                     "fill": float(node.attrs["extrapolation_value"]),
                     "extrapolate": bool(th.outside.any() or tw.outside.any())}
    return spec


@lowers("lrn")
def lower_lrn(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    x = lw.ref(node.inputs[0])
    a = node.attrs
    spec.inputs = [x]
    spec.family = "lrn"
    spec.geometry = {"C": x.shape[1], "Q": int(np.prod(x.shape[2:], dtype=np.int64)), "size": int(a["size"]),
                     "alpha": float(a["alpha"]), "beta": float(a["beta"]), "k": float(a["k"])}
    return spec


@lowers("instance_norm")
def lower_instance_norm(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    x = lw.ref(node.inputs[0])
    spec.inputs = [x]
    spec.family = "instance_norm"
    spec.geometry = {"C": x.shape[1], "Q": int(np.prod(x.shape[2:], dtype=np.int64)),
                     "eps": float(node.attrs["eps"])}
    spec.weights = {"weight": lw.weight(f"{node.name}.weight", node.params["weight"]),
                    "bias": lw.weight(f"{node.name}.bias", node.params["bias"])}
    return spec


@lowers("unpool")
def lower_unpool(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    x = lw.ref(node.inputs[0])
    idx = lw.ref(node.inputs[1])
    spec.family = "unpool"
    spec.inputs = [x, idx]
    spec.geometry = {"C": x.shape[1], "Q_in": int(np.prod(x.shape[2:], dtype=np.int64)),
                     "Q_out": int(np.prod(spec.output.shape[2:], dtype=np.int64))}
    return spec


@lowers("roi")
def lower_roi(lw, spec: KernelSpec, node: Node) -> KernelSpec:
    """Region pooling: the kernel runs over the K boxes (a literal) and reads whichever image
    each box names, so it takes the runtime batch N (to check the batch index) although its
    output (K, C, OH, OW) is static. ``NB``: the literal image count of a static feature map."""
    x = lw.ref(node.inputs[0])
    boxes = lw.ref(node.inputs[1])
    out = spec.output
    a = node.attrs
    spec.family = "roi"
    spec.inputs = [x, boxes] + [lw.ref(i) for i in node.inputs[2:]]   # (x, boxes) or (x, rois, batch_indices)
    spec.geometry = {"kind": node.op.split("_")[1], "K": out.shape[0], "C": x.shape[1], "H": x.shape[2],
                     "W": x.shape[3], "OH": out.shape[2], "OW": out.shape[3],
                     "NB": None if x.batched else x.shape[0], "spatial_scale": float(a["spatial_scale"]),
                     "sampling_ratio": int(a.get("sampling_ratio", 0)), "aligned": bool(a.get("aligned", False)),
                     "mode": a.get("mode", "max")}
    return spec


@lowers("gather")
def lower_gather(lw, spec: KernelSpec, node: Node, resize_tables=None) -> KernelSpec:
    """Pure data movement as nested loops over ``dims`` (per batch item, row-major = the output
    order); the source element is the sum of one table entry per loop index. A negative sum
    (padding) reads the constant ``fill`` (codegen/movement.py)."""
    x = lw.ref(node.inputs[0])
    spec.inputs = [x]
    dims, tables, fill, whole = gather_tables(node, x, spec.output, resize_tables)
    spec.family = "gather"
    spec.geometry = {"dims": [int(d) for d in dims], "tables": [[int(v) for v in t] for t in tables],
                     "fill": fill, "numel": spec.output.item_numel, "whole": whole}
    return spec


def resize_index(table) -> list[int]:
    """A resize axis table's source indices, row-major (output, tap); -1 in tap 0 marks an output
    position outside the input (tf_crop_and_resize: the extrapolation value)."""
    index = table.index.copy()
    index[table.outside, 0] = -1
    return [int(v) for v in index.ravel()]
