"""Which kernels of a model have tuning records: fusion as the compile does it, task extraction, coverage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yolograph.backends.tvm.database import open_database

def fusion_passes(target) -> list:
    """Legalize and fuse as MetaSchedule's compile_relax does: tasks and builds see the same kernels."""
    from tvm import relax
    from tvm.relax import pipeline

    try:
        dispatch = pipeline.library_dispatch_passes(target)
    except (ValueError, AttributeError):
        dispatch = []
    return [
        *dispatch,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def fused_module(mod, target):
    """The module as the build sees it before applying the database (same workload keys)."""
    import tvm

    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(fusion_passes(target))(mod)


def extract_tasks(mod, target) -> list:
    from tvm.s_tir import meta_schedule as ms

    return list(ms.relax_integration.extract_tasks(fused_module(mod, target), target))


@dataclass(frozen=True)
class Coverage:
    total: int
    tuned: int
    analytic: int = 0  # untuned conv kernels that get the analytic CPU schedule
    naive: int = 0  # untuned conv kernels with neither (naive loops, slow on a CPU) ...
    naive_flop_share: float = 0.0  # ... and their share of the model's FLOPs


def coverage_of(mod, target, db_dir: Path | None, analytic: bool = True) -> Coverage:
    """How many of the module's kernels have a tuning record for `target`, and how the rest are scheduled."""
    from tvm.s_tir.analysis import estimate_tir_flops

    from yolograph.backends.tvm.cpu_schedules import candidate_tiles

    tasks = extract_tasks(mod, target)
    database = open_database(db_dir, target, create=False)
    untuned = [t for t in tasks if not has_record(database, t, target)]
    convs = [t for t in untuned if "conv2d" in t.task_name]
    if target.kind.name == "llvm" and analytic:
        from yolograph.backends.tvm.int8_schedules import is_packed_conv

        naive = [t for t in convs if not candidate_tiles(t.dispatched[0]["main"], target)
                 and not is_packed_conv(t.dispatched[0]["main"])]
    else:
        naive = convs  # GPU kernels without records get dlight's rules; the share is informational

    def flops(task) -> float:
        return float(estimate_tir_flops(task.dispatched[0])) * task.weight

    total_flops = sum(flops(t) for t in tasks) or 1.0
    return Coverage(len(tasks), len(tasks) - len(untuned), len(convs) - len(naive), len(naive),
                    round(sum(flops(t) for t in naive) / total_flops, 4))


def has_record(database, task, target) -> bool:
    # query_tuning_record, not has_workload: the union databases do not implement HasWorkload.
    return database.query_tuning_record(task.dispatched[0], target, task.task_name) is not None
