"""The tune driver: measure the analytic schedules, then search the rest with MetaSchedule.

Tasks whose workload already has a record are not tuned again (see database.py). Two fixes make
MetaSchedule usable on a small CPU box:
- `ForkBuilder` builds each candidate in a fork of this already-loaded process, with a
  per-build timeout. The stock LocalBuilder starts fresh workers that spend ~26 s importing TVM
  each, so every candidate timed out; and one conv build once hung the compiler for minutes.
- `TuningMonitor` prints progress and enforces the --tune-seconds budget by terminating the
  remaining tasks (records already measured stay in the database).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yolograph.errors import BackendError
from yolograph.backends.tvm.analytic_sweep import sweep_analytic
from yolograph.backends.tvm.coverage import has_record, extract_tasks
from yolograph.backends.tvm.database import database_dirs, target_key

BUILD_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 30.0

@dataclass
class TuneReport:
    database: str
    tasks_total: int
    tasks_already_tuned: int
    tasks_tuned_now: int = 0
    trials_run: int = 0
    failed_trials: int = 0
    seconds: float = 0.0
    stopped_by_budget: bool = False
    cost_model: str = ""
    best_gflops: dict[str, float] = field(default_factory=dict)
    analytic: dict[str, Any] = field(default_factory=dict)  # the conv tile sweep (SweepReport)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_serialization() -> None:
    """Fail clearly if tvm.ir.save_json crashes on dtype-carrying objects (apache-tvm-ffi 0.1.15).

    Runs the probe in a forked child: the bug is a segfault, which would kill the caller.
    """
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            import tvm
            from tvm import tirx

            tvm.ir.save_json(tirx.decl_buffer((2, 2), "float32"))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        try:
            from importlib.metadata import version

            ffi = version("apache-tvm-ffi")
        except Exception:  # noqa: BLE001
            ffi = "unknown"
        raise BackendError(f"tvm.ir.save_json crashes with apache-tvm-ffi {ffi}, so MetaSchedule cannot save "
                           "records; pip install 'apache-tvm-ffi==0.1.14.post1' (pinned in yolograph[tvm]).")


def preload_tensor_intrinsics() -> None:
    """Import tvm.s_tir.tensor_intrin (MetaSchedule needs it) with a fast inspect.stack.

    The module parses ~250 TVMScript functions; each parse calls inspect.stack(), which reads the
    source of every frame on the stack and scans sys.modules for each, so the import takes 25-80 s
    inside a deep call stack (pytest, the CLI) with many modules loaded; this is the "~26 s to
    import TVM" each fresh LocalBuilder worker paid. TVMScript only looks at the code context of
    the innermost three frames, so the others get none (and no source lookup).
    """
    import inspect

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    original = inspect.stack

    def fast_stack(context: int = 1):
        frame, infos, depth = sys._getframe(1), [], 0
        while frame is not None:
            if depth < 3:
                info = inspect.getframeinfo(frame, context)
                infos.append(inspect.FrameInfo(frame, *info, positions=info.positions))
            else:  # no source lookup: getsourcefile() scans sys.modules for frozen import frames
                code = frame.f_code
                infos.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None,
                                               positions=None))
            frame, depth = frame.f_back, depth + 1
        return infos

    inspect.stack = fast_stack
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = original


def make_runner(rpc: str | None, evaluator_config=None):
    """LocalRunner (this machine) or an RPCRunner through TVM's tracker ('host:port:key')."""
    from tvm.s_tir import meta_schedule as ms

    if evaluator_config is None:
        evaluator_config = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50,
                                                     enable_cpu_cache_flush=False)
    if rpc:
        from yolograph.backends.tvm.rpc import make_rpc_runner

        return make_rpc_runner(rpc, evaluator_config)
    return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=evaluator_config)


