"""What one stage leaves for the next: typed records on Graph and Node (docs/DESIGN.md, Contracts).

Frontends, passes, codegen and the reports used to talk through string keys of a ``meta`` dict;
each concern is one record here instead, with defaults, so a reader sees every field a writer
may set and a typo is an AttributeError, not a silently missing key.

On a Node:
  ``placement``   Placement   eliminate_concat writes; plan_memory, traffic, codegen/placement.py,
                              the reports read (where the node's tensor lives)
  ``group``       GroupNotes  fuse (recompute) and traffic (bytes, FLOPs) write on fused nodes;
                              cost.node_cost, the reports and the bench read
  ``origin``      NodeOrigin  the frontends (and fold_batchnorm) write; people read (provenance)
  ``calibrated_mean_square``  frontends/dsl.py: the BN statistics were scaled once by this value
On a Graph:
  ``origin``      GraphOrigin   frontends/onnx.py writes; `cnncc verify` and tests read; saved in graph.json
  ``renamed``     dict          passes (base.rename_output): a graph output's first name -> its name now
  ``notes``       PassNotes     a pass writes (base.note); the manager reads and clears it per pass
  ``opt_level``   int | None    the manager writes; report_html reads
  ``fusion``      FusionNotes   fuse writes; the reports and compile()'s report read
  ``memory_plan`` MemoryPlan    plan_memory writes; codegen/placement.py and the reports read
  ``traffic``     Traffic       the traffic pass writes; the reports and the bench read
  ``layout``      LayoutPlan    the manager asks (vector width), passes/layout.py decides: which
                                tensors are NCHW[V]c and every reorder it inserted and why;
                                codegen/placement.py, plan_memory and the reports read

Every record is frozen: a pass replaces a record (``dataclasses.replace``), never edits one, so
the manager's cheap snapshots (which share records) never change under a later pass.
This module is on the ground floor: it imports no Graph and no registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sympy

ZERO = sympy.Integer(0)


# -- on a Node ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteInto:
    """The producer writes its result as a channel slice of a concat's buffer."""

    tensor: str                   # the root concat whose buffer it writes into
    channel_offset: int           # its first channel there
    channels_total: int | None    # the root's channels (readers' channel stride)


@dataclass(frozen=True)
class Placement:
    """Where a node's tensor lives when it is not a buffer of its own (contract C)."""

    view_of: str | None = None          # a view of this tensor's buffer (flatten, reshape, channel slice)
    view_channel: int = 0               # a channel-slice view starts this many channels into each item
    write_into: WriteInto | None = None
    eliminated: bool = False            # a concat whose inputs wrote its buffer: it runs nothing


#: a node that is placed nowhere special (its own buffer, or the caller's)
OWN_BUFFER = Placement()


@dataclass(frozen=True)
class GroupNotes:
    """What the fusion and traffic passes note on a fused group (sympy in N)."""

    recompute: float = 1                  # conv outputs computed this many times over (overlapping pools)
    bytes_unfused: sympy.Expr | None = None   # one kernel per member: every intermediate written and read back
    bytes_fused: sympy.Expr | None = None     # the one fused kernel: external inputs, weights, output
    flops: sympy.Expr | None = None           # the work the fused kernel does, recomputation included


@dataclass(frozen=True)
class NodeOrigin:
    """Where a node came from (for people reading a graph; no stage depends on it)."""

    onnx_node: str | None = None    # the ONNX node it was imported from
    fx_node: str | None = None      # the torch.fx node it was traced from
    was: str | None = None          # the operator a pass rewrote it from (batch_norm -> scale_shift)


def is_kernel(node: Any, graph: Any) -> bool:
    """Does ``node`` launch a kernel of its own? Inputs and constants do not, nor does an
    eliminated concat (its producers wrote its buffer) or a view that is not a graph output (it
    reads its source's buffer where it lies). The one answer lowering, the traffic model, the
    memory plan, eliminate_concat and the bench share."""
    if node.op in ("input", "constant") or node.placement.eliminated:
        return False
    return not (node.placement.view_of and node.name not in graph.outputs)


# -- on a Graph ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphOrigin:
    """The frontend's names for the graph's tensors (saved with the graph in graph.json)."""

    onnx_inputs: dict[str, str] = field(default_factory=dict)    # ONNX input name -> cnncc input
    onnx_outputs: dict[str, str] = field(default_factory=dict)   # ONNX output name -> cnncc node
    onnx_opset: int | None = None
    exported_batch: int | None = None    # --dynamic-batch: the literal batch the file was exported with


@dataclass
class PassNotes:
    """The changes the running pass noted (cnncc.passes.base.note); the manager moves them into the
    pass's PassRecord and starts a fresh one for the next pass."""

    changes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class WhyNot(NamedTuple):
    """One producer -> consumer edge the fuse pass left unfused."""

    producer: str
    consumer: str
    reason: str


@dataclass(frozen=True)
class FusionNotes:
    """What the fuse pass decided for the whole graph."""

    why_not: tuple[WhyNot, ...] = ()                             # every unfused edge, with its reason
    fused_names: dict[str, str] = field(default_factory=dict)     # a group's last member -> the group's name


@dataclass(frozen=True)
class MemoryPlan:
    """One arena for every intermediate tensor (contract C; sizes and offsets sympy in N)."""

    offsets: dict[str, sympy.Expr]                 # tensor -> byte offset into the arena
    arena_bytes: sympy.Expr
    naive_bytes: sympy.Expr                        # every intermediate in a buffer of its own
    peak_live_bytes: sympy.Expr
    lifetimes: dict[str, tuple[int, int]]          # buffer -> (first, last) step it is live
    sizes: dict[str, sympy.Expr]                   # buffer -> bytes
    aliases: dict[str, str]                        # tensor -> the buffer it lives in (views, slices, in place)
    inplace: dict[str, str]                        # tensor -> the operand it overwrites


class Reorder(NamedTuple):
    """One reorder node the layout pass inserted: ``node`` converts ``tensor`` to layout ``to``
    ("nchw" or "blocked") for ``consumers``, because of ``reason``."""

    node: str
    tensor: str
    to: str
    consumers: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class LayoutPlan:
    """The activation layout of the C target (passes/layout.py). ``vector`` = V floats per channel
    block (0: every tensor NCHW, the pass did nothing). A tensor named in ``blocked`` is stored
    NCHW[V]c: item = [C/V][H][W][V], channel c of position q at (c / V) * H*W*V + q * V + c % V.
    Its item size and a channel slice's offset (c0 * H*W for c0 % V == 0) are those of NCHW, so
    the memory plan and concat elimination place it like any other tensor."""

    vector: int = 0
    blocked: frozenset = frozenset()
    #: the kernels' vector register in floats (0: ``vector``); with CNNCC_LAYOUT_BLOCK a smaller
    #: block than the register. A grouped convolution is blocked only with whole registers of
    #: output channels a group (its blocked kernel's channel blocks never straddle groups)
    register: int = 0
    reorders: tuple[Reorder, ...] = ()
    why_nchw: dict[str, str] = field(default_factory=dict)   # kernel -> why its output stays NCHW (notable cases)

    def block(self, tensor: str) -> int:
        """V if ``tensor`` is stored blocked, else 0."""
        return self.vector if tensor in self.blocked else 0


@dataclass(frozen=True)
class Traffic:
    """The model's totals (passes/traffic.py): bytes moved one kernel per operator vs as planned."""

    bytes_unfused: sympy.Expr = ZERO
    bytes_fused: sympy.Expr = ZERO
    flops: sympy.Expr = ZERO
    kernels: int = 0
    groups: int = 0
