"""The one place that strings frontends, passes, codegen and runtime together."""
from __future__ import annotations

from pathlib import Path

from .errors import CnnccError
from .ir import Graph, sym


def load_model(path: str | Path, *, weights: str | Path | None = None, symbolic: str | None = None,
               batch=None, model_args: dict | None = None) -> Graph:
    """Load a model: a DSL ``.py`` (trusted code defining ``model()``), an ``.onnx`` file, or a
    module folder saved by ``mod.save`` / ``cnncc compile`` (the graph it was compiled from).

    ``symbolic="H,W"`` replaces the input's spatial sizes by symbols so the formulas show;
    ``batch="N"`` makes a fixed-batch ONNX model's batch symbolic (see ``from_onnx``);
    ``model_args`` are keywords for a DSL file's ``model()`` (``{"size": 64}``)."""
    path = Path(path)
    if path.suffix == ".py":
        from cnncc.frontends.dsl import load_model as load_dsl

        g = load_dsl(path, weights=weights, **(model_args or {}))
    elif path.suffix == ".onnx":
        from cnncc.frontends.onnx import from_onnx

        g = from_onnx(path, batch=batch)
    elif path.is_dir():
        from cnncc.runtime.module import load_source_graph

        g = load_source_graph(path)
    else:
        raise CnnccError(f"don't know how to load '{path}': expected a DSL .py file, an .onnx file or a saved "
                         f"module folder")
    if symbolic:
        make_symbolic(g, [s.strip() for s in symbolic.split(",") if s.strip()])
    return g


def make_symbolic(g: Graph, names: list[str]) -> Graph:
    """Replace the trailing (spatial) dims of every input by symbols, then re-derive all shapes."""
    for name in g.inputs:
        node = g[name]
        shape = list(node.attrs["shape"])
        if len(names) > len(shape) - 2:
            raise CnnccError(f"input '{name}' has {len(shape) - 2} spatial dims, got symbols {names}")
        for i, s in enumerate(names):
            shape[len(shape) - len(names) + i] = sym(s)
        node.attrs["shape"] = tuple(shape)
    return g.infer_shapes()


# -- the public entry points of the other floors (imported lazily: extras stay optional) ----------
def optimize(graph: Graph, opt_level: int = 2, passes=None, disable=(), layout_vector: int = 0,
             fuse_balance: float | None = None, layout_register: int = 0) -> Graph:
    """Run the pass pipeline; returns the optimized Graph with ``.pass_report``. ``layout_vector``:
    the channel block of the layout pass (0: every tensor NCHW; compile() gives the C target's);
    ``fuse_balance``: the target's FLOPs per byte for the fuse pass's recompute rule
    (``fuse_balance(target)``; None: the GPU's); ``layout_register``: the C target's vector width
    where the block is smaller (``layout_register(layout, target)``; 0: the block's)."""
    from .passes.manager import optimize as _optimize

    return _optimize(graph, opt_level=opt_level, passes=passes, disable=disable, layout_vector=layout_vector,
                     fuse_balance=fuse_balance, layout_register=layout_register)


def fuse_balance(target: str) -> float:
    """FLOPs one byte of saved traffic is worth on ``target`` ("c", "cuda", "cuda-emu"): the fuse
    pass fuses an overlapping pool only when its recompute costs less (passes/fuse.py BALANCE).
    cuda-emu runs the CUDA target's source, so it fuses as the GPU does."""
    from .passes.fuse import BALANCE

    return BALANCE["c" if target == "c" else "cuda"]


def from_onnx(model, **kwargs) -> Graph:
    """Import an ONNX model (path, bytes or onnx.ModelProto)."""
    from cnncc.frontends.onnx import from_onnx as _from_onnx

    return _from_onnx(model, **kwargs)


def from_torch(module, example_input, **kwargs) -> Graph:
    """Trace a PyTorch nn.Module with torch.fx (needs the ``torch`` extra)."""
    from cnncc.frontends.torch import from_torch as _from_torch

    return _from_torch(module, example_input, **kwargs)


# -- compile and load (codegen + runtime) -----------------------------------------------------------
def _optimized(graph: Graph, opt_level: int, layout_vector: int = 0, balance: float | None = None,
               register: int = 0) -> Graph:
    """cnncc.optimize when the pass manager is there; otherwise opt 0 (one kernel per operator)."""
    try:
        from .passes.manager import optimize as _optimize
    except ImportError:
        g = graph.copy().infer_shapes()
        g.pass_report = [{"pass": "infer_shapes", "note": "pass manager unavailable: compiled at opt 0"}]
        return g
    return _optimize(graph, opt_level=opt_level, layout_vector=layout_vector, fuse_balance=balance,
                     layout_register=register)


#: compile()'s ``layout`` values; "auto" is LAYOUT_DEFAULT on the C target, "nchw" elsewhere
LAYOUTS = ("auto", "nchw", "blocked")
LAYOUT_DEFAULT = "blocked"   # measured faster on ResNet-50 and GoogLeNet b1 (docs/cpu.md, "Blocked layout")


