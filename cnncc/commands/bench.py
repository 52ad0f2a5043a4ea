"""cnncc bench MODEL: latency of cnncc (opt 0/1/2) next to onnxruntime and PyTorch, same run,
per-kernel table against the machine's roofline, fusion speedup next to the traffic model."""
from __future__ import annotations

import json
import sys

from cnncc.commands import add_conv_algorithm, add_dynamic_batch, add_layout, add_precision, add_target


def add(sub):
    p = sub.add_parser("bench", help="time cnncc against peers: end to end, per kernel, fusion vs traffic model")
    p.add_argument("model", help="DSL .py file or .onnx file")
    add_dynamic_batch(p)
    add_target(p, help="cnncc target (default c)")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    add_precision(p,
                   help="CUDA targets: convolution arithmetic (default fp32; see docs/gpu.md)")
    p.add_argument("--compare", default="opt0,opt2,onnxruntime",
                   help="engines: opt0,opt1,opt2,onnxruntime,torch (default opt0,opt2,onnxruntime)")
    p.add_argument("--repeat", type=int, default=10, help="interleaved timing rounds (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per engine first (default 3)")
    p.add_argument("--threads", type=int, default=None, help="threads for every engine (default: all cores)")
    p.add_argument("--refresh-roofline", action="store_true",
                   help="measure the machine's roofline again instead of using the cached one")
    p.add_argument("--no-kernels", action="store_true", help="skip the per-kernel tables")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write every figure to this file")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="bar chart of the latencies")
    add_layout(p)
    add_conv_algorithm(p)
    return p


def run(args) -> int:
    # OpenMP reads its environment once, when the first library using it loads: set it first
    from cnncc.bench import configure_threads

    configure_threads(args.threads)
    from cnncc.bench import ENGINES, bench_model, format_report, plot_result
    from cnncc.compiler import load_model
    from cnncc.errors import CnnccError

    compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    unknown = [c for c in compare if c not in ENGINES]
    if unknown:
        raise CnnccError(f"unknown engine(s) {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        raise CnnccError(f"--batch expects comma-separated integers, got '{args.batch}'") from None
    if args.repeat < 1 or any(b < 1 for b in batches):
        raise CnnccError("--repeat and every --batch must be at least 1")
    from cnncc.commands import batch_of

    graph = load_model(args.model, batch=batch_of(args))
    if args.refresh_roofline:
        from cnncc.roofline import machine_roofline

        machine_roofline(args.threads, refresh=True)
    progress = (lambda msg: print(f"  [{msg}]", file=sys.stderr, flush=True))
    result = bench_model(graph, target=args.target, batches=batches, compare=compare, repeat=args.repeat,
                         warmup=args.warmup, threads=args.threads, kernels=() if args.no_kernels else None,
                         progress=progress, precision=args.precision, layout=args.layout,
                         conv_algorithm=args.conv_algorithm)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"\nwrote {args.json}")
    if args.plot:
        plot_result(result, args.plot)
        print(f"wrote {args.plot}")
    return 0
