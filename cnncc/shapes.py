"""Output-size formulas of the CNN literature, exact in sympy (floors and ceilings kept).

All sizes may be ints or sympy expressions; results are sympy expressions that reduce to
integers when the inputs are concrete.
"""
from __future__ import annotations

import sympy

from .errors import ModelError


def _s(x) -> sympy.Expr:
    return sympy.sympify(x)


def conv_out(n, k, s=1, p_lo=0, p_hi=None, d=1) -> sympy.Expr:
    """floor((n + p_lo + p_hi - d(k-1) - 1) / s) + 1 — convolution and floor-mode pooling."""
    p_hi = p_lo if p_hi is None else p_hi
    return sympy.floor((_s(n) + p_lo + p_hi - d * (k - 1) - 1) / _s(s)) + 1


def pool_out(n, k, s, p_lo=0, p_hi=None, d=1, ceil_mode=False) -> sympy.Expr:
    """Pooling output size; ceil mode drops a last window that would start in the right padding
    (PyTorch/ONNX rule)."""
    p_hi = p_lo if p_hi is None else p_hi
    if not ceil_mode:
        return conv_out(n, k, s, p_lo, p_hi, d)
    eff = d * (k - 1) + 1
    out = sympy.ceiling((_s(n) + p_lo + p_hi - eff) / _s(s)) + 1
    # The last window must start inside the input or the left padding: at most ceil((n + p_lo)/s)
    # windows. (out-1)s < n + p_lo + p_hi - eff + s, so when p_hi + s <= eff that never bites.
    if p_hi + s <= eff:
        return out
    return sympy.Min(out, sympy.ceiling((_s(n) + p_lo) / _s(s)))


def conv_transpose_out(n, k, s=1, p_lo=0, p_hi=None, d=1, output_padding=0) -> sympy.Expr:
    """(n-1)s - p_lo - p_hi + d(k-1) + output_padding + 1."""
    p_hi = p_lo if p_hi is None else p_hi
    return (_s(n) - 1) * s - p_lo - p_hi + d * (k - 1) + output_padding + 1


def conv_transpose_out_literature(m, k, s, p, n) -> sympy.Expr:
    """The literature's form, which undoes a convolution: s(m-1) + ((n+2p-k) mod s) + k - 2p.

    A stride-s convolution maps every size in a run of s input sizes n to the same output m;
    the transposed convolution of m recovers n exactly when the mod term, (n+2p-k) mod s, is
    given as output_padding (Dumoulin & Visin, relationship 14). ``m`` is the transposed
    convolution's input (the forward output), ``n`` the forward convolution's input."""
    return s * (_s(m) - 1) + sympy.Mod(_s(n) + 2 * p - k, s) + k - 2 * p


def same_padding(n, k, s=1, d=1) -> sympy.Expr:
    """Total padding for 'same' output size n: n(s-1) + d(k-1) + 1 - s (= 2p in the literature's
    p = (n(s-1)+f-s)/2)."""
    return _s(n) * (s - 1) + d * (k - 1) + 1 - s


def resolve_padding(padding, sizes, kernel, stride, dilation, *, node=None, op=None,
                    attr="padding") -> list[tuple]:
    """Normalize a padding attribute to [(lo, hi)] per spatial dimension.

    Accepts an int, one int per dimension, (lo, hi) pairs flattened as ONNX does
    (begin..., end...), or 'same' / 'valid' / 'full'."""
    nd = len(kernel)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return [(0, 0)] * nd
        if mode == "full":
            return [(dilation[i] * (kernel[i] - 1),) * 2 for i in range(nd)]
        if mode == "same":
            out = []
            for i in range(nd):
                total = sympy.simplify(same_padding(sizes[i], kernel[i], stride[i], dilation[i]))
                if not total.is_number:
                    raise ModelError(f"'same' padding with stride {stride[i]} depends on the input size {sizes[i]}",
                                     node=node, op=op, attr=attr,
                                     fix="use a concrete input size, stride 1, or explicit padding")
                total = int(total)
                if total < 0:
                    raise ModelError(f"'same' padding would be negative ({total})", node=node, op=op, attr=attr)
                if total % 2:
                    raise ModelError(
                        f"'same' padding cannot be symmetric: kernel {kernel[i]} (dilation {dilation[i]}, stride "
                        f"{stride[i]}) on size {sizes[i]} needs {total} padding in total, which is odd",
                        node=node, op=op, attr=attr,
                        fix="use an odd kernel size, or give explicit asymmetric padding (lo, hi)")
                out.append((total // 2, total // 2))
            return out
        raise ModelError(f"unknown padding mode '{padding}'", node=node, op=op, attr=attr,
                         fix="use an int, a tuple, 'same', 'valid' or 'full'")
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    pads = tuple(int(p) for p in padding)
    if len(pads) == nd:
        return [(p, p) for p in pads]
    if len(pads) == 2 * nd:
        return [(pads[i], pads[i + nd]) for i in range(nd)]
    raise ModelError(f"expected {nd} or {2 * nd} values, got {len(pads)}: {padding}", node=node, op=op, attr=attr,
                     fix=f"give one padding per spatial dimension, or {2 * nd} values (begins, then ends)")


def batch_reshape_spec(in_shape, spec, literal_batch: int | None, batch) -> list:
    """A reshape target written for one fixed batch, restated for the symbolic ``batch``.

    ``in_shape`` is the reshaped tensor's shape, ``spec`` the exported target (ints, maybe sympy;
    0 copies a dim, -1 infers one) and ``literal_batch`` the batch the model was exported with.
    When ``in_shape`` leads with ``batch``, a leading ``literal_batch`` (``[1, -1]`` from a batch-1
    export) means that batch: it becomes ``batch``. The result must keep the batch as the leading
    dimension and keep it out of every other one (each item reshaped on its own) -- the only reading
    under which the model computes the same per item at any batch. Anything else (a reshape that
    moves the batch into the channels, or one that drops it) raises ModelError; the caller names
    the node."""
    spec = list(spec)
    lead = _s(in_shape[0]) if len(in_shape) else None
    if lead is None or batch not in lead.free_symbols or not spec:
        return spec
    first = spec[0]
    if not isinstance(first, sympy.Basic) and literal_batch is not None and int(first) == literal_batch \
            and int(first) not in (0, -1):
        spec[0] = batch
    # resolve 0 (copy) and -1 (infer) to check the reading
    out = [_s(in_shape[i]) if (not isinstance(d, sympy.Basic) and int(d) == 0) else _s(d) for i, d in enumerate(spec)]
    if sum(1 for d in out if d == -1) == 1:
        total = sympy.Mul(*[_s(d) for d in in_shape])
        known = sympy.Mul(*[d for d in out if d != -1])
        out = [sympy.simplify(total / known) if d == -1 else d for d in out]
    if sympy.simplify(out[0] - lead) != 0 or any(batch in d.free_symbols for d in out[1:]):
        raise ModelError(f"reshape of {tuple(in_shape)} to {tuple(spec)} would give {tuple(out)}: it mixes the "
                         f"batch {batch} into other dimensions, so it is not per-item at any batch",
                         fix="export the model with a dynamic batch axis (dynamic_axes / dynamic_shapes), or "
                             "import it at its fixed batch (without batch='N')")
    return spec
