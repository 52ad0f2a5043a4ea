"""Engines: cnncc at each opt level, onnxruntime and PyTorch eager, each prepared to run one
inference of the same graph with the same weights; the thread setup every engine shares."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import CnnccError
from ..ir import Graph


SPINCOUNT = "10000"
ENGINES = ("opt0", "opt1", "opt2", "onnxruntime", "torch")


def configure_threads(threads: int | None = None) -> list[str]:
    """Set OpenMP's environment before any OpenMP runtime loads; returns the notes to print."""
    from ..roofline import default_threads

    source = ("--threads" if threads else
              "OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS", "").isdigit() else "all cores")
    threads = threads or default_threads()
    os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    return [f"threads: {threads} for every engine (from {source}); cnncc modules run with "
            f"compile(threads={threads})",
            f"OpenMP: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']} "
            "(short spin, so idle OpenMP threads yield the cores to the other engines)",
            f"onnxruntime: intra_op_num_threads={threads}, intra-op spinning off "
            "(session.intra_op.allow_spinning=0, session.force_spinning_stop=1)",
            f"torch: torch.set_num_threads({threads}), eager mode, no_grad"]


# ---------------------------------------------------------------------------------------------
# engines: name -> prepare(graph, feeds, target, threads) -> callable running one inference
@dataclass
class Engine:
    name: str
    run: Callable[[], object]
    output: Callable[[], np.ndarray]
    note: str = ""
    module: object = None


def _first(out, names):
    if isinstance(out, dict):
        return out[names[0]]
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


def prepare_cnncc(graph: Graph, feeds: dict, opt_level: int, target: str, threads: int,
                  precision: str = "fp32", layout: str = "auto", conv_algorithm: str = "auto") -> Engine:
    import cnncc

    try:
        compile_fn = cnncc.compile
    except AttributeError:
        raise CnnccError("cnncc.compile is not available yet (codegen/runtime not built)") from None
    mod = compile_fn(graph, target=target, opt_level=opt_level, precision=precision,
                     threads=threads if target == "c" else None, layout=layout,
                     conv_algorithm=conv_algorithm)
    args = [feeds[i] for i in graph.inputs]
    run = (lambda: mod(*args))
    return Engine(f"opt{opt_level}", run, lambda: np.asarray(_first(run(), graph.outputs)),
                  note=f"cnncc {target} opt {opt_level}, {precision}, layout {layout}, conv algorithm {conv_algorithm}, "
                       f"{len(mod.kernels)} kernels",
                  module=mod)


def prepare_onnxruntime(graph: Graph, feeds: dict, threads: int) -> Engine:
    import onnxruntime as ort

    from cnncc.codegen.onnx_export import to_onnx

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.force_spinning_stop", "1")
    sess = ort.InferenceSession(to_onnx(graph).SerializeToString(), so, providers=["CPUExecutionProvider"])
    out_name = graph.outputs[0]
    run = (lambda: sess.run([out_name], feeds))
    return Engine("onnxruntime", run, lambda: run()[0], note=f"onnxruntime {ort.__version__} CPU, spinning off")


def torch_precision(precision: str):
    """PyTorch set up like cnncc at ``precision`` on a GPU: (context manager factory, note).
    fp32: TF32 off for convolutions and matmuls; tf32: on (PyTorch's default for cuDNN
    convolutions); fp16 / bf16: autocast to that type. Call before building the module."""
    import contextlib

    import torch

    tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    if precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return (lambda: torch.autocast("cuda", dtype=dtype)), f"autocast {precision}"
    return contextlib.nullcontext, f"TF32 {'on' if tf32 else 'off'}"


def prepare_torch(graph: Graph, feeds: dict, threads: int, target: str = "c", precision: str = "fp32") -> Engine:
    import torch

    from cnncc.codegen.torch_export import to_torch

    torch.set_num_threads(threads)
    if target == "cuda" and torch.cuda.is_available():
        # like with like: the GPU, channels_last (cuDNN's fast layout), the same arithmetic
        ctx, how = torch_precision(precision)
        module = to_torch(graph, "cuda").to(memory_format=torch.channels_last)
        args = [torch.from_numpy(feeds[i]).cuda() for i in graph.inputs]
        args = [a.to(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args]

        def run():
            with torch.no_grad(), ctx():
                out = module(*args)
            torch.cuda.synchronize()
            return out
        return Engine("torch", run, lambda: _first(run(), graph.outputs).float().cpu().numpy(),
                      note=f"torch {torch.__version__} eager CUDA (cuDNN), channels_last, {how}")
    module = to_torch(graph, "cpu")
    args = [torch.from_numpy(feeds[i]) for i in graph.inputs]

    def run():
        with torch.no_grad():
            return module(*args)
    return Engine("torch", run, lambda: _first(run(), graph.outputs).numpy(),
                  note=f"torch {torch.__version__} eager CPU, {threads} threads")


def prepare_engine(name: str, graph: Graph, feeds: dict, target: str, threads: int,
                   precision: str = "fp32", layout: str = "auto", conv_algorithm: str = "auto") -> Engine:
    if name.startswith("opt") and name[3:].isdigit():
        return prepare_cnncc(graph, feeds, int(name[3:]), target, threads, precision, layout, conv_algorithm)
    if name == "onnxruntime":
        return prepare_onnxruntime(graph, feeds, threads)
    if name == "torch":
        return prepare_torch(graph, feeds, threads, target, precision)
    raise CnnccError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")
