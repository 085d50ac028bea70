"""Scale math: from an observer to a clipping range (minmax, percentile, entropy, mse), and from a range
to (scale, zero point) for a profile's integer type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from yolograph.quantization.observers import RangeObserver

Method = Literal["minmax", "percentile", "entropy", "mse"]
SEARCH_STEPS = 100  # candidate shrink factors for mse / entropy, from 1.0 down to SEARCH_FLOOR
SEARCH_FLOOR = 0.2


@dataclass(frozen=True)
class IntegerType:
    """The activation integer type: int8/uint8, with or without a free zero point."""

    signed: bool
    symmetric: bool

    @property
    def qmin(self) -> int:
        return -128 if self.signed else 0

    @property
    def qmax(self) -> int:
        return 127 if self.signed else 255

    def params(self, lo: float, hi: float) -> tuple[float, int]:
        """(scale, zero_point) that represent [lo, hi] (widened to include 0)."""
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.symmetric:
            absmax = max(-lo, hi)
            scale = absmax / self.qmax if absmax > 0 else 1.0
            return float(np.float32(scale)), 0
        if hi - lo <= 0:
            return 1.0, int(np.clip(0, self.qmin, self.qmax))
        scale = float(np.float32((hi - lo) / (self.qmax - self.qmin)))
        zero_point = int(np.clip(round(self.qmin - lo / scale), self.qmin, self.qmax))
        return scale, zero_point

    def fake_quantize(self, values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
        q = np.clip(np.round(values / scale) + zero_point, self.qmin, self.qmax)
        return (q - zero_point) * scale


def clip_range(observer: RangeObserver, method: Method, itype: IntegerType, percentile: float = 99.99) -> tuple[float, float]:
    """The [lo, hi] an activation is quantized over, by `method`."""
    lo, hi = observer.minimum, observer.maximum
    if method == "minmax" or observer.counts.size == 0 or observer.count == 0:
        return lo, hi
    if method == "percentile":
        return _percentile_range(observer, percentile)
    return _searched_range(observer, itype, method)


def _percentile_range(observer: RangeObserver, percentile: float) -> tuple[float, float]:
    edges = observer.edges()
    cdf = np.cumsum(observer.counts) / max(int(observer.counts.sum()), 1)
    tail = 1.0 - percentile / 100.0
    hi = float(edges[1:][np.searchsorted(cdf, 1.0 - tail)]) if observer.maximum > 0 else observer.maximum
    lo = float(edges[:-1][np.searchsorted(cdf, tail)]) if observer.minimum < 0 else observer.minimum
    return max(lo, observer.minimum), min(hi, observer.maximum)


def _searched_range(observer: RangeObserver, itype: IntegerType, method: Method) -> tuple[float, float]:
    """Shrink [min, max] by the factor minimizing the histogram's quantization MSE or KL divergence."""
    edges = observer.edges()
    centers = (edges[:-1] + edges[1:]) / 2
    counts = observer.counts.astype(np.float64)
    keep = counts > 0
    centers, counts = centers[keep], counts[keep]
    best, best_cost = 1.0, np.inf
    for factor in np.linspace(1.0, SEARCH_FLOOR, SEARCH_STEPS):
        lo, hi = observer.minimum * factor, observer.maximum * factor
        scale, zero_point = itype.params(lo, hi)
        if method == "mse":
            cost = float(np.sum(counts * (itype.fake_quantize(centers, scale, zero_point) - centers) ** 2))
        else:
            cost = _kl_cost(centers, counts, scale, zero_point, itype)
        if cost < best_cost - 1e-12 * abs(best_cost if np.isfinite(best_cost) else 0):
            best, best_cost = factor, cost
    return observer.minimum * best, observer.maximum * best


def _kl_cost(centers: np.ndarray, counts: np.ndarray, scale: float, zero_point: int, itype: IntegerType) -> float:
    """KL(P || Q): P is the histogram with outliers folded into the clip edges, Q its quantized version
    spread uniformly over the non-empty bins of each integer level (TensorRT's entropy calibration)."""
    levels = np.clip(np.round(centers / scale) + zero_point, itype.qmin, itype.qmax).astype(np.int64) - itype.qmin
    p = counts / counts.sum()
    mass = np.bincount(levels, weights=p, minlength=itype.qmax - itype.qmin + 1)
    occupied = np.bincount(levels, minlength=itype.qmax - itype.qmin + 1)
    q = mass[levels] / occupied[levels]
    # Clipped bins all land on the edge level: their spread-out Q is what penalizes clipping too hard.
    return float(np.sum(p * np.log(p / np.maximum(q, 1e-300))))