def _cost_model_kind() -> str:
    """XGBoost when installed (much better search); else MetaSchedule's random model."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"


def tune(mod, target, db_dir: Path, *, trials: int = 0, seconds: float | None = None, rpc: str | None = None,
         num_trials_per_iter: int | None = None, strategy: str = "evolutionary", seed: int = 0,
         builder=None, analytic: bool = True) -> TuneReport:
    """Tune every kernel of `mod` that has no record yet; records go to `db_dir` as they are measured.

    MetaSchedule commits a batch of measurements to the database when it joins the batch, which the
    gradient scheduler does lazily (after its first pass over all tasks). On Ctrl-C every running
    batch is joined first, so everything measured so far is kept; then KeyboardInterrupt propagates.
    """
    from tvm.s_tir import meta_schedule as ms

    check_serialization()
    preload_tensor_intrinsics()
    primary_dir = database_dirs(db_dir, target)[0]
    primary_dir.mkdir(parents=True, exist_ok=True)
    # Only the user's own records count as "already tuned": tuning can improve on shipped records.
    primary = ms.database.JSONDatabase(work_dir=str(primary_dir), allow_missing=True)
    tasks = extract_tasks(mod, target)
    todo = [t for t in tasks if not has_record(primary, t, target)]
    report = TuneReport(str(primary_dir), len(tasks), len(tasks) - len(todo), cost_model=_cost_model_kind())
    if not todo:
        _say(f"tune: all {len(tasks)} kernels already have records in {primary_dir}; nothing to tune")
        return report
    cores = int(target.attrs.get("num-cores", os.cpu_count() or 1)) if target.kind.name == "llvm" else (os.cpu_count() or 1)
    if builder is None:
        builder = ForkBuilder(max_workers=max(1, min(cores, os.cpu_count() or 1)), timeout_sec=BUILD_TIMEOUT_S)
    if target.kind.name == "llvm" and not rpc and not os.environ.get("TVM_NUM_THREADS"):
        # Measure candidates on the cores the code is compiled for: TVM's default thread count is
        # half the logical CPUs on x86, one thread on a 2-vCPU machine. (The runner's workers inherit this.)
        os.environ["TVM_NUM_THREADS"] = str(cores)
    runner = make_runner(rpc)
    deadline = time.perf_counter() + seconds if seconds else None
    untuned = list(todo)
    if target.kind.name == "llvm" and analytic:
        # The analytic schedules first: their few candidates beat what MetaSchedule's search reaches
        # in hours on a small CPU. The search then only tries to beat them, on the kernels other
        # than convs (its conv space needs far more trials than a tuning budget buys here).
        sweep = sweep_analytic(todo, target, primary, builder=builder, runner=runner, deadline=deadline)
        report.analytic = asdict(sweep)
        todo = [t for t in todo if "conv2d" not in t.task_name or not has_record(primary, t, target)]
        _say(f"tune: analytic schedules: {sweep.candidates} candidates for {sweep.kernels} kernels in "
             f"{sweep.seconds:.0f} s")
        if not todo or not (trials or seconds) or (deadline is not None and time.perf_counter() >= deadline):
            report.tasks_tuned_now = sum(1 for t in untuned if has_record(primary, t, target))
            report.seconds = sweep.seconds
            return report
        if seconds:
            seconds = max(1.0, deadline - time.perf_counter())
    if not trials:
        trials = 10**9  # time budget only: the monitor stops tuning
        # Small batches so the first pass reaches every kernel before the budget runs out.
        per_iter = num_trials_per_iter or 8
    else:
        per_iter = num_trials_per_iter or max(2, min(64, trials // len(todo)))
    monitor = TuningMonitor(total_trials=trials if trials < 10**9 else None, seconds=seconds,
                            task_names=[t.task_name for t in todo])
    _say(f"tune: {len(todo)} of {len(tasks)} kernels to tune for {target_key(target)}"
         f" ({'%d trials' % trials if trials < 10**9 else ''}{' ' if trials < 10**9 and seconds else ''}"
         f"{'%g s budget' % seconds if seconds else ''}; records -> {primary_dir}; cost model {report.cost_model})")
    start = time.perf_counter()
    # MetaSchedule logs every round at INFO on the console; keep that in the log files only. Its
    # handlers from an earlier tune point at that tune's log folder: drop them (it adds new ones).
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    ms_logger.setLevel(logging.WARNING)
    for handler in list(ms_logger.handlers):
        ms_logger.removeHandler(handler)
        handler.close()
    work_dir = str(primary_dir)  # MetaSchedule writes its logs under <work_dir>/logs
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        todo, work_dir, strategy=_search_strategy(strategy, report.cost_model), num_threads=cores, seed=seed)
    scheduler = ms.task_scheduler.TaskScheduler.create("gradient")
    sigint = _SigintFlag()
    if seconds:
        # The budget is enforced where a new batch would be built: terminating tasks from a measure
        # callback trips MetaSchedule's "task is terminated" check when it is the task being tuned.
        deadline = time.perf_counter() + seconds
        builder.should_stop = lambda: time.perf_counter() >= deadline
    try:
        with sigint:
            ms.tune.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=work_dir,
                max_trials_global=trials, max_trials_per_task=trials, num_trials_per_iter=per_iter,
                builder=builder, runner=runner, database=primary, cost_model=report.cost_model,
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), monitor],
                task_scheduler=scheduler,
            )
    except BaseException as exc:
        if getattr(builder, "budget_exhausted", False) and not sigint.fired:
            _join_all(scheduler, len(contexts))
            report.stopped_by_budget = True
        elif isinstance(exc, KeyboardInterrupt) or sigint.fired or getattr(builder, "interrupted", False):
            _join_all(scheduler, len(contexts))
            monitor.finish()
            _say(f"tune: interrupted; measured records are kept in {primary_dir}")
            raise KeyboardInterrupt from exc
        else:
            raise
    finally:
        monitor.finish()
    report.seconds = round(time.perf_counter() - start + report.analytic.get("seconds", 0.0), 1)
    report.trials_run = monitor.trials
    report.failed_trials = monitor.failures
    report.best_gflops = {k: round(v, 2) for k, v in monitor.best_gflops.items()}
    report.tasks_tuned_now = sum(1 for t in untuned if has_record(primary, t, target))
    _say(f"tune: {report.trials_run} trials in {report.seconds:.0f} s; {report.tasks_tuned_now} of {len(todo)} "
         f"kernels got records ({report.failed_trials} failed candidates)")
    return report


class _SigintFlag:
    """While active, Ctrl-C also sets `fired` (TVM turns the KeyboardInterrupt into a RuntimeError)."""

    def __init__(self) -> None:
        self.fired = False
        self.previous = None

    def _handler(self, signum, frame):
        self.fired = True
        raise KeyboardInterrupt

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _join_all(scheduler, count: int) -> None:
    """Join every task's running batch so its measurements reach the database (after Ctrl-C)."""
    for task_id in range(count):
        try:
            if scheduler.tasks_[task_id].measure_candidates is not None:  # a batch is out
                scheduler.join_running_task(task_id)
        except Exception:  # noqa: BLE001 - a task with nothing running, or a failed join: nothing to keep
            continue


