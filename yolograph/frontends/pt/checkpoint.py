"""Read a PyTorch (.pt) checkpoint without torch and without running anything from the file.

A torch checkpoint is a zip archive: `<prefix>/data.pkl` is a pickle describing the object tree,
and `<prefix>/data/<key>` hold the raw bytes of each tensor storage. Unpickling with the standard
`pickle.load` would import and call whatever the pickle names (a checkpoint can run `os.system`).
`SafeUnpickler` instead resolves every GLOBAL through a strict allowlist:

* torch / ultralytics module classes become inert `ModuleRecord`s (a class name plus the
  `__dict__` torch stores; no module code exists or runs),
* tensor rebuild functions become numpy arrays cut from the storage bytes (strides and offset
  honoured, always copied to a fresh contiguous array),
* a handful of harmless builtins (`OrderedDict`, `set`, `torch.Size`, numpy scalars/dtypes).

Anything else is refused with `UnsafeCheckpointError` before it is called, so nothing from the
file executes. Allowlisted callables are handed out wrapped, so pickle's BUILD opcode cannot patch
them either (e.g. a function's `__defaults__`), and record classes are made afresh per load.
Corrupt archives, missing storages and unsupported dtypes raise `ModelError`.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolograph.errors import ModelError

# Storage classes torch writes into the pickle, and the numpy dtype of their elements.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "HalfStorage": np.dtype(np.float16),
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}

# Module namespaces whose classes are reconstructed as inert records. Only the class *name* is
# kept; the record never imports or calls the real class, so any class in these namespaces is
# as safe as a dict. Accepting the whole namespace (not only the YOLOv8 classes) lets lowering
# say precisely which module is unsupported (e.g. `C3k2`) instead of failing on the pickle.
RECORD_NAMESPACES = re.compile(
    r"^(torch\.nn\.modules\.[a-z_]+|ultralytics\.nn\.modules(\.[a-z_]+)?|ultralytics\.nn\.tasks)$"
)
CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")

# Plain-attribute containers ultralytics has pickled in train args across releases.
NAMESPACE_RECORDS = {
    ("types", "SimpleNamespace"),
    ("ultralytics.utils", "IterableSimpleNamespace"),
}


class UnsafeCheckpointError(ModelError):
    """The checkpoint's pickle names a global outside the allowlist; nothing was executed."""


# -- inert records ------------------------------------------------------------------------------


class ModuleRecord:
    """An inert stand-in for a pickled torch/ultralytics object: its class name and `__dict__`.

    Subclasses are made per qualified class name (pickle's NEWOBJ needs a real type); they carry
    no behaviour beyond storing the state pickle hands to `__setstate__`.
    """

    qualname: str = "?"

    def __init__(self) -> None:  # REDUCE with arguments is refused by the signature
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise ModelError(f"The pickled {self.qualname} has a non-dict state; the checkpoint is malformed.")
        self.state = dict(state)

    @property
    def type_name(self) -> str:
        """The short class name, e.g. 'Conv' or 'BatchNorm2d'."""
        return self.qualname.rsplit(".", 1)[-1]

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, "state", {}).get(name, default)

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.get("_parameters") or {}

    @property
    def buffers(self) -> Mapping[str, Any]:
        return self.get("_buffers") or {}

    @property
    def children(self) -> Mapping[str, Any]:
        return self.get("_modules") or {}

    def __repr__(self) -> str:
        return f"<{self.qualname} record>"


def record_type(qualname: str) -> type[ModuleRecord]:
    """A ModuleRecord subclass standing in for class `qualname`.

    Each unpickler makes its own (see SafeUnpickler.find_class), so nothing one file does to a record
    class can affect another load.
    """
    short = qualname.rsplit(".", 1)[-1]
    return type(f"{short}Record", (ModuleRecord,), {"qualname": qualname})


@dataclass(frozen=True)
class StorageType:
    """Marker for a `torch.<X>Storage` global: only its element dtype matters."""

    name: str
    dtype: np.dtype

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(
            f"The checkpoint's pickle tries to modify torch.{self.name}; it is malformed or hostile."
        )


class Reconstructor:
    """An allowlisted callable as the unpickler hands it out.

    Wrapping keeps pickle's BUILD opcode from setting attributes (e.g. `__defaults__`) on the real
    function objects: BUILD on a Reconstructor is refused.
    """

    __slots__ = ("qualname", "function")

    def __init__(self, qualname: str, function: Callable[..., Any]) -> None:
        self.qualname = qualname
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(
            f"The checkpoint's pickle tries to modify {self.qualname}; it is malformed or hostile."
        )


