"""Model input feeds: the one check every runner applies, and seeded random inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from yolograph.errors import DataError

Feed = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """One graph input as a runner sees it: name, static shape and numpy dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def as_feed(feed: Feed | np.ndarray, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """A name -> array feed for a runner: one array feeds the first input; every input must be given."""
    if isinstance(feed, np.ndarray):
        feed = {input_names[0]: feed}
    missing = set(input_names) - set(feed)
    if missing:
        raise DataError(f"Missing model inputs {sorted(missing)}; the model takes {list(input_names)}.")
    return dict(feed)


def random_feed(inputs: Sequence[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: floats in [0,1), integers in [0,255]."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in inputs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind in "ui":
            feed[spec.name] = rng.integers(0, 256, size=spec.shape).astype(dtype)
        else:
            feed[spec.name] = rng.random(spec.shape, dtype=np.float32).astype(dtype)
    return feed
