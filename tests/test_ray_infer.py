"""cnncc infer / cnncc.ray on a local Ray (2 CPUs, started once for this file): outputs identical to
calling the module, each exactly once, even when a worker process is killed mid-run; bad inputs
named by path (stop and skip); a tampered module refused on the driver before any worker starts;
a CPU lacking the library's ISA rebuilds from the shipped source; the missing-Ray message."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import cnncc  # noqa: E402
from cnncc import cli  # noqa: E402
from cnncc.errors import CnnccError, IntegrityError  # noqa: E402
from cnncc.ray import ModuleWorker, ShardWorker, pack_module, read_outputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _ray_children() -> list[tuple[int, str]]:
    """Processes Ray started under this one (raylet, gcs_server, workers), from /proc."""
    me, found = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and ("ray" in cmd or "gcs_server" in cmd):
            found.append((int(d.name), cmd[:80]))
    return found


@pytest.fixture(scope="module")
def local_ray(shared_kernel_cache):
    """One local Ray for the whole file (workers inherit CNNCC_CACHE_DIR); nothing left behind."""
    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # KillOnce travels to the workers
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()
    for _ in range(100):
        if not _ray_children():
            break
        time.sleep(0.1)
    assert not _ray_children(), f"Ray left processes behind: {_ray_children()}"


@pytest.fixture(scope="module")
def lenet(tmp_path_factory, shared_kernel_cache):
    """LeNet-5 compiled once and saved; (folder, loaded module)."""
    d = tmp_path_factory.mktemp("ray") / "lenet"
    cnncc.compile(cnncc.load_model(ROOT / "examples" / "lenet5.py"), target="c").save(d)
    return d, cnncc.load(d)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """64 random (1, 32, 32) inputs, one .npy each: {path: array}."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(15)
    xs = {}
    for i in range(64):
        path = d / f"x{i:02d}.npy"
        xs[str(path)] = rng.standard_normal((1, 32, 32)).astype(np.float32)
        np.save(path, xs[str(path)])
    return d, xs


def _direct(mod, xs: dict, batch: int) -> dict[str, np.ndarray]:
    """The module called directly on the same shards (sorted paths, `batch` per call)."""
    paths = sorted(xs)
    out = {}
    for s in range(0, len(paths), batch):
        y = mod(np.stack([xs[p] for p in paths[s:s + batch]]))
        out.update(zip(paths[s:s + batch], y))
    return out


def _assert_each_once_and_identical(out_dir, want: dict):
    got = read_outputs(out_dir)
    ids = got["id"].tolist()
    assert sorted(ids) == sorted(want), "every input exactly once"
    assert len(ids) == len(set(ids)) == len(want)
    for ident, y in zip(ids, got["fc3"]):
        np.testing.assert_array_equal(y, want[ident], err_msg=ident)


