"""One module per CLI subcommand: ``add(subparsers) -> parser`` and ``run(args) -> exit code``."""


def add_dynamic_batch(p) -> None:
    """``--dynamic-batch``: every command that loads an .onnx MODEL can run a fixed-batch export at
    any batch (``cnncc.from_onnx(path, batch="N")``)."""
    p.add_argument("--dynamic-batch", action="store_true",
                   help="make an .onnx model's fixed leading (batch) dimension the symbolic batch N, so a "
                        "batch-1 export runs at any batch (refused, naming the node, where the model mixes "
                        "the batch into other dimensions)")


def add_conv_algorithm(p) -> None:
    """``--conv-algorithm``: compile()'s ``conv_algorithm`` (checked there, codegen/c_winograd.py)."""
    p.add_argument("--conv-algorithm", default="auto", metavar="ALG",
                   help="C target: auto (default: Winograd where the per-layer rule expects it to pay), direct, "
                        "winograd (every 3x3 stride-1 layer that can), winograd2 / winograd4 (force F(2x2,3x3) / "
                        "F(4x4,3x3)); `cnncc inspect` shows each layer's choice and why")


def batch_of(args):
    """The ``batch=`` argument for cnncc.load_model / from_onnx from the parsed flags."""
    return "N" if getattr(args, "dynamic_batch", False) else None
