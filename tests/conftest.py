"""Shared test fixtures: the real data in ../shared/data (override with $YOLOGRAPH_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from yolograph.data import coco128, data_root, fixtures, official_yolov8n

os.environ.setdefault("YOLOGRAPH_PROGRESS", "0")


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"Test data {path} is missing; put the shared data beside the repo or set YOLOGRAPH_DATA."
        )
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require(data_root())


@pytest.fixture(scope="session")
def yolov8n_path() -> Path:
    return _require(official_yolov8n())


@pytest.fixture(scope="session")
def coco_dir() -> Path:
    return _require(coco128())


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _require(fixtures())


@pytest.fixture(scope="session")
def yolov8n(yolov8n_path):
    """The official COCO-trained yolov8n as a Model (tests must not mutate it: use .copy())."""
    from yolograph.frontends import load_model

    return load_model(yolov8n_path)


@pytest.fixture(scope="session")
def fixture_input(fixtures_dir) -> np.ndarray:
    """The fixed input of the ultralytics fixture exports, as float32."""
    return np.load(fixtures_dir / "yolov8n-rand.io.npz")["images"].astype(np.float32)
