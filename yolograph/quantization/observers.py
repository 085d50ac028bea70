"""Streaming range observers: min/max plus a zero-anchored histogram whose memory is fixed.

The histogram covers [-bins*width, +bins*width) with `bins` bins each side of zero. When a value falls
outside, the width doubles and neighbouring bins merge exactly (bins are anchored at zero, so bin k of
width w lies inside bin floor(k/2) of width 2w). Nothing is interpolated, so the result depends only
on the data and its order, never on timing: calibration is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_BINS = 2048  # per side of zero


@dataclass
class RangeObserver:
    """Min, max, count, per-channel mean (axis 1) and, optionally, a histogram of one tensor."""

    histogram: bool = True
    bins: int = DEFAULT_BINS
    minimum: float = float("inf")
    maximum: float = float("-inf")
    count: int = 0
    width: float = 0.0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    channel_sum: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        flat = x.reshape(-1)
        lo, hi = float(flat.min()), float(flat.max())
        self.minimum, self.maximum = min(self.minimum, lo), max(self.maximum, hi)
        self.count += flat.size
        if x.ndim >= 2:
            sums = x.reshape(x.shape[0], x.shape[1], -1).sum(axis=(0, 2), dtype=np.float64)
            self.channel_sum = sums if self.channel_sum is None else self.channel_sum + sums
        if self.histogram:
            self._add_histogram(flat, max(abs(lo), abs(hi)))

    def _add_histogram(self, flat: np.ndarray, absmax: float) -> None:
        if self.counts.size == 0:
            self.counts = np.zeros(2 * self.bins, dtype=np.int64)
            self.width = _pow2_at_least(absmax / self.bins) if absmax > 0 else 2.0**-20
        while absmax >= self.bins * self.width:
            self._double_width()
        index = np.floor(flat * np.float32(1.0 / self.width)).astype(np.int64)
        index += self.bins
        np.clip(index, 0, 2 * self.bins - 1, out=index)
        self.counts += np.bincount(index, minlength=2 * self.bins)

    def _double_width(self) -> None:
        # Bin i covers [(i - bins) * w, (i - bins + 1) * w); after doubling, pairs (2j, 2j+1) relative
        # to zero merge. Since bins is even, pairs of array indices line up with pairs around zero.
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        counts = np.zeros_like(self.counts)
        quarter = self.bins // 2
        counts[self.bins - quarter : self.bins + quarter] = merged
        self.counts = counts
        self.width *= 2.0

    @property
    def channel_mean(self) -> np.ndarray | None:
        if self.channel_sum is None or self.count == 0:
            return None
        per_channel = self.count / self.channel_sum.size
        return self.channel_sum / per_channel

    def edges(self) -> np.ndarray:
        """Bin edges (2*bins + 1 values)."""
        return (np.arange(2 * self.bins + 1, dtype=np.float64) - self.bins) * self.width


def _pow2_at_least(value: float) -> float:
    return float(2.0 ** np.ceil(np.log2(value)))
