"""One module per CLI subcommand: ``add(subparsers) -> parser`` and ``run(args) -> exit code``."""


def add_dynamic_batch(p) -> None:
    """``--dynamic-batch``: every command that loads an .onnx MODEL can run a fixed-batch export at
    any batch (``cnncc.from_onnx(path, batch="N")``)."""
    p.add_argument("--dynamic-batch", action="store_true",
                   help="make an .onnx model's fixed leading (batch) dimension the symbolic batch N, so a "
                        "batch-1 export runs at any batch (refused, naming the node, where the model mixes "
                        "the batch into other dimensions)")


def batch_of(args):
    """The ``batch=`` argument for cnncc.load_model / from_onnx from the parsed flags."""
    return "N" if getattr(args, "dynamic_batch", False) else None
