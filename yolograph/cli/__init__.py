"""The `yolograph` command line: a thin layer over the Python API, one module per command group.

Every failure is one line `error: ...` on stderr with exit code 2: a YoloGraphError prints its own
message (a sentence naming the problem and the fix), a file the operating system refuses names the
file, and anything else is a bug in yolograph, printed as one line that says so and points to
`--debug`, which shows the full traceback. This is an entry point: it loads the built-in passes
and backends (through the registries) and may use any layer.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from yolograph import progress
from yolograph.cli import (
    commands_build,
    commands_inspect,
    commands_measure,
    commands_predict,
    commands_report,
    commands_targets,
)
from yolograph.errors import YoloGraphError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# Each module adds its subcommands with register(subparsers); the order is the order of `--help`.
COMMAND_MODULES = (commands_inspect, commands_build, commands_measure, commands_predict, commands_report, commands_targets)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error:` line pointing to --help (exit 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message}; see '{self.prog} --help'.", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    debug = bool(getattr(args, "debug", False))
    progress.set_enabled(False if getattr(args, "quiet", False) else None)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        if debug:
            traceback.print_exc()
        print(f"error: {describe_failure(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        progress.set_enabled(None)  # --quiet is for this command (main may be called again in-process)


def describe_failure(exc: BaseException) -> str:
    """The one line a failure is reported as (without the 'error: ' prefix)."""
    if isinstance(exc, YoloGraphError):
        return _one_line(str(exc)) or f"{type(exc).__name__} without a message."
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot access{where}: {exc.strerror}; check the path and its permissions."
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller model, fewer images or fewer threads."
    detail = _one_line(str(exc))
    return (f"internal error {type(exc).__name__}" + (f" ({detail})" if detail else "")
            + "; this is a bug in yolograph: run with --debug for the traceback and report it.")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="yolograph",
        description="Compile YOLO models through ordered graph passes and run them on ONNX Runtime or a compiled backend.",
    )
    parser.add_argument("--debug", action="store_true", help="on an error, also print the full traceback")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr (also: YOLOGRAPH_PROGRESS=0)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    for command in sub.choices.values():  # `yolograph compile ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser
