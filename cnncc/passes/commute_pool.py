"""commute_pool: average-pool before a pointwise convolution, not after it.

A 1x1 convolution (stride 1, no padding, no dilation) is the same affine map at every pixel, and
an unpadded average pool is a weighted sum of pixels whose weights add up to 1, so the two
commute: ``avg_pool(conv1x1(x)) == conv1x1(avg_pool(x))``, bias included. Pooling first runs the
convolution on the pooled plane: for a k x k pool with stride k, k^2 times fewer FLOPs (DenseNet's
transition layers: BN -> ReLU -> conv 1x1 -> 2x2 average pool, 4x fewer) and the pool reads
the convolution's input instead of its output.

Only exact rewrites are made: the conv's output must be read by the pool alone (and not be a
graph output); the pool must have no padding (padded windows give weights that do not add up
to 1 under ``count_include_pad``) and no ceil mode. The two nodes keep their names and swap
places: the pool reads the conv's input, the conv reads the pool, and what read the pool now
reads the conv. Rounding differs from the original order by float32 noise only.
"""
from __future__ import annotations

from .. import ops
from ..ir import Graph
from .base import note, register_pass, rename_output

CONV, POOL = "conv2d", "avg_pool2d"


def _unpadded(graph: Graph, pool) -> bool:
    from ..ops.pool import pool_geometry

    geo = pool_geometry(pool, graph[pool.inputs[0]].type)
    return all(tuple(p) == (0, 0) for p in geo["pads"]) and not geo["ceil_mode"]


def commutes(graph: Graph, pool) -> bool:
    """Can ``pool`` move before the conv that produces its input (see the module docstring)?"""
    if pool.op != POOL or not pool.inputs:
        return False
    conv = graph[pool.inputs[0]]
    return (conv.op == CONV and len(conv.inputs) == 1 and conv.name not in graph.outputs
            and [c.name for c in graph.consumers(conv.name)] == [pool.name]
            and ops.pointwise(conv, graph[conv.inputs[0]].type) and _unpadded(graph, pool))


@register_pass("commute_pool")
def commute_pool(graph: Graph) -> Graph:
    from .. import ops

    for pool in list(graph):
        if not commutes(graph, pool):
            continue
        conv = graph[pool.inputs[0]]
        source = conv.inputs[0]
        if pool.name in graph.outputs:
            rename_output(graph, pool.name, conv.name)
        graph.replace_uses(pool.name, conv.name)
        graph.set_inputs(pool.name, [source])
        graph.set_inputs(conv.name, [pool.name])
        pool.type = ops.get(pool.op).infer(pool, [graph[source].type])
        conv.type = ops.get(conv.op).infer(conv, [pool.type])
        note(graph, f"{pool.name} now pools {conv.name}'s input: the 1x1 convolution runs on the "
                    f"pooled plane ({conv.name} and {pool.name} commute)", count="pools moved before a 1x1 conv")
    return graph
