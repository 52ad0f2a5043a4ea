"""`cnncc` command line. Each subcommand lives in cnncc/commands/<name>.py (add + run), found
there by ``commands.discover`` (a new command is a new file)."""
from __future__ import annotations

import argparse
import sys

from .errors import CnnccError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnncc", description="A small, readable compiler for convolutional neural networks. "
        "MODEL is a DSL .py file, an .onnx file, or a saved module folder.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--version", action="version", version=f"cnncc {__import__('cnncc').__version__}")
    from .commands import discover

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in discover().values():
        p = module.add(sub)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CnnccError as e:
        if getattr(args, "debug", False):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
