"""The text report and the plot of a bench_model result."""
from __future__ import annotations

from ..summary import text_table as _table
from .kernels import INTERVAL_LEVEL, _roof_text


def _mismatch(err: float, run: dict) -> str:
    """A missed reference, and whether the reference itself is stable enough to call it wrong."""
    sens = run.get("reference_sensitivity") or {}
    if sens.get("unstable"):
        return (f"differs ({err:.1e}), but so does the reference under {sens['input_noise']:.0e} input noise "
                f"({sens['max_rel_err']:.1e}): an argmax-like choice flips, not a wrong kernel")
    return f"MISMATCH ({err:.1e})"


def speedup_text(group: dict) -> str:
    """A fused group's speedup over its members run apart; under 1x it is marked SLOWER, with
    what its per-round speedups say (bench/kernels.py ``fusion_summary``): "0.97x SLOWER (within
    noise: 0.91-1.04)", "0.85x SLOWER (0.80-0.90)"."""
    if "speedup" not in group:
        return ""
    text = f"{group['speedup']:.2f}x"
    if group["speedup"] >= 1.0:
        return text
    text += " SLOWER"
    iv, verdict = group.get("speedup_interval"), group.get("verdict")
    if verdict == "too few rounds":
        return text + f" ({group.get('rounds', 0)} rounds: too few to tell from noise)"
    if iv:
        return text + (" (within noise: " if verdict == "within noise" else " (") + f"{iv[0]:.2f}-{iv[1]:.2f})"
    return text


def slower_count(groups: list[dict]) -> str:
    """How many groups read slower and how many of those beyond noise: "3 of 40 fused groups ran
    slower than their members apart (1 beyond noise: ...)"."""
    slower = [g for g in groups if g.get("speedup", 1.0) < 1.0]
    text = f"{len(slower)} of {len(groups)} fused groups ran slower than their members apart"
    if any("verdict" in g for g in slower):
        beyond = sum(g.get("verdict") == "slower" for g in slower)
        text += (f" ({beyond} beyond noise: the {INTERVAL_LEVEL * 100:.0f}% interval of the median of "
                 "their per-round speedups lies under 1.0)")
    return text


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
            check = "" if err is None else (f"ok ({err:.1e})" if e["matches_reference"] else _mismatch(err, run))
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
            from ..gpu_predict import format_prediction

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
                                    speedup_text(g)] for g in groups[:max_kernels]]))
                slower = [g for g in groups if g.get("speedup", 1.0) < 1.0]
                if slower:
                    out.append(f"{slower_count(groups)}, marked SLOWER: {', '.join(g['name'] for g in slower[:8])}"
                               f"{' ...' if len(slower) > 8 else ''}")
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
