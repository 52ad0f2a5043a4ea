"""cnncc summary MODEL: shapes (batch N), parameters and FLOPs per layer, with totals."""
from __future__ import annotations

from cnncc.commands import add_dynamic_batch, add_model_args


def add(sub):
    p = sub.add_parser("summary", help="table of layers: output shape, parameters, FLOPs")
    p.add_argument("model", help="DSL .py file, .onnx file or a saved module folder")
    add_dynamic_batch(p)
    p.add_argument("--batch", type=int, default=None, help="substitute a concrete batch size for N")
    p.add_argument("--symbolic", default=None, metavar="H,W",
                   help="keep the input's spatial sizes as symbols so the formulas show")
    add_model_args(p)
    return p


def run(args) -> int:
    from cnncc.commands import batch_of, model_kwargs
    from cnncc.compiler import load_model

    g = load_model(args.model, symbolic=args.symbolic, batch=batch_of(args), model_args=model_kwargs(args))
    print(g.summary(batch=args.batch))
    return 0
