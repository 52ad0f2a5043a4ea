"""frontends/, codegen/ and runtime/ install as cnncc.frontends, cnncc.codegen, cnncc.runtime —
in an editable install (the one running these tests) and in a normal one (a built wheel),
templates and the emulation header included."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_editable_install_maps_the_top_level_folders():
    import cnncc.codegen
    import cnncc.frontends
    import cnncc.runtime

    assert Path(cnncc.frontends.__file__).parent == ROOT / "frontends"
    assert Path(cnncc.codegen.__file__).parent == ROOT / "codegen"
    assert Path(cnncc.runtime.__file__).parent == ROOT / "runtime"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the tracked files: setuptools leaves build/ next to the sources it
    builds, and a wheel that needs an untracked file should fail here, not on a user's machine."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files the wheel should carry")
    for rel in filter(None, listed.stdout.split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}")
    (whl,) = out.glob("cnncc-*.whl")
    return whl


def test_wheel_carries_every_package_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ["cnncc/ir.py", "cnncc/passes/manager.py", "cnncc/commands/summary.py",
                     "cnncc/frontends/dsl.py", "cnncc/frontends/onnx.py", "cnncc/codegen/lower.py",
                     "cnncc/runtime/cpu.py", "cnncc/runtime/cuda_emu.h"]:
        assert expected in names, expected
    for folder in ("cnncc/codegen/templates/c/", "cnncc/codegen/templates/cuda/", "cnncc/codegen/templates/common/"):
        assert any(n.startswith(folder) and n.endswith(".j2") for n in names), folder
    tracked = subprocess.run(["git", "ls-files", "codegen/templates", "cnncc/templates"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    for path in tracked:  # every template in the repo reaches the wheel
        assert "cnncc/" + path.removeprefix("cnncc/") in names, path


def test_normal_install_compiles_and_runs_lenet5(wheel, tmp_path):
    """Install the wheel into a fresh folder and run the C pipeline from there, not from the repo."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    script = (
        "import cnncc, numpy as np, pathlib, sys\n"
        "import cnncc.frontends, cnncc.codegen, cnncc.runtime\n"
        "for m in (cnncc, cnncc.frontends, cnncc.codegen, cnncc.runtime):\n"
        "    assert pathlib.Path(m.__file__).is_relative_to(sys.argv[1]), m.__file__\n"
        "g = cnncc.load_model(sys.argv[2])\n"
        "mod = cnncc.compile(g, target='c')\n"
        "x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)\n"
        "y, r = mod(x), cnncc.reference(g, x)\n"
        "assert np.abs(y - r).max() <= 1e-4 * np.abs(r).max()\n"
        "print('ok', len(mod.kernels))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    env["CNNCC_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-c", script, str(target), str(ROOT / "examples" / "lenet5.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
