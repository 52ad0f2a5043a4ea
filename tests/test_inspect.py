"""`cnncc inspect`: the pass table, --after, --why-not, --dot and the HTML report, which is
opened in headless Chromium (skipped when Chromium is not installed) and must log no errors."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sympy

import cnncc
from cnncc.cli import main
from cnncc.frontends.dsl import load_model
from cnncc.passes import PIPELINES
from cnncc.report_dot import has_dot

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_cli(capsys, *argv) -> str:
    assert main(["inspect", *map(str, argv)]) == 0
    return capsys.readouterr().out


def test_one_line_per_pass(capsys):
    out = run_cli(capsys, EXAMPLES / "lenet5.py")
    for name in PIPELINES[2]:
        assert re.search(rf"^{name}\s+\d+ -> \d+\s+nodes\s+[\d.]+ ms  \S", out, re.M), name
    assert re.search(r"^fuse\s+13 -> 7 .*2 conv groups, 2 dense groups", out, re.M)
    # the C kernels' scratch, planned with the arena (codegen/c_scratch.py), beside the memory plan:
    # LeNet-5's small kinds need none (codegen/c_small.py); AlexNet's blocked convs do
    assert re.search(r"^C kernel scratch: none \(no kernel needs any\)$", out, re.M)
    out = run_cli(capsys, EXAMPLES / "alexnet.py", "--size", "67")
    assert re.search(r"^C kernel scratch: [\d,]+ bytes at N=1 on \d+ threads, after the arena .*largest: ", out, re.M)


def test_after_prints_the_graph_as_it_stood(capsys):
    out = run_cli(capsys, EXAMPLES / "lenet5.py", "--after", "fuse")
    assert "fused [conv1 + relu1 + pool1]" in out and "fused [fc1 + relu3]" in out
    out = run_cli(capsys, EXAMPLES / "lenet5.py", "--after", "input")
    assert "fused" not in out and "max_pool2d" in out
    assert main(["inspect", str(EXAMPLES / "lenet5.py"), "--after", "nonsense"]) == 2


@pytest.mark.skipif(not (EXAMPLES / "resnet18.py").exists(), reason="examples/resnet18.py not there yet")
def test_why_not_lists_every_unfused_edge_of_resnet18(capsys):
    out = run_cli(capsys, EXAMPLES / "resnet18.py", "--size", "32", "--why-not")
    listed = dict(((m[1], m[2]), m[3]) for m in re.finditer(r"^  (\S+) -> (\S+): (.+)$", out, re.M))
    opt = cnncc.optimize(load_model(EXAMPLES / "resnet18.py", size=32))
    owner = {m.name: n.name for n in opt for m in (n.members or [n])}
    pre = opt.pass_report.snapshot("fold_batchnorm")
    unfused = {(s, n.name) for n in pre for s in n.inputs
               if pre[s].op not in ("input", "constant") and owner[s] != owner[n.name]}
    assert unfused and unfused == set(listed)
    assert all(listed.values())
    assert any(why.endswith("feeds 2 consumers: layer1_0_conv1, layer1_0_add") for why in listed.values())


def test_why_not_explains_segnet_indices_and_fast_rcnn_roi_pooling(capsys):
    """The pre-pool activation feeds both the pool and its indices, so it stays a tensor of its own;
    unpooling and RoI pooling are kernels of their own; Fast R-CNN's two heads share relu7."""
    out = run_cli(capsys, EXAMPLES / "segnet.py", "--size", "32", "--why-not")
    assert "enc1_2_relu -> pool1: enc1_2_relu feeds 2 consumers: pool1, pool1_indices" in out
    assert "pool1_indices -> unpool1: operator max_unpool2d has no fused form" in out
    out = run_cli(capsys, EXAMPLES / "fast_rcnn.py", "--size", "32", "--why-not")
    assert "relu5_3 -> roi_pool5: operator roi_pool has no fused form" in out
    assert "relu7 -> cls_score: relu7 feeds 2 consumers: cls_score, bbox_pred" in out


@pytest.mark.skipif(not (EXAMPLES / "resnet50.py").exists(), reason="examples/resnet50.py not there yet")
def test_resnet50_memory_peak_printed_beside_naive(capsys):
    out = run_cli(capsys, EXAMPLES / "resnet50.py", "--size", "32", "--batch", "4")
    arena = re.search(r"arena \(peak\) (\d+)\*N \(= ([\d,]+) at N=4\)", out)
    naive = re.search(r"naive sum\s+(\d+)\*N \(= ([\d,]+) at N=4\)", out)
    assert arena and naive and int(arena[1]) < int(naive[1])