def layout_vector(layout: str, target: str) -> int:
    """The channel block the layout pass may use for ``layout`` on ``target``: the C target's
    vector width for "blocked" (and "auto" when LAYOUT_DEFAULT is blocked), 0 (NCHW) otherwise.
    ``CNNCC_LAYOUT_BLOCK=B`` (a divisor of the vector width) blocks by B instead: the kernels are
    correct for any such B, and small test graphs block with B = 2 or 4."""
    if layout not in LAYOUTS:
        raise CnnccError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if target != "c":
        if layout == "blocked":
            raise CnnccError(f"layout 'blocked' (NCHW[V]c) is for the C target; target '{target}' keeps its own "
                             f"layouts: use layout='auto' or 'nchw'")
        return 0
    if (LAYOUT_DEFAULT if layout == "auto" else layout) == "nchw":
        return 0
    import os

    from cnncc.runtime.cpu import host_target

    vec = host_target().vector_floats
    block = os.environ.get("CNNCC_LAYOUT_BLOCK", "").strip()   # tests and studies: a smaller block
    if block:
        if not block.isdigit() or int(block) < 1 or vec % int(block):
            raise CnnccError(f"CNNCC_LAYOUT_BLOCK={block!r}: expected a positive divisor of the vector width {vec}")
        return int(block)
    return vec


def layout_register(layout: str, target: str) -> int:
    """The C target's vector width in floats when the layout pass blocks (``layout_vector``), else
    0: with ``CNNCC_LAYOUT_BLOCK`` the block may be smaller than the kernels' registers."""
    if not layout_vector(layout, target):
        return 0
    from cnncc.runtime.cpu import host_target

    return host_target().vector_floats


#: arithmetic the CUDA convolutions may use; each has a tolerance against the FP32 reference
#: (max |y - ref| / max |ref| over an output, measured on the examples with random weights, see docs/gpu.md)
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 1e-2, "bf16": 5e-2}


def check_precision(precision: str, target: str) -> str:
    """The precision if ``target`` supports it; a CnnccError saying what to do otherwise."""
    if precision not in PRECISIONS:
        raise CnnccError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and target == "c":
        raise CnnccError(f"precision '{precision}' is for the CUDA targets (tensor cores); the C target computes "
                         f"in float32 only: use precision='fp32' with target 'c', or target 'cuda' / 'cuda-emu'")
    return precision


def precision_reference(graph: Graph, inputs, precision: str | None = None, *, module=None, opt_level: int = 2):
    """The numpy reference of ``graph`` as a CUDA module at ``precision`` computes it: the graph
    the passes produce (folded batch norms included, so the rounded weights are the kernels'),
    with the multiply operands of exactly the layers the CUDA target runs on tensor cores rounded
    to TF32/FP16/BF16 (codegen/cuda.py ``tensor_core_nodes``, the kernels' own plan), everything
    else in float32. A module's result differs from it only by FP32 summation order, so it is
    the oracle, at the fp32 tolerance, where the model itself amplifies the rounding past the
    precision's tolerance (max unpooling of near-tied argmaxes; cnncc.bench.harness.check_outputs,
    docs/gpu.md) -- for shallow graphs: a few rounded layers deep, summation-order differences
    that cross a rounding boundary of the next layer's operands grow to the rounding's own size
    (ResNet-18 fp16: 5.6e-4 from it, 7.6e-4 from FP32; docs/gpu.md). ``module``: a compiled CUDA module, whose optimized graph,
    kernels and precision are used (then ``precision`` may be omitted). Returns what
    ``cnncc.reference`` returns, keyed by ``graph``'s output names."""
    from cnncc.codegen.cuda import tensor_core_nodes
    from cnncc.codegen.lower import lower_program

    from .reference import bind_inputs, reference

    if module is not None:
        if module.target not in ("cuda", "cuda-emu"):
            raise CnnccError(f"precision_reference: the module was compiled for target '{module.target}'; "
                             f"it models the CUDA targets' tensor cores: compile with target 'cuda' or 'cuda-emu'")
        precision = precision or module.program.precision
        if precision != module.program.precision:
            raise CnnccError(f"precision_reference: the module computes at {module.program.precision}, not "
                             f"{precision}: omit precision or pass the module's")
        if module.report.get("graph") is not None:
            g, program = module.report["graph"], module.program
        else:      # a loaded module keeps its kernels, not the optimized graph: optimized again alike
            opt_level, module = module.report.get("opt_level", opt_level), None
    if module is None:
        check_precision(precision or "fp32", "cuda")
        g = _optimized(graph, opt_level, 0)
        program = lower_program(g)
        program.precision = precision or "fp32"
    out = reference(g, bind_inputs(graph, inputs), rounded=tensor_core_nodes(program))
    if len(graph.outputs) == 1:
        return out if len(g.outputs) == 1 else out[g.outputs[0]]
    values = list(out.values()) if isinstance(out, dict) else [out]
    return dict(zip(graph.outputs, values))


