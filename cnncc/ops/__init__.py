"""The operator registry: one OpDef per operator, the single place an operator is defined.

An OpDef carries its attributes (defaults + validation), its sympy shape rule, its cost
(FLOPs = 2 x MACs, bytes, parameters), traits that passes read, and its numpy reference
(float32, PyTorch/ONNX semantics). Frontends map onto these names; codegen maps each name to
one template or one epilogue macro.

The registry core (traits, Attr, OpDef, REGISTRY, register, get, attribute checks) is
``core.py``; every other module is one operator family and registers its operators when
imported. This package imports them all and re-exports the names the rest of cnncc uses, so
``from cnncc import ops; ops.get("conv2d")`` reads the whole registry.
"""
from __future__ import annotations

from .core import (
    ACTIVATION, ANCHOR, Attr, COMMUTATIVE, ELEMENTWISE, EPILOGUE, GROUP_TAIL, IDENTITY, KERNEL_FAMILIES, MONOTONE,
    OpDef, POOL, REDUCTION, REGISTRY, REQUIRED, VIEW, _cost, _safe_check, c_float, elementwise_flops, get,
    ints_or_int, is_int, is_number, padding_ok, pos_int, register, tup)
from . import boundary  # noqa: F401  (registers its operators)
from .conv import CONV_ATTRS, conv_geometry, conv_ref, conv_transpose_ref, pointwise
from .pool import POOL_ATTRS, max_pool_indices_ref, pool_geometry, pool_ref
from . import linear  # noqa: F401  (registers its operators)
from . import norm  # noqa: F401  (registers its operators)
from .elementwise import ACTIVATIONS, BINARY, SELU_ALPHA, SELU_SCALE, SPELLINGS, broadcast_shapes
from .movement import _perm, gather_indices, index_to_slice, pad_widths, slice_bounds
from .resize import _resize_scales, resize_tables
from .roi import roi_align_geometry, roi_align_ref, roi_pool_ref
