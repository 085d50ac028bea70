"""Figures of the inspection tools (sensitivity, pruning widths): one look, written atomically as PNG.

matplotlib is the optional `plot` extra; it is imported only when a figure is asked for.
"""

from __future__ import annotations

import io
from pathlib import Path

from yolograph.errors import YoloGraphError


def new_figure(bars: int):
    """A (figure, axes) wide enough for `bars` labelled bars."""
    try:
        import matplotlib
    except ImportError as exc:
        raise YoloGraphError("Drawing a plot needs matplotlib: pip install 'yolograph[plot]'.") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(max(8, bars * 0.22), 4.5))


def save_png(fig, path: str | Path) -> Path:
    """Write `fig` to `path` as PNG without ever leaving a half-written file, and close it."""
    import matplotlib.pyplot as plt

    from yolograph.ir.serialization import write_bytes_atomic

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    write_bytes_atomic(path, buffer.getvalue())
    return path