def compile(graph: Graph, target: str = "c", opt_level: int = 2, *, precision: str = "fp32",  # noqa: A001
            threads: int | None = None, progress=None, conv_algorithm: str = "auto", layout: str = "auto"):
    """Optimize, lower, render and build ``graph`` for ``target`` ("c", "cuda", "cuda-emu").

    Returns a CompiledModule: ``mod(x)`` runs any batch size; ``mod.kernels`` lists every kernel's
    source; ``mod.report`` holds the pass report and the fusion groups. Builds are cached on disk
    (see cnncc.runtime.cache). ``threads`` sets the C target's OpenMP threads for this module's
    calls (default: ``OMP_NUM_THREADS``, else all cores; ``mod.threads`` changes it later).
    ``progress`` is an optional callable receiving one-line messages.

    ``precision`` (CUDA targets only; the C target refuses anything but "fp32"):

    * ``"fp32"`` (default): every convolution on FP32 FMAs, matches the reference to ~1e-5;
    * ``"tf32"``: convolutions with a GEMM of at least 16 output channels per group, dense
      layers of at least 16 features and matmuls of at least 16 x 16 matrices run on tensor cores
      with TF32 inputs (10-bit mantissa) and FP32 accumulation; tolerance 1e-2;
    * ``"fp16"``: the same with FP16 inputs (m16n16k16), FP32 accumulation; tolerance 1e-2;
    * ``"bf16"``: BF16 inputs (8-bit mantissa), FP32 accumulation; tolerance 5e-2.

    Tolerances are relative to the output's largest magnitude (``TOLERANCE``). Activations and
    weights stay float32 in memory; inputs are rounded when staged in shared memory, so only the
    tensor-core multiplies lose precision (the epilogue, pooling and every other kernel stay FP32);
    ``precision_reference`` is the numpy reference with exactly those operands rounded.

    ``conv_algorithm`` (C target): how 3x3 stride-1 convolutions are computed -- "auto" (default:
    Winograd where a per-layer rule expects it to pay, direct elsewhere), "direct", "winograd"
    (every eligible layer; F(4x4,3x3) where its accuracy bound holds, else F(2x2,3x3); others fall
    back to direct), or "winograd2" / "winograd4" to force one variant. ``cnncc inspect`` shows
    each layer's algorithm and the reason (codegen/c_winograd.py, docs/cpu.md).

    ``layout`` (C target, opt 2): "blocked" stores the activations between convolutions as
    NCHW[V]c (V = the machine's vector width; passes/layout.py, docs/cpu.md "Blocked layout"),
    "nchw" keeps every tensor NCHW, "auto" (default) is ``LAYOUT_DEFAULT``. Inputs and outputs are
    NCHW either way."""
    import time

    from cnncc.codegen.lower import lower_program
    from cnncc.runtime import cache
    from cnncc.runtime.module import CompiledModule, get_backend

    say = progress or (lambda msg: None)
    if opt_level not in (0, 1, 2):
        raise CnnccError(f"opt_level must be 0, 1 or 2, got {opt_level!r}")
    check_precision(precision, target)
    from cnncc.codegen.c_winograd import check_algorithm

    check_algorithm(conv_algorithm)
    if target != "c" and conv_algorithm not in ("auto", "direct"):
        raise CnnccError(f"conv_algorithm '{conv_algorithm}' is for the C target (Winograd kernels); the CUDA "
                         f"targets compute convolutions directly: use conv_algorithm='auto' with target '{target}'")
    backend = get_backend(target)
    t0 = time.perf_counter()
    say(f"optimizing {graph.name} at opt {opt_level}")
    g = _optimized(graph, opt_level, layout_vector(layout, target), fuse_balance(target),
                   layout_register(layout, target))
    say(f"lowering {sum(1 for _ in g)} nodes")
    program = lower_program(g)
    if target != "cuda":               # the model must fit in host memory at batch 1
        from cnncc.runtime import memory

        memory.check(program, 1)
    if len(graph.outputs) == len(g.outputs):
        program.output_names = list(graph.outputs)   # fusion renames outputs; the user keeps theirs
    program.precision = precision
    program.conv_algorithm = conv_algorithm
    say(f"rendering {len(program.kernels)} kernels for target {target}")
    rendered = backend.render(program)
    program = rendered.program or program      # the C target packs convolution weights into a new Program
    say(f"building {len(rendered.source.splitlines())} lines of source (cached by hash)")
    artifact = cache.build_cached(backend, rendered.source)
    say(f"done in {time.perf_counter() - t0:.1f} s")
    groups = [(n.name, [m.name for m in n.members]) for n in g if n.op == "fused"]
    report = {"opt_level": opt_level, "target": target, "precision": precision, "conv_algorithm": conv_algorithm,
              "layout": layout, "layout_vector": g.layout.vector,
              "passes": g.pass_report, "fusion_groups": groups,
              "why_not": list(g.fusion.why_not) if g.fusion else [], "kernels": [k.name for k in rendered.kernels], "graph": g}
    mod = CompiledModule(program, rendered, backend, artifact, report=report)
    mod.threads = threads
    mod.source_graph = graph          # saved with the module, for `cnncc summary/inspect OUT`
    return mod


def load(directory):
    """Load a module saved with ``mod.save(dir)`` (hash-checked; recompiled from source on a
    different machine; never unpickles)."""
    from cnncc.runtime.module import load_module

    return load_module(directory)
