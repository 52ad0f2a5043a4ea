"""`cnncc bench` and its library: structure of the JSON and the printed tables (never speed)."""
from __future__ import annotations

import json
import re
import sys

import pytest

from cnncc.cli import main

TINY = '''
from cnncc.frontends import dsl

def model():
    x = dsl.input("x", (dsl.N, 2, 8, 8))
    x = dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 3, 3, padding=1)), 2)
    return dsl.dense(dsl.flatten(x), 4)
'''


@pytest.fixture
def tiny_model(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return path


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """Keep the OpenMP settings and the roofline cache of these tests to themselves."""
    monkeypatch.setenv("CNNCC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    from cnncc import roofline

    fake = roofline.Roofline(100.0, 20.0, 2, "test cpu", "2000-01-01 00:00:00")
    monkeypatch.setattr(roofline, "machine_roofline", lambda threads=None, refresh=False: fake)
    return tmp_path


def test_bench_cli_writes_tables_and_json(tiny_model, isolated_env, capsys):
    pytest.importorskip("onnxruntime")
    out_json = isolated_env / "r.json"
    out_png = isolated_env / "r.png"
    rc = main(["bench", str(tiny_model), "--compare", "opt0,opt2,onnxruntime", "--batch", "1,2",
               "--repeat", "2", "--warmup", "1", "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    text = capsys.readouterr().out
    for needle in ("== batch 1: end to end ==", "== batch 2: end to end ==", "kernels of opt0", "kernels of opt2",
                   "GOMP_SPINCOUNT", "spinning off", "fusion, traffic model vs measurement", "roofline"):
        assert needle in text, needle
    data = json.loads(out_json.read_text())
    assert data["model"] == "tiny" and data["target"] == "c"
    assert [r["batch"] for r in data["runs"]] == [1, 2]
    for run in data["runs"]:
        assert set(run["engines"]) == {"opt0", "opt2", "onnxruntime"}
        for name, e in run["engines"].items():
            assert e["status"] == "ok", (name, e)
            assert e["min_s"] <= e["median_s"] <= e["max_s"]
            assert e["samples"] == 2
            assert e["matches_reference"], (name, e["max_rel_err"])
        # opt0 runs one kernel per operator, opt2 fuses conv+relu+pool into one
        opt0_rows, opt2_rows = run["kernels"]["opt0"]["rows"], run["kernels"]["opt2"]["rows"]
        assert {r["name"] for r in opt0_rows} >= {"conv1", "relu1", "pool1", "fc1"}
        assert len(opt2_rows) < len(opt0_rows)
        assert abs(sum(r["share"] for r in opt2_rows) - 1.0) < 1e-6
        assert re.fullmatch(r"runtime profiler, engines interleaved, median of the \d+ of (7|14) rounds where "
                            r"every engine ran within 10% of its fastest, each after a cross-core handoff "
                            r"probe: rounds timed while the cores shared no cache left out.*",
                            run["kernels"]["opt2"]["method"])
        for r in opt0_rows + opt2_rows:
            assert r["seconds"] > 0 and r["flops"] >= 0 and r["bytes"] > 0
            assert r["bound"] in ("memory", "compute", "cache", "above probe")   # roofline.position's labels
        model = run["fusion"]["model"]
        assert 0 < model["predicted_saving"] < 1
        assert model["speedup_opt2_vs_opt0"] > 0
        group = next(g for g in run["fusion"]["groups"] if g["ops"] == "conv2d+relu+max_pool2d")
        assert group["bytes_fused"] < group["bytes_unfused"]
        assert "speedup" in group
    assert out_png.stat().st_size > 1000


def test_missing_peer_is_skipped_not_faked(tiny_model, isolated_env, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # `import onnxruntime` now fails
    out_json = isolated_env / "r.json"
    rc = main(["bench", str(tiny_model), "--compare", "opt2,onnxruntime", "--repeat", "1", "--warmup", "0",
               "--no-kernels", "--json", str(out_json)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "skipped" in text
    run = json.loads(out_json.read_text())["runs"][0]
    assert run["engines"]["onnxruntime"]["status"] == "skipped"
    assert "median_s" not in run["engines"]["onnxruntime"]
    assert run["engines"]["opt2"]["status"] == "ok"
    assert run["kernels"] == {}


def test_unknown_engine_is_an_error(tiny_model, capsys):
    assert main(["bench", str(tiny_model), "--compare", "opt2,tvm"]) == 2
    assert "tvm" in capsys.readouterr().err


def test_kernel_profiles_alternate_between_modules_and_skip_targets_without_one():
    """opt 0 and opt 2 are profiled one forward each in turn, the order rotated (a slow minute hits
    both alike); a target without a profiler is left out."""
    from cnncc.bench import interleaved_kernel_times
    from cnncc.errors import CompileError

    calls = []

    class Fake:
        def __init__(self, name, times):
            self.name, self.times = name, times

        def profile(self, inputs, repeat):
            calls.append(self.name)
            if self.times is None:
                raise CompileError("per-kernel profiling is not available on target 'cuda'")
            return [(k, t.pop(0) if len(t) > 1 else t[0]) for k, t in self.times.items()]

    mods = {"opt0": Fake("opt0", {"a": [9.0, 1.0, 1.05, 1.02]}), "opt2": Fake("opt2", {"ab": [9.0, 5.0, 5.2, 5.1]}),
            "gpu": Fake("gpu", None)}
    got = interleaved_kernel_times(mods, [], rounds=3)
    assert got.times == {"opt0": {"a": 1.02}, "opt2": {"ab": 5.1}}       # medians, warm-up call dropped
    assert (got.rounds, got.kept) == (3, 3) and "3 of 3 rounds" in got.method
    assert calls == ["opt0", "opt2", "gpu"] + ["opt0", "opt2", "opt2", "opt0", "opt0", "opt2"]


def test_kernel_profiles_drop_the_rounds_a_slow_phase_hit():
    """A round in which either module ran more than 10% over its fastest is left out of the medians:
    a fused kernel timed in a slow phase is not put against its members timed outside one."""
    from cnncc.bench import interleaved_kernel_times, quiet_rounds

    class Fake:
        def __init__(self, rounds):
            self.rounds = rounds

        def profile(self, inputs, repeat):
            return self.rounds.pop(0)

    # round 2 (index 1 after the warm-up) is slow for opt2 only, round 4 for opt0 only
    opt0 = [[("a", 1.0), ("b", 1.0)]] + [[("a", t), ("b", 1.0)] for t in (1.0, 1.0, 1.02, 1.8, 1.01)]
    opt2 = [[("ab", 1.0)]] + [[("ab", t)] for t in (1.2, 3.0, 1.25, 1.21, 1.22)]
    got = interleaved_kernel_times({"opt0": Fake(opt0), "opt2": Fake(opt2)}, [], rounds=5)
    assert (got.rounds, got.kept) == (5, 3)
    assert got.times == {"opt0": {"a": 1.01, "b": 1.0}, "opt2": {"ab": 1.22}}     # rounds 1, 3 and 5
    # fewer quiet rounds than three: the three nearest their fastest
    assert quiet_rounds([{"x": 1.0}, {"x": 2.0}, {"x": 1.5}, {"x": 1.3}]) == [0, 2, 3]
    assert quiet_rounds([{"x": 1.0, "y": 1.0}, {"x": 1.0, "y": 1.5}], least=3) == [0, 1]
    assert quiet_rounds([]) == []


def test_kernel_profiles_leave_out_rounds_timed_while_the_cores_shared_no_cache(monkeypatch):
    """The handoff probe before each round: a round timed while thread 0 read the other thread's
    bytes 2.8x slower than its own is left out of the medians (a fused kernel that is the first
    to read them pays that move alone); the round waits for a shared cache first, up to a budget;
    where fewer than three rounds were timed shared, all count and the method says so. A second
    call pools its rounds with the first's."""
    from cnncc.bench import interleaved_kernel_times, kernels
    from cnncc.bench.kernels import reduce_rounds

    class Fake:
        def __init__(self, rounds):
            self.rounds = rounds

        def profile(self, inputs, repeat):
            return self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]

    ratios = iter([1.0, 2.8, 1.0, 2.8, 1.0])
    opt0 = [[("a", 1.0)]] + [[("a", t)] for t in (1.0, 1.05, 1.02, 1.06, 1.04)]
    opt2 = [[("ab", 1.0)]] + [[("ab", t)] for t in (0.9, 0.95, 0.92, 0.96, 0.91)]   # all within 10%
    got = interleaved_kernel_times({"opt0": Fake(opt0), "opt2": Fake(opt2)}, [], rounds=5,
                                   handoff=lambda: next(ratios), wait_s=0.0)
    assert got.ratios == [1.0, 2.8, 1.0, 2.8, 1.0] and (got.rounds, got.kept, got.split) == (5, 3, 0)
    assert got.times == {"opt0": {"a": 1.02}, "opt2": {"ab": 0.91}}          # rounds 1, 3 and 5
    assert "shared no cache left out" in got.method and "kept" not in got.method

    # the round waits (polling) until the probe reads shared again
    monkeypatch.setattr(kernels, "SPLIT_POLL_S", 0.001)
    ratios = iter([2.8, 2.7, 1.0, 1.0])
    got2 = interleaved_kernel_times({"x": Fake([[("k", 1.0)]])}, [], rounds=2, handoff=lambda: next(ratios))
    assert got2.ratios == [1.0, 1.0] and abs(got2.waited_s - 0.002) < 1e-9

    # pooled with an earlier pass: its rounds and ratios come first
    more = interleaved_kernel_times({"x": Fake([[("k", 2.0)]])}, [], rounds=1, handoff=lambda: 1.0, previous=got2)
    assert more.rounds == 3 and more.ratios == [1.0, 1.0, 1.0] and more.probed

    # every round split: all count, and the method says how many such were kept
    split = reduce_rounds([{"x": {"k": 1.0}}, {"x": {"k": 1.05}}], [2.8, 2.9])
    assert (split.kept, split.split) == (2, 2) and split.times == {"x": {"k": 1.025}}
    assert "(2 kept: too few others)" in split.method


def test_the_handoff_probe_times_both_reads():
    from cnncc.bench.handoff import handoff_ratio, handoff_seconds

    local, remote = handoff_seconds(reps=2)
    assert 0 < local < 1 and 0 < remote < 1
    assert handoff_ratio(reps=2) > 0


def test_the_handoff_ratio_counts_against_the_machines_usual(monkeypatch):
    """A machine whose cores never share a cache (a Xeon VM: 4.1-4.8 throughout) is in its usual
    state, not split: the ratio is read over the lowest seen, so only a change leaves rounds out."""
    from cnncc.bench import handoff

    reads = iter([4.3, 4.1, 4.6, 2.5, 11.5, 4.4])
    monkeypatch.setattr(handoff, "handoff_ratio", lambda reps=0: next(reads))
    monkeypatch.setattr(handoff, "_seen", [])
    handoff.calibrate(probes=2)
    got = [handoff.relative_handoff() for _ in range(4)]
    assert all(r <= handoff.SPLIT_RATIO for r in got[:2] + got[3:]) and got[2] > handoff.SPLIT_RATIO
    assert abs(got[0] - 4.6 / 4.3) < 1e-12       # the median of 4.3, 4.1, 4.6; a low 2.5 moves nothing


def test_a_group_read_slower_is_profiled_again_before_the_verdict(tiny_model, isolated_env, monkeypatch):
    """One pass's medians put a fused group under its members: as many rounds again, pooled, and
    the verdict is taken from all of them; the first pass's slower groups stay in the JSON."""
    from cnncc.bench import harness
    from cnncc.frontends import dsl

    real, calls = harness.fusion_summary, []

    def first_pass_slow(*args):
        out = real(*args)
        calls.append(1)
        if len(calls) == 1:
            for g in out["groups"]:
                g["speedup"] = 0.5
        return out

    monkeypatch.setattr(harness, "fusion_summary", first_pass_slow)
    graph = dsl.load_model(tiny_model)
    run = harness.bench_model(graph, batches=[1], compare=("opt0", "opt2"), repeat=1, warmup=0)["runs"][0]
    assert len(calls) == 2
    groups = [g["name"] for g in run["fusion"]["groups"] if "speedup" in g]
    assert groups and run["fusion"]["slower_first_pass"] == groups
    assert f"of {2 * harness.PROFILE_ROUNDS} rounds" in run["kernels"]["opt2"]["method"]


def test_interleaving_rotates_order():
    from cnncc.bench import interleaved

    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    samples = interleaved(fns, repeat=3, warmup=0, min_sample_s=0.0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    timed = calls[3:]  # the first three calls calibrate
    assert timed[0:3] == ["a", "b", "c"] and timed[3:6] == ["b", "c", "a"] and timed[6:9] == ["c", "a", "b"]


def test_roofline_probe_measures_and_caches(monkeypatch, tmp_path):
    from cnncc import roofline

    monkeypatch.setenv("CNNCC_CACHE_DIR", str(tmp_path))
    calls = []
    real = roofline.measure
    monkeypatch.setattr(roofline, "measure", lambda threads=None: calls.append(1) or real(threads, quick=True))
    first = roofline.machine_roofline(1)
    second = roofline.machine_roofline(1)
    assert len(calls) == 1, "the second call must come from the cache"
    assert first == second
    assert first.peak_gflops > 0.5 and first.bandwidth_gbs > 0.1
    assert list(tmp_path.glob("roofline-*.json"))
    monkeypatch.setattr(roofline, "MAX_AGE_S", -1)     # an entry past its age is measured again
    roofline.machine_roofline(1)
    assert len(calls) == 2
    pos = first.position(first.peak_gflops / 2, first.bandwidth_gbs / 1000)
    assert pos["bound"] == "compute" and 0.4 < pos["fraction"] < 0.6


def test_roofline_probe_fma_loop_keeps_its_operands_in_registers(tmp_path):
    """The probe's hot loop must be register-only FMAs: with a memory operand per FMA (the
    multiplier left on the stack) it read 0.6-0.7x of a hand-written loop and bench printed
    kernels at "154% of compute roof"."""
    import re
    import subprocess

    from cnncc import roofline
    from cnncc.runtime import toolchain

    src = tmp_path / "probe.c"
    src.write_text(roofline.PROBE_C)
    flags = [f for f in toolchain.FLAGS if f not in ("-shared", "-fPIC")]   # built like the C kernels
    subprocess.run(["cc", *flags, "-S", str(src), "-o", str(tmp_path / "probe.s")], check=True)
    asm = (tmp_path / "probe.s").read_text()
    body = asm.split("cnncc_fma_gflops._omp_fn.0:", 1)[1].split(".cfi_endproc", 1)[0]   # the parallel region
    fmas = [ln for ln in body.splitlines() if re.search(r"\bvfn?madd\d*ps\b", ln)]
    assert len(fmas) >= 12, fmas
    assert all("(" not in ln for ln in fmas), [ln for ln in fmas if "(" in ln]


def test_roofline_position_never_above_one_roof():
    from cnncc.roofline import Roofline

    roof = Roofline(100.0, 20.0, 2, "test cpu", "2000-01-01 00:00:00")   # ridge 5 FLOP/B
    assert roof.position(50.0, 1.0) == {"intensity": 50.0, "bound": "compute", "fraction": 0.5}
    over = roof.position(150.0, 1.0)   # faster than the probe's FMA peak
    assert over["bound"] == "above probe" and over["fraction"] == 1.0
    cached = roof.position(40.0, 40.0)  # 1 FLOP/B at twice the DRAM bandwidth: from cache
    assert cached["bound"] == "cache" and cached["fraction"] == 1.0
    assert roof.position(10.0, 10.0) == {"intensity": 1.0, "bound": "memory", "fraction": 0.5}


def test_reference_sensitivity_tells_an_argmax_flip_from_a_wrong_kernel():
    """SegNet at 224x224 misses the reference on every engine: its unpooling puts values where
    an argmax was, and 1e-6 of input noise moves the reference itself that far. The probe must
    say so for such a graph and not for a continuous one (a kernel mismatch there stays a MISMATCH)."""
    import numpy as np

    from cnncc.bench.harness import reference_sensitivity
    from cnncc.bench.report import _mismatch
    from cnncc.frontends import dsl
    import cnncc

    x = dsl.input("x", (dsl.N, 1, 8, 8))
    p, i = dsl.max_pool2d_with_indices(x, 2, stride=2)
    argmaxy = dsl.graph(dsl.max_unpool2d(p, i, 2, stride=2), name="argmaxy")
    smooth = dsl.graph(dsl.relu(dsl.input("x", (dsl.N, 1, 8, 8))), name="smooth")
    feeds = {"x": np.ones((1, 1, 8, 8), np.float32)}     # every window a tie: index 0 in the reference
    for g, unstable in ((argmaxy, True), (smooth, False)):
        want = np.asarray(cnncc.reference(g, feeds))
        sens = reference_sensitivity(g, feeds, want)
        assert sens["unstable"] is unstable, (g.name, sens)
        label = _mismatch(0.5, {"reference_sensitivity": sens})
        assert ("MISMATCH" in label) is (not unstable), label


def test_a_winograd_kernel_sits_on_the_roof_by_the_flops_it_does():
    """Credited a direct convolution's FLOPs, a Winograd F(4x4) kernel can run 'above the FMA
    peak'; its roofline place comes from its GEMMs' multiply-adds (36 per 16 outputs per input
    channel, against 144), and the table says which algorithm ran."""
    import cnncc
    from cnncc import roofline
    from cnncc.bench.kernels import _roof_text, kernel_table
    from cnncc.cost import node_work
    from cnncc.frontends import dsl
    from cnncc.runtime.cpu import host_target

    x = dsl.input("x", (dsl.N, 64, 32, 32))
    c = dsl.conv2d(x, 64, 3, padding=1, name="w")
    g = dsl.graph(dsl.conv2d(dsl.relu(c, name="r"), 64, 3, stride=2, padding=1, name="d"), name="wino")
    opt = cnncc.optimize(g, layout_vector=host_target().vector_floats)    # as the bench compiles it: blocked
    kernels = {n.name: n for n in opt if n.op in ("fused", "conv2d")}
    roof = roofline.Roofline(100.0, 20.0, 2, "test cpu", "2000-01-01 00:00:00")
    rows = [(node, node_work(opt, node, 1)[0] / 200e9) for node in kernels.values()]   # credited 200 GFLOP/s
    table = {r.name: r for r in kernel_table(rows, opt, 1, roof)}
    wino, direct = table["w_r"], table["d"]
    assert wino.algorithm == "winograd F(4x4,3x3)" and direct.algorithm == ""
    assert abs(wino.executed_gflops - 200 * 36 / 144) < 1e-6 and abs(wino.roof_fraction - 0.5) < 1e-6
    # the stride-2 direct kernel reads its blocked input in place and leaves out the taps on the
    # zero border: row and column 0 lose one of their 3 taps, (47/48)^2 of the credited FLOPs
    assert abs(direct.executed_gflops - 200 * (47 / 48) ** 2) < 1e-6
    assert direct.bound == "above probe" and direct.roof_fraction == 1.0
    assert "winograd F(4x4,3x3): its GEMMs' FLOPs" in _roof_text(vars(wino))
    slow = kernel_table([(kernels["d"], node_work(opt, kernels["d"], 1)[0] / 90e9)], opt, 1, roof)[0]
    assert abs(slow.roof_fraction - 0.9 * (47 / 48) ** 2) < 1e-6
    assert _roof_text(vars(slow)) == "86% of compute roof (by the taps inside the input)"


def test_a_direct_kernel_is_credited_the_taps_it_does():
    """c_conv.executed_fraction: the row-tile kernel skips the zero border's taps (3x3 on 7x7:
    19 of 21 per axis), a kernel reading a bordered copy multiplies them by zero."""
    import cnncc
    from cnncc.codegen import c_conv
    from cnncc.codegen.lower import lower_program
    from cnncc.codegen.target import CTarget
    from cnncc.frontends import dsl

    x = dsl.input("x", (dsl.N, 32, 7, 7))
    g = dsl.graph(dsl.conv2d(dsl.relu(dsl.conv2d(x, 32, 3, padding=1, name="a")), 32, 3, padding=1, name="b"),
                  name="small")
    target = CTarget("avx512", 16, 32, threads=2)
    specs = {s.name: s for s in lower_program(cnncc.optimize(g, layout_vector=16)).kernels if s.family == "conv"}
    shares = {}
    for name, spec in specs.items():
        b = c_conv.plan(spec, target, "direct")
        shares[b.kind] = c_conv.executed_fraction(spec, b)
    assert abs(shares["rowtiles"] - (19 / 21) ** 2) < 1e-12, shares
    assert shares.get("channels") == 1.0, shares      # "a" reads the NCHW input through a bordered copy


def test_report_marks_fused_groups_slower_than_their_members():
    from cnncc.bench.report import format_report

    groups = [{"name": "fast_group", "ops": "conv2d+relu", "predicted_saving": 0.5, "seconds_unfused": 2e-3,
               "seconds_fused": 1e-3, "speedup": 2.0},
              {"name": "slow_group", "ops": "conv2d+avg_pool2d", "predicted_saving": 0.4, "seconds_unfused": 1e-3,
               "seconds_fused": 2e-3, "speedup": 0.5}]
    result = {"model": "m", "target": "c", "date": "2026-12-03", "machine": "test", "notes": [], "warmup": 1,
              "repeat": 1, "runs": [{"batch": 1, "engines": {}, "kernels": {},
                                     "fusion": {"model": {"bytes_unfused": 2e6, "bytes_fused": 1e6,
                                                          "predicted_saving": 0.5}, "groups": groups}}]}
    text = format_report(result)
    assert "0.50x SLOWER" in text and "2.00x SLOWER" not in text
    assert "1 of 2 fused groups ran slower than their members apart, marked SLOWER: slow_group" in text


def test_the_median_interval_is_the_sign_tests():
    """The k-th smallest and largest of n values with P(Binomial(n, 1/2) < k) <= 2.5%: ranks 2 and 9
    of 10, 6 and 15 of 20; none below 6 values; one wild value does not move it."""
    from cnncc.bench.kernels import median_interval

    assert median_interval(list(range(10, 0, -1))) == (2, 9)
    assert median_interval(list(range(1, 21))) == (6, 15)
    assert median_interval([1.0] * 6) == (1.0, 1.0) and median_interval([1.0] * 5) is None
    assert median_interval([0.9, 0.95, 0.97, 0.98, 0.99, 0.96, 0.94, 0.93, 0.92, 50.0]) == (0.92, 0.99)


def test_a_fused_group_is_called_slower_only_beyond_the_noise_of_its_rounds():
    """Per-round ratios (opt 0's members summed over opt 2's kernel, the same round): a group whose
    ratios all sit under 1.0 is "slower"; one whose median does but whose rounds reach over 1.0 is
    "within noise"; the report and its count say which."""
    from cnncc.bench.kernels import fusion_summary
    from cnncc.bench.report import slower_count, speedup_text
    from cnncc.frontends import dsl
    from cnncc.passes import optimize

    x = dsl.input("x", (dsl.N, 4, 8, 8))
    graph = dsl.graph(dsl.relu(dsl.conv2d(x, 4, 3, padding=1, name="c1"), name="r1"), name="g")
    opt2 = optimize(graph, opt_level=2)
    (group,) = [n for n in opt2 if n.op == "fused"]
    members = [m.name for m in group.members]
    conv, relu = members
    rows0 = [{"name": conv, "members": [conv], "seconds": 0.9}, {"name": relu, "members": [relu], "seconds": 0.1}]
    rows2 = [{"name": group.name, "members": members, "seconds": 1.0}]
    kernels = {"opt0": {"rows": rows0}, "opt2": {"rows": rows2}}

    def summary(fused_per_round):
        rounds = {"opt0": [{conv: 0.9, relu: 0.1}] * len(fused_per_round),
                  "opt2": [{group.name: t} for t in fused_per_round]}
        rows2[0]["seconds"] = sorted(fused_per_round)[len(fused_per_round) // 2]
        return fusion_summary(opt2, 1, {}, kernels, rounds)["groups"][0]

    slow = summary([1.05, 1.06, 1.04, 1.07, 1.05, 1.08, 1.06, 1.05, 1.04, 1.06])
    assert slow["speedup"] < 1 and slow["verdict"] == "slower" and slow["slower_rounds"] == 10
    assert speedup_text(slow).startswith(f"{slow['speedup']:.2f}x SLOWER (0.93-0.96)")
    noisy = summary([1.05, 0.97, 1.04, 1.07, 0.98, 1.08, 1.06, 0.99, 1.04, 1.06])
    assert noisy["verdict"] == "within noise" and noisy["speedup_interval"][1] > 1.0
    assert "SLOWER (within noise: " in speedup_text(noisy)
    few = summary([1.05, 1.06, 1.04])
    assert few["verdict"] == "too few rounds" and "3 rounds: too few" in speedup_text(few)
    fast = summary([0.9] * 8)
    assert "verdict" not in fast and speedup_text(fast) == f"{fast['speedup']:.2f}x"
    assert slower_count([slow, noisy, fast]).startswith(
        "2 of 3 fused groups ran slower than their members apart (1 beyond noise")


def test_bench_forces_the_conv_algorithm(tiny_model, isolated_env, capsys):
    """--conv-algorithm reaches compile() (the note and the JSON say which); a bad one is refused."""
    out_json = isolated_env / "d.json"
    assert main(["bench", str(tiny_model), "--compare", "opt2", "--repeat", "1", "--warmup", "0",
                 "--no-kernels", "--conv-algorithm", "direct", "--json", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert data["conv_algorithm"] == "direct"
    assert "conv algorithm direct" in data["runs"][0]["engines"]["opt2"]["note"]
    capsys.readouterr()
    main(["bench", str(tiny_model), "--compare", "opt2", "--repeat", "1", "--no-kernels",
          "--conv-algorithm", "fastest"])
    e = capsys.readouterr()
    assert "fastest" in e.out + e.err
