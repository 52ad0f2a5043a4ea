"""Lowering: a (fused) Graph -> a Program of KernelSpecs, everything a target needs as plain ints.

Python decides WHAT each kernel computes; the templates of a target (C, CUDA) only spell it. The
vocabulary (TensorRef, Operand, EpilogueOp, PoolSpec, KernelSpec, Program) is codegen/spec.py;
each kernel family's lowering is registered in codegen/lowering.py (``@lowers``); this module is
the walk over the graph: how an operand is read at output coordinates and which lowering each
node goes to. Where every tensor lives (inputs, outputs, the arena, the weight blob, views and
concat slices) is codegen/placement.py's Storage, from the passes' Placement and MemoryPlan records. The names of spec.py (and template_env) are re-exported here for older imports.
"""
from __future__ import annotations


import numpy as np

from cnncc import ops
from cnncc.contracts import is_kernel
from cnncc.errors import UnsupportedError
from cnncc.ir import Graph, Node

from .lowering import LOWERINGS, lower_fused
from .placement import Storage
from .spec import (ALIGN_BYTES, ALIGN_FLOATS, EpilogueOp, KernelSpec, Operand, PoolSpec, Program,  # noqa: F401
                   TensorRef, append_blob_entry)
from .templating import template_env  # noqa: F401  (older imports)

# ---------------------------------------------------------------------------------------------
def lower(graph: Graph) -> list[KernelSpec]:
    """One KernelSpec per kernel, in execution order (docs/DESIGN.md, contract D)."""
    return lower_program(graph).kernels


def lower_program(graph: Graph) -> Program:
    return _Lowering(graph).run()


class _Lowering(Storage):
    """Lowers each kernel node; where its tensors live comes from Storage (codegen/placement.py)."""

    def operand(self, name: str, out_shape: tuple[int, ...]) -> Operand:
        """How to read tensor ``name`` at the output's (n, c, q) coordinates, numpy broadcasting."""
        t = self.ref(name)
        rank = len(out_shape)
        if t.block:       # NCHW[V]c: read at the same (n, c, q) as the output (the layout pass's rule)
            if tuple(t.shape[1:]) != tuple(out_shape[1:]):
                raise UnsupportedError(f"tensor '{name}' {tuple(t.shape)} is blocked (NCHW{t.block}c) and cannot be "
                                       f"broadcast to {tuple(out_shape)}")
            plane = int(np.prod(t.shape[2:], dtype=np.int64))
            return Operand(t, t.item_stride, 0, 0, block=t.block, plane=plane)
        tshape = list(t.shape)
        if len(tshape) > rank:
            raise UnsupportedError(f"tensor '{name}' {tuple(t.shape)} has a higher rank than the output "
                                   f"{out_shape} it is combined with")
        # contiguous strides of the operand's storage, right-aligned against the output
        strides = [0] * rank
        acc = 1
        for i in range(len(tshape) - 1, -1, -1):
            od = rank - len(tshape) + i
            if i == 0 and t.batched:
                strides[od] = t.item_stride
            else:
                strides[od] = acc if tshape[i] != 1 or out_shape[od] == 1 else 0
                if tshape[i] == 1:
                    strides[od] = 0
            acc *= tshape[i]
        if rank == 0:
            return Operand(t, 0, 0, 0)
        s_n = strides[0] if (t.batched or len(tshape) == rank) else 0
        if not t.batched and len(tshape) == rank and tshape[0] == 1:
            s_n = 0
        s_c = strides[1] if rank > 1 else 0
        inner = list(out_shape[2:])
        inner_strides = strides[2:]
        contiguous = []
        acc = 1
        for d in reversed(inner):
            contiguous.append(acc)
            acc *= d
        contiguous = contiguous[::-1]
        live = [(s, d) for s, d in zip(inner_strides, inner) if d != 1]
        if all(s == 0 for s, _ in live):
            return Operand(t, s_n, s_c, 0)
        if all(s == cs for s, cs, d in zip(inner_strides, contiguous, inner) if d != 1):
            return Operand(t, s_n, s_c, 1)
        return Operand(t, s_n, s_c, 0, tuple(inner_strides), tuple(inner))

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Program:
        g = self.g
        for name in g.inputs:
            self.ref(name)
        for name in g.outputs:
            self.ref(name)
        kernels: list[KernelSpec] = []
        problems: list[str] = []
        for node in g:
            if node.op in ("input", "constant"):
                continue
            if not is_kernel(node, g):     # an eliminated concat, a view: placed, nothing to run
                self.ref(node.name)
                continue
            try:
                kernels.append(self.lower_node(node))
            except UnsupportedError as e:
                problems.append(str(e))
        if problems:
            raise UnsupportedError("cannot generate code for:\n  " + "\n  ".join(problems))
        arena_a, arena_b, source = self.arena()
        return Program(g.name, kernels, [self.ref(i) for i in g.inputs], [self.ref(o) for o in g.outputs],
                       self.blob(), self.blob_layout, arena_a, arena_b, source)

    def lower_node(self, node: Node) -> KernelSpec:
        spec = self._lower_node(node)
        out = spec.output
        data = [t for t in spec.inputs if t.storage != "weights"]
        operands = [o for o in spec.operands + [e.operand for e in spec.epilogue if e.operand]]
        if spec.family == "roi":
            # a static output read from the images the boxes name: runs over its K boxes, takes N
            if out.batched or any(t.batched for t in spec.inputs[1:]):
                raise UnsupportedError(f"layer '{node.name}' ({node.op}): the box count must be fixed, "
                                       f"not the batch N")
            return spec
        if spec.geometry.get("whole"):
            # a static kernel that mixes the leading dim (concat/softmax along it, a transpose that
            # moves it, a matmul over literal batch dims): one pass over the whole tensors
            spec.batch = 1
            static = [t.name for t in data if t.batched] + [o.tensor.name for o in operands if o.tensor.batched]
        elif out.batched:
            static = [t.name for t in data if not t.batched]
        elif spec.family == "copy" and not any(t.batched for t in data):
            spec.batch, static = 1, []            # a static reshape: one copy of the whole tensor
            spec.geometry["numel"] = out.item_numel
        else:
            spec.batch = out.shape[0] if out.shape else 1
            static = [t.name for t in data if t.batched or (t.shape[0] if t.shape else 1) != spec.batch] + \
                     [o.tensor.name for o in operands if o.tensor.batched]
        if static:
            raise UnsupportedError(f"layer '{node.name}' ({node.op}): output {tuple(node.type.shape)} and input(s) "
                                   f"{', '.join(static)} do not share a leading batch dimension")
        return spec

    def _lower_node(self, node: Node) -> KernelSpec:
        out = self.ref(node.name)
        if node.op == "fused":
            return lower_fused(self, node)
        spec = KernelSpec(node.name, "", [(node.name, node.op)], out)
        spec.shapes[node.name] = tuple(str(d) for d in node.type.shape)
        opdef = ops.get(node.op, node=node.name)
        family = "copy" if node.placement.view_of else opdef.kernel
        lowering = LOWERINGS.get(family)
        if lowering is None:
            raise UnsupportedError(f"layer '{node.name}' ({node.op}): the code generators have no kernel for "
                                   f"this operator yet")
        return lowering(self, spec, node)
