"""Progress reporting for long work (calibration, evaluation, tuning), on stderr.

Quiet when stderr is not a terminal unless YOLOGRAPH_PROGRESS=1, so logs and CI stay readable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    flag = os.environ.get("YOLOGRAPH_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false")
    return sys.stderr.isatty()


def track(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """Yield from `items`, printing `label: i/total (rate)` on stderr as it goes."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    show = enabled()
    start = time.perf_counter()
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        if show:
            elapsed = time.perf_counter() - start
            of = f"/{total}" if total else ""
            sys.stderr.write(f"\r{label}: {count}{of} ({elapsed:.1f}s)")
            sys.stderr.flush()
    if show and count:
        sys.stderr.write("\n")
