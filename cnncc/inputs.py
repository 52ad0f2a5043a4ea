"""Checking what a call is fed: one rule for compiled modules and the numpy reference.

The dtype rule (what a demanding user expects: nothing that changes a value silently):

- float16/float32/float64 arrays feed a float32 input. float64 is rounded to float32 (the model
  computes in float32 anyway), but a finite value beyond float32's range would become inf, so it
  is refused.
- integer and bool arrays do NOT feed a float input: an image of uint8 is almost always a missing
  normalization step, so the error says to convert (and normalize) explicitly. An integer input
  (ONNX int64 indices) takes integer arrays whose values fit.
- complex, string and object arrays are refused.
- Python lists and tuples of numbers are converted as numpy would (``np.asarray``) and then follow
  the same rules (a list of Python ints counts as numbers, not as integer data).
- any memory layout works: non-contiguous, Fortran-ordered and read-only arrays are copied into a
  contiguous buffer (never written to).
"""
from __future__ import annotations

import numpy as np
import sympy

from .errors import InputError

AXES_4D = ("batch", "channels", "height", "width")


def axis_name(axis: int, rank: int) -> str:
    """'batch', 'channels', 'height', 'width' for (N, C, H, W); 'features' for (N, F); else 'axis i'."""
    if rank == 4:
        return AXES_4D[axis]
    if rank == 3:
        return ("batch", "channels", "length")[axis]
    if rank == 2:
        return ("batch", "features")[axis]
    return "batch" if axis == 0 else f"dim {axis}"


def _layout(rank: int) -> str:
    return {4: "(N, C, H, W)", 3: "(N, C, L)", 2: "(N, features)"}.get(rank, f"rank {rank}")


def coerce(name: str, value, dtype: str, shape: tuple, batched: bool = True) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype`` whose shape matches ``shape`` (ints, or sympy
    sizes; a non-number — the batch N or another symbol — matches any size). Raises InputError."""
    want = np.dtype(dtype)
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value)
        except ValueError as e:
            raise InputError(f"is a nested list that is not rectangular ({str(e).split('. ')[-1].strip()})",
                             input=name, fix="give a numpy array, or lists of equal lengths at every level") from None
        if arr.dtype.kind in "iub" and want.kind == "f":      # Python numbers, not integer image data
            arr = arr.astype(want)
    elif isinstance(value, np.ndarray):
        arr = value
    elif np.isscalar(value) or hasattr(value, "__array__"):       # numpy scalars, torch CPU tensors, ...
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"({type(value).__name__}) cannot be converted to a numpy array: {e}", input=name,
                             fix="pass a numpy array (a GPU tensor: x.cpu().numpy())") from None
    else:
        raise InputError(f"must be a numpy array, got {type(value).__name__}", input=name,
                         fix=f"pass np.asarray(...) of dtype {want.name}")
    kind = arr.dtype.kind
    if want.kind == "f":
        if kind in "iub":
            raise InputError(f"is {arr.dtype.name} but the model computes in {want.name}; cnncc does not convert "
                             f"integer or boolean data silently", input=name,
                             fix=f"convert (and normalize, as in training) explicitly: x.astype(np.{want.name})")
        if kind != "f":
            raise InputError(f"has dtype {arr.dtype.name}; expected a float array ({want.name})", input=name,
                             fix=f"pass a real-valued array: x.astype(np.{want.name})")
        if arr.dtype.itemsize > want.itemsize:         # float64: round once, refuse what became inf
            _check_shape(name, arr.shape, shape, batched)
            with np.errstate(over="ignore"):
                out = np.ascontiguousarray(arr, dtype=want)
            overflow = np.isinf(out) & np.isfinite(arr)
            if overflow.any():
                biggest = float(np.abs(arr[overflow]).max())
                raise InputError(f"holds {biggest:.3g}, beyond {want.name}'s range "
                                 f"({float(np.finfo(want).max):.3g}); rounding it to {want.name} would give inf",
                                 input=name, fix="scale the input into range before calling the model")
            return out
    elif want.kind in "iu":
        if kind not in "iu":
            raise InputError(f"has dtype {arr.dtype.name}; this input takes integers ({want.name})", input=name,
                             fix=f"pass x.astype(np.{want.name})")
        info = np.iinfo(want)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise InputError(f"holds values outside {want.name}'s range", input=name)
    _check_shape(name, arr.shape, shape, batched)
    return np.ascontiguousarray(arr, dtype=want)


def _check_shape(name: str, got: tuple, shape: tuple, batched: bool) -> None:
    rank = len(shape)
    if len(got) == rank and all(n == d for n, d in zip(got[batched:], shape[batched:])):
        return                                          # the common case, without formatting anything
    shown = "(" + ", ".join("N" if (batched and i == 0) else str(d) for i, d in enumerate(shape)) + ")"
    if len(got) != rank:
        fix = None
        if len(got) == rank - 1 and batched:
            fix = "add the batch axis: x[None] (or np.expand_dims(x, 0))"
        elif len(got) == rank + 1 and got[0] == 1:
            fix = "remove the extra leading axis: x[0]"
        raise InputError(f"expects rank {rank} {_layout(rank)} = {shown}, got rank {len(got)} with shape "
                         f"{tuple(got)}", input=name, fix=fix or f"reshape the input to {shown}")
    for axis, (d, n) in enumerate(zip(shape, got)):
        if batched and axis == 0:
            continue
        if not isinstance(d, (int, np.integer)):       # sympy: a symbol (any size) or a number
            d = sympy.sympify(d)
            if not d.is_number:
                continue
        if int(d) != n:
            what = axis_name(axis, rank)
            fix = {"channels": f"give {int(d)} channel(s) (e.g. RGB vs grayscale, or channels-last data: "
                               f"x.transpose(0, 3, 1, 2))" if rank == 4 else None}.get(what)
            if what in ("height", "width", "length"):
                fix = (f"resize or crop the input to {shown}, or recompile the model for this size "
                       "(the spatial sizes are compiled in)")
            raise InputError(f"axis {axis} ({what}): expected {int(d)}, got {n} (expected shape {shown}, got "
                             f"{tuple(got)})", input=name, fix=fix or f"reshape the input to {shown}")


def bind(names: list[str], args: tuple, kwargs: dict) -> dict:
    """Positional arrays, one list/tuple or dict of them, or keywords -> {input name: value};
    unknown, missing and surplus inputs are errors that list what the model takes."""
    takes = f"the model takes {len(names)} input(s): {', '.join(names)}"
    if kwargs and args:
        raise InputError(f"give the inputs either positionally or by name, not both ({takes})")
    if kwargs:
        feeds = dict(kwargs)
    elif len(args) == 1 and isinstance(args[0], dict):
        feeds = dict(args[0])
    elif len(args) == 1 and isinstance(args[0], (list, tuple)) and len(names) > 1:
        if len(args[0]) != len(names):
            raise InputError(f"got a sequence of {len(args[0])} arrays; {takes}")
        feeds = dict(zip(names, args[0]))
    else:
        if len(args) != len(names):
            raise InputError(f"got {len(args)} positional argument(s); {takes}",
                             fix="pass one array per input, in order, or a dict {name: array}")
        feeds = dict(zip(names, args))
    unknown = [k for k in feeds if k not in names]
    if unknown:
        raise InputError(f"unknown input name(s): {', '.join(map(repr, unknown))}; {takes}")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(f"missing input(s): {', '.join(missing)} ({takes})")
    return feeds