def test_dot_files_per_snapshot_with_group_clusters(tmp_path, capsys):
    run_cli(capsys, EXAMPLES / "lenet5.py", "--dot", tmp_path)
    dots = sorted(tmp_path.glob("*.dot"))
    assert [p.stem for p in dots] == [f"{i:02d}_{n}" for i, n in enumerate(["input"] + PIPELINES[2])]
    fuse = f"{PIPELINES[2].index('fuse') + 1:02d}_fuse"
    after_fuse = (tmp_path / f"{fuse}.dot").read_text()
    assert after_fuse.count("subgraph cluster_") == 4 and "cluster_" not in (tmp_path / "00_input.dot").read_text()
    if has_dot():
        assert (tmp_path / f"{fuse}.svg").read_bytes().lstrip().startswith(b"<?xml")
        assert (tmp_path / f"{fuse}.png").read_bytes()[:4] == b"\x89PNG"


def _html(tmp_path, capsys, *extra) -> Path:
    path = tmp_path / "report.html"
    run_cli(capsys, EXAMPLES / "lenet5.py", "--html", path, *extra)
    return path


def test_html_report_has_every_section(tmp_path, capsys):
    text = _html(tmp_path, capsys).read_text()
    for section in ("pipeline", "graphs", "groups", "whynot", "memory", "kernels"):
        assert f'id="{section}"' in text
    assert "conv1_relu1_pool1" in text and "Arena (peak)" in text
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", text)  # self-contained
    compiled = "kernel conv1_relu1_pool1" in text
    assert compiled or "not compiled" in text
    text = _html(tmp_path, capsys, "--no-kernels").read_text()
    assert "not compiled (not requested)" in text


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

ERROR_HOOK = """<script>
  (function () {
    function note(msg) { document.documentElement.setAttribute('data-js-errors',
      (document.documentElement.getAttribute('data-js-errors') || '') + '|' + msg); }
    window.addEventListener('error', function (e) { note('error: ' + e.message); });
    var orig = console.error;
    console.error = function () { note('console.error: ' + Array.prototype.join.call(arguments, ' ')); orig.apply(console, arguments); };
  })();
</script>"""


def open_in_chromium(page: Path, tmp_path: Path) -> tuple[str, str]:
    """(DOM after load, browser log) of ``page`` with an error hook injected first in <head>."""
    hooked = tmp_path / f"hooked_{page.name}"
    hooked.write_text(page.read_text().replace("<head>", "<head>" + ERROR_HOOK, 1))
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom",
                           hooked.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def js_errors(dom: str) -> str | None:
    found = re.search(r'<html[^>]*\sdata-js-errors="([^"]*)"', dom)
    return found[1] if found else None


def console_messages(log: str) -> list[str]:
    return re.findall(r":CONSOLE[^\]]*\] (.*)", log)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_html_report_renders_in_headless_chromium_without_errors(tmp_path, capsys):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head></head><body><script>undefinedFunction();</script></body></html>")
    dom, log = open_in_chromium(bad, tmp_path)
    assert js_errors(dom) and console_messages(log)   # the detectors do detect

    dom, log = open_in_chromium(_html(tmp_path, capsys), tmp_path)
    assert js_errors(dom) is None, js_errors(dom)
    assert console_messages(log) == []
    assert "cnncc report: lenet5" in dom and "conv1_relu1_pool1" in dom
    if has_dot():
        assert dom.count("<svg") >= 3   # pass graphs and the memory plan are drawn


def test_report_text_views():
    from cnncc import report

    opt = cnncc.optimize(load_model(EXAMPLES / "lenet5.py"))
    table = report.groups_table(opt, batch=2)
    assert table.splitlines()[0].split()[:2] == ["Group", "Members"] and "conv1_relu1_pool1" in table
    saved = sum(int(sympy.sympify(n.group.bytes_unfused - n.group.bytes_fused).subs(cnncc.N, 2))
                for n in opt if n.op == "fused")
    assert saved > 0 and f"{saved:,}" not in ("0",)
    assert len(report.why_not_lines(opt)) == len(opt.fusion.why_not)
    assert "naive" in "\n".join(report.memory_lines(opt))