def test_cli_64_inputs_on_two_workers_match_the_module(local_ray, lenet, inputs, tmp_path, capsys):
    folder, mod = lenet
    d, xs = inputs
    out = tmp_path / "out"
    rc = cli.main(["infer", str(folder), "--input", str(d), "--output", str(out), "--workers", "2",
                   "--batch-size", "8", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert "64 predictions in 8 shards" in capsys.readouterr().out
    _assert_each_once_and_identical(out, _direct(mod, xs, 8))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == 64 and summary["skipped"] == [] and summary["workers"] == 2
    assert not list(out.glob(".*tmp*")), "no temporary files left"


class KillOnce(ShardWorker):
    """Writes its first shard, then SIGKILLs its own process before returning (once per run, by a
    marker file): Ray restarts the actor and retries the batch, which rewrites the same shard."""

    marker = ""

    def __call__(self, batch):
        result = super().__call__(batch)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return result
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def test_killed_worker_loses_and_duplicates_nothing(local_ray, lenet, inputs, tmp_path):
    folder, mod = lenet
    d, xs = inputs
    KillOnce.marker = str(tmp_path / "killed")
    out = tmp_path / "out"
    summary = cnncc.infer(folder, d, output_dir=out, workers=2, batch_size=8, worker=KillOnce)
    status = Path(f"/proc/{int(Path(KillOnce.marker).read_text())}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()   # the worker process really died
    assert summary["items"] == 64 and summary["shards"] == 8
    _assert_each_once_and_identical(out, _direct(mod, xs, 8))


@pytest.fixture
def bad_inputs(tmp_path, inputs):
    d, xs = inputs
    src = tmp_path / "bad_inputs"
    src.mkdir()
    good = sorted(xs)[:6]
    for p in good:
        np.save(src / Path(p).name, xs[p])
    (src / "x90_corrupt.npy").write_bytes(b"\x93NUMPY garbage, not an array")
    np.save(src / "x91_shape.npy", np.zeros((3, 32, 32), np.float32))
    return src, {str(src / Path(p).name): xs[p] for p in good}


def test_bad_input_stops_the_run_naming_its_path(local_ray, lenet, bad_inputs, tmp_path, capsys):
    folder, _ = lenet
    src, _ = bad_inputs
    rc = cli.main(["infer", str(folder), "--input", str(src), "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(src / "x90_corrupt.npy") in err and "cannot read it" in err


def test_bad_inputs_skipped_and_listed_in_the_summary(local_ray, lenet, bad_inputs, tmp_path, capsys):
    folder, mod = lenet
    src, good = bad_inputs
    out = tmp_path / "out"
    rc = cli.main(["infer", str(folder), "--input", str(src), "--output", str(out), "--on-error", "skip",
                   "--format", "parquet", "--batch-size", "3", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    skipped = {s["input"]: s["error"] for s in summary["skipped"]}
    assert set(skipped) == {str(src / "x90_corrupt.npy"), str(src / "x91_shape.npy")}
    assert "shape (3, 32, 32)" in skipped[str(src / "x91_shape.npy")]
    assert summary["items"] == 6
    got = read_outputs(out)
    assert sorted(got["id"].tolist()) == sorted(good)
    for ident, y in zip(got["id"], got["fc3"]):
        np.testing.assert_allclose(y, mod(good[ident][None])[0], rtol=1e-5, atol=1e-6)


def test_lazy_dataset_over_parquet_rows(local_ray, lenet, inputs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, mod = lenet
    _, xs = inputs
    x = np.stack([xs[p] for p in sorted(xs)[:16]])
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"image": [r.ravel().tolist() for r in x]}), path, row_group_size=5)
    ds = cnncc.infer(mod, path, batch_size=4, workers=1)
    assert isinstance(ds, ray.data.Dataset)
    rows = ds.take_all()
    assert sorted(r["id"] for r in rows) == sorted(f"{path}[{i}]" for i in range(16))
    want = mod(x)
    for r in rows:
        i = int(r["id"].rsplit("[", 1)[1][:-1])
        np.testing.assert_allclose(r["fc3"], want[i], rtol=1e-5, atol=1e-6)


def test_module_worker_in_a_users_own_map_batches(local_ray, lenet, inputs):
    folder, mod = lenet
    _, xs = inputs
    x = np.stack([xs[p] for p in sorted(xs)[:10]])
    ds = ray.data.from_items([{"id": f"item{i}", "x": x[i]} for i in range(10)])
    ds = ds.map_batches(ModuleWorker, fn_constructor_kwargs={"module": ray.put(pack_module(folder))},
                        compute=ray.data.ActorPoolStrategy(size=1), batch_size=4, batch_format="numpy")
    rows = sorted(ds.take_all(), key=lambda r: int(r["id"][4:]))
    assert [r["id"] for r in rows] == [f"item{i}" for i in range(10)] and set(rows[0]) == {"id", "fc3"}
    np.testing.assert_allclose(np.stack([r["fc3"] for r in rows]), mod(x), rtol=1e-5, atol=1e-6)


def test_tampered_module_is_refused_on_the_driver_before_any_worker(lenet, inputs, tmp_path, monkeypatch, capsys):
    import shutil

    import cnncc.ray as cray

    folder, _ = lenet
    d, _ = inputs
    bad = tmp_path / "tampered"
    shutil.copytree(folder, bad)
    blob = bytearray((bad / "weights.npz").read_bytes())
    blob[len(blob) // 2] ^= 1
    (bad / "weights.npz").write_bytes(bytes(blob))

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for a tampered module")
    monkeypatch.setattr(cray, "_init_ray", no_ray)
    rc = cli.main(["infer", str(bad), "--input", str(d), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad / "weights.npz") in err and "sha256" in err
    with pytest.raises(IntegrityError, match="weights.npz"):
        pack_module(bad)


def test_without_ray_says_how_to_install(lenet, inputs, tmp_path, monkeypatch, capsys):
    folder, _ = lenet
    d, _ = inputs
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    rc = cli.main(["infer", str(folder), "--input", str(d), "--output", str(tmp_path / "out")])
    assert rc == 2 and 'pip install -e ".[distributed]"' in capsys.readouterr().err
    with pytest.raises(CnnccError, match=r"\.\[distributed\]"):
        cnncc.infer(folder, d)


def test_worker_on_a_cpu_lacking_the_isa_rebuilds_from_the_shipped_source(lenet, tmp_path, monkeypatch, caplog):
    from cnncc.runtime.module import _manifest_hash

    folder, mod = lenet
    files = pack_module(folder)
    manifest = json.loads(files["manifest.json"])
    assert manifest["isa"] == mod.backend.isa()          # what the driver's -march=native build may use
    manifest["isa"] = manifest["isa"] + ["avx1024_fake"]  # a library built for a CPU this one is not
    manifest["manifest_sha256"] = _manifest_hash(manifest)
    files["manifest.json"] = json.dumps(manifest).encode()
    monkeypatch.setenv("CNNCC_CACHE_DIR", str(tmp_path / "fresh-cache"))
    with caplog.at_level(logging.WARNING, logger="cnncc.runtime"):
        worker = ModuleWorker(files)
    assert "rebuilding kernels.so from the saved kernels.c: this CPU lacks avx1024_fake" in caplog.text
    assert Path(worker.module.artifact).is_relative_to(tmp_path / "fresh-cache")   # really rebuilt here
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(worker({"x": x, "id": np.array(["a", "b", "c"])})["fc3"], mod(x))


def test_image_preprocessing_and_stacked_arrays(tmp_path):
    """The documented preprocessing (Pillow RGB, shorter side to --size, centre crop, /255, mean/std,
    CHW), and an .npy holding a stack gives one id per item."""
    from PIL import Image

    from cnncc.ray import Preprocess, _read_file

    rgb = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    pre = Preprocess(size=20, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    ids, x = _read_file(str(tmp_path / "a.png"), (3, 16, 16), "image", pre)
    small = np.asarray(Image.fromarray(rgb).resize((30, 20), Image.Resampling.BILINEAR), np.float32)[2:18, 7:23]
    want = ((small / 255 - np.float32([0.5, 0.4, 0.3])) / np.float32([0.2, 0.25, 0.5])).transpose(2, 0, 1)
    assert ids == [str(tmp_path / "a.png")] and x.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(x[0], want, rtol=1e-6, atol=1e-6)
    np.save(tmp_path / "s.npy", np.zeros((3, 1, 8, 8), np.float32))
    ids, x = _read_file(str(tmp_path / "s.npy"), (1, 8, 8), "image", Preprocess())
    assert ids == [f"{tmp_path / 's.npy'}[{i}]" for i in range(3)] and x.shape == (3, 1, 8, 8)


def test_inputs_listed_sorted_limited_and_cut_into_shards(inputs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cnncc.ray import InputError, list_inputs, make_shards

    d, xs = inputs
    kind, files = list_inputs(d, limit=5)
    assert kind == "files" and files == sorted(xs)[:5]
    assert list_inputs(str(d / "x1*.npy"))[1] == sorted(p for p in xs if Path(p).name.startswith("x1"))
    assert [json.loads(s["items"]) for s in make_shards(kind, files, 2)] == [files[0:2], files[2:4], files[4:5]]
    pq.write_table(pa.table({"x": [[0.0]] * 7}), tmp_path / "t.parquet")
    kind, items = list_inputs(tmp_path / "t.parquet", limit=5)
    assert kind == "parquet" and [json.loads(s["items"])[1:] for s in make_shards(kind, items, 2)] == [[0, 2], [2, 4], [4, 5]]
    with pytest.raises(InputError, match="no such file"):
        list_inputs(tmp_path / "missing")


def test_model_file_is_compiled_once_on_the_driver_and_packed(shared_kernel_cache, lenet):
    from cnncc.ray import _as_packed

    said = []
    packed = _as_packed(ROOT / "examples" / "lenet5.py", "c", 2, said.append)
    assert set(packed) == {"manifest.json", "kernels.c", "kernels.so", "weights.npz", "graph.json", "graph.npz"}
    manifest = json.loads(packed["manifest.json"])
    assert manifest["target"] == "c" and any("once, on the driver" in m for m in said)
    assert manifest["program"] == json.loads((lenet[0] / "manifest.json").read_text())["program"]