def _search_strategy(kind: str, cost_model: str):
    """Evolutionary search; with the random cost model its big population only costs time.

    The population is scored by the cost model before anything is measured. A random model
    cannot rank it, so 512 candidates x 4 generations (~45 s per round on 2 busy cores) buy
    nothing over 128 x 2; mutation of the best measured schedules still drives the search.
    """
    from tvm.s_tir import meta_schedule as ms

    if kind != "evolutionary" or cost_model != "random":
        return kind
    return ms.search_strategy.EvolutionarySearch(population_size=128, init_min_unmeasured=32, genetic_num_iters=2)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- builder and monitor (TVM objects: created lazily so importing this module needs no TVM) ----------


def _define_classes():
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class ForkBuilder(PyBuilder):
        """Builds each candidate in os.fork() of this process (TVM already loaded), with a timeout."""

        def __init__(self, max_workers: int = 1, timeout_sec: float = BUILD_TIMEOUT_S, on_batch=None) -> None:
            super().__init__()
            self.max_workers = max_workers
            self.timeout_sec = timeout_sec
            self.on_batch = on_batch  # called with the batch number before each batch (hooks, tests)
            self.batches = 0
            self.interrupted = False
            self.should_stop = None  # set by tune() for a time budget
            self.budget_exhausted = False

        def build(self, build_inputs):
            # KeyboardInterrupt reaches tune() as a bare RuntimeError through TVM's C++ scheduler: note it.
            try:
                return self._build(build_inputs)
            except KeyboardInterrupt:
                self.interrupted = True
                raise

        def _build(self, build_inputs):
            self.batches += 1
            if self.batches > 1 and self.should_stop is not None and self.should_stop():
                self.budget_exhausted = True  # tune() sees the error, joins what is running, and stops
                raise RuntimeError("yolograph: tuning time budget exhausted")
            if self.on_batch is not None:
                self.on_batch(self.batches)
            results: list[Any] = [None] * len(build_inputs)
            pending = list(enumerate(build_inputs))
            running: dict[int, tuple[int, int, float]] = {}  # index -> (pid, read fd, start)
            while pending or running:
                while pending and len(running) < self.max_workers:
                    index, item = pending.pop(0)
                    running[index] = _fork_build(item)
                for index, (pid, fd, started) in list(running.items()):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        results[index] = _collect(fd, status)
                        del running[index]
                    elif time.monotonic() - started > self.timeout_sec:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        os.close(fd)
                        results[index] = BuilderResult(None, f"ForkBuilder: timeout, killed after {self.timeout_sec:.0f} s")
                        del running[index]
                if running:
                    select.select([fd for _, fd, _ in running.values()], [], [], 0.05)
            return results

    def _fork_build(item) -> tuple[int, int, float]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: build, export, report the path; never return into the parent's code
            os.close(read_fd)
            message = b""
            try:
                rt_mod = default_build(item.mod, item.target, None)
                message = b"OK" + default_export(rt_mod).encode()
            except BaseException as exc:  # noqa: BLE001 - report any build error as text
                message = b"ER" + f"{type(exc).__name__}: {exc}".encode(errors="replace")[:4000]
            finally:
                try:
                    os.write(write_fd, message)
                finally:
                    os._exit(0)
        os.close(write_fd)
        return pid, read_fd, time.monotonic()

    def _collect(fd: int, status: int):
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(fd)
        data = b"".join(chunks)
        if data.startswith(b"OK"):
            return BuilderResult(data[2:].decode(), None)
        if data.startswith(b"ER"):
            return BuilderResult(None, "ForkBuilder: " + data[2:].decode(errors="replace"))
        return BuilderResult(None, f"ForkBuilder: build process died (wait status {status})")

    @derived_object
    class TuningMonitor(PyMeasureCallback):
        """Progress on stderr, per-task best GFLOP/s, and the --tune-seconds budget."""

        def __init__(self, total_trials: int | None, seconds: float | None, task_names: list[str]) -> None:
            super().__init__()
            self.total_trials = total_trials
            self.seconds = seconds
            self.task_names = task_names
            self.start = time.perf_counter()
            self.trials = 0
            self.failures = 0
            self.stopped = False
            self.best_gflops: dict[str, float] = {}
            self.shown = False

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            name = self.task_names[task_id]
            flop = _task_flop(task_scheduler, task_id)
            for build, run in zip(builder_results, runner_results):
                self.trials += 1
                if build.error_msg or run.error_msg or not run.run_secs:
                    self.failures += 1
                    continue
                secs = sum(float(s) for s in run.run_secs) / len(run.run_secs)
                if flop and secs > 0:
                    self.best_gflops[name] = max(self.best_gflops.get(name, 0.0), flop / secs / 1e9)
            elapsed = time.perf_counter() - self.start
            of = f"/{self.total_trials}" if self.total_trials else ""
            budget = f" of {self.seconds:.0f}" if self.seconds else ""
            best = f", best {self.best_gflops[name]:.1f} GFLOP/s" if name in self.best_gflops else ""
            line = (f"tune: {self.trials}{of} trials, {self.failures} failed, {elapsed:.0f}{budget} s; "
                    f"task {task_id + 1}/{len(self.task_names)} {name[:40]}{best}")
            from yolograph.progress import enabled

            if enabled():
                sys.stderr.write("\r" + line.ljust(110))
                sys.stderr.flush()
                self.shown = True

        def finish(self) -> None:
            if self.shown:
                sys.stderr.write("\n")
                self.shown = False

    return ForkBuilder, TuningMonitor


def _task_flop(task_scheduler, task_id: int) -> float | None:
    try:
        return float(task_scheduler.tasks_[task_id].flop)
    except Exception:  # noqa: BLE001 - statistics only
        return None


_CLASSES: tuple | None = None


def _classes():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _define_classes()
    return _CLASSES


def ForkBuilder(**kwargs):  # noqa: N802 - behaves like the class
    return _classes()[0](**kwargs)


def TuningMonitor(**kwargs):  # noqa: N802
    return _classes()[1](**kwargs)
