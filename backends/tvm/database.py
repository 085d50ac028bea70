"""The persistent, reusable MetaSchedule tuning database, and the records shipped with yolograph.

Layout: `<db>/<target key>/database_{workload,tuning_record}.json` (MetaSchedule's JSONDatabase, which
appends each measured record to disk as soon as it is measured, so an interrupted tune keeps
everything it found). Shipped records under `<repo>/data/tuning/<target key>/` are read as well.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path

from yolograph.runtime.host import cpu_flags


DB_ENV_VAR = "YOLOGRAPH_TVM_TUNING_DB"
SHIPPED_ENV_VAR = "YOLOGRAPH_TVM_SHIPPED_RECORDS"  # "0": ignore data/tuning (benchmarks of untuned code)
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "tuning"


def default_database_dir() -> Path:
    """`$YOLOGRAPH_TVM_TUNING_DB`, else ~/.cache/yolograph/tvm-tuning."""
    override = os.environ.get(DB_ENV_VAR)
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yolograph" / "tvm-tuning"


def target_key(target) -> str:
    """A folder name for a target: records are only valid for the CPU/GPU they were tuned on."""
    kind = target.kind.name
    attrs = dict(target.attrs)
    chip = attrs.get("mcpu") or attrs.get("arch") or "generic"
    extra = {k: str(attrs[k]) for k in ("mattr", "mtriple") if k in attrs and attrs[k] and "conda" not in str(attrs[k])}
    suffix = "-" + hashlib.sha1(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8] if extra else ""
    return f"{kind}-{chip}{suffix}"


# Shipped records that an x86-64 host with AVX2 (and no AVX-512) can use when none match its exact
# CPU: a schedule (a MetaSchedule trace) applies to any x86 target; LLVM emits the host's vector code.
X86_SHIPPED_FALLBACK = "llvm-core-avx2"


def database_dirs(db_dir: Path | None, target) -> list[Path]:
    """The user's database folder for `target`, then shipped records (exact CPU, then the x86 AVX2 set)."""
    key = target_key(target)
    dirs = []
    if db_dir is not None:
        dirs.append(Path(db_dir) / key)
    if os.environ.get(SHIPPED_ENV_VAR, "1") == "0":
        return dirs
    shipped = [SHIPPED_DIR / key]
    if key != X86_SHIPPED_FALLBACK and _is_x86_avx2(target):
        shipped.append(SHIPPED_DIR / X86_SHIPPED_FALLBACK)
    dirs.extend(unpacked for unpacked in (_unpack_shipped(path) for path in shipped) if unpacked is not None)
    return dirs


PACKED_FILES = ("database_workload.json", "database_tuning_record.json")


def _unpack_shipped(path: Path) -> Path | None:
    """A readable database folder for shipped records: as is, or its .json.gz files unpacked to a cache.

    Shipped records are gzipped (a workload file is ~5 MB of JSON, ~0.4 MB packed); they are
    unpacked once per content into ~/.cache/yolograph/tvm-shipped/<key>-<hash>/.
    """
    if (path / PACKED_FILES[0]).exists():
        return path
    packed = [path / f"{name}.gz" for name in PACKED_FILES]
    if not all(p.exists() for p in packed):
        return None
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in packed)).hexdigest()[:12]
    cache = default_database_dir().parent / "tvm-shipped" / f"{path.name}-{digest}"
    if not all((cache / name).exists() for name in PACKED_FILES):
        from yolograph.ir.serialization import write_bytes_atomic

        for name, source in zip(PACKED_FILES, packed):
            write_bytes_atomic(cache / name, gzip.decompress(source.read_bytes()))
    return cache


def pack_records(source_dir: Path, dest_dir: Path) -> dict[str, int]:
    """Ship a database: keep the best record per workload, write gzipped files to `dest_dir`."""
    from tvm.s_tir import meta_schedule as ms

    from yolograph.ir.serialization import write_bytes_atomic

    with tempfile.TemporaryDirectory() as temp:
        pruned = ms.database.JSONDatabase(work_dir=temp, allow_missing=True)
        ms.database.JSONDatabase(work_dir=str(source_dir), allow_missing=False).dump_pruned(pruned)
        del pruned
        sizes = {}
        for name in PACKED_FILES:
            data = (Path(temp) / name).read_bytes()
            write_bytes_atomic(Path(dest_dir) / f"{name}.gz", gzip.compress(data, 9, mtime=0))
            sizes[name] = len(data.splitlines())
    return sizes


def _is_x86_avx2(target) -> bool:
    """An llvm target for this x86-64 host (no cross triple) with AVX2 and without AVX-512.

    AVX-512 targets are left out: the AVX2 records hold 8-lane conv tiles, and the analytic
    schedules they replace would use 16 lanes on such a CPU.
    """
    if target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", ""))
    if triple and not triple.startswith("x86_64"):
        return False
    flags = cpu_flags()
    if flags is None:
        return False
    from yolograph.backends.tvm.cpu_schedules import vector_lanes

    return "avx2" in flags and "fma" in flags and vector_lanes(target) == 8


def open_database(db_dir: Path | None, target, *, create: bool):
    """A MetaSchedule database over the user's folder (created if `create`) and shipped records."""
    from tvm.s_tir import meta_schedule as ms

    databases = []
    for index, path in enumerate(database_dirs(db_dir, target)):
        primary = index == 0 and db_dir is not None
        if primary and create:
            path.mkdir(parents=True, exist_ok=True)
        if (path / "database_workload.json").exists() or (primary and create):
            databases.append(ms.database.JSONDatabase(work_dir=str(path), allow_missing=primary and create))
    if not databases:
        return ms.database.MemoryDatabase()
    if len(databases) == 1:
        return databases[0]
    # The user's own records win over shipped ones (measured elsewhere, so not comparable by latency).
    return ms.database.OrderedUnionDatabase(*databases)
