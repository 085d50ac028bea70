"""The `yolograph` command line: a thin layer over the Python API, one module per command group.

Every user error is a YoloGraphError: printed as one line `error: ...` with exit code 2. This is an
entry point: it loads the built-in passes and backends (through the registries) and may use any layer.
"""

from __future__ import annotations

import argparse
import sys

from yolograph.cli import commands_build, commands_inspect, commands_measure
from yolograph.errors import YoloGraphError

EXIT_USER_ERROR = 2

# Each module adds its subcommands with register(subparsers); the order is the order of `--help`.
COMMAND_MODULES = (commands_inspect, commands_build, commands_measure)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except YoloGraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolograph",
        description="Compile YOLO models through ordered graph passes and run them on ONNX Runtime or a compiled backend.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser
