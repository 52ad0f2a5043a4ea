"""Per-call overhead of a compiled C module: what a forward costs beyond its kernels.

For an almost empty model (one ReLU on one float) and LeNet-5 with softmax, at batch 1, both
exported to ONNX and imported back so cnncc and onnxruntime run the same graph and weights:

    call        mod(x): the Python call as a user makes it (input checks, fresh output array)
    call out=   mod(x, out=y): the same, writing into the caller's array
    C entry     the module's cnncc_run called directly with a prepared context: one ctypes
                call plus the C forward (what no Python-side work can go below)
    kernels     the kernels' own time, measured inside the C forward (the profiled twin of the
                forward, called in the same interleaved rounds; a mean over all its calls)
    onnxruntime session.run on the same ONNX graph

overhead = call - kernels. Methodology as in benchmarks/targets.py (/work/shared/DESIGN.md):
every engine's output checked against the numpy reference first, rounds interleaved in a
rotated order, onnxruntime with intra-op spinning stopped, OpenMP with a short GOMP_SPINCOUNT,
the same thread count for both. Ratio = onnxruntime time / cnncc call time (> 1: cnncc faster).

    python benchmarks/overhead.py                  # table, then the figures as JSON
    python benchmarks/overhead.py --json out.json  # the JSON into a file instead
    python benchmarks/overhead.py --models empty --repeat 1 --min-sample 0.0005   # a smoke run

Run it on a quiet machine: microseconds are only as good as the cores are idle.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("empty", "lenet5")


def build_graph(model: str):
    from cnncc.frontends import dsl

    if model == "empty":
        return dsl.graph(dsl.relu(dsl.input("x", (dsl.N, 1)), name="y"), name="empty")
    mod = dsl.run_model_file(ROOT / "examples" / "lenet5.py")
    return dsl.graph_of(dsl.softmax(mod.model()), "lenet5")


def through_onnx(graph, tmp: Path):
    """Export to ONNX and import back (benchmarks/targets.py's): both engines run that graph."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from targets import through_onnx as export_and_import

    return export_and_import(graph, tmp)


def c_entry(mod, x: np.ndarray):
    """A function calling the module's C entry with one prepared context: one ctypes call and
    the forward, nothing else."""
    runner = mod.runner()
    if runner.run is None:
        raise SystemExit("this module has no cnncc_run entry (saved by an older cnncc): recompile it")
    ctx = runner.checkout(x.shape[0])
    ctx.ins[0] = ctx.input_address(0, x)
    outs = ctx.fresh_outputs()
    args = (ctx.n, runner._threads_c, ctx.ins, ctx.outs, runner.blob_p, ctx.arena_p)
    fn = runner.run
    return (lambda: fn(*args)), (ctx, outs)


def measure(model: str, graph, batch: int, threads: int, repeat: int, warmup: int, min_sample_s: float,
            say) -> dict:
    import cnncc
    from cnncc.bench.engines import prepare_onnxruntime
    from cnncc.bench.timing import interleaved, rel_error, stats

    from cnncc.reference import random_inputs

    name = graph.inputs[0]
    x = random_inputs(graph, batch, np.random.default_rng(0))[name]
    want = cnncc.reference(graph, {name: x})
    want = np.asarray(want[graph.outputs[0]] if isinstance(want, dict) else want)
    mod = cnncc.compile(graph, target="c", opt_level=2, threads=threads)
    ort = prepare_onnxruntime(graph, {name: x}, threads)
    out = np.empty_like(want)
    entry, keep = c_entry(mod, x)
    checks = {"call": rel_error(mod(x), want), "call out=": rel_error(mod(x, out=out), want),
              "onnxruntime": rel_error(ort.output(), want)}
    entry()
    checks["C entry"] = rel_error(keep[1][0], want)
    bad = {k: v for k, v in checks.items() if not v <= 1e-3}
    if bad:
        raise SystemExit(f"{model}: outputs differ from the reference: {bad}")
    runner, seconds, profiled = mod.runner(), np.zeros(max(1, len(mod.kernels))), [0]

    def kernels():   # the forward timed kernel by kernel inside the C code, in the same rounds
        runner([x], batch, seconds)
        profiled[0] += 1

    fns = {"call": lambda: mod(x), "call out=": lambda: mod(x, out=out), "C entry": entry, "onnxruntime": ort.run,
           "kernels": kernels}
    say(f"{model}: {repeat} interleaved rounds")
    samples = interleaved(fns, repeat, warmup, min_sample_s)
    samples.pop("kernels")   # its wall time includes the timing calls; what counts is `seconds`
    row = {"model": model, "batch": batch, "kernels": len(mod.kernels),
           "engines": {k: stats(v) for k, v in samples.items()},
           "kernels_s": float(seconds.sum()) / profiled[0]}
    e = row["engines"]
    row["overhead_s"] = e["call"]["median_s"] - row["kernels_s"]
    row["ratio_vs_onnxruntime"] = e["onnxruntime"]["median_s"] / e["call"]["median_s"]
    return row


def table(rows: list[dict]) -> str:
    us = lambda s: f"{s * 1e6:8.1f}"   # noqa: E731
    lines = [f"{'model':<8} {'batch':>5} {'call':>8} {'out=':>8} {'C entry':>8} {'kernels':>8} {'overhead':>8} "
             f"{'ort':>8} {'ort/call':>8}   (microseconds, medians)"]
    for r in rows:
        e = r["engines"]
        lines.append(f"{r['model']:<8} {r['batch']:>5} {us(e['call']['median_s'])} {us(e['call out=']['median_s'])} "
                     f"{us(e['C entry']['median_s'])} {us(r['kernels_s'])} {us(r['overhead_s'])} "
                     f"{us(e['onnxruntime']['median_s'])} {r['ratio_vs_onnxruntime']:8.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of: {', '.join(MODELS)}")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument("--warmup", type=int, default=50, help="calls of each engine before timing")
    p.add_argument("--min-sample", type=float, default=0.01, help="seconds one sample lasts at least")
    p.add_argument("--threads", type=int, default=None, help="threads for both engines (default: all cores)")
    p.add_argument("--json", default=None, help="write the figures here (default: print them after the table)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        p.error(f"unknown model(s) {', '.join(sorted(unknown))}; known: {', '.join(MODELS)}")

    from cnncc.bench import configure_threads   # before any OpenMP runtime loads
    from cnncc.roofline import default_threads

    notes = configure_threads(args.threads)
    threads = args.threads or default_threads()
    say = (lambda m: None) if args.quiet else (lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnncc-overhead-") as tmp:
        for model in models:
            say(f"{model}: DSL -> ONNX -> cnncc.from_onnx")
            graph = through_onnx(build_graph(model), Path(tmp))
            rows.append(measure(model, graph, args.batch, threads, args.repeat, args.warmup, args.min_sample, say))
    from cnncc.roofline import describe_machine

    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": describe_machine(), "threads": threads,
           "notes": notes, "repeat": args.repeat, "min_sample_s": args.min_sample, "rows": rows}
    print(f"machine: {doc['machine']}; threads: {threads}; {doc['date']}")
    for note in notes:
        print(f"  {note}")
    print(table(rows))
    print("overhead = call - kernels (kernels timed inside the C forward); ort/call > 1: cnncc is faster")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    else:
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
