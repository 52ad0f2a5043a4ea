"""The fast-CPU-code targets (issue "ahead of onnxruntime on every benchmark"), measured.

Each case is built in the DSL, exported to ONNX and imported back with `cnncc.from_onnx`, so
cnncc and onnxruntime run the same graph with the same weights in this process. Rounds are
interleaved; onnxruntime runs with intra-op spinning stopped and OpenMP with a short
GOMP_SPINCOUNT (cnncc.bench states both). Every engine's output is checked against the
numpy reference before it is timed. Ratio = onnxruntime time / cnncc opt-2 time (> 1: cnncc is
faster); the fusion case is cnncc opt-0 time / opt-2 time. Each case runs in a process of its
own: a second case timed in one process ran one engine or the other 2x slow (conv 64->64 at batch
1: onnxruntime 1.14 instead of 0.67 ms, or cnncc 0.87 instead of 0.45, 2026-12-04) -- some thread
state of the first case's sessions and OpenMP team lingers.

    python benchmarks/targets.py                    # every case (a few minutes on 2 cores)
    python benchmarks/targets.py --cases lenet5_b1,conv_b1 --repeat 5
    python benchmarks/targets.py --json out.json

Run it on a quiet machine: the ratios are only as good as the cores are idle.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    model: str          # example name, or "conv_relu_pool"
    batch: int
    target: float       # the ratio to reach
    kind: str = "ort"   # "ort": onnxruntime / opt2; "fusion": opt0 / opt2
    note: str = ""


CASES = [
    Case("lenet5_b1", "LeNet-5, batch 1 (with softmax)", "lenet5", 1, 1.5),
    Case("conv_b1", "conv3x3 64->64 on 56x56 + ReLU + 2x2 max pool, batch 1", "conv_relu_pool", 1, 1.3),
    Case("conv_b8", "same layer, batch 8", "conv_relu_pool", 8, 1.3),
    Case("resnet50_b1", "ResNet-50, batch 1", "resnet50", 1, 1.1),
    Case("resnet50_b8", "ResNet-50, batch 8", "resnet50", 8, 1.1),
    Case("googlenet_b1", "GoogLeNet (inception v1), batch 1", "googlenet", 1, 1.1, note="keep"),
    Case("vgg19_b1", "VGG-19, batch 1", "vgg19", 1, 1.5),
    Case("vgg19_fusion", "VGG-19 opt 0 time / opt 2 time (what fusion buys)", "vgg19", 1, 1.15, kind="fusion"),
]


def build_graph(model: str):
    """The case's model as a DSL graph (LeNet-5 gets its softmax)."""
    from cnncc.frontends import dsl

    if model == "conv_relu_pool":
        x = dsl.input("x", (dsl.N, 64, 56, 56))
        return dsl.graph(dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 64, 3, padding=1)), 2), name="conv_relu_pool")
    mod = dsl.run_model_file(ROOT / "examples" / f"{model}.py")   # its folder on sys.path: examples share _resnet.py
    out = mod.model()
    if model == "lenet5":
        out = dsl.softmax(out)
    return dsl.graph_of(out, model)


def through_onnx(graph, tmp: Path):
    """Export to ONNX and import back: both engines then run exactly this file's graph."""
    import cnncc
    from cnncc.codegen.onnx_export import to_onnx

    path = tmp / f"{graph.name}.onnx"
    path.write_bytes(to_onnx(graph).SerializeToString())
    return cnncc.from_onnx(path)


def run_case(case: Case, graph, repeat: int, warmup: int, threads: int | None, say) -> dict:
    from cnncc.bench import bench_model

    compare = ("opt0", "opt2") if case.kind == "fusion" else ("opt2", "onnxruntime")
    res = bench_model(graph, target="c", batches=(case.batch,), compare=compare, repeat=repeat, warmup=warmup,
                      threads=threads, kernels=(), progress=say)
    engines = res["runs"][0]["engines"]
    row = {"case": case.key, "label": case.label, "batch": case.batch, "target": case.target, "kind": case.kind,
           "engines": engines, "machine": res["machine"], "threads": res["threads"], "notes": res["notes"]}
    a, b = ("opt0", "opt2") if case.kind == "fusion" else ("onnxruntime", "opt2")
    ok = all(engines.get(e, {}).get("status") == "ok" and engines[e].get("matches_reference", True) for e in (a, b))
    row["ratio"] = engines[a]["median_s"] / engines[b]["median_s"] if ok else None
    row["met"] = row["ratio"] is not None and row["ratio"] >= case.target
    if not ok:
        row["error"] = "; ".join(f"{e}: {engines.get(e, {}).get('reason') or 'output mismatch'}" for e in (a, b)
                                 if engines.get(e, {}).get("status") != "ok" or not engines[e].get("matches_reference", True))
    return row


def in_own_process(case: Case, args, tmp: Path, say) -> dict:
    """One case timed by this script in a fresh Python process; its row."""
    out = tmp / f"{case.key}.json"
    cmd = [sys.executable, __file__, "--cases", case.key, "--repeat", str(args.repeat), "--warmup", str(args.warmup),
           "--json", str(out)] + (["--threads", str(args.threads)] if args.threads else []) + \
          ([] if not args.quiet else ["--quiet"])
    say(f"{case.key}: in a process of its own")
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode or not out.exists():
        raise SystemExit(f"{case.key}: the timing process failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads(out.read_text())["rows"][0]


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="", help=f"comma-separated subset of: {', '.join(c.key for c in CASES)}")
    p.add_argument("--repeat", type=int, default=9, help="interleaved rounds per engine (default 9)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="threads for both engines (default: all cores)")
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("--in-process", action="store_true",
                   help="time every case in this process (default: one process per case)")
    args = p.parse_args(argv)

    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(wanted) - {c.key for c in CASES}
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(c.key for c in CASES)}")
    cases = [c for c in CASES if not wanted or c.key in wanted]
    say = (lambda m: None) if args.quiet else (lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))

    rows, graphs = [], {}
    with tempfile.TemporaryDirectory(prefix="cnncc-targets-") as tmp:
        for case in cases:
            if not args.in_process and len(cases) > 1:
                rows.append(in_own_process(case, args, Path(tmp), say))
                continue
            if case.model not in graphs:
                say(f"{case.model}: DSL -> ONNX -> cnncc.from_onnx")
                graphs[case.model] = through_onnx(build_graph(case.model), Path(tmp))
            say(f"{case.key}: timing")
            rows.append(run_case(case, graphs[case.model], args.repeat, args.warmup, args.threads, say))

    print(f"machine: {rows[0]['machine'] if rows else '?'}; threads: {rows[0]['threads'] if rows else '?'}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    for note in (rows[0]["notes"] if rows else []):
        print(f"  {note}")
    print(f"{'case':<58} {'ratio':>7} {'target':>7}  met")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "n/a"
        print(f"{r['label']:<58} {ratio:>7} {r['target']:>7.2f}  {'yes' if r['met'] else 'NO'}"
              + (f"  ({r['error']})" if r.get("error") else ""))
    met = sum(r["met"] for r in rows)
    print(f"{met} of {len(rows)} targets met (ratio = onnxruntime time / cnncc opt 2 time; "
          "fusion row = opt 0 time / opt 2 time)")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
