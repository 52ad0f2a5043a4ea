"""One module per CLI subcommand: ``add(subparsers) -> parser`` and ``run(args) -> exit code``.

The package is the registry: :func:`discover` finds every module here (not starting with ``_``),
so a new command is one new file -- as a new backend in runtime/module.py's ``BACKENDS`` is a new
``--target`` choice of every command (:func:`add_target`). The shared argument helpers follow."""


def discover() -> dict:
    """Every subcommand module of this package by name, in alphabetical order (the help's order)."""
    import importlib
    import pkgutil

    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if not (callable(getattr(module, "add", None)) and callable(getattr(module, "run", None))):
            raise TypeError(f"{module.__name__} is in the commands package but lacks add(subparsers) and run(args)")
        found[info.name] = module
    return found


def add_dynamic_batch(p) -> None:
    """``--dynamic-batch``: every command that loads an .onnx MODEL can run a fixed-batch export at
    any batch (``cnncc.from_onnx(path, batch="N")``)."""
    p.add_argument("--dynamic-batch", action="store_true",
                   help="make an .onnx model's fixed leading (batch) dimension the symbolic batch N, so a "
                        "batch-1 export runs at any batch (refused, naming the node, where the model mixes "
                        "the batch into other dimensions)")


def add_target(p, help: str) -> None:
    """``--target``: its choices are the backends' registry (cnncc.runtime.module.BACKENDS), so a
    new backend is a choice of every command without touching them."""
    from cnncc.runtime.module import BACKENDS

    p.add_argument("--target", default="c", choices=list(BACKENDS), help=help)


def add_precision(p, help: str) -> None:
    """``--precision``: its choices are cnncc.compiler.PRECISIONS."""
    from cnncc.compiler import PRECISIONS

    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help=help)


def add_model_args(p) -> None:
    """``--arg KEY=VALUE``: keywords for a DSL model file's ``model()`` (Inception-v3's
    ``aux_logits=True``, DeepLab-v3's ``output_stride=16``)."""
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword for a DSL model file's model(), repeatable; VALUE is a Python literal "
                        "(--arg aux_logits=True --arg classes=10) or else a string")


def model_kwargs(args) -> dict:
    """{key: value} of the ``--arg`` flags; a CnnccError names a malformed one."""
    import ast

    from cnncc.errors import CnnccError

    out = {}
    for item in getattr(args, "arg", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise CnnccError(f"--arg '{item}': expected KEY=VALUE with KEY a model() keyword (e.g. aux_logits=True)")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    if out and not str(args.model).endswith(".py"):
        raise CnnccError(f"--arg is for DSL .py model files; '{args.model}' is not one")
    return out


def add_conv_algorithm(p) -> None:
    """``--conv-algorithm``: compile()'s ``conv_algorithm`` (checked there, codegen/c_winograd.py)."""
    p.add_argument("--conv-algorithm", default="auto", metavar="ALG",
                   help="C target: auto (default: Winograd where the per-layer rule expects it to pay), direct, "
                        "winograd (every 3x3 stride-1 layer that can), winograd2 / winograd4 (force F(2x2,3x3) / "
                        "F(4x4,3x3)); `cnncc inspect` shows each layer's choice and why")


def add_layout(p) -> None:
    """``--layout``: compile()'s ``layout`` (C target: NCHW[V]c activations, passes/layout.py)."""
    p.add_argument("--layout", default="auto", choices=("auto", "nchw", "blocked"),
                   help="C target at opt 2: blocked stores activations between convolutions as NCHW[V]c "
                        "(V = the vector width), nchw keeps NCHW; auto (default) = blocked on the C target "
                        "(docs/cpu.md, 'Blocked layout')")


def batch_of(args):
    """The ``batch=`` argument for cnncc.load_model / from_onnx from the parsed flags."""
    return "N" if getattr(args, "dynamic_batch", False) else None
