"""The C renderer: a Program -> one C99 + OpenMP translation unit (templates/c/*.c.j2).

Each kernel is a static function ``kernel_<k_name>(long N, const float* W, <tensors>)`` whose
parameters are the graph's tensors spelled by the one identifier rule (cnncc/names.py:
``t_<name>``, weights ``w_<layer>__<param>``); ``cnncc_forward`` computes every tensor's
address (caller's inputs/outputs, the arena, the weight blob) and calls the kernels in order,
so one ctypes call runs the whole model. Kernels that need scratch take it from the call's
workspace, which the runtime plans with the arena (codegen/c_scratch.py): a call allocates nothing.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

from cnncc import names
from cnncc.codegen import c_conv, c_pool
from cnncc.codegen.c_scratch import ScratchRequest
from cnncc.codegen.simplify import ix
from cnncc.codegen.spec import WORKSPACE_HEADER, KernelSpec, Program, TensorRef, Workspace
from cnncc.codegen.templating import template_env, weight_decls
from cnncc.codegen.target import CTarget

TEMPLATES = {"conv": "c/conv.c.j2", "dense": "c/dense.c.j2", "pool": "c/pool.c.j2",
             "global_pool": "c/global_pool.c.j2", "softmax": "c/softmax.c.j2", "elementwise": "c/elementwise.c.j2",
             "copy": "c/copy.c.j2", "concat": "c/concat.c.j2", "conv_transpose": "c/conv_transpose.c.j2",
             "lrn": "c/lrn.c.j2", "resize": "c/resize.c.j2",
             "gather": "c/gather.c.j2", "instance_norm": "c/instance_norm.c.j2",
             "unpool": "c/unpool.c.j2", "matmul": "c/matmul.c.j2", "roi": "c/roi.c.j2",
             "reorder": "c/reorder.c.j2"}


@lru_cache(maxsize=1)
def _env():
    return template_env("c")


def _ctype(t: TensorRef) -> str:
    return {"float32": "float", "int64": "long long"}.get(t.dtype, "float")


def signature(spec: KernelSpec) -> str:
    parts = ["long N", "const float* W"]
    for t in spec.tensors():
        const = "" if t.cname == spec.output.cname else "const "
        parts.append(f"{const}{_ctype(t)}* {t.cname}")
    return ", ".join(parts)


def launch(spec: KernelSpec) -> str:
    g = spec.geometry
    f = spec.family
    if f in ("conv", "conv_transpose"):
        return f"omp parallel for over N x {g['C_out']} output planes ({g['OH']}x{g['OW']})"
    if f == "dense":
        return f"omp parallel for over {g['M']} output features, N rows each"
    if f == "pool":
        return f"omp parallel for over N x {spec.out_C // (spec.inputs[0].block or 1)} planes x {spec.pool.OH} output rows"
    if f in ("global_pool", "elementwise", "reorder"):
        return f"omp parallel for over N x {spec.out_C} channels"
    if f == "softmax":
        return f"omp parallel for over N x {g['outer'] * g['inner']} rows"
    if f == "roi":
        return f"omp parallel for over {g['K']} boxes x {g['C']} channels (the images they name among N)"
    return f"serial loop over N ({f})"


#: what one element visited by a memory-bound kernel (elementwise, softmax, gather, norms,
#: resize, unpool, global pool) or one pooling window tap costs, in multiply-adds of a
#: vectorized conv/dense loop on AVX2 (8 floats a vector). Such a kernel's time per element does
#: not shrink with wider vectors while a multiply-add's does, so on a target with V floats a
#: vector an element counts V / 8 times as much (:func:`parallel_work`): without it, AVX-512's
#: doubled threshold kept 200,000-element chains on the calling thread, and DenseNet-121's 14x14
#: BatchNorm + ReLU groups (169,344 elements, read cold from the concatenated buffer) took 0.073
#: ms instead of 0.035 on two threads -- slower than their members apart. An element counted 5
#: (the AVX2 tuning's 100,000 elements against 500,000 multiply-adds) until the element kernels of
#: 25,000-100,000 elements a batch item -- DenseNet-121's 7x7 and 14x14 BN + ReLU groups,
#: ShuffleNetV2's and MobileNetV2's chains -- read their input from both cores' caches (the two
#: threads' convolutions wrote it) and ran faster on the team: at 20 (a team from 25,000
#: elements) ShuffleNetV2 at batch 1 3.05 -> 2.89 ms, MobileNetV2 3.92 -> 3.85, DenseNet-121
#: 25.45 -> 25.22 with none of its BN + ReLU groups under its members (0.95x at 5); LeNet-5 at
#: batch 1 and 8 unchanged (2-core Zen 4, 2026-12-04, interleaved). Pool taps stay at 2.5.
ELEMENT_WORK, TAP_WORK = 20, 2.5
ELEMENT_WORK_FLOATS = 8     # the vector width ELEMENT_WORK and TAP_WORK were measured at
#: what one multiply-add of a depthwise convolution (one input channel per group) costs in those of
#: a dense one: it has no broadcast register tile, each tap an unaligned load of a zero-bordered
#: row. Measured on a 2-core Zen 4 EPYC (2026-12-04): MobileNetV2's 14x14 depthwise 3x3s ran 0.19
#: ns per multiply-add on one thread against 0.0175 for the 3x3 direct kernels; counted at 1 they
#: stayed on the calling thread (677,376 < 1,000,000), 0.127 ms, reading their input back from
#: both cores' caches after the parallel 1x1 before them -- 0.066 ms on the team.
DEPTHWISE_WORK = 8


def parallel_work(spec: KernelSpec, vector_floats: int = ELEMENT_WORK_FLOATS) -> int:
    """A kernel's work per batch item in multiply-adds (or their equivalent for memory-bound
    kernels on a target with ``vector_floats`` floats a vector, see ELEMENT_WORK): what
    ``parallel_if`` weighs against the target's ``parallel_work``."""
    g, f = spec.geometry, spec.family
    if f == "conv":
        macs = g["C_out"] * g["OH"] * g["OW"] * (g["C_in"] // g["groups"]) * g["KH"] * g["KW"]
        return macs * (DEPTHWISE_WORK if g["groups"] > 1 and g["groups"] == g["C_in"] else 1)
    if f == "conv_transpose":
        return g["C_out"] * g["H"] * g["W"] * (g["C_in"] // g["groups"]) * g["KH"] * g["KW"]
    if f == "dense":
        return g["M"] * g["K"]
    if f == "matmul":
        return g["MB"] * g["R"] * g["K"] * g["M"]
    scale = vector_floats / ELEMENT_WORK_FLOATS
    if f == "pool":
        p = spec.pool
        return int(spec.out_C * p.OH * p.OW * p.KH * p.KW * TAP_WORK * scale)
    return int(max(t.item_numel for t in spec.tensors()) * ELEMENT_WORK * scale)


def parallel_if(work: int, target: CTarget) -> str:
    """The condition of a kernel's ``omp parallel ... if (...)``: the team is woken only when the
    call's work (``N`` items of ``work``) reaches the target's threshold."""
    return f"N * {work}L >= {target.parallel_work}L"


def render_kernel(spec: KernelSpec, target: CTarget, blk) -> tuple[str, list[Workspace]]:
    """One kernel's source for ``target`` with its blocking ``blk`` (c_conv.plan, None for kernels
    without one), and the scratch it asked for (codegen/c_scratch.py). A Winograd kernel that runs
    only from ``blk.min_batch`` items on is two kernels and a call that picks one by N: the
    Winograd one and the direct one (``blk.direct``, its weights packed beside U as
    ``spec.weights["packed_direct"]``)."""
    if getattr(blk, "direct", None):
        weights = {k: t for k, t in spec.weights.items() if k != "packed_direct"}
        both = [(dataclasses.replace(spec, cname=f"{spec.cname}_winograd", weights=weights),
                 dataclasses.replace(blk, direct=None)),
                (dataclasses.replace(spec, cname=f"{spec.cname}_direct",
                                     weights=dict(weights, packed=spec.weights["packed_direct"])), blk.direct)]
        texts, scratch = [], []
        for s, b in both:
            text, ws = render_kernel(s, target, b)
            texts.append(text)
            scratch += ws
        args = ", ".join(["N", "W"] + [t.cname for t in spec.tensors()])
        texts.append(f"/* ---- kernel {names.comment(spec.name)}: Winograd F({blk.m}x{blk.m},3x3) in whole planes from "
                     f"{blk.min_batch} items on, where reading U once per pass pays; the direct kernel below ---- */\n"
                     f"static void kernel_{spec.cname}({signature(spec)})\n{{\n"
                     f"    if (N >= {blk.min_batch}) kernel_{spec.cname}_winograd({args});\n"
                     f"    else kernel_{spec.cname}_direct({args});\n}}\n")
        return "\n\n".join(texts), scratch
    tmpl = _env().get_template(TEMPLATES[spec.family])
    per_float = target.vector_floats / ELEMENT_WORK_FLOATS   # a memory-bound element's work grows with the vector
    tail = int(spec.geometry.get("M", 0) * ELEMENT_WORK * per_float) if spec.tail else 0
    request = ScratchRequest(spec.name)
    text = tmpl.render(spec=spec, signature=signature(spec), weight_decls=weight_decls(spec), blk=blk,
                       parallel_if=parallel_if(parallel_work(spec, target.vector_floats), target),
                       parallel_if_tail=parallel_if(tail, target),
                       workspace=request, plan=c_pool.plan(spec) if spec.family == "pool" else None)
    record = request.record(spec.batch)
    return text.strip() + "\n", [record] if record else []


def _in_arena(a: int, b: int) -> str:
    """The C expression of the arena's byte ``a * N + b``."""
    return ix("arena + A * N + B", A=f"{a}L", B=f"{b}L")


def address(t: TensorRef) -> str:
    """The C expression of a tensor's pointer inside cnncc_forward (TensorRef.start's rule)."""
    ty = _ctype(t)
    a, b = t.start()
    if t.storage == "arena":
        return f"({ty}*)({_in_arena(a, b)})"
    if t.storage == "weights":
        return ix("W + o", o=b // 4)
    ptr = f"(const {ty}*)inputs[{t.slot}]" if t.storage == "input" else f"({ty}*)outputs[{t.slot}]"
    return f"{ptr} + {b // t.itemsize}" if b else ptr


def workspace_setup(program: Program) -> list[str]:
    """cnncc_forward's lines that point the kernels' ``cnncc_ws`` at this call's workspace (after
    the intermediates in its arena) once its thread slots are checked; none without scratch."""
    if not program.workspace:
        return []
    a, b = program.workspace_at()
    return [f"char* workspace = {_in_arena(a, b)};   "
            f"/* a 64-byte line holding its threads' slots, then the kernels' scratch */",
            "if (cnncc_threads() > *(const long*)workspace) return CNNCC_ESLOTS;   "
            "/* the runtime grows the arena for this many threads and calls again */",
            f"cnncc_ws = (float*)(workspace + {WORKSPACE_HEADER});"]


def render(program: Program, target: CTarget):
    """Render the whole translation unit for ``target``; returns (source, [(name, kernel source,
    launch)], the Program the source reads). A pure function of its arguments: blocked
    convolutions read weights packed for their tiles and kernels ask for scratch, so the Program
    returned is ``program`` with those packed (c_conv.prepare makes a new one) and the scratch in
    its ``workspace`` (the runtime plans it with the arena); ``program`` is not changed."""
    from cnncc.version import __version__

    env = _env()
    program = c_conv.prepare(program, target)   # blocked convolutions read weights packed for their tiles
    blocked = [c_conv.plan(spec, target, program.conv_algorithm) for spec in program.kernels]
    kernels, workspace = [], []
    for spec, blk in zip(program.kernels, blocked):
        text, scratch = render_kernel(spec, target, blk)
        kernels.append((spec, text))
        workspace += scratch
    program = dataclasses.replace(program, workspace=workspace)   # the scratch the runtime plans with the arena
    prelude = env.get_template("c/prelude.c.j2").render(
        program=program, version=__version__, target=target,
        vector_floats=sorted({b.VEC for b in blocked if b is not None})).strip()   # typedefs once per file
    decls, seen, calls = [], set(), []
    for spec, _ in kernels:
        tensors = spec.tensors()
        for t in tensors:
            if t.cname not in seen:
                seen.add(t.cname)
                const = "const " if t.storage == "input" else ""
                shape = "(" + ", ".join(["N"] + [str(d) for d in t.shape[1:]]) + ")" if t.batched else str(t.shape)
                decls.append(f"{const}{_ctype(t)}* {t.cname} = {address(t)};   /* {names.comment(t.name)} {shape} */")
        n = "N" if spec.batch is None else f"{spec.batch}L /* static rows */"
        calls.append(f"kernel_{spec.cname}({n}, W, {', '.join(t.cname for t in tensors)});")
    source = env.get_template("c/module.c.j2").render(prelude=prelude, kernels=[k for _, k in kernels],
                                                      tensor_decls=decls, workspace_setup=workspace_setup(program),
                                                      calls=calls)
    return source, [(spec.name, text, launch(spec)) for spec, text in kernels], program
