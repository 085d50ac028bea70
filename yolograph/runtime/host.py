"""Facts about the machine this process runs on, read once: the CPU feature flags Linux reports.

Quantization profiles (7- or 8-bit weights by VNNI), the TVM host target (dot-product features LLVM's
CPU name lacks) and the shipped tuning records (AVX2 fallback) all decide by these flags.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU feature flags Linux reports (/proc/cpuinfo), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None
