"""The jinja2 environment every renderer shares (templates/<target>/ and templates/common/)."""
from __future__ import annotations

import numpy as np

from cnncc import names, ops
from cnncc.codegen.simplify import ix


#: the spelling of an anchor's (conv, dense, ...) own bias, the one epilogue op that is not an
#: operator of the registry (the lowering adds it from the anchor's "bias" weights)
ANCHOR_BIAS = ops.OpDef("bias", (1, 1), None, None, params=("bias",), c_expr="v += {param[bias]};")


def weight_decls(spec, pointer: str = "const float*", comment: tuple[str, str] = ("/*", " */")) -> str:
    """One pointer per weight tensor of ``spec`` into the blob ``W`` (C: ``const float*`` and a
    /* */ comment; CUDA: ``const float* __restrict__`` and //), its name and shape in the comment."""
    lines = []
    for t in spec.blob_tensors():
        shape = "(" + ", ".join(map(str, t.shape)) + ")"
        lines.append(f"    {pointer} {t.cname} = {ix('W + o', o=t.offset)};   "
                     f"{comment[0]} {names.comment(t.name)} {shape}{comment[1]}")
    return "\n".join(lines)


def template_env(*targets: str):
    """The jinja2 environment renderers share: templates/<target>/ and templates/common/ on the
    path (import as "common/epilogue.j2", "c/conv.c.j2"), plus the filters the macros use:
    ``shape`` (a concrete shape with N shown for the batch), ``reduce_mul`` (product of ints)."""
    import jinja2
    from pathlib import Path

    from cnncc.codegen.simplify import ix

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)

    def shape(s, batched=True):
        if not isinstance(s, (tuple, list)):
            return str(s)
        dims = [str(d) for d in s]
        if batched and dims and dims[0] == "1":
            dims[0] = "N"
        return "(" + ", ".join(dims) + ")"

    env.filters["shape"] = shape
    env.filters["comment"] = names.comment     # a user's name inside a comment of generated code
    env.filters["reduce_mul"] = lambda xs: int(np.prod(list(xs), dtype=np.int64)) if len(xs) else 1
    target = "cuda" if "cuda" in targets else "c"

    def spell(e, operand: str, c: str):
        """An EpilogueOp's statement from its OpDef (``c_expr``/``cuda_expr``; the anchor's own
        ``bias`` from ANCHOR_BIAS), None when it has none. ``operand``: the C load of the op's
        operand tensor at the element ("v" when both sides are the running value); ``c``: the
        element's channel, which indexes the op's weight vectors."""
        opdef = ANCHOR_BIAS if e.op == "bias" else ops.REGISTRY.get(e.op)
        if opdef is None:
            return None
        param = {k: f"{t.cname}[{c if e.per_channel else 0}]" for k, t in e.params.items()}
        lhs, rhs = (operand, "v") if e.swap else ("v", operand)
        return opdef.spell(e.attrs, target, param=param, lhs=lhs, rhs=rhs)

    env.globals["spell"] = spell
    env.globals["ix"] = ix      # index arithmetic folded before printing (codegen/simplify.py)
    return env
