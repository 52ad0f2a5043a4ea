"""Throughput of `cnncc infer` (Ray Data) with 1 and 2 workers next to a plain Python loop over the
same module: items/s on one machine, the figure quoted in the README.

Every engine does the same work per shard of --batch-size items: read the .npy inputs, run the
module, write the predictions with the ids (cnncc.ray.write_shard). The plain loop runs in this
process with every core for OpenMP; a Ray run gives each of its W workers cores/W CPUs
(OMP_NUM_THREADS follows). Ray is started once, before any timing; every figure is the whole run,
module loading included (for Ray: actor start-up, shipping and loading the module), so use
enough items that start-up is a small share; the time to the first finished shard and the rate
after it (close to the steady state) are printed too. Run it on a quiet machine.

    python benchmarks/infer_throughput.py                                 # ResNet-18, 224x224, 512 items
    python benchmarks/infer_throughput.py --items 16 --size 32 --batch-size 4 --json /tmp/t.json   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "examples" / "resnet18.py"), help="DSL file (default ResNet-18)")
    p.add_argument("--size", type=int, default=224, help="input height = width (default 224)")
    p.add_argument("--items", type=int, default=512, help="random inputs, one .npy each (default 512)")
    p.add_argument("--batch-size", type=int, default=16, help="items per shard / module call (default 16)")
    p.add_argument("--workers", default="1,2", help="Ray worker counts to time (default 1,2)")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="CPUs to use (default: all)")
    p.add_argument("--json", default=None, help="write every figure here")
    return p.parse_args(argv)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()}"


def plain_loop(folder: Path, paths: list[str], batch: int, out: Path) -> dict:
    """The module called in a Python loop, shard by shard: the baseline."""
    import cnncc
    from cnncc.ray import write_shard

    t0 = time.perf_counter()
    mod = cnncc.load(folder)
    out.mkdir(parents=True, exist_ok=True)
    first = t0
    for k, s in enumerate(range(0, len(paths), batch)):
        chunk = paths[s:s + batch]
        y = mod(np.stack([np.load(p, allow_pickle=False) for p in chunk]))
        write_shard(out, k, np.asarray(chunk, dtype=str), {mod.output_names[0]: y}, "npy")
        if k == 0:
            first = time.perf_counter()   # the first shard done: the module is loaded and warm
    end = time.perf_counter()
    return {"engine": "python loop", "workers": 1, "items": len(paths), "seconds": end - t0,
            "items_per_s": len(paths) / (end - t0), "first_shard_s": first - t0,
            "after_first_items_per_s": (len(paths) - len(paths[:batch])) / (end - first) if end > first else None}


def ray_run(folder: Path, inputs: Path, workers: int, cores: int, batch: int, out: Path) -> dict:
    import cnncc

    t0 = time.perf_counter()
    summary = cnncc.infer(folder, inputs, output_dir=out, workers=workers, batch_size=batch,
                          cpus_per_worker=max(1, cores // workers))
    seconds = time.perf_counter() - t0
    assert summary["items"] == len(list(inputs.glob("*.npy"))), summary
    n, first = summary["items"], summary["first_shard_s"]
    # after the first shard: roughly the steady state, once the actors are up (W shards finish about together)
    return {"engine": "cnncc infer (Ray Data)", "workers": workers, "items": n, "seconds": seconds,
            "items_per_s": n / seconds, "first_shard_s": first,
            "after_first_items_per_s": (n - batch) / (seconds - first) if seconds > first else None}


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    import cnncc
    from cnncc.frontends.dsl import load_model as load_dsl

    results = []
    with tempfile.TemporaryDirectory(prefix="cnncc-infer-bench-") as tmp:
        tmp = Path(tmp)
        print(f"compiling {args.model} at {args.size}x{args.size} (target c) ...", file=sys.stderr)
        graph = load_dsl(args.model, size=args.size)            # model(batch, size) as in examples/
        folder = cnncc.compile(graph, target="c").save(tmp / "module")
        shape = tuple(json.loads((folder / "manifest.json").read_text())["program"]["inputs"][0]["shape"][1:])
        rng = np.random.default_rng(0)
        inputs = tmp / "inputs"
        inputs.mkdir()
        for i in range(args.items):
            np.save(inputs / f"x{i:06d}.npy", rng.standard_normal(shape).astype(np.float32))
        paths = sorted(str(p) for p in inputs.glob("*.npy"))
        results.append(plain_loop(folder, paths, args.batch_size, tmp / "out-loop"))
        ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            for w in (int(v) for v in args.workers.split(",")):
                results.append(ray_run(folder, inputs, w, args.cores, args.batch_size, tmp / f"out-{w}"))
        finally:
            ray.shutdown()
    report = {"model": Path(args.model).stem, "size": args.size, "items": args.items, "batch_size": args.batch_size,
              "cores": args.cores, "machine": machine(), "date": time.strftime("%Y-%m-%d"), "results": results}
    print(f"{report['model']} {args.size}x{args.size}, {args.items} items, shards of {args.batch_size}, "
          f"{args.cores} CPUs ({report['machine']})")
    print(f"{'engine':<24} {'workers':>7} {'items':>6} {'seconds':>8} {'items/s':>8} {'1st shard s':>11} "
          f"{'items/s after':>13}")
    for r in results:
        steady = r["after_first_items_per_s"]
        print(f"{r['engine']:<24} {r['workers']:>7} {r['items']:>6} {r['seconds']:>8.2f} {r['items_per_s']:>8.1f} "
              f"{r['first_shard_s']:>11.2f} {steady if steady is None else round(steady, 1):>13}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
