"""The movement tables: pure data movement (transpose, pad, depth/space rearrangement, nearest
resizing and unpooling, slice and gather that are not views) as nested loops over ``dims`` (per
batch item, row-major = the output order) whose source element is the sum of one table entry per
loop index; a negative sum (padding, or a tf_crop_and_resize position outside the input) reads the
constant ``fill``. codegen/lowering.py's "gather" lowering puts them into a KernelSpec."""
from __future__ import annotations

import numpy as np

from cnncc import ops
from cnncc.errors import UnsupportedError
from cnncc.ir import Node

from .spec import TensorRef


def gather_tables(node: Node, x: TensorRef, out: TensorRef, resize_tables=None):
    """(dims, tables, fill, whole) of ``node`` reading ``x`` into ``out``; ``whole``: a static
    tensor whose leading dim moves or grows, looped over whole (dim 0 included)."""
    op, a = node.op, node.attrs
    rank = len(x.shape)
    xs = x.shape
    in_strides = [int(np.prod(xs[i + 1:], dtype=np.int64)) for i in range(rank)]
    PAD = -(1 << 40)
    fill = 0.0
    # static tensors whose leading dim moves or grows: loop over the whole tensor, dim 0 included
    whole = False
    if op == "transpose":
        perm = ops._perm(node, rank)
        whole = perm[0] != 0
        if whole and (x.batched or out.batched):
            raise UnsupportedError(f"layer '{node.name}' (transpose): perm {perm} moves the batch axis")
        first = 0 if whole else 1
        dims = [out.shape[d] for d in range(first, rank)]
        tables = [[i * in_strides[perm[d]] for i in range(out.shape[d])] for d in range(first, rank)]
    elif op in ("slice", "gather"):
        # every output axis reads one source index per position: a range (slice) or a table (gather)
        if op == "slice":
            bounds = ops.slice_bounds(node, xs)
            rows = [list(range(*b)) if b is not None else list(range(xs[d])) for d, b in enumerate(bounds)]
        else:
            ax, idx = ops.gather_indices(node, xs)
            rows = [list(range(xs[d])) for d in range(rank)]
            rows[ax] = [int(i) for i in idx.reshape(-1)]     # the index dims, flattened into one loop
        moved = rows[0] != list(range(xs[0]))
        whole = moved or (op == "gather" and ax == 0)
        if whole and (x.batched or out.batched):
            raise UnsupportedError(f"layer '{node.name}' ({op}): selecting along the batch axis")
        first = 0 if whole else 1
        dims = [len(r) for r in rows[first:]]
        tables = [[i * in_strides[d] for i in rows[d]] for d in range(first, rank)]
    elif op == "pad":
        widths = ops.pad_widths(node, rank)
        whole = widths[0] != (0, 0)
        if whole and (x.batched or out.batched):
            raise UnsupportedError(f"layer '{node.name}' (pad): padding the batch axis")
        mode = a["mode"]
        fill = float(a["value"])
        dims, tables = [], []
        for d in range(0 if whole else 1, rank):
            lo, hi = widths[d]
            n = xs[d]
            row = []
            for i in range(n + lo + hi):
                j = i - lo
                if 0 <= j < n:
                    row.append(j * in_strides[d])
                elif mode == "constant":
                    row.append(PAD)
                elif mode == "edge":
                    row.append(min(max(j, 0), n - 1) * in_strides[d])
                else:  # reflect without repeating the edge
                    period = 2 * (n - 1) if n > 1 else 1
                    k = abs(j) % period if n > 1 else 0
                    row.append((k if k < n else period - k) * in_strides[d])
            dims.append(n + lo + hi)
            tables.append(row)
    elif op in ("depth_to_space", "space_to_depth"):
        b, mode = int(a["block"]), a["mode"]
        C, H, W = xs[1], xs[2], xs[3]
        HW = H * W
        if op == "depth_to_space":
            Cp = C // (b * b)
            # output (c', h, i, w, j) <- channel (i*b + j)*C' + c' (DCR) or c'*b*b + i*b + j (CRD)
            dims = [Cp, H, b, W, b]
            if mode == "DCR":
                tables = [[c * HW for c in range(Cp)], [h * W for h in range(H)], [i * b * Cp * HW for i in range(b)],
                          list(range(W)), [j * Cp * HW for j in range(b)]]
            else:
                tables = [[c * b * b * HW for c in range(Cp)], [h * W for h in range(H)],
                          [i * b * HW for i in range(b)], list(range(W)), [j * HW for j in range(b)]]
        else:
            Hp, Wp = H // b, W // b
            ti, tj = [i * W for i in range(b)], list(range(b))
            tc, th, tw = [c * HW for c in range(C)], [h * b * W for h in range(Hp)], [w * b for w in range(Wp)]
            if mode == "DCR":      # output channel (i*b + j)*C + c
                dims, tables = [b, b, C, Hp, Wp], [ti, tj, tc, th, tw]
            else:                  # output channel c*b*b + i*b + j
                dims, tables = [C, b, b, Hp, Wp], [tc, ti, tj, th, tw]
    else:  # nearest resize / unpooling: every output row/column reads one source row/column
        H, W = xs[2], xs[3]
        OH, OW = out.shape[2], out.shape[3]
        if op == "unpool_nearest2d":
            s = ops.tup(a["scale"], 2)
            row_t, col_t = [i // s[0] * W for i in range(OH)], [j // s[1] for j in range(OW)]
        else:   # tf_crop_and_resize positions outside the input read the extrapolation value
            th, tw = resize_tables
            fill = float(a["extrapolation_value"])
            row_t = [PAD if o else int(r) * W for r, o in zip(th.index[:, 0], th.outside)]
            col_t = [PAD if o else int(c) for c, o in zip(tw.index[:, 0], tw.outside)]
        dims = [xs[1], OH, OW]
        tables = [[c * H * W for c in range(xs[1])], row_t, col_t]
    return dims, tables, fill, whole
