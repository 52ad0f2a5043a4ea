"""A saved module folder carries the graph it was compiled from (graph.json + graph.npz, hash-
checked, no pickles), so `cnncc summary OUT` and `cnncc inspect OUT` work on it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc.cli import main
from cnncc.errors import CnnccError, IntegrityError
from cnncc.frontends import dsl
from cnncc.graph_io import graph_from_json, graph_to_json

ROOT = Path(__file__).resolve().parent.parent


def _same_graph(a, b) -> None:
    assert [n.name for n in a] == [n.name for n in b] and a.outputs == b.outputs
    for n in a:
        m = b[n.name]
        assert (m.op, m.inputs, m.attrs, m.type) == (n.op, n.inputs, n.attrs, n.type), n.name
        assert sorted(m.params) == sorted(n.params)
        assert all(np.array_equal(m.params[k], n.params[k]) for k in n.params)


def test_graph_json_round_trip_keeps_attributes_and_symbols():
    g = dsl.load_model(ROOT / "examples" / "shufflenet_v2.py", size=32)
    doc, arrays = graph_to_json(g)
    back = graph_from_json(json.loads(json.dumps(doc)), arrays)
    _same_graph(g, back)
    x = dsl.input("x", (dsl.N, 3, dsl.sym("H"), dsl.sym("W")))
    s = dsl.reshape(dsl.pad(dsl.conv2d(x, 4, 3, padding=1), ((0, 0), (0, 0), (1, 2), (0, 1))), (0, 4, -1))
    g2 = dsl.graph(dsl.gather(s, [[0, 1]], axis=1), dsl.slice(s, [-1], [0], [1], [-1]))
    _same_graph(g2, graph_from_json(json.loads(json.dumps(graph_to_json(g2)[0])), graph_to_json(g2)[1]))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, shared_kernel_cache):
    x = dsl.input("image", (dsl.N, 4, 6, 6))
    a, b = dsl.split(x, 2)
    y = dsl.concat([a, dsl.relu(dsl.conv2d(b, 2, 3, padding=1, name="conv"), name="relu")], name="cat")
    g = dsl.graph(dsl.global_avg_pool(y, name="gap"), name="saved_model")
    out = tmp_path_factory.mktemp("saved") / "module"
    cnncc.compile(g, target="c").save(out)
    return g, out


def test_summary_and_inspect_take_a_saved_folder(saved, capsys):
    g, out = saved
    assert (out / "graph.json").is_file() and (out / "graph.npz").is_file()
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.strip() == g.summary().strip()
    assert main(["inspect", str(out), "--why-not"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"saved_model: {len(g)} nodes ->") and "eliminate_concat" in text
    _same_graph(g, cnncc.load_model(out))


def test_a_loaded_module_saves_its_graph_again(saved, tmp_path):
    g, out = saved
    mod = cnncc.load(out)
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(mod(x), cnncc.reference(g, x), rtol=1e-5, atol=1e-6)
    again = mod.save(tmp_path / "again")
    _same_graph(g, cnncc.load_model(again))


def test_edited_or_missing_graph_files_are_refused(saved, tmp_path):
    import shutil

    _, out = saved
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "graph.json").write_text((bad / "graph.json").read_text().replace('"relu"', '"sigmoid"'))
    with pytest.raises(IntegrityError, match="graph.json"):
        cnncc.load_model(bad)
    old = tmp_path / "old"                  # a folder from before graphs were saved
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for name in ("graph.json", "graph.npz"):
        (old / name).unlink()
        del manifest["files"][name]
    from cnncc.runtime.module import _manifest_hash

    manifest["manifest_sha256"] = _manifest_hash(manifest)
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CnnccError, match="saved without its graph"):
        cnncc.load_model(old)
    cnncc.load(old)                         # the module itself still loads
