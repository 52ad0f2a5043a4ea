"""The fusion study: every example x opt 0/1/2 x batch 1 and 8, onnxruntime alongside.

Writes docs/fusion.md (dated, the machine described, tables, plots) and a gzipped JSON with every
figure (docs/fusion.json.gz: with every kernel of every engine it runs to megabytes), so the
page can be regenerated and checked. Run it on a quiet machine: the numbers
are only as good as the cores are idle.

    python benchmarks/fusion_study.py                       # everything (long: minutes per model)
    python benchmarks/fusion_study.py --models lenet5 --quick
    python benchmarks/fusion_study.py --models vgg16,resnet18 --batches 1,8 --repeat 15
    python benchmarks/fusion_study.py --models resnet152,inception_v4,openpose --size 128
    python benchmarks/fusion_study.py --size deeplabv3_resnet50=256,openpose=184,yolov3_tiny=416

Every example runs at its model()'s default input size except those in ``STUDY_SIZES`` (the
heaviest literature networks, at a modest size); ``--size`` overrides either for every model
(one number) or per model (``name=size``). The page shows the size each model ran at.

Each model (on each target) is benched in a Python process of its own (``--in-process``: all in
this one): in one long process the later models ran slower on one engine or the other.
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="", help="comma-separated example names (default: every examples/*.py)")
    p.add_argument("--size", default="", help="input size: one number for every model that takes a size, or "
                   "name=size,... per model (default: the model's own, STUDY_SIZES for the heaviest)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--opts", default="0,1,2", help="cnncc opt levels (default 0,1,2)")
    p.add_argument("--peers", default="onnxruntime", help="peers alongside (default onnxruntime; add torch)")
    p.add_argument("--targets", default="auto", help="c, cuda or both (default: c, plus cuda when a GPU is present)")
    p.add_argument("--repeat", type=int, default=10, help="interleaved rounds per engine (default 10)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="3 rounds, 1 warm-up: a smoke run, not a measurement")
    p.add_argument("--no-kernels", action="store_true", help="skip per-kernel timing (faster)")
    p.add_argument("--out", default=str(ROOT / "docs" / "fusion.md"), help="markdown page to write")
    p.add_argument("--json", default=None, help="JSON with every figure, gzipped when it ends in .gz (default: <out>.json.gz)")
    p.add_argument("--img-dir", default=None, help="PNG folder (default: <out dir>/img)")
    p.add_argument("--refresh-roofline", action="store_true", help="measure the roofline again (do it on a quiet machine)")
    p.add_argument("--gpu-json", default=None, help="a benchmarks/gpu_bench.py JSON to include")
    p.add_argument("--in-process", action="store_true",
                   help="bench every model in this process (default: one process per model and target)")
    p.add_argument("--worker-json", default=None, help=argparse.SUPPRESS)   # one model, its result to this file
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.warmup = 3, 1
    return args


def has_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device: all mean no GPU
        return False


def example_names() -> list[str]:
    """The DSL model files (those defining model()); from_onnx.py/from_torch.py are scripts."""
    return sorted(p.stem for p in (ROOT / "examples").glob("*.py")
                  if not p.stem.startswith("_") and "\ndef model(" in p.read_text())


#: the literature networks whose published input size makes a study round take minutes at batch 8
#: on a small machine (DeepLab-v3 at 512x512, output stride 8: ~140 GFLOP per image; OpenPose at
#: 368x368: ~136): the study runs them at these sizes unless --size says otherwise
STUDY_SIZES = {"deeplabv3_resnet50": 256, "openpose": 184}


def default_size(name: str) -> int | None:
    """The size model() takes by default, or None when it takes no ``size``."""
    import inspect

    from cnncc.frontends import dsl

    module = dsl.run_model_file(ROOT / "examples" / f"{name}.py", f"cnncc_study_{name}")
    param = inspect.signature(module.model).parameters.get("size")
    return None if param is None else param.default


def study_sizes(spec: str, models: list[str], defaults: dict[str, int | None]) -> dict[str, int | None]:
    """{model: input size} from ``--size``: "" (STUDY_SIZES, else each model's default), "N" (N for
    every model that takes a size) or "name=N,..." (those models; the rest as for "")."""
    sizes = {m: STUDY_SIZES.get(m, defaults[m]) if defaults[m] is not None else None for m in models}
    spec = spec.strip()
    if not spec:
        return sizes
    if "=" not in spec:
        return {m: int(spec) if defaults[m] is not None else None for m in models}
    for item in filter(None, (i.strip() for i in spec.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in sizes:
            raise SystemExit(f"--size names '{name}', which is not among the models studied ({', '.join(models)})")
        if defaults[name] is None:
            raise SystemExit(f"--size: {name}'s model() takes no size")
        sizes[name] = int(value)
    return sizes


def main(argv=None) -> int:
    args = parse_args(argv)
    from cnncc.bench import configure_threads

    configure_threads()
    from cnncc.roofline import machine_roofline

    if args.refresh_roofline:
        print("measuring the roofline", file=sys.stderr, flush=True)
        machine_roofline(refresh=True)
    from cnncc.bench import bench_model
    from cnncc.frontends import dsl

    models = [m.strip() for m in args.models.split(",") if m.strip()] or example_names()
    unknown = sorted(set(models) - set(example_names()))
    if unknown:
        raise SystemExit(f"--models: no example named {', '.join(unknown)} (have: {', '.join(example_names())})")
    sizes = study_sizes(args.size, models, {m: default_size(m) for m in models})
    batches = [int(b) for b in args.batches.split(",")]
    opts = [f"opt{int(o)}" for o in args.opts.split(",")]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    targets = (["c", "cuda"] if has_gpu() else ["c"]) if args.targets == "auto" else args.targets.split(",")
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out.with_suffix(".json.gz")
    img_dir = Path(args.img_dir) if args.img_dir else out.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)

    results, started = [], time.time()
    total = len(models) * len(targets)
    isolate = not args.in_process and not args.worker_json and total > 1
    tmp = tempfile.TemporaryDirectory(prefix="cnncc-fusion-") if isolate else None
    for i, name in enumerate(models, 1):
        path = ROOT / "examples" / f"{name}.py"
        for target in targets:
            step = f"[{(i - 1) * len(targets) + targets.index(target) + 1}/{total}] {name} ({target})"
            if isolate:
                results.append(in_own_process(name, target, sizes[name], args, Path(tmp.name), step, started))
                continue
            print(f"{step}: loading", file=sys.stderr, flush=True)
            try:
                graph = dsl.load_model(path, **({"size": sizes[name]} if sizes[name] is not None else {}))
                compare = opts + (peers if target == "c" else [])
                r = bench_model(graph, target=target, batches=batches, compare=compare, repeat=args.repeat,
                                warmup=args.warmup, kernels=() if args.no_kernels else [o for o in ("opt0", "opt2")
                                                                                        if o in opts],
                                progress=lambda msg, s=step: print(f"{s}: {msg}  ({time.time() - started:.0f} s)",
                                                                   file=sys.stderr, flush=True))
                r["example"], r["size"] = name, sizes[name]
            except Exception as e:  # noqa: BLE001 - one failing model must not sink the study
                print(f"{step}: FAILED {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                r = {"example": name, "model": name, "target": target, "size": sizes[name],
                     "error": f"{type(e).__name__}: {e}"[:300]}
            results.append(r)
    if args.worker_json:
        Path(args.worker_json).write_text(json.dumps(results[0], default=str))
        return 0
    if tmp is not None:
        tmp.cleanup()
    gpu = json.loads(Path(args.gpu_json).read_text()) if args.gpu_json else None
    study = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python benchmarks/fusion_study.py"]
                                                                          + (argv if argv is not None else sys.argv[1:])),
             "models": models, "sizes": sizes, "batches": batches, "opts": opts, "peers": peers, "targets": targets,
             "repeat": args.repeat, "warmup": args.warmup, "quick": args.quick, "results": results, "gpu": gpu,
             "seconds": time.time() - started}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(study, separators=(",", ":"), default=str)
    if json_path.suffix == ".gz":
        json_path.write_bytes(gzip.compress(text.encode(), mtime=0))   # mtime 0: the same study, the same bytes
    else:
        json_path.write_text(text)
    write_report(study, out, img_dir, json_path)
    print(f"wrote {out}, {json_path} and plots in {img_dir} ({time.time() - started:.0f} s)", file=sys.stderr)
    return 0


def in_own_process(name: str, target: str, size: int | None, args, tmp: Path, step: str, started: float) -> dict:
    """One model on one target benched by this script in a fresh Python process; its result. Why:
    in one long process the later models ran slower on one engine or the other (a 2-core Zen 4
    EPYC, 2026-12-04: ShuffleNetV2 at batch 8, opt 2 45 ms as the study's sixth model vs 24 ms
    alone, and 14 of its fused groups 'slower' instead of 1) -- the state behind it (threads,
    allocator, caches of earlier modules) was not found, and targets.py had met the same."""
    out = tmp / f"{name}_{target}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--models", name, "--targets", target,
           "--batches", args.batches, "--opts", args.opts, "--peers", args.peers, "--repeat", str(args.repeat),
           "--warmup", str(args.warmup), "--worker-json", str(out)] + \
        (["--size", f"{name}={size}"] if size is not None else []) + (["--no-kernels"] if args.no_kernels else [])
    print(f"{step}: in a process of its own  ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode or not out.exists():
        print(f"{step}: FAILED: the benchmark process exited {proc.returncode}", file=sys.stderr, flush=True)
        return {"example": name, "model": name, "target": target, "size": size,
                "error": f"the benchmark process exited {proc.returncode}: {' '.join(cmd)}"[:300]}
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# the page
def _ok(run: dict, name: str) -> dict | None:
    e = run["engines"].get(name)
    return e if e and e.get("status") == "ok" else None


def _fmt_ms(e: dict | None) -> str:
    return f"{e['median_s'] * 1e3:.3f}" if e else "–"


def _ratio(a: dict | None, b: dict | None) -> str:
    """a's median over b's: how many times faster b is than a."""
    return f"{a['median_s'] / b['median_s']:.2f}x" if a and b else "–"


def _pct(v) -> str:
    return f"{v * 100:.0f}%" if v is not None else "–"


def _size(r: dict) -> str:
    """The input size a model ran at (studies before --size existed ran every model at its default;
    a model() without a ``size`` argument has one fixed input)."""
    if "size" not in r:
        return "default"
    return f"{r['size']}x{r['size']}" if r["size"] else "fixed"


def summary_rows(study: dict, target: str, batch: int) -> list[list[str]]:
    rows = []
    for r in study["results"]:
        if r.get("target") != target:
            continue
        if "error" in r:
            rows.append([r["example"], _size(r), "failed: " + r["error"][:80]] + [""] * 8)
            continue
        run = next((x for x in r["runs"] if x["batch"] == batch), None)
        if run is None:
            continue
        e0, e1, e2, ort = _ok(run, "opt0"), _ok(run, "opt1"), _ok(run, "opt2"), _ok(run, "onnxruntime")
        model = (run.get("fusion") or {}).get("model", {})
        bad = [n for n, e in run["engines"].items() if e.get("status") == "ok" and not e.get("matches_reference", True)]
        rows.append([r["example"], _size(r), _fmt_ms(e0), _fmt_ms(e1), _fmt_ms(e2), _fmt_ms(ort), _ratio(e0, e2),
                     _ratio(ort, e2), _pct(model.get("predicted_saving")), _pct(model.get("measured_saving")),
                     _check(bad, run)])
    return rows



def _check(bad: list[str], run: dict) -> str:
    if not bad:
        return "ok"
    sens = run.get("reference_sensitivity") or {}
    if sens.get("unstable"):   # cnncc.bench.harness.reference_sensitivity
        return (f"unstable reference: {', '.join(bad)} differ, and the reference itself moves "
                f"{sens['max_rel_err']:.0e} under {sens['input_noise']:.0e} input noise")
    return "MISMATCH: " + ", ".join(bad)

def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot_speedups(study: dict, target: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for r in study["results"]:
        if r.get("target") != target or "error" in r:
            continue
        for run in r["runs"]:
            e0 = _ok(run, "opt0")
            for name in ("opt1", "opt2", "onnxruntime"):
                e = _ok(run, name)
                if e0 and e:
                    series.setdefault((name, run["batch"]), {})[r["example"]] = e0["median_s"] / e["median_s"]
    if not series:
        return False
    models = sorted({m for s in series.values() for m in s})
    keys = sorted(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(models) * max(1, len(keys) / 3)), 4))
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        xs = [i + j * width for i, m in enumerate(models) if m in series[key]]
        ys = [series[key][m] for m in models if m in series[key]]
        ax.bar(xs, ys, width, label=f"{key[0]} b{key[1]}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(models))], models, rotation=30, ha="right")
    ax.set_ylabel("speedup over cnncc opt 0 (median)")
    ax.set_yscale("log")
    ax.set_title(f"Speedup per model, target {target} ({study['date']})")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def group_points(study: dict, target: str) -> list[dict]:
    pts = []
    for r in study["results"]:
        if r.get("target") != target or "error" in r:
            continue
        for run in r["runs"]:
            for g in (run.get("fusion") or {}).get("groups", []):
                if "speedup" in g:
                    pts.append({"model": r["example"], "batch": run["batch"], **g})
    return pts


def plot_groups(study: dict, target: str, path: Path, pred_path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = group_points(study, target)
    if not pts:
        return False
    pts.sort(key=lambda p: p["speedup"])
    title = f"Speedup per fused group, target {target}"
    if len(pts) > 60:   # hundreds of groups: keep the 30 worst and 30 best readable
        pts = pts[:30] + pts[-30:]
        title += " (30 worst, 30 best)"
    fig, ax = plt.subplots(figsize=(8, max(3, 0.18 * len(pts))))
    ax.barh(range(len(pts)), [p["speedup"] for p in pts],
            color=["tab:green" if p["speedup"] >= 1 else "tab:red" for p in pts])
    ax.set_yticks(range(len(pts)), [f"{p['model']} b{p['batch']}: {p['ops']}"[:60] for p in pts], fontsize=6)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("fused kernel speedup over its members run as opt-0 kernels")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    models = sorted({p["model"] for p in pts})
    for m in models:
        sel = [p for p in pts if p["model"] == m]
        ax.scatter([p["predicted_saving"] * 100 for p in sel], [p["measured_saving"] * 100 for p in sel], label=m, s=14)
    ax.plot([0, 100], [0, 100], color="gray", linewidth=0.8, linestyle="--")
    ax.set_xlabel("predicted bytes saved by fusing (%)")
    ax.set_ylabel("measured time saved (%)")
    ax.set_title("Traffic model vs measurement, per fused group")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(pred_path, dpi=120)
    plt.close(fig)
    return True


def plot_roofline(study: dict, target: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roof, pts = None, []
    for r in study["results"]:
        if r.get("target") != target or "error" in r:
            continue
        roof = roof or r.get("roofline")
        run = max(r["runs"], key=lambda x: x["batch"])
        for name, kt in run["kernels"].items():
            for k in kt["rows"]:
                if k["intensity"] > 0 and k["gflops"] > 0:
                    pts.append((name, k["intensity"], k.get("executed_gflops") or k["gflops"]))   # Winograd: the FLOPs it does
    if not roof or not pts:
        return False
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = np.logspace(-2, 3, 200)
    ax.plot(xs, np.minimum(roof["peak_gflops"], roof["bandwidth_gbs"] * xs), color="black", label="roofline")
    for name, marker in (("opt0", "x"), ("opt2", "o")):
        sel = [p for p in pts if p[0] == name]
        if sel:
            ax.scatter([p[1] for p in sel], [p[2] for p in sel], marker=marker, s=12, alpha=0.6,
                       label=f"{name} kernels")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte, traffic model)")
    ax.set_ylabel("GFLOP/s (measured)")
    ax.set_title(f"Kernels against the roofline ({roof['peak_gflops']:.0f} GFLOP/s, {roof['bandwidth_gbs']:.0f} GB/s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def gpu_section(gpu: dict | None) -> list[str]:
    if not gpu:
        return ["## GPU", "", "No GPU run is included in this page. `benchmarks/gpu_bench.py --json gpu.json` on a "
                "machine with an NVIDIA GPU, then `--gpu-json gpu.json` here, adds it."]
    lines = ["## GPU", "", f"{gpu.get('device', 'GPU')}, {gpu.get('date', '')}. CUDA events, median of "
             f"{gpu.get('repeat', '?')} runs; ms per batch.", ""]
    if gpu.get("skipped"):
        lines.append("Skipped: " + "; ".join(gpu["skipped"]))
        lines.append("")
    rows = []
    for r in gpu.get("results", []):
        e = r.get("engines", {})
        cell = lambda n: f"{e[n]['median_ms']:.3f}" if isinstance(e.get(n), dict) and "median_ms" in e[n] else "–"  # noqa: E731
        rows.append([r["model"], str(r["batch"]), cell("cnncc_opt0"), cell("cnncc_opt2"), cell("torch_eager"),
                     cell("torch_compile")])
    if rows:
        lines.append(md_table(["model", "batch", "cnncc opt0", "cnncc opt2", "PyTorch eager", "torch.compile"], rows))
    return lines


def write_report(study: dict, out: Path, img_dir: Path, json_path: Path) -> None:
    first = next((r for r in study["results"] if "error" not in r), {})
    roof = first.get("roofline")
    rel = lambda p: Path(p).resolve().relative_to(out.parent.resolve()).as_posix() \
        if Path(p).resolve().is_relative_to(out.parent.resolve()) else str(p)  # noqa: E731
    lines = [f"# Fusion study ({study['date']})", "",
             "Generated by `benchmarks/fusion_study.py`; rerun the same command to reproduce. Every figure is in "
             f"[{json_path.name}]({rel(json_path)}).", "",
             f"- Command: `{study['command']}`",
             *(["- **Smoke run (--quick)**: 3 rounds on a shared machine; the numbers are not a measurement"]
               if study.get("quick") else []),
             f"- Machine: {first.get('machine', 'unknown')}"]
    if roof:
        lines.append(f"- Roofline (measured by cnncc's probe): {roof['peak_gflops']:.0f} GFLOP/s float32 FMA peak, "
                     f"{roof['bandwidth_gbs']:.1f} GB/s triad bandwidth, {roof['threads']} threads")
    lines += [f"- Engines: cnncc {', '.join(study['opts'])} (target {', '.join(study['targets'])}), "
              f"peers {', '.join(study['peers']) or 'none'}; {study['warmup']} warm-up calls, {study['repeat']} "
              "interleaved rounds, median shown; every engine's output checked against cnncc.reference first"]
    lines += [f"- {n}" for n in first.get("notes", [])]
    lines.append(f"- Wall time of the study: {study['seconds'] / 60:.1f} min")
    lines.append("")
    lines.append("Columns: median latency in ms per batch; *opt2 vs opt0* is how many times faster opt 2 runs than "
                 "opt 0 (one kernel per operator); *opt2 vs ORT* is onnxruntime's time over opt 2's (above 1x: "
                 "cnncc faster); *predicted* is the traffic model's share of bytes fusion removes, *measured* the "
                 "share of time it removed.")
    for target in study["targets"]:
        for b in study["batches"]:
            lines += ["", f"## Target {target}, batch {b}", ""]
            lines.append(md_table(["model", "input", "opt0 ms", "opt1 ms", "opt2 ms", "onnxruntime ms", "opt2 vs opt0",
                                   "opt2 vs ORT", "predicted saving", "measured saving", "check"],
                                  summary_rows(study, target, b)))
        plots = []
        if plot_speedups(study, target, img_dir / f"fusion_speedup_{target}.png"):
            plots.append(("Speedup per model", f"fusion_speedup_{target}.png"))
        if plot_groups(study, target, img_dir / f"fusion_groups_{target}.png",
                       img_dir / f"fusion_predicted_{target}.png"):
            plots += [("Speedup per fused group", f"fusion_groups_{target}.png"),
                      ("Predicted vs measured saving", f"fusion_predicted_{target}.png")]
        if plot_roofline(study, target, img_dir / f"fusion_roofline_{target}.png"):
            plots.append(("Kernels on the roofline (largest batch)", f"fusion_roofline_{target}.png"))
        for title, name in plots:
            lines += ["", f"### {title} ({target})", "", f"![{title}]({rel(img_dir / name)})"]
        pts = group_points(study, target)
        if pts:
            from cnncc.bench.report import slower_count, speedup_text

            pts.sort(key=lambda p: -p["speedup"])
            lines += ["", f"### Fused groups ({target}): best and worst", ""]
            sel = pts[:8] + [p for p in pts[-8:] if p not in pts[:8]]
            lines.append(md_table(["model", "batch", "group", "ops", "predicted saving", "unfused ms", "fused ms",
                                   "speedup"],
                                  [[p["model"], str(p["batch"]), p["name"][:40], p["ops"], _pct(p["predicted_saving"]),
                                    f"{p['seconds_unfused'] * 1e3:.3f}", f"{p['seconds_fused'] * 1e3:.3f}",
                                    speedup_text(p)] for p in sel]))
            slower = [p for p in pts if p["speedup"] < 1]
            runs = [run for r in study["results"] if r.get("target") == target and "error" not in r for run in r["runs"]]
            again = [run for run in runs if "slower_first_pass" in (run.get("fusion") or {})]
            methods = [(run.get("kernels") or {}).get("opt2", {}).get("method") or "" for run in runs]
            lines += ["", f"{slower_count(pts)} (per-kernel times from the profiled forward; each group's "
                          "speedup is its members' medians over its own, its interval from the ratios of the "
                          "rounds, each round one forward of opt 0 and one of opt 2 in turn)."]
            beyond = [p for p in slower if p.get("verdict") == "slower"]
            if beyond:
                lines += ["", "Slower beyond noise:", "",
                          md_table(["model", "batch", "group", "ops", "unfused ms", "fused ms", "speedup"],
                                   [[p["model"], str(p["batch"]), p["name"][:40], p["ops"],
                                     f"{p['seconds_unfused'] * 1e3:.3f}", f"{p['seconds_fused'] * 1e3:.3f}",
                                     speedup_text(p)] for p in sorted(beyond, key=lambda p: p["speedup"])])]
            if any("handoff probe" in m for m in methods):
                split = sum("too few others" in m for m in methods)
                lines += ["", "Per-kernel profiles: each round after a cross-core handoff probe "
                              "(`cnncc/bench/handoff.py`); rounds timed while the two cores shared no cache are left out"
                              + (f" (kept in {split} of {len(runs)} model x batch runs: too few others)" if split
                                 else "") + ". "
                              f"{sum(len(run['fusion']['slower_first_pass']) for run in again)} groups in {len(again)} "
                              f"of {len(runs)} runs read slower after the first pass and were profiled again, as many "
                              "rounds pooled with the first; the table and count above are the pooled figures."]
    lines += [""] + gpu_section(study.get("gpu")) + [""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
