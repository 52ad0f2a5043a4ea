"""Every operator that may ride in an epilogue is spelled by its registry entry (OpDef.c_expr /
cuda_expr, with its weight vectors as ``{param[..]}`` and a binary op's operands as
``{lhs}``/``{rhs}``); codegen/templates/common/epilogue.j2 knows no operator by name."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cnncc import ops
from cnncc.codegen.spec import EpilogueOp, Operand, TensorRef
from cnncc.codegen.templating import template_env

EPILOGUE_J2 = Path(__file__).resolve().parents[1] / "codegen" / "templates" / "common" / "epilogue.j2"


def _attrs(opdef) -> dict:
    return {k: (2.0 if a.default is ops.REQUIRED else a.default) for k, a in opdef.attrs.items()}


def test_every_op_an_epilogue_may_hold_has_a_spelling():
    kinds = [d for d in ops.REGISTRY.values() if d.has(ops.EPILOGUE) or d.kernel == "elementwise"]
    assert {"relu", "prelu", "scale_shift", "batch_norm", "add", "div", "identity", "mish"} <= {d.name for d in kinds}
    class Loads(dict):             # any weight vector the spelling names
        def __missing__(self, key):
            return f"w_{key}[c]"
    missing = [d.name for d in kinds for target in ("c", "cuda")
               if d.spell(_attrs(d), target, param=Loads(), rhs="t_y[q]") is None]
    assert missing == []


def test_the_epilogue_template_names_no_operator():
    assert not re.search(r"\be\.op\s*(==|!=|in\b)", EPILOGUE_J2.read_text())


def _apply(e: EpilogueOp, target: str = "c") -> str:
    tmpl = template_env(target).from_string('{% import "common/epilogue.j2" as ep %}{{ ep.apply(e) }}')
    return tmpl.render(e=e)


def _vec(name: str) -> TensorRef:
    return TensorRef(name, "w_" + name.replace(".", "__"), (8,), batched=False, storage="weights")


@pytest.mark.parametrize("e, want", [
    (EpilogueOp("bias", "conv", params={"bias": _vec("conv.bias")}, per_channel=True),
     "v += w_conv__bias[c];   /* bias conv */"),
    (EpilogueOp("prelu", "act", params={"slope": _vec("act.slope")}),
     "v = v >= 0.0f ? v : v * w_act__slope[0];   /* prelu act */"),
    (EpilogueOp("batch_norm", "bn", attrs={"eps": 1e-5}, per_channel=True,
                params={k: _vec(f"bn.{k}") for k in ("mean", "inv", "bias")}),
     "v = (v - w_bn__mean[c]) * w_bn__inv[c] + w_bn__bias[c];   /* batch_norm bn */"),
    (EpilogueOp("sub", "s", operand=Operand(TensorRef("y", "t_y", (1, 8, 4)), 32, 4, 1), swap=True),
     "v = t_y[n * 32L + c * 4L + q] - v;   /* sub s (y) */"),
    (EpilogueOp("div", "d", operand=Operand(TensorRef("y", "t_y", (1, 8, 4)), 0, 1, 0)),
     "v = v / t_y[c];   /* div d (y) */"),
    (EpilogueOp("add", "twice"), "v = v + v;   /* add twice */"),
    (EpilogueOp("leaky_relu", "lr", attrs={"alpha": 0.5}), "v = v >= 0.0f ? v : v * 0.5f;   /* leaky_relu lr */"),
    (EpilogueOp("dropout", "drop", attrs={"p": 0.5}), "/* dropout drop: nothing at inference */"),
])
def test_spellings(e, want):
    assert _apply(e).strip() == want
    assert _apply(e, "cuda").strip() == want


def test_an_op_without_a_spelling_stops_the_build():
    assert _apply(EpilogueOp("softmax", "sm")).startswith("#error")
