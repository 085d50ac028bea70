"""Read YOLO-format detection datasets (images + normalised ``cls cx cy w h`` label files).

Three ways to name a dataset, as the ``--data`` option accepts them:

* a dataset root holding ``images/<split>/`` and ``labels/<split>/`` (e.g. ``shared/data/coco128``);
* a folder of images, whose labels are found by the Ultralytics rule: the last ``/images/`` in the
  path becomes ``/labels/`` and the extension becomes ``.txt``;
* an Ultralytics dataset yaml with ``path`` and ``train``/``val``/``test`` keys.

Images are sorted by path (for one folder: by file name), so an index range such as ``32:128`` names
the same images on every machine. A missing label file means the image has no objects, as in Ultralytics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from yolograph.errors import DataError

# The formats OpenCV reads; Ultralytics also lists dng/mpo/pfm/heic, which cv2.imread cannot decode.
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
YAML_SUFFIXES = frozenset({".yaml", ".yml"})


@dataclass(frozen=True)
class YoloDataset:
    """An ordered list of images and the label file each one would have (which may not exist)."""

    image_paths: tuple[Path, ...]
    label_paths: tuple[Path, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.image_paths) != len(self.label_paths):
            raise ValueError("image_paths and label_paths must have the same length")

    def __len__(self) -> int:
        return len(self.image_paths)

    def labels(self, index: int) -> np.ndarray:
        """Labels of image `index` as float64 ``[N, 5]`` rows ``cls, cx, cy, w, h`` (normalised)."""
        return read_label_file(self.label_paths[index])

    def subset(self, images: slice | str | None) -> YoloDataset:
        """The images selected by a slice or an index range such as ``"32:128"`` (Python slice rules)."""
        if images is None:
            return self
        selector = parse_index_range(images) if isinstance(images, str) else images
        chosen = self.image_paths[selector]
        if not chosen:
            raise DataError(
                f"The image range {_describe_range(selector)} selects no images of the {len(self)} in "
                f"{self.source or 'the dataset'}; choose a range inside 0:{len(self)}."
            )
        return YoloDataset(chosen, self.label_paths[selector], self.source)


def open_dataset(data: str | os.PathLike[str], split: str | None = None) -> YoloDataset:
    """Load a dataset root, an image folder or an Ultralytics dataset yaml (see the module docstring).

    `split` picks ``images/<split>`` of a dataset root or the key of a yaml (default: the only split of a
    root, else ``val``).
    """
    path = Path(data)
    if not path.exists():
        raise DataError(f"The dataset {path} does not exist; pass a dataset root, an image folder or a dataset yaml.")
    if path.is_file():
        if path.suffix.lower() not in YAML_SUFFIXES:
            raise DataError(f"The dataset file {path} is not a .yaml; pass a dataset yaml, a dataset root or an image folder.")
        return _load_yaml(path, split or "val")
    images_dir = path / "images"
    if images_dir.is_dir():
        return dataset_from_image_dirs([_pick_split(images_dir, split)], source=str(path))
    if split is not None:
        raise DataError(f"{path} has no images/ folder, so it has no split {split!r}; pass the dataset root instead.")
    return dataset_from_image_dirs([path], source=str(path))


def dataset_from_image_paths(paths: Sequence[str | os.PathLike[str]], source: str = "") -> YoloDataset:
    """A dataset of the given images, in the given order, with labels found by the /images/ -> /labels/ rule."""
    images = tuple(Path(p) for p in paths)
    if not images:
        raise DataError("The list of images is empty; pass at least one image path.")
    for image in images:
        if not image.is_file():
            raise DataError(f"The image {image} does not exist; check the path.")
    return YoloDataset(images, tuple(label_path_for(p) for p in images), source)


def dataset_from_image_dirs(dirs: Sequence[Path], source: str = "") -> YoloDataset:
    """All images directly inside `dirs`, sorted by path, with labels by the /images/ -> /labels/ rule."""
    images: list[Path] = []
    for directory in dirs:
        if not directory.is_dir():
            raise DataError(f"The image folder {directory} does not exist; check the dataset path.")
        images.extend(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        where = ", ".join(str(d) for d in dirs)
        raise DataError(
            f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {where}; point --data at a folder of images."
        )
    images.sort(key=str)
    return YoloDataset(tuple(images), tuple(label_path_for(p) for p in images), source or str(dirs[0]))


def label_path_for(image_path: Path) -> Path:
    """The Ultralytics rule: replace the last ``/images/`` by ``/labels/`` and the suffix by ``.txt``."""
    text = str(image_path)
    images_part, labels_part = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if images_part in text:
        head, tail = text.rsplit(images_part, 1)
        text = head + labels_part + tail
    return Path(text).with_suffix(".txt")


def read_label_file(path: Path) -> np.ndarray:
    """Parse a YOLO label file into float64 ``[N, 5]`` rows ``cls, cx, cy, w, h``.

    A missing file means no objects. Polygon lines (``cls x1 y1 x2 y2 ...``, segmentation labels) are
    turned into their bounding box, and duplicate rows are dropped, both as Ultralytics does.
    """
    if not path.exists():
        return np.zeros((0, 5), dtype=np.float64)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"The label file {path} cannot be read ({exc}); fix or remove it.") from exc
    rows: list[tuple[float, ...]] = []
    for line_number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            row = _parse_label_line(line, path, line_number)
            if row not in rows:
                rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def parse_index_range(text: str | None) -> slice:
    """Turn ``"32:128"``, ``":32"``, ``"32:"`` or ``"0:128:2"`` into a slice (Python slice semantics).

    None (an option left out) means every image.
    """
    if text is None:
        return slice(None)
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise DataError(f"The image range {text!r} is not of the form start:stop (e.g. 32:128); use Python slice syntax.")
    try:
        bounds = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise DataError(f"The image range {text!r} has a bound that is not an integer; write it like 32:128.") from None
    if len(bounds) == 3 and bounds[2] == 0:
        raise DataError(f"The image range {text!r} has step 0; use a positive step such as 0:128:2.")
    return slice(*bounds)


def _parse_label_line(line: str, path: Path, line_number: int) -> tuple[float, ...]:
    fields = line.split()
    where = f"line {line_number} of the label file {path}"
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise DataError(f"{where} has a value that is not a number ({line.strip()!r}); fix the line.") from None
    is_polygon = len(values) > 5 and len(values) % 2 == 1
    if len(values) != 5 and not is_polygon:
        raise DataError(
            f"{where} has {len(values)} values ({line.strip()!r}); a box label is 'class cx cy w h', "
            "a polygon label 'class x1 y1 x2 y2 ...'."
        )
    cls = values[0]
    if cls < 0 or cls != int(cls):
        raise DataError(f"{where} has class {fields[0]!r}; class ids are integers >= 0.")
    coords = np.array(values[1:])
    if not np.all(np.isfinite(coords)) or coords.min() < 0.0 or coords.max() > 1.0:
        raise DataError(f"{where} has coordinates outside 0..1 ({line.strip()!r}); labels must be normalised.")
    if is_polygon:
        xs, ys = coords[0::2], coords[1::2]
        x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
        return (cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return (cls, *values[1:])


def _pick_split(images_dir: Path, split: str | None) -> Path:
    splits = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
    if split is not None:
        if split not in splits:
            raise DataError(f"{images_dir} has no split {split!r} (found: {', '.join(splits) or 'none'}); pick one of those.")
        return images_dir / split
    if not splits:
        return images_dir  # images/ holds the images itself
    if len(splits) == 1:
        return images_dir / splits[0]
    if "val" in splits:
        return images_dir / "val"
    raise DataError(f"{images_dir} holds several splits ({', '.join(splits)}); name one with the split option.")


def _load_yaml(path: Path, split: str) -> YoloDataset:
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"The dataset yaml {path} cannot be parsed ({exc}); fix its syntax.") from exc
    if not isinstance(config, dict):
        raise DataError(f"The dataset yaml {path} is not a mapping; it needs 'path' and '{split}' keys.")
    if not config.get(split):
        raise DataError(f"The dataset yaml {path} has no '{split}' key; add one or choose another split.")
    # Ultralytics resolves a relative `path` against its datasets folder setting; without that setting
    # the only stable anchor is the yaml's own folder.
    root = Path(config.get("path") or ".")
    if not root.is_absolute():
        root = path.parent / root
    entries = config[split] if isinstance(config[split], list) else [config[split]]
    dirs: list[Path] = []
    listed: list[Path] = []
    for entry in entries:
        target = Path(str(entry))
        target = target if target.is_absolute() else root / target
        if target.is_file() and target.suffix == ".txt":
            listed.extend(_read_image_list(target))
        else:
            dirs.append(target)
    if listed and dirs:
        dataset_dirs = dataset_from_image_dirs(dirs, source=str(path))
        paths = sorted({*dataset_dirs.image_paths, *listed}, key=str)
        return dataset_from_image_paths(paths, source=str(path))
    if listed:
        return dataset_from_image_paths(sorted(listed, key=str), source=str(path))
    return dataset_from_image_dirs(dirs, source=str(path))


def _read_image_list(list_file: Path) -> list[Path]:
    """An Ultralytics image list: one path a line; relative paths are taken from the list's folder."""
    paths = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line:
            p = Path(line)
            paths.append(p if p.is_absolute() else list_file.parent / p)
    return paths


def _describe_range(selector: slice) -> str:
    def show(v: int | None) -> str:
        return "" if v is None else str(v)

    text = f"{show(selector.start)}:{show(selector.stop)}"
    return text + (f":{selector.step}" if selector.step is not None else "")
