"""Progress reporting for long work (calibration, pruning steps, tuning, evaluation, benchmarking), on stderr.

Progress never goes to stdout, so `--json` output stays parseable whatever is shown. Whether it is
shown, first rule that applies:

1. `set_enabled(False)` (the CLI's `--quiet`) or `set_enabled(True)`;
2. the environment: `YOLOGRAPH_PROGRESS=0` (or `false`, `no`, `off`, empty) hides it, any other value shows it;
3. otherwise it is shown only when stderr is a terminal, so logs and CI stay readable.

On a terminal the line is rewritten in place (`\\r`); elsewhere each update is its own line, at most a
few per second, so a log shows where the time went without drowning in updates.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

ENV_VAR = "YOLOGRAPH_PROGRESS"
_OFF_VALUES = ("0", "", "false", "no", "off")
# Seconds between two updates of one progress line (the last one is always shown).
_MIN_INTERVAL_TTY = 0.1
_MIN_INTERVAL_LOG = 2.0

_forced: bool | None = None


def set_enabled(value: bool | None) -> None:
    """Force progress on (True) or off (False) for this process; None goes back to the environment."""
    global _forced
    _forced = value


def enabled() -> bool:
    if _forced is not None:
        return _forced
    flag = os.environ.get(ENV_VAR)
    if flag is not None:
        return flag.strip().lower() not in _OFF_VALUES
    return sys.stderr.isatty()


def track(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """Yield from `items`, printing `label: i/total (elapsed)` on stderr as it goes (when enabled)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not enabled():
        yield from items
        return
    stream = sys.stderr
    in_place = stream.isatty()
    interval = _MIN_INTERVAL_TTY if in_place else _MIN_INTERVAL_LOG
    start = last = time.perf_counter()
    count = 0
    shown = 0
    for count, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= interval or count == total or count == 1:
            _write(stream, format_line(label, count, total, now - start), in_place)
            last, shown = now, count
    if count and shown != count:  # the iterator ended before `total` (or had no length)
        _write(stream, format_line(label, count, total, time.perf_counter() - start), in_place)
    if count and in_place:
        stream.write("\n")
        stream.flush()


def format_line(label: str, count: int, total: int | None, elapsed: float) -> str:
    of = f"/{total}" if total else ""
    return f"{label}: {count}{of} ({elapsed:.1f}s)"


def _write(stream, line: str, in_place: bool) -> None:
    stream.write(f"\r{line}" if in_place else f"{line}\n")
    stream.flush()
