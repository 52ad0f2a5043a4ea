"""GPU benchmark: cnncc (target cuda, opt 0 and opt 2) vs PyTorch eager (cuDNN) and torch.compile,
at every precision (fp32, tf32, fp16, bf16), like with like.

Same GPU, same weights (the PyTorch peer is built from the cnncc graph by
codegen/torch_export.py), timed with CUDA events around a loop of calls after a warm-up; the
median over repeats is reported in ms per batch. Each engine's output is first compared with
PyTorch eager's. Models: LeNet-5, VGG-16, ResNet-18, ResNet-50 at batch 1 and 32, and the
conv3x3(64->64, 56x56)+ReLU+maxpool layer alone. Runs with whatever of cupy/torch is present
and lists what it skipped; without a GPU it says so and exits 0. A time budget (default 270 s)
keeps it under 5 minutes: whatever would overrun is skipped and listed.

Precisions (``--precisions``): PyTorch runs channels_last with cuDNN and the same arithmetic as
cnncc (cnncc.bench.torch_precision): fp32 with TF32 off, tf32 with TF32 on, fp16 / bf16 under
autocast. Every engine's output is compared with PyTorch eager at fp32 (TF32 off) and must stay
within cnncc's documented tolerance for the precision (cnncc.compiler.TOLERANCE). Next to each
cnncc opt 2 time stands the H200 prediction of cnncc.gpu_predict (from the build's ptxas report).
opt 0 runs at fp32 only (it is the fusion baseline, not a precision study).

    python benchmarks/gpu_bench.py --json $OUT/gpu_bench.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["conv_relu_pool", "lenet5", "vgg16", "resnet18", "resnet50"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--repeat", type=int, default=20, help="timed samples per engine (default 20)")
    p.add_argument("--inner", type=int, default=5, help="calls per timed sample (default 5)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=270.0, help="stop starting new work after this (default 270)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (its compile time dominates)")
    p.add_argument("--precisions", default="fp32,tf32,fp16,bf16", help="cnncc / PyTorch arithmetic to compare")
    return p.parse_args(argv)


def conv_relu_pool():
    """The layer that fusion targets most: conv 3x3 64->64 on 56x56, ReLU, 2x2 max pool."""
    from cnncc.frontends import dsl

    x = dsl.input("x", (dsl.N, 64, 56, 56))
    return dsl.graph(dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 64, 3, padding=1)), 2), name="conv_relu_pool")


def load(name: str):
    import cnncc

    return conv_relu_pool() if name == "conv_relu_pool" else cnncc.load_model(ROOT / "examples" / f"{name}.py")


def gpu_name() -> str | None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        props = cupy.cuda.runtime.getDeviceProperties(0)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device
        pass
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


def time_events(fn, events, warmup: int, repeat: int, inner: int) -> dict:
    """ms per call: CUDA events around ``inner`` calls, ``repeat`` samples, after ``warmup`` calls."""
    start_evt, end_evt, sync, elapsed = events
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeat):
        a, b = start_evt(), end_evt()
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        samples.append(elapsed(a, b) / inner)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples),
            "samples": repeat}


def cupy_events():
    import cupy

    return (cupy.cuda.Event, cupy.cuda.Event, cupy.cuda.Device().synchronize,
            lambda a, b: cupy.cuda.get_elapsed_time(a, b))


def torch_events():
    import torch

    mk = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
    return (mk, mk, torch.cuda.synchronize, lambda a, b: a.elapsed_time(b))


def to_numpy(y):
    if isinstance(y, dict):
        y = next(iter(y.values()))
    if isinstance(y, (list, tuple)):
        y = y[0]
    if hasattr(y, "get") and not isinstance(y, np.ndarray):   # cupy
        return y.get()
    if hasattr(y, "detach"):                                  # torch
        return y.detach().cpu().numpy()
    return np.asarray(y)


def run_torch(graph, x, precision: str, row: dict, want, args, started: float):
    """PyTorch eager (and torch.compile) at ``precision``; returns the fp32 reference output."""
    import torch

    from cnncc.bench import rel_error as rel_err, torch_precision
    from cnncc.codegen.torch_export import to_torch

    if want is None:   # the yardstick: fp32 eager, TF32 off
        torch_precision("fp32")
        ref_module = to_torch(graph, "cuda")
        with torch.no_grad():
            want = to_numpy(ref_module(torch.from_numpy(x).cuda()).float())
    ctx, how = torch_precision(precision)
    module = to_torch(graph, "cuda").to(memory_format=torch.channels_last)
    xt = torch.from_numpy(x).cuda()
    xt = xt.to(memory_format=torch.channels_last) if xt.dim() == 4 else xt

    def eager():
        with torch.no_grad(), ctx():
            return module(xt)
    stats = time_events(eager, torch_events(), args.warmup, args.repeat, args.inner)
    row["engines"]["torch_eager"] = {**stats, "setup": f"cuDNN, channels_last, {how}",
                                     "rel_err": rel_err(to_numpy(eager().float()), want)}
    if args.no_compile:
        row["engines"]["torch_compile"] = {"skipped": "--no-compile"}
    elif time.time() - started > args.budget_s * 0.7:
        row["engines"]["torch_compile"] = {"skipped": "time budget (compilation is slow)"}
    else:
        try:
            t0 = time.time()
            compiled = torch.compile(module)

            def comp():
                with torch.no_grad(), ctx():
                    return compiled(xt)
            err = rel_err(to_numpy(comp().float()), want)
            stats = time_events(comp, torch_events(), args.warmup, args.repeat, args.inner)
            row["engines"]["torch_compile"] = {**stats, "compile_s": time.time() - t0, "rel_err": err}
        except Exception as e:  # noqa: BLE001
            row["engines"]["torch_compile"] = {"skipped": f"{type(e).__name__}: {e}"[:200]}
    return want


def run_cnncc(graph, x, batch: int, precision: str, row: dict, want, args, have_cnncc_cuda: bool) -> None:
    """cnncc target cuda at ``precision`` (opt 2; opt 0 too at fp32), checked and predicted."""
    import cnncc
    from cnncc.bench import rel_error as rel_err
    from cnncc.compiler import TOLERANCE

    for level in ((0, 2) if precision == "fp32" else (2,)):
        key = f"cnncc_opt{level}"
        if not have_cnncc_cuda:
            row["engines"][key] = {"skipped": "cupy not installed"}
            continue
        try:
            import cupy

            mod = cnncc.compile(graph, target="cuda", opt_level=level, precision=precision)
            xg = cupy.asarray(x)
            fn = (lambda m=mod, a=xg: m(a))
            y = to_numpy(fn())
            check = rel_err(y, want) if want is not None else (
                rel_err(y, cnncc.reference(graph, x)) if batch == 1 else None)
            stats = time_events(fn, cupy_events(), args.warmup, args.repeat, args.inner)
            entry = {**stats, "kernels": len(mod.kernels), "rel_err": check, "tolerance": TOLERANCE[precision],
                     "within_tolerance": None if check is None else check <= TOLERANCE[precision]}
            if level == 2:
                from cnncc import gpu_predict

                pred = gpu_predict.predict(mod.program, mod.report["graph"], mod.rendered, batch)
                entry["predicted_ms"] = pred["seconds"] * 1e3
            row["engines"][key] = entry
        except Exception as e:  # noqa: BLE001 - report, keep going
            row["engines"][key] = {"skipped": f"{type(e).__name__}: {e}"[:200]}


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "repeat": args.repeat, "inner": args.inner,
              "warmup": args.warmup, "device": None, "skipped": [], "results": []}

    def finish() -> int:
        result["seconds"] = time.time() - started
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1, default=str))
            print(f"wrote {args.json}")
        return 0

    device = gpu_name()
    if device is None:
        print("skipped: no GPU (no CUDA device visible to cupy or torch); nothing was timed")
        result["skipped"].append("everything: no GPU")
        return finish()
    result["device"] = device
    print(f"device: {device}")

    import cnncc

    have_cnncc_cuda, have_torch_cuda = True, False
    try:
        import cupy  # noqa: F401
    except ImportError:
        have_cnncc_cuda = False
        result["skipped"].append("cnncc cuda: cupy is not installed")
    try:
        import torch

        have_torch_cuda = torch.cuda.is_available()
        if not have_torch_cuda:
            result["skipped"].append(f"PyTorch: torch {torch.__version__} has no CUDA support here")
        else:
            torch.backends.cudnn.benchmark = True
            result["torch"] = f"{torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    except ImportError:
        result["skipped"].append("PyTorch: not installed")

    batches = [int(b) for b in args.batches.split(",")]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        graph = load(name)
        for batch in batches:
            rng = np.random.default_rng(0)
            x = rng.standard_normal(graph[graph.inputs[0]].type.concrete({cnncc.N: batch})).astype(np.float32)
            want = None
            for precision in precisions:
                if time.time() - started > args.budget_s:
                    result["skipped"].append(f"{name} batch {batch} {precision}: time budget spent")
                    continue
                print(f"{name} batch {batch} {precision} ...", flush=True)
                row = {"model": name, "batch": batch, "precision": precision, "engines": {}}
                if have_torch_cuda:
                    want = run_torch(graph, x, precision, row, want, args, started)
                run_cnncc(graph, x, batch, precision, row, want, args, have_cnncc_cuda)
                for k, v in row["engines"].items():
                    shown = f"{v['median_ms']:.3f} ms" if "median_ms" in v else f"skipped ({v['skipped']})"
                    extra = f"  (predicted {v['predicted_ms']:.3f} ms)" if "predicted_ms" in v else ""
                    err = f"  err {v['rel_err']:.1e}" if v.get("rel_err") is not None else ""
                    print(f"  {k:14s} {shown}{err}{extra}", flush=True)
                result["results"].append(row)
    if result["skipped"]:
        print("skipped: " + "; ".join(result["skipped"]))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
