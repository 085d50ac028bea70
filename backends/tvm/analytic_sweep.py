"""The analytic sweep: measure yolograph's analytic CPU schedules per kernel and commit them as records."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


TILES_PER_CONV = 6  # register tiles the analytic sweep measures per conv kernel


@dataclass
class SweepReport:
    kernels: int = 0
    candidates: int = 0
    failed: int = 0
    seconds: float = 0.0
    speedup_over_default: dict[str, float] = field(default_factory=dict)  # conv kernel -> first tile / best


def sweep_analytic(tasks, target, database, *, builder, runner, tiles_per_conv: int = TILES_PER_CONV,
                   deadline: float | None = None) -> SweepReport:
    """Measure the analytic CPU schedules of every kernel and commit them as records.

    Conv kernels get their first `tiles_per_conv` register tiles, the other kernels the parallel
    fallback; conv kernels the conv rule cannot take (NCHW, grouped) are left to the search.
    Each measured candidate becomes a MetaSchedule record (the schedule's trace), so compiles
    apply the fastest exactly as they apply searched records, and a later search only replaces
    one by measuring something faster. The space is small, so this takes about a minute for
    yolov8n where MetaSchedule's search takes hours to reach the same kernels. Stops between
    kernels at `deadline` (perf_counter time).
    """
    from tvm.s_tir import meta_schedule as ms

    from yolograph.backends.tvm.cpu_schedules import analytic_schedules
    from yolograph.progress import track

    report = SweepReport()
    start = time.perf_counter()
    device = "cuda" if target.kind.name == "cuda" else "cpu"
    for task in track(tasks, "tune: analytic schedules, kernels"):
        if deadline is not None and time.perf_counter() >= deadline:
            break
        workload_mod = task.dispatched[0]
        func = workload_mod["main"]
        schedules = analytic_schedules(func, target, tiles_per_conv, fallback="conv2d" not in task.task_name)
        if not schedules:
            continue
        builds = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch in schedules])
        args_info = ms.arg_info.ArgInfo.from_prim_func(func)
        runs = [None if b.error_msg else runner.run([ms.runner.RunnerInput(b.artifact_path, device, args_info)])[0]
                for b in builds]
        workload = database.commit_workload(workload_mod)
        seconds = []
        for sch, future in zip(schedules, runs):
            result = future.result() if future is not None else None
            if result is None or result.error_msg or not result.run_secs:
                report.failed += 1
                seconds.append(math.inf)
                continue
            run_secs = [float(x) for x in result.run_secs]
            database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, run_secs, target, args_info))
            seconds.append(sum(run_secs) / len(run_secs))
        report.kernels += 1
        report.candidates += len(schedules)
        if len(schedules) > 1 and math.isfinite(min(seconds)) and math.isfinite(seconds[0]):
            report.speedup_over_default[task.task_name] = round(seconds[0] / min(seconds), 3)
    report.seconds = round(time.perf_counter() - start, 1)
    return report
