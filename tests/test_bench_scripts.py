"""benchmarks/fusion_study.py, gpu_bench.py and overhead.py: they run, write what they promise,
and say what they skipped (structure only, never speed)."""
from __future__ import annotations

import importlib.util
import gzip
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_without_gpu_says_skipped(tmp_path, capsys):
    gpu_bench = _script("gpu_bench")
    if gpu_bench.gpu_name() is not None:
        pytest.skip("a GPU is present: the real run is benchmarks/gpu_bench.py itself")
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--json", str(out)]) == 0
    assert "skipped: no GPU" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["device"] is None and data["results"] == [] and data["skipped"]


def test_gpu_bench_layer_alone_is_the_fusion_pattern():
    g = _script("gpu_bench").conv_relu_pool()
    assert [n.op for n in g if n.op != "input"] == ["conv2d", "relu", "max_pool2d"]


def test_fusion_study_writes_page_json_and_plots(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    from cnncc import roofline

    monkeypatch.setenv("CNNCC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    fake = roofline.Roofline(100.0, 20.0, 2, "test cpu", "2000-01-01 00:00:00")
    monkeypatch.setattr(roofline, "machine_roofline", lambda threads=None, refresh=False: fake)
    study = _script("fusion_study")
    out = tmp_path / "docs" / "fusion.md"
    assert study.main(["--models", "lenet5", "--batches", "1", "--quick", "--targets", "c", "--out", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("# Fusion study (")
    assert "| lenet5 |" in page and "## Target c, batch 1" in page and "GOMP_SPINCOUNT" in page
    data = json.loads(gzip.decompress(out.with_suffix(".json.gz").read_bytes()))   # the default: gzipped
    assert "[fusion.json.gz](fusion.json.gz)" in page
    assert data["models"] == ["lenet5"] and data["results"][0]["runs"][0]["batch"] == 1
    for png in ("fusion_speedup_c.png", "fusion_groups_c.png", "fusion_predicted_c.png", "fusion_roofline_c.png"):
        assert (out.parent / "img" / png).stat().st_size > 1000, png
        assert f"img/{png}" in page


def test_fusion_study_benches_each_model_in_a_process_of_its_own(tmp_path, monkeypatch):
    """Several models: each is benched by the script itself in a fresh process (--worker-json),
    whose result JSON the study reads back; a process that fails becomes that model's error."""
    from cnncc import roofline

    monkeypatch.setenv("CNNCC_CACHE_DIR", str(tmp_path / "cache"))
    fake = roofline.Roofline(100.0, 20.0, 2, "test cpu", "2000-01-01 00:00:00")
    monkeypatch.setattr(roofline, "machine_roofline", lambda threads=None, refresh=False: fake)
    study = _script("fusion_study")
    # the worker half, for real: one model, its result written where the parent reads it
    worker = tmp_path / "lenet5_c.json"
    assert study.main(["--models", "lenet5", "--batches", "1", "--quick", "--opts", "0,2", "--peers", "",
                       "--targets", "c", "--no-kernels", "--worker-json", str(worker),
                       "--out", str(tmp_path / "unused.md")]) == 0
    result = json.loads(worker.read_text())
    assert result["example"] == "lenet5" and result["runs"][0]["batch"] == 1
    assert not (tmp_path / "unused.md").exists()
    # the parent half: the command it runs, and a failed process
    calls = []

    class Done:
        def __init__(self, rc):
            self.returncode = rc

    def fake_run(cmd, stdout=None):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--worker-json") + 1])
        if "alexnet" in cmd:
            return Done(1)
        out.write_text(json.dumps(dict(result, example=cmd[cmd.index("--models") + 1])))
        return Done(0)

    monkeypatch.setattr(study.subprocess, "run", fake_run)
    args = study.parse_args(["--models", "lenet5,alexnet", "--batches", "1,8", "--repeat", "4"])
    got = study.in_own_process("lenet5", "c", 32, args, tmp_path, "[1/2] lenet5 (c)", 0.0)
    assert got["example"] == "lenet5"
    cmd = calls[-1]
    for flag, value in (("--models", "lenet5"), ("--targets", "c"), ("--batches", "1,8"), ("--repeat", "4"),
                        ("--size", "lenet5=32")):
        assert cmd[cmd.index(flag) + 1] == value, flag
    failed = study.in_own_process("alexnet", "c", None, args, tmp_path, "[2/2] alexnet (c)", 0.0)
    assert "exited 1" in failed["error"] and "--size" not in calls[-1]


def test_overhead_benchmark_runs_and_writes_its_figures(tmp_path, monkeypatch, shared_kernel_cache):
    """A smoke run of benchmarks/overhead.py on the empty model: every engine checked and timed
    (structure only, never speed)."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    out = tmp_path / "overhead.json"
    args = ["--models", "empty", "--repeat", "1", "--warmup", "1", "--min-sample", "0.0001", "--json", str(out), "-q"]
    assert _script("overhead").main(args) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["model"] == "empty" and set(row["engines"]) == {"call", "call out=", "C entry", "onnxruntime"}
    assert row["kernels_s"] > 0 and all(e["median_s"] > 0 for e in row["engines"].values())


def test_fusion_study_sizes_modest_by_default_and_chosen_on_the_command_line():
    study = _script("fusion_study")
    models = ["deeplabv3_resnet50", "resnet152", "lenet5"]
    defaults = {"deeplabv3_resnet50": 512, "resnet152": 224, "lenet5": None}
    assert study.study_sizes("", models, defaults) == {"deeplabv3_resnet50": study.STUDY_SIZES["deeplabv3_resnet50"],
                                                       "resnet152": 224, "lenet5": None}
    assert study.study_sizes("64", models, defaults) == {"deeplabv3_resnet50": 64, "resnet152": 64, "lenet5": None}
    assert study.study_sizes("resnet152=96", models, defaults)["resnet152"] == 96
    with pytest.raises(SystemExit, match="not among the models"):
        study.study_sizes("vgg16=64", models, defaults)
    with pytest.raises(SystemExit, match="takes no size"):
        study.study_sizes("lenet5=64", models, defaults)
    assert study.default_size("inception_v4") == 299 and study.summary_rows(
        {"results": [{"example": "openpose", "target": "c", "size": 184, "error": "x"}]}, "c", 1)[0][:2] == [
        "openpose", "184x184"]


def test_fusion_study_page_counts_and_lists_the_groups_slower_beyond_noise(tmp_path):
    """The page says how many fused groups read slower and how many of those beyond noise, and
    lists the latter with their intervals; one within noise is marked but not listed there."""
    study = _script("fusion_study")

    def group(name, speedup, verdict, interval):
        return {"name": name, "ops": "conv2d+relu", "predicted_saving": 0.5, "seconds_unfused": 1e-3,
                "seconds_fused": 1e-3 / speedup, "speedup": speedup, "measured_saving": 1 - 1 / speedup,
                "rounds": 10, "verdict": verdict,
                "speedup_interval": interval}

    groups = [group("fast", 1.5, None, [1.4, 1.6]), group("noisy", 0.97, "within noise", [0.9, 1.05]),
              group("slow", 0.8, "slower", [0.75, 0.86])]
    run = {"batch": 1, "engines": {}, "kernels": {}, "fusion": {"groups": groups}}
    data = {"date": "2026-12-05", "command": "test", "opts": ["opt0", "opt2"], "targets": ["c"], "peers": [],
            "batches": [1], "warmup": 1, "repeat": 10, "seconds": 60.0,
            "results": [{"example": "m", "target": "c", "machine": "test", "runs": [run]}]}
    out = tmp_path / "fusion.md"
    (tmp_path / "img").mkdir()
    study.write_report(data, out, tmp_path / "img", tmp_path / "fusion.json.gz")
    page = out.read_text()
    assert "2 of 3 fused groups ran slower than their members apart (1 beyond noise" in page
    beyond = page[page.index("Slower beyond noise:"):]
    assert "| slow |" in beyond and "0.80x SLOWER (0.75-0.86)" in beyond and "| noisy |" not in beyond
    assert "0.97x SLOWER (within noise: 0.90-1.05)" in page
