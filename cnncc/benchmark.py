"""Benchmark harness behind `cnncc bench` and benchmarks/*.py: honest, same-run comparisons.

Every engine (cnncc at opt 0/1/2, onnxruntime, PyTorch eager) runs the SAME graph with the
SAME weights and input, and its output is checked against cnncc.reference before it is timed:
a fast wrong answer is reported as a mismatch, not as a speedup. Timing is interleaved: each
round times every engine once, in a rotated order, so thermal or neighbour drift hits all of
them alike. One sample repeats the call until it lasts at least ``min_sample_s`` (small models
take microseconds), and we report median, min and max over the samples.

Two thread pools on two cores slow each other badly when one spins while the other works, so
OpenMP gets a short ``GOMP_SPINCOUNT`` and onnxruntime runs with intra-op spinning off
(``session.intra_op.allow_spinning=0``, ``session.force_spinning_stop=1``). Both are stated in
every report.

Per-kernel times come from ``module.profile(inputs, repeat=R) -> [(kernel name, seconds)]``
when the runtime offers it; otherwise each kernel of the optimized graph is compiled as its
own one-kernel module (its inputs become graph inputs) and timed alone, which adds one call's
overhead to each kernel; the report says which method was used.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import sympy

from . import ops
from .contracts import OWN_BUFFER, is_kernel
from .cost import node_cost, node_work
from .errors import CnnccError
from .ir import N, Graph, Node
from .reference import random_inputs
from .summary import text_table as _table

SPINCOUNT = "10000"
ENGINES = ("opt0", "opt1", "opt2", "onnxruntime", "torch")
CHECK_RTOL = 1e-3


def configure_threads(threads: int | None = None) -> list[str]:
    """Set OpenMP's environment before any OpenMP runtime loads; returns the notes to print."""
    from .roofline import default_threads

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
                  precision: str = "fp32") -> Engine:
    import cnncc

    try:
        compile_fn = cnncc.compile
    except AttributeError:
        raise CnnccError("cnncc.compile is not available yet (codegen/runtime not built)") from None
    mod = compile_fn(graph, target=target, opt_level=opt_level, precision=precision,
                     threads=threads if target == "c" else None)
    args = [feeds[i] for i in graph.inputs]
    run = (lambda: mod(*args))
    return Engine(f"opt{opt_level}", run, lambda: np.asarray(_first(run(), graph.outputs)),
                  note=f"cnncc {target} opt {opt_level}, {precision}, {len(mod.kernels)} kernels", module=mod)


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
                   precision: str = "fp32") -> Engine:
    if name.startswith("opt") and name[3:].isdigit():
        return prepare_cnncc(graph, feeds, int(name[3:]), target, threads, precision)
    if name == "onnxruntime":
        return prepare_onnxruntime(graph, feeds, threads)
    if name == "torch":
        return prepare_torch(graph, feeds, threads, target, precision)
    raise CnnccError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")


# ---------------------------------------------------------------------------------------------
# timing
def calibrate(fn: Callable[[], object], min_sample_s: float) -> int:
    """How many calls make one sample last at least ``min_sample_s``."""
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, int(min_sample_s / one + 0.999))


