"""Calibration inputs: letterboxed images (the evaluation preprocessing) or saved .npy tensors, streamed.

Shared by calibration, the accuracy techniques, sensitivity analysis and the pruning helper, so every
consumer of "calibration data" accepts the same options and fails with the same clear messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolograph.errors import DataError


@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration tensors come from: `images` (a dataset root, image folder or yaml, as the
    evaluation reader accepts) cut to `range` ("A:B") or the first `count` images, or `npy` files.

    The options of every data-driven pass (calibrate, bias-correction, adaptive-rounding,
    mixed-precision, prune) inherit these fields, so they are spelled and checked the same way.
    """

    images: str | None = None
    count: int = 32
    range: str | None = None
    npy: str | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count={self.count} is not positive; use count=32 or more")

    def source(self) -> CalibrationSource:
        """Just the data fields (a pass's options carry more)."""
        return CalibrationSource(self.images, self.count, self.range, self.npy)

    def require(self, pass_name: str) -> CalibrationSource:
        """The data fields, or a DataError saying how to name calibration data for `pass_name`."""
        if self.images is None and self.npy is None:
            raise DataError(
                f"{pass_name} needs calibration data: add images=DIR (a dataset root, image folder or dataset "
                "yaml; with count=N or range=A:B) or npy=FILE_OR_DIR ([N,3,H,W] float tensors) to its options."
            )
        return self.source()

    def tensors(self, imgsz: tuple[int, int]) -> Iterator[np.ndarray]:
        return load_calibration_tensors(self.images, self.count, imgsz, npy=self.npy, image_range=self.range)

    def size(self) -> int:
        if self.npy:
            return sum(_npy_batch(p) for p in _npy_files(self.npy))
        return len(_image_paths(self.images, self.count, self.range))


def load_calibration_tensors(
    images: str | os.PathLike[str] | None,
    count: int | None,
    imgsz: int | tuple[int, int],
    npy: str | os.PathLike[str] | None = None,
    image_range: str | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``[1, 3, H, W]`` float32 tensors one at a time (memory does not grow with the count).

    `images`: a dataset root / image folder / dataset yaml; the first `count` images (or `image_range`)
    are letterboxed exactly as evaluation does. `npy`: a .npy file or folder of them holding
    ``[1,3,H,W]`` or ``[N,3,H,W]`` float tensors (then `images` is ignored). Raises DataError for an
    empty, unreadable or wrong-shaped calibration set.
    """
    from yolograph.evaluation import normalize_imgsz

    height, width = normalize_imgsz(imgsz)
    if npy is not None:
        return _npy_tensors(npy, count, (height, width))
    if images is None:
        raise DataError(
            "Calibration needs data: give images=DIR (a dataset root, image folder or dataset yaml) with "
            "count=N or range=A:B, or npy=FILE_OR_DIR with [N,3,H,W] tensors."
        )
    paths = _image_paths(images, count, image_range)
    return _image_tensors(paths, (height, width))


def _image_paths(images, count, image_range) -> list[Path]:
    from yolograph.evaluation import resolve_dataset

    if images is None:
        raise DataError("Calibration needs data: give images=DIR or npy=FILE_OR_DIR.")
    dataset = resolve_dataset(str(images), image_range or None)
    paths = list(dataset.image_paths)
    if count is not None:
        if count < 1:
            raise DataError(f"The calibration count {count} is not positive; use count=32 or more.")
        paths = paths[:count]
    return paths


def _image_tensors(paths: list[Path], imgsz: tuple[int, int]) -> Iterator[np.ndarray]:
    from yolograph.evaluation import iter_image_tensors

    yield from iter_image_tensors(paths, imgsz)


def _npy_files(npy) -> list[Path]:
    path = Path(npy)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise DataError(f"The calibration folder {path} holds no .npy files; save [N,3,H,W] float tensors there.")
        return files
    if not path.is_file():
        raise DataError(f"The calibration tensors {path} do not exist; pass a .npy file or a folder of them.")
    return [path]


def _load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"The calibration file {path} cannot be read as a .npy array ({exc}); re-save it with numpy.save.") from exc


def _npy_batch(path: Path) -> int:
    array = _load_npy(path)
    return int(array.shape[0]) if array.ndim == 4 else 1


def _npy_tensors(npy, count: int | None, imgsz: tuple[int, int]) -> Iterator[np.ndarray]:
    files = _npy_files(npy)  # checked now, not lazily at the first next(): a missing path fails early
    return _npy_stream(files, count, imgsz)


def _npy_stream(files: list[Path], count: int | None, imgsz: tuple[int, int]) -> Iterator[np.ndarray]:
    produced = 0
    for path in files:
        array = _load_npy(path)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or tuple(array.shape[1:]) != (3, *imgsz):
            raise DataError(
                f"The calibration tensor {path} has shape {tuple(array.shape)}; the model needs [N,3,{imgsz[0]},{imgsz[1]}]."
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"The calibration tensor {path} is {array.dtype}; save float32 values in 0..1 (preprocessed).")
        for index in range(array.shape[0]):
            if count is not None and produced >= count:
                return
            yield np.ascontiguousarray(array[index : index + 1], dtype=np.float32)
            produced += 1
    if produced == 0:
        raise DataError("The calibration .npy files hold no tensors; save at least one [1,3,H,W] tensor.")
