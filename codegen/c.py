"""The C renderer: a Program -> one C99 + OpenMP translation unit (templates/c/*.c.j2).

Each kernel is a static function ``kernel_<k_name>(long N, const float* W, <tensors>)`` whose
parameters are the graph's tensors spelled by the one identifier rule (cnncc/names.py:
``t_<name>``, weights ``w_<layer>__<param>``); ``cnncc_forward`` computes every tensor's
address (caller's inputs/outputs, the arena, the weight blob) and calls the kernels in order,
so one ctypes call runs the whole model.
"""
from __future__ import annotations

from functools import lru_cache

from cnncc import names
from cnncc.codegen import c_conv
from cnncc.codegen.lower import KernelSpec, Program, TensorRef, template_env
from cnncc.codegen.simplify import ix
from cnncc.codegen.target import CTarget

TEMPLATES = {"conv": "c/conv.c.j2", "dense": "c/dense.c.j2", "pool": "c/pool.c.j2",
             "global_pool": "c/global_pool.c.j2", "softmax": "c/softmax.c.j2", "elementwise": "c/elementwise.c.j2",
             "copy": "c/copy.c.j2", "concat": "c/concat.c.j2", "conv_transpose": "c/conv_transpose.c.j2",
             "lrn": "c/lrn.c.j2", "resize": "c/resize.c.j2",
             "gather": "c/gather.c.j2", "instance_norm": "c/instance_norm.c.j2",
             "unpool": "c/unpool.c.j2", "matmul": "c/matmul.c.j2", "roi": "c/roi.c.j2"}


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


def weight_decls(spec: KernelSpec) -> str:
    lines = []
    for t in spec.blob_tensors():
        shape = "(" + ", ".join(map(str, t.shape)) + ")"
        lines.append(f"    const float* {t.cname} = {ix('W + o', o=t.offset)};   /* {names.comment(t.name)} {shape} */")
    return "\n".join(lines)


def launch(spec: KernelSpec) -> str:
    g = spec.geometry
    f = spec.family
    if f in ("conv", "conv_transpose"):
        return f"omp parallel for over N x {g['C_out']} output planes ({g['OH']}x{g['OW']})"
    if f == "dense":
        return f"omp parallel for over {g['M']} output features, N rows each"
    if f in ("pool", "global_pool", "elementwise"):
        return f"omp parallel for over N x {spec.out_C} channels"
    if f == "softmax":
        return f"omp parallel for over N x {g['outer'] * g['inner']} rows"
    if f == "roi":
        return f"omp parallel for over {g['K']} boxes x {g['C']} channels (the images they name among N)"
    return f"serial loop over N ({f})"


def render_kernel(spec: KernelSpec, target: CTarget) -> str:
    tmpl = _env().get_template(TEMPLATES[spec.family])
    return tmpl.render(spec=spec, signature=signature(spec), weight_decls=weight_decls(spec),
                       blk=c_conv.plan(spec, target)).strip() + "\n"


def address(t: TensorRef) -> str:
    """The C expression of a tensor's pointer inside cnncc_forward."""
    ty = _ctype(t)
    if t.storage == "input":
        ptr = f"(const {ty}*)inputs[{t.slot}]"
    elif t.storage == "output":
        ptr = f"({ty}*)outputs[{t.slot}]"
    elif t.storage == "arena":
        ptr = f"({ty}*)({ix('arena + A * N + B', A=f'{t.arena_a}L', B=f'{t.arena_b}L')})"
    else:
        ptr = ix("W + o", o=t.offset)
    return f"{ptr} + {t.base}" if t.base else ptr


def render(program: Program, target: CTarget):
    """Render the whole translation unit for ``target``; returns (source, [(name, kernel source,
    launch)])."""
    from cnncc.version import __version__

    env = _env()
    c_conv.prepare(program, target)   # blocked convolutions read weights packed for their tiles
    blocked = [c_conv.plan(spec, target) for spec in program.kernels]
    prelude = env.get_template("c/prelude.c.j2").render(
        program=program, version=__version__, target=target,
        vector_floats=sorted({b.VEC for b in blocked if b is not None})).strip()   # typedefs once per file
    kernels = [(spec, render_kernel(spec, target)) for spec in program.kernels]
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
                                                      tensor_decls=decls, calls=calls)
    return source, [(spec.name, text, launch(spec)) for spec, text in kernels]