def sample(fn: Callable[[], object], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 3, min_sample_s: float = 0.002,
                progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Per-call seconds, ``repeat`` samples per engine, rounds interleaved in rotated order."""
    names = list(fns)
    if not names:   # every engine was skipped (e.g. target cuda without a GPU): nothing to time
        return {}
    for name in names:
        for _ in range(warmup):
            fns[name]()
    inner = {name: calibrate(fns[name], min_sample_s) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            samples[name].append(sample(fns[name], inner[name]))
        if progress:
            progress(f"round {r + 1}/{repeat}")
    return samples


def stats(samples: Sequence[float]) -> dict:
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "samples": len(samples)}


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


# ---------------------------------------------------------------------------------------------
# per-kernel view
@dataclass
class KernelRow:
    name: str
    ops: str
    seconds: float
    flops: float
    bytes: float
    gflops: float = 0.0
    gbs: float = 0.0
    share: float = 0.0
    intensity: float = 0.0
    bound: str = ""
    roof_fraction: float = 0.0
    members: list[str] = field(default_factory=list)


def kernel_nodes(opt_graph: Graph) -> list[Node]:
    """The nodes of an optimized graph that run as kernels (contracts.is_kernel) and move bytes in
    the cost model: a view or identity lowered to a copy at opt 0 costs nothing there, so it is
    left out of the per-kernel table."""
    return [node for node in opt_graph if is_kernel(node, opt_graph) and
            (node.op == "fused" or not (ops.get(node.op).has(ops.VIEW) or ops.get(node.op).has(ops.IDENTITY)))]


def single_kernel_graph(opt_graph: Graph, node: Node) -> Graph:
    """A graph holding just ``node``: its tensor inputs become graph inputs, constants stay."""
    import copy

    g = Graph(f"{opt_graph.name}_{node.name}")
    for src in node.inputs:
        prod = opt_graph[src]
        if prod.op == "constant":
            g.add(copy.deepcopy(prod))
        else:
            inp = Node(src, "input", [], {"shape": tuple(prod.type.shape), "dtype": prod.type.dtype})
            inp.type = prod.type
            g.add(inp)
    clone = copy.deepcopy(node)
    clone.placement = OWN_BUFFER          # its own graph: a kernel with its own output buffer
    g.add(clone)
    g.outputs = [node.name]
    return g


def interleaved_kernel_times(modules: dict, inputs: list, rounds: int) -> dict[str, dict[str, float]]:
    """Per-kernel seconds of several modules from their runtime profilers, one forward of each in
    turn per round, reduced by the median. Why: profiling opt 0's kernels and then opt 2's put
    minutes between them, and a shared machine's slow minute (DenseNet-121 at batch 8: 345 vs
    420 ms in back-to-back processes) swung per-group speedups by 4x. Modules whose target has no
    profiler are left out (their kernels are timed one module per kernel)."""
    samples: dict[str, dict[str, list[float]]] = {}
    for name, mod in modules.items():
        try:
            mod.profile(inputs, repeat=1)                 # warm-up, and: does the target profile?
        except CnnccError:
            continue
        samples[name] = {}
    for _ in range(rounds):
        for name in samples:
            for kernel, t in modules[name].profile(inputs, repeat=1):
                samples[name].setdefault(kernel, []).append(t)
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


def profile_kernels(module, opt_graph: Graph, feeds: dict, batch: int, target: str, opt_level: int,
                    repeat: int, min_sample_s: float = 0.001, times: dict[str, float] | None = None
                    ) -> tuple[list[tuple[Node, float]], str]:
    """Seconds per kernel node and the method used (the runtime's profiler or one module per kernel).
    ``times`` are profiler figures already measured (see interleaved_kernel_times)."""
    nodes = kernel_nodes(opt_graph)
    method = "runtime profiler, engines interleaved, median"
    profile = getattr(module, "profile", None)
    if times is None and callable(profile):
        method = "runtime profiler"
        try:
            times = dict(profile([feeds[i] for i in opt_graph.inputs], repeat=repeat))
        except CnnccError:
            times = None
    if times:
        by_name = {n.name: n for n in nodes}
        rows = [(by_name[k], t) for k, t in times.items() if k in by_name]
        if rows:
            return rows, method
    import cnncc

    rng = np.random.default_rng(1)
    overhead = call_overhead(target, min_sample_s)
    rows = []
    for node in nodes:
        sub = single_kernel_graph(opt_graph, node)
        mod = cnncc.compile(sub, target=target, opt_level=0)
        feeds = random_inputs(sub, batch, rng)          # valid boxes for a roi kernel
        args = [feeds[i] for i in sub.inputs]
        fn = (lambda m=mod, a=args: m(*a))
        for _ in range(2):
            fn()
        inner = calibrate(fn, min_sample_s)
        t = statistics.median(sample(fn, inner) for _ in range(max(3, repeat)))
        rows.append((node, max(t - overhead, 0.05 * t)))
    return rows, f"one module per kernel, minus {overhead * 1e6:.1f} us call overhead"


def call_overhead(target: str, min_sample_s: float = 0.001) -> float:
    """Seconds one module call costs beyond its kernels: a one-element relu module's time."""
    import cnncc

    g = Graph("call_overhead")
    g.add(Node("x", "input", [], {"shape": (N, 1)}))
    g.add(Node("y", "relu", ["x"]))
    g.outputs = ["y"]
    mod = cnncc.compile(g.infer_shapes(), target=target, opt_level=0)
    x = np.ones((1, 1), np.float32)
    fn = (lambda: mod(x))
    for _ in range(3):
        fn()
    inner = calibrate(fn, min_sample_s)
    return statistics.median(sample(fn, inner) for _ in range(5))


def _roof_text(r: dict) -> str:
    """The roofline column: a fraction of the roof that applies, never above 100%."""
    if not r["bound"]:
        return ""
    if r["bound"] == "cache":
        return "above DRAM roof (cache-resident)"
    if r["bound"] == "above probe":
        return "above the FMA probe: --refresh-roofline"
    return f"{r['roof_fraction'] * 100:.0f}% of {r['bound']} roof"


def kernel_table(rows: list[tuple[Node, float]], opt_graph: Graph, batch: int, roof) -> list[KernelRow]:
    total = sum(t for _, t in rows) or 1.0
    out = []
    for node, t in rows:
        flops, nbytes = node_work(opt_graph, node, batch)
        members = [m.name for m in node.members] if node.members else [node.name]
        op_text = "+".join(m.op for m in node.members) if node.members else node.op
        r = KernelRow(node.name, op_text, t, flops, nbytes, flops / t / 1e9, nbytes / t / 1e9, t / total,
                      members=members)
        if roof is not None and r.gbs > 0:
            pos = roof.position(r.gflops, r.gbs)
            r.intensity, r.bound, r.roof_fraction = pos["intensity"], pos["bound"], pos["fraction"]
        out.append(r)
    return out


# ---------------------------------------------------------------------------------------------
# fusion: predicted bytes saved vs measured speedup
def fusion_summary(opt_graph: Graph, batch: int, engines: dict, kernels: dict) -> dict:
    sub = {N: batch}
    traffic = opt_graph.traffic
    out: dict = {}
    if traffic:
        unf = float(sympy.sympify(traffic.bytes_unfused).subs(sub))
        fus = float(sympy.sympify(traffic.bytes_fused).subs(sub))
        out["model"] = {"bytes_unfused": unf, "bytes_fused": fus, "predicted_saving": 1 - fus / unf if unf else 0.0}
    e0, e2 = engines.get("opt0", {}), engines.get("opt2", {})
    if e0.get("status") == "ok" and e2.get("status") == "ok":
        out.setdefault("model", {})["speedup_opt2_vs_opt0"] = e0["median_s"] / e2["median_s"]
        out["model"]["measured_saving"] = 1 - e2["median_s"] / e0["median_s"]
    groups = []
    t0 = {m: r["seconds"] for r in kernels.get("opt0", {}).get("rows", []) for m in r["members"]}
    t2 = {r["name"]: r["seconds"] for r in kernels.get("opt2", {}).get("rows", [])}
    for node in opt_graph:
        if node.op != "fused" or node.group is None or node.group.bytes_unfused is None:
            continue
        unf = float(sympy.sympify(node.group.bytes_unfused).subs(sub))
        fus = float(sympy.sympify(node.group.bytes_fused).subs(sub))
        g = {"name": node.name, "ops": "+".join(m.op for m in node.members), "bytes_unfused": unf,
             "bytes_fused": fus, "predicted_saving": 1 - fus / unf if unf else 0.0}
        members = [m.name for m in node.members]
        if node.name in t2 and all(m in t0 for m in members if not _is_free(m, node)):
            unfused_t = sum(t0.get(m, 0.0) for m in members)
            g.update(seconds_unfused=unfused_t, seconds_fused=t2[node.name],
                     speedup=unfused_t / t2[node.name] if t2[node.name] else 0.0,
                     measured_saving=1 - t2[node.name] / unfused_t if unfused_t else 0.0)
        groups.append(g)
    out["groups"] = groups
    return out


def _is_free(member: str, group: Node) -> bool:
    """Members that never run as their own kernel at opt 0 (views, identities)."""
    m = next(x for x in group.members if x.name == member)
    d = ops.get(m.op)
    return d.has(ops.VIEW) or d.has(ops.IDENTITY)


# ---------------------------------------------------------------------------------------------
def bench_model(graph: Graph, *, target: str = "c", batches: Sequence[int] = (1,),
                compare: Sequence[str] = ("opt0", "opt2", "onnxruntime"), repeat: int = 10, warmup: int = 3,
                threads: int | None = None, kernels: Sequence[str] | None = None, min_sample_s: float = 0.002,
                check: bool = True, progress: Callable[[str], None] | None = None, precision: str = "fp32",
                predict: bool | None = None) -> dict:
    """Measure ``graph`` on every engine in ``compare`` at each batch; returns a JSON-able dict.

    ``kernels`` names the cnncc engines whose per-kernel table is built (default: all of
    them in ``compare``; ``()`` for none). For target "cuda", ``precision`` is the cnncc
    arithmetic (PyTorch on the GPU is set up alike) and ``predict`` (default: on) adds the
    H200 prediction of opt 2 per batch (cnncc.gpu_predict), which is all there is without a GPU."""
    import cnncc
    from .roofline import default_threads, describe_machine, machine_roofline

    notes = configure_threads(threads)          # before defaulting: the notes say where the count came from
    threads = threads or default_threads()
    say = progress or (lambda msg: None)
    roof = None
    if target == "c":
        say("roofline probe (cached after the first run)")
        roof = machine_roofline(threads)
    kernels = [e for e in compare if e.startswith("opt")] if kernels is None else list(kernels)
    if target != "c" and any(e in ("onnxruntime", "torch") for e in compare):
        notes.append("peers run on the CPU while cnncc runs on the GPU target: compare with care")
    opt_graphs: dict[str, Graph] = {}
    from .compiler import TOLERANCE, check_precision

    check_precision(precision, target)
    predict = (target == "cuda") if predict is None else predict
    result = {"model": graph.name, "target": target, "precision": precision,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": describe_machine(), "threads": threads,
              "roofline": asdict(roof) if roof else None, "repeat": repeat, "warmup": warmup,
              "notes": notes, "params": graph.param_count(), "runs": []}
    for batch in batches:
        rng = np.random.default_rng(0)
        feeds = random_inputs(graph, batch, rng)       # standard normal; valid boxes for RoI pooling
        want = None
        if check:
            say(f"batch {batch}: reference")
            want = _first(cnncc.reference(graph, feeds), graph.outputs)
        engines: dict[str, dict] = {}
        ready: dict[str, Engine] = {}
        for name in compare:
            say(f"batch {batch}: preparing {name}")
            try:
                eng = prepare_engine(name, graph, feeds, target, threads, precision)
                err = rel_error(eng.output(), want) if want is not None else None
            except ImportError as e:
                engines[name] = {"status": "skipped", "reason": f"not installed: {e.name or e}"}
                continue
            except Exception as e:  # noqa: BLE001 - one engine failing must not hide the others
                engines[name] = {"status": "skipped", "reason": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
                continue
            engines[name] = {"status": "ok", "note": eng.note, "max_rel_err": err,
                             "matches_reference": err is None or err <= max(CHECK_RTOL, TOLERANCE[precision])}
            ready[name] = eng
        say(f"batch {batch}: timing {', '.join(ready)} x {repeat} rounds")
        samples = interleaved({n: e.run for n, e in ready.items()}, repeat, warmup, min_sample_s,
                              progress=(lambda m: say(f"batch {batch}: {m}")))
        for name, s in samples.items():
            st = stats(s)
            engines[name].update(st, throughput_per_s=batch / st["median_s"], latency_ms=st["median_s"] * 1e3)
        base = engines.get("opt0", {}).get("median_s")
        for name, e in engines.items():
            if e.get("status") == "ok" and base:
                e["speedup_vs_opt0"] = base / e["median_s"]
        ktables = {}
        try:
            profiled = interleaved_kernel_times({n: ready[n].module for n in kernels if n in ready},
                                                [feeds[i] for i in graph.inputs], max(3, repeat // 2))
        except Exception:  # noqa: BLE001 - each engine's own profiling below reports its error
            profiled = {}
        for name in kernels:
            if name not in ready:
                continue
            level = int(name[3:])
            if name not in opt_graphs:
                opt_graphs[name] = cnncc.optimize(graph, opt_level=level)
            say(f"batch {batch}: per-kernel times for {name}")
            try:
                rows, method = profile_kernels(ready[name].module, opt_graphs[name], feeds, batch, target, level,
                                               max(3, repeat // 2), times=profiled.get(name))
            except Exception as e:  # noqa: BLE001
                ktables[name] = {"method": None, "error": f"{type(e).__name__}: {e}".splitlines()[0][:200], "rows": []}
                continue
            ktables[name] = {"method": method, "rows": [asdict(r) for r in kernel_table(rows, opt_graphs[name], batch, roof)]}
        if "opt2" not in opt_graphs and "opt2" in compare:
            opt_graphs["opt2"] = cnncc.optimize(graph, opt_level=2)
        fusion = fusion_summary(opt_graphs["opt2"], batch, engines, ktables) if "opt2" in opt_graphs else {}
        run = {"batch": batch, "engines": engines, "kernels": ktables, "fusion": fusion}
        if predict:
            say(f"batch {batch}: H200 prediction (NVRTC ptxas report, no GPU needed)")
            run["predicted"] = _predicted(graph, batch, precision, ktables.get("opt2"))
        result["runs"].append(run)
    return result


def _predicted(graph: Graph, batch: int, precision: str, measured_table: dict | None) -> dict:
    """The H200 prediction of opt 2 at ``batch``, with measured per-kernel seconds when a GPU ran it."""
    from .gpu_predict import predict_model

    try:
        pred = predict_model(graph, batch, precision)
    except Exception as e:  # noqa: BLE001 - a missing NVRTC must not hide the measurements
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
    if measured_table and measured_table.get("rows"):
        pred["measured"] = {r["name"]: r["seconds"] for r in measured_table["rows"]}
    return pred


# ---------------------------------------------------------------------------------------------
# printing
def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def format_report(result: dict, max_kernels: int = 25) -> str:
    out = [f"cnncc bench: {result['model']} (target {result['target']}, precision {result.get('precision', 'fp32')}), "
           f"{result['date']}",
           f"machine: {result['machine']}"]
    roof = result.get("roofline")
    if roof:
        out.append(f"roofline: {roof['peak_gflops']:.0f} GFLOP/s peak (FMA probe), {roof['bandwidth_gbs']:.1f} GB/s "
                   f"(triad probe), ridge {roof['peak_gflops'] / roof['bandwidth_gbs']:.1f} FLOP/byte, "
                   f"{roof['threads']} threads")
    out += [f"note: {n}" for n in result["notes"]]
    out.append(f"timing: {result['warmup']} warm-up calls, {result['repeat']} interleaved rounds; median [min, max]")
    for run in result["runs"]:
        b = run["batch"]
        out.append(f"\n== batch {b}: end to end ==")
        rows = []
        for name, e in run["engines"].items():
            if e["status"] != "ok":
                rows.append([name, "skipped", "", "", "", e["reason"]])
                continue
            err = e.get("max_rel_err")
            check = "" if err is None else (f"ok ({err:.1e})" if e["matches_reference"] else f"MISMATCH ({err:.1e})")
            rows.append([name, _ms(e["median_s"]), f"[{_ms(e['min_s'])}, {_ms(e['max_s'])}]",
                         f"{e['throughput_per_s']:.1f}", f"{e['speedup_vs_opt0']:.2f}x" if "speedup_vs_opt0" in e else "",
                         check])
        out.append(_table(["engine", "median ms", "[min, max] ms", "items/s", "vs opt0", "vs reference"], rows))
        for name, kt in run["kernels"].items():
            out.append(f"\n-- batch {b}: kernels of {name} ({kt.get('method') or kt.get('error')}) --")
            krows = sorted(kt["rows"], key=lambda r: -r["seconds"])
            shown = krows[:max_kernels]
            out.append(_table(["kernel", "ops", "ms", "GFLOP/s", "GB/s", "share", "FLOP/B", "roofline"],
                              [[r["name"][:40], r["ops"][:32], _ms(r["seconds"]), f"{r['gflops']:.1f}",
                                f"{r['gbs']:.1f}", f"{r['share'] * 100:.1f}%", f"{r['intensity']:.1f}",
                                _roof_text(r)]
                               for r in shown]))
            if len(krows) > len(shown):
                out.append(f"... {len(krows) - len(shown)} more kernels (see --json)")
        pred = run.get("predicted")
        if pred:
            from .gpu_predict import format_prediction

            out.append("")
            out.append(format_prediction(pred, pred.get("measured"), max_kernels) if "kernels" in pred
                       else f"-- batch {b}: no prediction: {pred['error']} --")
        fusion = run.get("fusion") or {}
        model = fusion.get("model")
        if model:
            out.append(f"\n-- batch {b}: fusion, traffic model vs measurement --")
            line = (f"predicted bytes: {model['bytes_unfused'] / 1e6:.2f} MB unfused -> {model['bytes_fused'] / 1e6:.2f} MB "
                    f"fused ({model['predicted_saving'] * 100:.0f}% saved)")
            if "speedup_opt2_vs_opt0" in model:
                line += (f"; measured opt2 vs opt0: {model['speedup_opt2_vs_opt0']:.2f}x "
                         f"({model['measured_saving'] * 100:.0f}% less time)")
            out.append(line)
            groups = fusion.get("groups", [])
            if groups:
                out.append(_table(["fused group", "ops", "pred. saved", "unfused ms", "fused ms", "speedup"],
                                  [[g["name"][:40], g["ops"][:32], f"{g['predicted_saving'] * 100:.0f}%",
                                    _ms(g["seconds_unfused"]) if "seconds_unfused" in g else "",
                                    _ms(g["seconds_fused"]) if "seconds_fused" in g else "",
                                    f"{g['speedup']:.2f}x" if "speedup" in g else ""] for g in groups[:max_kernels]]))
    return "\n".join(out)


def plot_result(result: dict, path: str) -> None:
    """Bar chart of median latency per engine and batch (min-max as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    names = [n for n in dict.fromkeys(n for r in runs for n in r["engines"])]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) * len(runs)), 3.6))
    width = 0.8 / max(len(runs), 1)
    for j, run in enumerate(runs):
        xs, ys, lo, hi = [], [], [], []
        for i, n in enumerate(names):
            e = run["engines"].get(n, {})
            if e.get("status") == "ok":
                xs.append(i + j * width)
                ys.append(e["median_s"] * 1e3)
                lo.append((e["median_s"] - e["min_s"]) * 1e3)
                hi.append((e["max_s"] - e["median_s"]) * 1e3)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=f"batch {run['batch']}")
    ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"{result['model']} ({result['target']}), {result['date'][:10]}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
