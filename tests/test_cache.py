"""The kernel cache: keyed by target, toolchain and source; info and clear; the CLI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnncc.runtime import cache


class FakeBackend:
    target = "fake"
    artifact_name = "kernels.bin"

    def __init__(self):
        self.builds = 0
        self.flags = "-O3"

    def toolchain(self):
        return f"fakecc 1.0 {self.flags}"

    def build(self, source, artifact: Path):
        self.builds += 1
        Path(artifact).write_text(source.upper())


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCC_CACHE_DIR", str(tmp_path / "c"))
    return tmp_path / "c"


def test_cache_dir_follows_env(cache_dir, monkeypatch):
    assert cache.cache_dir() == cache_dir
    monkeypatch.delenv("CNNCC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert cache.cache_dir() == Path("/somewhere/cnncc")


def test_same_source_builds_once_and_flags_change_the_key(cache_dir):
    b = FakeBackend()
    p1 = cache.build_cached(b, "int x;")
    p2 = cache.build_cached(b, "int x;")
    assert p1 == p2 and b.builds == 1 and p1.read_text() == "INT X;"
    cache.build_cached(b, "int y;")
    b.flags = "-O2"
    p3 = cache.build_cached(b, "int x;")
    assert b.builds == 3 and p3 != p1
    assert cache.info()["entries"] == 3


def test_failed_build_leaves_nothing(cache_dir):
    class Broken(FakeBackend):
        def build(self, source, artifact):
            Path(artifact).write_text("half")
            raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        cache.build_cached(Broken(), "int z;")
    assert cache.info()["entries"] == 0


def test_cli_info_and_clear(cache_dir, capsys):
    from cnncc.cli import main

    cache.build_cached(FakeBackend(), "a")
    assert main(["cache", "info"]) == 0
    assert "1 compiled artifacts" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert cache.info()["entries"] == 0


def test_tests_stay_out_of_the_users_cache():
    """conftest's autouse `private_cache`: no test writes to ~/.cache/cnncc."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnncc"
    assert os.environ.get("CNNCC_CACHE_DIR") and cache.cache_dir() != default


def test_every_commands_target_choices_are_the_backends_registry(monkeypatch):
    """No hand-kept list of targets in the CLI: a backend registered in runtime/module.py is a
    --target choice of every command that takes one."""
    from cnncc.cli import build_parser
    from cnncc.runtime import module

    monkeypatch.setitem(module.BACKENDS, "toy", "toy_backend:ToyBackend")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    taking = {name for name, p in commands.items() if any(a.dest == "target" for a in p._actions)}
    assert {"compile", "run", "bench", "verify", "infer"} <= taking
    for name in taking:
        target = next(a for a in commands[name]._actions if a.dest == "target")
        assert target.choices == list(module.BACKENDS), name
