"""cnncc: a small, readable compiler for convolutional neural networks.

    import cnncc
    g = cnncc.load_model("examples/lenet5.py")
    print(g.summary())
    y = cnncc.reference(g, x)
"""
from .errors import CnnccError, CompileError, InputError, IntegrityError, ModelError, UnsupportedError
from .ir import N, Graph, Node, TensorType, sym
from .reference import reference
from .compiler import load_model
from .version import __version__

__all__ = ["N", "Graph", "Node", "TensorType", "sym", "reference", "load_model", "CnnccError", "ModelError",
           "InputError", "UnsupportedError", "CompileError", "IntegrityError", "__version__"]


def __getattr__(name):
    # later floors (compile, optimize, from_onnx, from_torch, load, infer) import lazily so that
    # `import cnncc` stays fast and optional extras stay optional
    from . import compiler

    if name == "infer":  # Ray Data batch inference (the `distributed` extra); cnncc/ray.py
        from .ray import infer

        return infer
    if hasattr(compiler, name):
        return getattr(compiler, name)
    raise AttributeError(f"module 'cnncc' has no attribute '{name}'")
