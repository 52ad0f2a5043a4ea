"""Saved modules: save -> load in a fresh process gives identical outputs; tampering is refused
naming the file; a different machine recompiles from the saved source; the CLI round trip."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cnncc
from cnncc.errors import IntegrityError

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, examples_dir_module, shared_kernel_cache):
    g = cnncc.load_model(examples_dir_module / "lenet5.py")
    mod = cnncc.compile(g, target="c", opt_level=2)
    out = tmp_path_factory.mktemp("saved") / "lenet"
    mod.save(out)
    return g, mod, out


@pytest.fixture(scope="module")
def examples_dir_module():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "examples"


def copy_of(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_saved_folder_is_self_contained(saved):
    _, mod, out = saved
    names = sorted(p.name for p in out.iterdir())
    assert names == ["graph.json", "graph.npz", "kernels.c", "kernels.so", "manifest.json", "weights.npz"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and set(manifest["files"]) == {"kernels.c", "kernels.so", "weights.npz",
                                                                           "graph.json", "graph.npz"}
    assert (out / "kernels.c").read_text() == mod.source


def test_load_in_fresh_process_gives_identical_outputs(saved, tmp_path):
    g, mod, out = saved
    x = np.random.default_rng(5).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, cnncc; m = cnncc.load(sys.argv[1]); "
            "np.save(sys.argv[3], m(np.load(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True)
    y = np.load(tmp_path / "y.npy")
    assert np.array_equal(y, mod(x))
    assert np.abs(y - cnncc.reference(g, x)).max() <= 1e-4 * np.abs(y).max()


def test_loaded_module_keeps_kernels(saved):
    _, mod, out = saved
    loaded = cnncc.load(out)
    assert [k[0] for k in loaded.kernels] == [k[0] for k in mod.kernels]
    assert loaded.kernels[0][1] == mod.kernels[0][1]


@pytest.mark.parametrize("victim", ["manifest.json", "weights.npz", "kernels.so", "kernels.c"])
def test_tampered_file_is_refused_by_name(saved, tmp_path, victim):
    _, _, out = saved
    d = copy_of(out, tmp_path)
    path = d / victim
    if victim == "manifest.json":
        m = json.loads(path.read_text())
        m["program"]["arena_b"] += 64
        path.write_text(json.dumps(m))
    elif victim == "weights.npz":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        key = next(k for k in arrays if k.startswith("conv1.weight"))   # packed on the C target
        arrays[key] = arrays[key] * 1.01
        np.savez(path, **arrays)
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=victim.replace(".", r"\.")):
        cnncc.load(d)


def test_other_machine_rebuilds_from_source(saved, tmp_path, monkeypatch):
    from cnncc.runtime import cpu

    _, mod, out = saved
    d = copy_of(out, tmp_path)
    (d / "kernels.so").unlink()            # as if the binary could not be used here
    monkeypatch.setattr(cpu.CBackend, "machine", lambda self: "another-machine")
    loaded = cnncc.load(d)
    assert loaded.artifact != d / "kernels.so"
    x = np.ones((2, 1, 32, 32), np.float32)
    assert np.array_equal(loaded(x), mod(x))


def test_cli_compile_then_run_saved(saved, tmp_path, examples_dir_module, capsys):
    from cnncc.cli import main

    out = tmp_path / "cli"
    assert main(["compile", str(examples_dir_module / "lenet5.py"), "-o", str(out), "--opt", "0", "--quiet"]) == 0
    assert (out / "manifest.json").is_file()
    assert main(["run", str(out), "--batch", "2"]) == 0
    assert "12 kernels" in capsys.readouterr().out
    assert main(["run", str(examples_dir_module / "lenet5.py"), "--check"]) == 0
    text = capsys.readouterr().out
    assert "max abs error" in text and "check passed" in text


def test_cli_batch_fixes_n(tmp_path, examples_dir_module):
    from cnncc.cli import main

    out = tmp_path / "b4"
    assert main(["compile", str(examples_dir_module / "lenet5.py"), "-o", str(out), "--batch", "4", "--quiet"]) == 0
    m = cnncc.load(out)
    assert m(np.zeros((4, 1, 32, 32), np.float32)).shape == (4, 10)
    with pytest.raises(cnncc.ModelError):
        m(np.zeros((2, 1, 32, 32), np.float32))


def test_c_runner_memory_is_aligned_and_misaligned_inputs_still_work(saved):
    """Arena and weights start on a page, outputs on a cache line (the plan's 64-byte offsets
    are lines only then); an input 4 bytes off a line is copied, not read crooked."""
    g, mod, _ = saved
    runner = mod.runner()
    assert runner.blob.ctypes.data % 4096 == 0 and runner.checkout(3).arena.ctypes.data % 4096 == 0
    x = np.random.default_rng(3).standard_normal((3, 1, 32, 32)).astype(np.float32)
    buf = np.empty(x.size + 16, np.float32)
    skip = next(i for i in range(16) if (buf.ctypes.data + 4 * i) % 64)
    crooked = buf[skip: skip + x.size].reshape(x.shape)
    crooked[...] = x
    assert crooked.ctypes.data % 64 != 0
    y = mod(crooked)
    assert y.ctypes.data % 64 == 0
    np.testing.assert_array_equal(y, mod(x))
    np.testing.assert_allclose(y, cnncc.reference(g, x), rtol=1e-4, atol=1e-5 * np.abs(y).max())
