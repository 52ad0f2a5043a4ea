"""The CLI's commands come from the commands package: every module there is a subcommand (a new
command is one new file), as every backend is a --target choice."""
from __future__ import annotations

import pytest

import cnncc.commands
from cnncc.cli import build_parser, main


def subcommands(parser) -> dict:
    return next(a for a in parser._actions if a.dest == "command").choices


def test_every_module_of_the_commands_package_is_a_command():
    modules = cnncc.commands.discover()
    assert {"summary", "inspect", "compile", "run", "infer", "bench", "verify", "cache"} <= set(modules)
    assert set(subcommands(build_parser())) == set(modules)


def test_a_new_file_is_a_new_command(tmp_path, monkeypatch, capsys):
    (tmp_path / "hello.py").write_text(
        "def add(sub):\n    p = sub.add_parser('hello', help='say hello')\n    p.add_argument('who')\n    return p\n\n"
        "def run(args):\n    print('hello', args.who)\n    return 0\n")
    (tmp_path / "_helpers.py").write_text("X = 1\n")      # private modules are not commands
    monkeypatch.setattr(cnncc.commands, "__path__", [*cnncc.commands.__path__, str(tmp_path)])
    assert "hello" in subcommands(build_parser()) and "_helpers" not in cnncc.commands.discover()
    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"


def test_a_module_that_is_not_a_command_is_refused(tmp_path, monkeypatch):
    (tmp_path / "stray.py").write_text("def run(args):\n    return 0\n")
    monkeypatch.setattr(cnncc.commands, "__path__", [*cnncc.commands.__path__, str(tmp_path)])
    with pytest.raises(TypeError, match="stray is in the commands package but lacks add"):
        build_parser()
