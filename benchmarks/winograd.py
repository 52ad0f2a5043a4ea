"""Direct vs Winograd convolution on the C target, per 3x3 stride-1 layer of VGG and ResNet.

Each distinct layer geometry (C_in -> C_out on H x W, with the ReLU and, for VGG's block ends,
the 2x2 max pool the network fuses after it) becomes a one-layer graph, compiled with
``conv_algorithm`` forced to "direct", "winograd2" (F(2x2,3x3)) and "winograd4" (F(4x4,3x3)),
checked against the numpy reference (the error column: max |y - ref| / max |ref|, random
He-normal weights) and timed in interleaved rounds. The table says what "auto" picks today
(codegen/c_winograd.py's rule), so the rule can be set from these numbers.

    python benchmarks/winograd.py                       # VGG-19 and ResNet-50 layers, batch 1, 224x224
    python benchmarks/winograd.py --models vgg19 --batch 8 --json out.json
    python benchmarks/winograd.py --accuracy-only        # errors only, no timing (any machine)

Run the timing on a quiet machine: the ratios are only as good as the cores are idle.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: (model, C_in, C_out, plane, fused 2x2 max pool) per distinct 3x3 stride-1 layer at 224x224
LAYERS = {
    "vgg19": [(3, 64, 224, False), (64, 64, 224, True), (64, 128, 112, False), (128, 128, 112, True),
              (128, 256, 56, False), (256, 256, 56, False), (256, 256, 56, True), (256, 512, 28, False),
              (512, 512, 28, False), (512, 512, 28, True), (512, 512, 14, False), (512, 512, 14, True)],
    "resnet18": [(64, 64, 56, False), (128, 128, 28, False), (256, 256, 14, False), (512, 512, 7, False)],
    "resnet50": [(64, 64, 56, False), (128, 128, 28, False), (256, 256, 14, False), (512, 512, 7, False)],
}
ALGORITHMS = ("direct", "winograd2", "winograd4")


def layer_graph(c_in: int, c_out: int, plane: int, pool: bool, scale: int):
    from cnncc.frontends import dsl

    size = max(4, plane // scale)
    x = dsl.input("x", (dsl.N, c_in, size, size))
    y = dsl.relu(dsl.conv2d(x, c_out, 3, padding=1, name="conv"), name="relu")
    if pool:
        y = dsl.max_pool2d(y, 2, name="pool")
    return dsl.graph(y, name=f"conv{c_in}_{c_out}_{size}{'_pool' if pool else ''}")


def auto_choice(graph) -> str:
    import cnncc
    from cnncc.codegen.c_winograd import choose
    from cnncc.codegen.lower import lower_program
    from cnncc.runtime.cpu import host_target

    spec = next(k for k in lower_program(cnncc.optimize(graph)).kernels if k.family == "conv")
    c = choose(spec, "auto", host_target())
    return f"{c.algorithm} ({c.reason})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg19,resnet50", help=f"comma list of {', '.join(LAYERS)}")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--scale", type=int, default=1, help="divide the planes by this (quick runs)")
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads (default OMP_NUM_THREADS / all cores)")
    ap.add_argument("--repeat", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--accuracy-only", action="store_true", help="errors only, no timing")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args(argv)

    from cnncc.benchmark import configure_threads, interleaved, rel_error, stats

    notes = configure_threads(args.threads)
    import numpy as np

    import cnncc
    from cnncc.reference import random_inputs
    from cnncc.runtime.cpu import host_target

    print(f"target {host_target().describe()}; batch {args.batch}; " + "; ".join(notes[:2]))
    rows, seen = [], set()
    for model in args.models.split(","):
        for c_in, c_out, plane, pool in LAYERS[model]:
            if (c_in, c_out, plane, pool) in seen:
                continue
            seen.add((c_in, c_out, plane, pool))
            g = layer_graph(c_in, c_out, plane, pool, args.scale)
            feeds = random_inputs(g, args.batch, np.random.default_rng(0))
            want = cnncc.reference(g, feeds)
            mods, err = {}, {}
            for alg in ALGORITHMS:
                mods[alg] = cnncc.compile(g, "c", 2, conv_algorithm=alg, threads=args.threads)
                err[alg] = rel_error(mods[alg](feeds), want)
            row = {"model": model, "layer": g.name, "C_in": c_in, "C_out": c_out, "plane": max(4, plane // args.scale),
                   "pool": pool, "batch": args.batch,
                   "auto": auto_choice(g), "error": err}
            if not args.accuracy_only:
                fns = {alg: (lambda m=mods[alg]: m(feeds)) for alg in ALGORITHMS}
                times = {alg: stats(s)["median_s"] for alg, s in interleaved(fns, args.repeat).items()}
                row["median_s"] = times
                row["speedup"] = {alg: times["direct"] / times[alg] for alg in ALGORITHMS[1:]}
            rows.append(row)
            print(_line(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"target": host_target().describe(), "batch": args.batch,
                                               "time": time.strftime("%Y-%m-%d %H:%M"), "layers": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


def _line(r: dict) -> str:
    e = r["error"]
    text = (f"{r['layer']:<22} err direct {e['direct']:.1e} F2 {e['winograd2']:.1e} F4 {e['winograd4']:.1e}")
    if "median_s" in r:
        t = r["median_s"]
        text += (f" | ms direct {t['direct'] * 1e3:8.3f} F2 {t['winograd2'] * 1e3:8.3f} ({r['speedup']['winograd2']:.2f}x)"
                 f" F4 {t['winograd4'] * 1e3:8.3f} ({r['speedup']['winograd4']:.2f}x)")
    return text + f" | auto: {r['auto']}"


if __name__ == "__main__":
    sys.exit(main())
