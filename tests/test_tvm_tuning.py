"""TVM MetaSchedule tuning: records persist and are reused, the time budget stops tuning, RPC works.

Each test tunes one small conv kernel for a handful of trials (tuning quality is measured in
benchmarks/tvm_backend.py, not here). The models compile as NCHW so that the conv is the only kernel (the
CPU default, NHWC, adds the I/O transposes as two more).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from graphs import make_model
from yolograph.runtime import OrtOptions, OrtRunner

pytest.importorskip("tvm", reason="the tvm extra is not installed")

from yolograph.backends import tvm as ytvm  # noqa: E402
from yolograph.backends.tvm import coverage, database, tune  # noqa: E402
from yolograph.backends.tvm.compile import lower_to_relax, resolve_options  # noqa: E402
from yolograph.backends.tvm.target import parse_target, validate_target  # noqa: E402
from yolograph.errors import BackendError  # noqa: E402


def conv_silu_model(cin: int, cout: int, size: int):
    """One fused kernel: Conv3x3 + bias + SiLU (a new workload for each shape)."""
    rng = np.random.default_rng(cin * 100 + cout)
    inits = {"w": rng.normal(0, 0.3, (cout, cin, 3, 3)).astype(np.float32),
             "b": rng.normal(0, 0.3, cout).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
        helper.make_node("Mul", ["c", "s"], ["y"], name="mul"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, size, size])], inits)


def lowered_nchw(model, db):
    """(Relax module, target) of `model` compiled NCHW for this CPU: the conv is the only kernel."""
    options = resolve_options(model, target="llvm", tune_trials=0, tune_seconds=None, tuning_db=db, rpc=None,
                              layout="NCHW", int8=None)
    return lower_to_relax(model, options)[0], validate_target(options.target)


def records_in(db_dir) -> int:
    files = list(db_dir.glob("*/database_tuning_record.json"))
    return sum(len([line for line in f.read_text().splitlines() if line.strip()]) for f in files)


def test_budget_stops_tuning_and_records_are_reused(tmp_path):
    model = conv_silu_model(8, 16, 32)
    db = tmp_path / "db"
    mod, target = lowered_nchw(model, db)

    # A 0.5 s budget with 2 candidates per round: the monitor stops the task after its first round.
    report = tune.tune(mod, target, db, trials=64, seconds=0.5, num_trials_per_iter=2)
    assert report.tasks_total == 1 and report.stopped_by_budget
    assert 0 < report.trials_run < 64 and report.tasks_tuned_now == 1
    kept = records_in(db)
    assert kept >= 1, "measured records must be on disk after the budget stopped tuning"

    # Same workload again: nothing is tuned twice, and the records are applied.
    path = ytvm.compile_model(model, tmp_path / "conv.so", tune_trials=8, tuning_db=db, layout="NCHW")
    sidecar = json.loads((tmp_path / "conv.so.json").read_text())["tuning"]
    assert sidecar["tasks_already_tuned"] == 1 and sidecar["trials_run"] == 0
    assert sidecar["tuned_tasks"] == sidecar["tasks"] == 1
    assert records_in(db) == kept
    assert json.loads((tmp_path / "conv.so.json").read_text())["compile_seconds"] < 60

    x = np.random.default_rng(0).random((1, 8, 32, 32), dtype=np.float32)
    expected = OrtRunner(model, OrtOptions(threads=2)).run(x)[0]
    actual = ytvm.load_runner(path).run(x)[0]
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def test_packed_records_ship_to_a_fresh_database(tmp_path, monkeypatch):
    """pack_records (best record per kernel, gzipped) -> data/tuning layout -> used by a compile with no records."""
    model = conv_silu_model(8, 8, 16)
    db = tmp_path / "db"
    mod, target = lowered_nchw(model, db)
    tune.tune(mod, target, db, trials=4, num_trials_per_iter=2)
    key = database.target_key(target)
    shipped = tmp_path / "shipped"
    sizes = database.pack_records(db / key, shipped / key)
    assert sizes == {"database_workload.json": 1, "database_tuning_record.json": 1}
    monkeypatch.setattr(database, "SHIPPED_DIR", shipped)
    monkeypatch.setenv("YOLOGRAPH_TVM_TUNING_DB", str(tmp_path / "user-cache"))
    ytvm.compile_model(model, tmp_path / "shipped.so", layout="NCHW")
    sidecar = json.loads((tmp_path / "shipped.so.json").read_text())["tuning"]
    assert sidecar["tuned_tasks"] == sidecar["tasks"] == 1
    assert any("tvm-shipped" in d for d in sidecar["databases_read"])


def test_tuning_over_rpc_tracker_on_localhost(tmp_path):
    from yolograph.backends.tvm.rpc import LocalRpcCluster

    model = conv_silu_model(4, 8, 16)
    db = tmp_path / "db"
    with LocalRpcCluster(key="yolograph-test", servers=1) as cluster:
        ytvm.compile_model(model, tmp_path / "rpc.so", tune_trials=2, tuning_db=db, rpc=cluster.address,
                           layout="NCHW")
    tuned = json.loads((tmp_path / "rpc.so.json").read_text())["tuning"]
    assert tuned["trials_run"] == 2 and tuned["failed_trials"] == 0 and tuned["tuned_tasks"] == 1
    assert records_in(db) == 2


def test_rpc_errors_are_clear(tmp_path):
    model = conv_silu_model(4, 8, 16)
    with pytest.raises(BackendError, match="tracker_host:port:device_key"):
        ytvm.compile_model(model, tmp_path / "m.so", tune_trials=2, tuning_db=tmp_path, rpc="localhost:x")
    from yolograph.backends.tvm.rpc import _free_port

    with pytest.raises(BackendError, match="Cannot reach the TVM RPC tracker"):
        ytvm.compile_model(model, tmp_path / "m.so", tune_trials=2, tuning_db=tmp_path,
                           rpc=f"127.0.0.1:{_free_port()}:nobody")


def test_interrupted_tune_keeps_what_it_measured(tmp_path):
    """Ctrl-C during the first pass over the tasks (before MetaSchedule joins any batch) keeps the records."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    inits = {"w1": rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32),
             "w2": rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="c2")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    db = tmp_path / "db"
    mod, target = lowered_nchw(model, db)
    assert len(coverage.extract_tasks(mod, target)) >= 2

    def interrupt(batch: int) -> None:
        if batch == 2:  # the first task's batch was built and sent to the runner, not yet joined
            raise KeyboardInterrupt

    builder = tune.ForkBuilder(max_workers=1, on_batch=interrupt)
    with pytest.raises(KeyboardInterrupt):
        tune.tune(mod, target, db, trials=40, num_trials_per_iter=2, builder=builder)
    assert records_in(db) == 2
    assert coverage.coverage_of(mod, target, db).tuned == 1


def test_shipped_records_are_found_after_the_users_and_can_be_ignored(tmp_path, monkeypatch):
    target = validate_target(parse_target("llvm"))
    key = database.target_key(target)
    shipped = tmp_path / "shipped"
    for name in {key, database.X86_SHIPPED_FALLBACK}:
        (shipped / name).mkdir(parents=True)
        (shipped / name / "database_workload.json").write_text("")
    monkeypatch.setattr(database, "SHIPPED_DIR", shipped)
    dirs = database.database_dirs(tmp_path / "mine", target)
    assert dirs[0] == tmp_path / "mine" / key and dirs[1] == shipped / key
    if database._is_x86_avx2(target) and key != database.X86_SHIPPED_FALLBACK:
        assert dirs[2] == shipped / database.X86_SHIPPED_FALLBACK
    cross = validate_target(parse_target("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a76"))
    assert all(database.X86_SHIPPED_FALLBACK not in str(d) for d in database.database_dirs(None, cross))
    monkeypatch.setenv("YOLOGRAPH_TVM_SHIPPED_RECORDS", "0")
    assert database.database_dirs(tmp_path / "mine", target) == [tmp_path / "mine" / key]