# -- allowlisted reconstructors -----------------------------------------------------------------


def _torch_size(*args: Any) -> tuple[int, ...]:
    dims = args[0] if len(args) == 1 else ()
    if len(args) > 1 or not all(isinstance(d, int) for d in dims):
        raise ModelError("A pickled torch.Size holds non-integers; the checkpoint is malformed.")
    return tuple(dims)


def _rebuild_tensor_v2(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    return tensor_from_storage(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise ModelError("A pickled parameter does not wrap a tensor; the checkpoint is malformed.")
    return data


def _numpy_scalar(dtype: np.dtype, payload: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(payload, bytes):
        raise UnsafeCheckpointError("The checkpoint pickles a numpy object scalar; yolograph refuses it.")
    return np.frombuffer(payload, dtype=dtype, count=1)[0]


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafeCheckpointError("The checkpoint pickles a structured numpy dtype; yolograph refuses it.")
    dtype = np.dtype(spec)
    if dtype.hasobject:
        raise UnsafeCheckpointError("The checkpoint pickles a numpy object dtype; yolograph refuses it.")
    return dtype


ALLOWED_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("torch", "Size"): _torch_size,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}


def tensor_from_storage(
    storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> np.ndarray:
    """A fresh contiguous array viewing `storage` at element `offset` with element `stride`s."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise ModelError("A pickled tensor does not reference a storage; the checkpoint is malformed.")
    if len(size) != len(stride) or offset < 0 or any(d < 0 for d in size) or any(s < 0 for s in stride):
        raise ModelError(
            f"A pickled tensor has an invalid layout (size {size}, stride {stride}, offset {offset}); "
            "the checkpoint is malformed."
        )
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if last >= storage.size:
        raise ModelError(
            f"A pickled tensor of size {size} (stride {stride}, offset {offset}) reaches past its storage of "
            f"{storage.size} elements; the checkpoint is truncated or corrupt. Re-save it."
        )
    if math.prod(size) > storage.size:
        # Only expanded (stride-0) views have more elements than their storage; weights never do,
        # and materializing one could be made arbitrarily large.
        raise ModelError(
            f"A pickled tensor of size {size} has more elements than its storage ({storage.size}); "
            "yolograph reads dense weight tensors only. Re-save the checkpoint with contiguous tensors."
        )
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view, order="C", copy=True)  # (np.ascontiguousarray would turn 0-d into 1-d)


# -- the unpickler ------------------------------------------------------------------------------


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler whose globals come only from the allowlist and whose storages come from `load_storage`."""

    def __init__(self, data: bytes, load_storage: Callable[[StorageType, str, int], np.ndarray]) -> None:
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._storages: dict[str, np.ndarray] = {}
        self._record_types: dict[str, type[ModuleRecord]] = {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_FUNCTIONS.get((module, name))
        if allowed is not None:
            return Reconstructor(f"{module}.{name}", allowed)
        if module == "torch" and name.endswith("Storage"):
            dtype_name = name[: -len("Storage")] or "untyped"
            if name not in STORAGE_DTYPES:
                raise ModelError(
                    f"The checkpoint stores tensors as torch.{name} ({dtype_name}), which yolograph cannot read; "
                    "re-save the model in float16 or float32 (model.half() / model.float())."
                )
            return StorageType(name, STORAGE_DTYPES[name])
        if (RECORD_NAMESPACES.match(module) and CLASS_NAME.match(name)) or (module, name) in NAMESPACE_RECORDS:
            qualname = f"{module}.{name}"
            if qualname not in self._record_types:
                self._record_types[qualname] = record_type(qualname)
            return self._record_types[qualname]
        raise UnsafeCheckpointError(
            f"The checkpoint's pickle names {module}.{name}, which is not an allowed torch/ultralytics class; "
            "yolograph refused to load it and ran nothing from the file. Only load checkpoints you trust, "
            "or export the model to ONNX with ultralytics and load the .onnx file."
        )

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ModelError(
                f"The checkpoint references an unknown persistent object {str(pid)[:80]}; it is malformed."
            )
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise ModelError(
                f"The checkpoint's storage {key!r} has type {storage_type!r}, not a torch storage class; "
                "it is malformed."
            )
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise ModelError(f"The checkpoint has a malformed storage reference {str(pid)[:80]}.")
        cached = self._storages.get(key)
        if cached is None or cached.dtype != storage_type.dtype:
            cached = self._load_storage(storage_type, key, numel)
            self._storages[key] = cached
        return cached


# -- the zip archive ----------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A checkpoint's unpickled top-level object and where it came from."""

    path: Path
    contents: Any
    storages: int


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Safely read a torch zip checkpoint; tensors come back as numpy arrays, modules as records."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Checkpoint {str(path)!r} does not exist; give the path to an ultralytics .pt file.")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        hint = (
            "it is an old (pre-1.6) torch pickle; re-save it with a current torch"
            if _looks_like_legacy_pickle(path)
            else "it is truncated or not a torch checkpoint; re-download or re-save it"
        )
        raise ModelError(f"{path} is not a readable torch zip checkpoint ({exc}); {hint}.") from exc
    with archive:
        prefix = _record_prefix(archive, path)
        byteorder = _read_text(archive, prefix + "byteorder", default="little")
        if byteorder not in ("little", "big"):
            raise ModelError(f"{path} declares byteorder {byteorder!r}; expected 'little' or 'big'. It is malformed.")
        loaded = 0

        def load_storage(storage_type: StorageType, key: str, numel: int) -> np.ndarray:
            nonlocal loaded
            raw = _read_record(archive, f"{prefix}data/{key}", path, what=f"tensor storage {key!r}")
            dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
            needed = numel * dtype.itemsize
            if len(raw) < needed:
                raise ModelError(
                    f"{path}: storage {key!r} holds {len(raw)} bytes but {storage_type.name} of {numel} elements "
                    f"needs {needed}; the checkpoint is truncated or corrupt. Re-save it."
                )
            loaded += 1
            return np.frombuffer(raw, dtype=dtype, count=numel).astype(storage_type.dtype)

        data = _read_record(archive, prefix + "data.pkl", path, what="pickle data.pkl")
        try:
            contents = SafeUnpickler(data, load_storage).load()
        except ModelError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
            raise ModelError(
                f"{path}: data.pkl cannot be decoded ({type(exc).__name__}: {exc}); the checkpoint is corrupt."
            ) from exc
    return Checkpoint(path=path, contents=contents, storages=loaded)


def _record_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The folder that holds data.pkl (torch uses the file stem or 'archive/')."""
    pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") <= 1]
    if len(pickles) != 1:
        raise ModelError(
            f"{path} is a zip but not a torch checkpoint (found {len(pickles)} data.pkl records); "
            "give an ultralytics .pt file."
        )
    return pickles[0][: -len("data.pkl")]


def _read_record(archive: zipfile.ZipFile, name: str, path: Path, *, what: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError as exc:
        raise ModelError(f"{path} has no {what} (record {name!r}); the checkpoint is incomplete. Re-save it.") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelError(
            f"{path}: the {what} record is unreadable ({exc}); the checkpoint is truncated or corrupt."
        ) from exc


def _read_text(archive: zipfile.ZipFile, name: str, default: str) -> str:
    try:
        return archive.read(name).decode("ascii", "replace").strip()
    except KeyError:
        return default


def _looks_like_legacy_pickle(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x80\x02"


# -- module trees -------------------------------------------------------------------------------


def state_dict(module: ModuleRecord, prefix: str = "") -> dict[str, np.ndarray]:
    """The module's state_dict as torch computes it: parameters and persistent buffers, depth first."""
    if not isinstance(module, ModuleRecord):
        raise ModelError(f"{prefix or 'The model'} is not a pickled torch module; the checkpoint is malformed.")
    entries: dict[str, np.ndarray] = {}
    non_persistent = module.get("_non_persistent_buffers_set") or set()
    tensors = [*module.parameters.items(), *((k, v) for k, v in module.buffers.items() if k not in non_persistent)]
    for name, value in tensors:
        if value is None:
            continue
        if not isinstance(value, np.ndarray):
            raise ModelError(f"{prefix}{name} is not a tensor in the checkpoint; it is malformed.")
        entries[prefix + name] = value
    for name, child in module.children.items():
        if child is not None:
            entries.update(state_dict(child, f"{prefix}{name}."))
    return entries
