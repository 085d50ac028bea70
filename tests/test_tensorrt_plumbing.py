"""compile_model -> engine + sidecar -> load_runner -> run/predict/benchmark, end to end on CPU, against
STAND-IN `tensorrt` and `cuda.bindings.runtime` modules.

The stand-ins implement the TensorRT 10 / cuda-python calls the backend makes (names and shapes as
documented) with plain Python: "device memory" is a dict of bytearrays, and the fake engine executes
the parsed ONNX graph with ONNX Runtime. So these tests check our plumbing (build order, profiles per
batch size, timing cache and sidecar files, host<->device copies, the INT8 report wiring), not
TensorRT; the real thing is checked by the GPU test and benchmarks/tensorrt_gpu.py.
"""

from __future__ import annotations

import ctypes
import json
import sys
import types
from itertools import count

import numpy as np
import onnx
import pytest

from yolograph.backends.tensorrt import compile_model, gpu_available, load_runner, read_sidecar
from yolograph.backends.tensorrt.runtime import NO_GPU_MESSAGE
from yolograph.errors import BackendError, DataError

from test_tensorrt_backend import _qdq_chain_model

INPUT, OUTPUT = "INPUT", "OUTPUT"


class _Namespace(types.SimpleNamespace):
    pass


def _fake_cudart():
    memory: dict[int, bytearray] = {}
    addresses = count(0x1000, 0x1000)
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = _Namespace(cudaSuccess=0)
    rt.cudaMemcpyKind = _Namespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")
    rt.memory = memory

    class Stream(int):
        pass

    def malloc(size):
        pointer = next(addresses)
        memory[pointer] = bytearray(size)
        return 0, pointer

    def memcpy(dst, src, size, kind, stream):
        if kind == "H2D":
            memory[dst][:size] = ctypes.string_at(src, size)
        else:
            ctypes.memmove(dst, bytes(memory[src][:size]), size)
        return (0,)

    rt.cudaGetDeviceCount = lambda: (0, 1)
    rt.cudaGetDeviceProperties = lambda device: (0, _Namespace(name=b"Fake GPU 9000\x00", major=9, minor=0))
    rt.cudaGetErrorName = lambda error: (0, b"cudaErrorFake")
    rt.cudaMalloc = malloc
    rt.cudaFree = lambda pointer: (memory.pop(pointer, None), 0)[1:]
    rt.cudaMemcpyAsync = memcpy
    rt.cudaStreamCreate = lambda: (0, Stream(7))
    rt.cudaStreamSynchronize = lambda stream: (0,)
    rt.cudaStreamDestroy = lambda stream: (0,)
    return rt


def _fake_tensorrt(cudart):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0"
    trt.calls = []
    trt.engines = {}  # serialized bytes -> ONNX bytes it was built from
    trt.BuilderFlag = _Namespace(FP16="FP16", INT8="INT8", TF32="TF32")
    trt.NetworkDefinitionCreationFlag = _Namespace(STRONGLY_TYPED=1)
    trt.network_flags = []  # the flag bits of every create_network call
    trt.MemoryPoolType = _Namespace(WORKSPACE="WORKSPACE")
    trt.ProfilingVerbosity = _Namespace(DETAILED="DETAILED")
    trt.LayerInformationFormat = _Namespace(JSON="JSON")
    trt.TensorIOMode = _Namespace(INPUT=INPUT, OUTPUT=OUTPUT)
    trt.nptype = lambda dtype: np.float32

    class Logger:
        WARNING = 2

        def __init__(self, severity=2):
            self.severity = severity

    class Network:
        onnx_bytes = b""

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse(self, data):
            onnx.checker.check_model(onnx.load_from_string(data))
            self.network.onnx_bytes = data
            return True

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+timed"

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.cache, self.pool = set(), [], None, None
            self.profiling_verbosity = None

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pool = (pool, size)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.network_flags.append(flags)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.calls.append(("build", sorted(config.flags), config.pool, config.profiling_verbosity,
                              [p.shapes for p in config.profiles], config.cache.data))
            engine = b"FAKE-ENGINE" + bytes(str(len(trt.engines)), "ascii")
            trt.engines[engine] = (network.onnx_bytes, len(config.profiles))
            return engine

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.profile = engine, {}, {}, 0

        def set_optimization_profile_async(self, index, stream):
            assert isinstance(stream, int)
            self.profile = index
            return True

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            batch = next(iter(self.shapes.values()))[0] if self.shapes else 1
            return (batch, *self.engine.static_shape(name)[1:])

        def set_tensor_address(self, name, pointer):
            self.addresses[name] = pointer

        def execute_async_v3(self, stream):
            import onnxruntime as ort

            inputs = {}
            for name in self.engine.inputs:
                shape = self.get_tensor_shape(name)
                raw = cudart.memory[self.addresses[name]]
                inputs[name] = np.frombuffer(bytes(raw), np.float32, int(np.prod(shape))).reshape(shape)
            outputs = self.engine.session(ort).run(self.engine.outputs, inputs)
            for name, value in zip(self.engine.outputs, outputs):
                data = np.ascontiguousarray(value, np.float32).tobytes()
                cudart.memory[self.addresses[name]][:len(data)] = data
            return True

    class Inspector:
        def __init__(self, engine):
            self.engine, self.execution_context = engine, None

        def get_engine_information(self, fmt):
            return json.dumps(self.engine.layer_information())

    class Engine:
        def __init__(self, onnx_bytes, profiles):
            self.proto = onnx.load_from_string(onnx_bytes)
            self.inputs = [i.name for i in self.proto.graph.input]
            self.outputs = [o.name for o in self.proto.graph.output]
            self.num_io_tensors = len(self.inputs) + len(self.outputs)
            self.num_optimization_profiles = max(profiles, 1)
            self._session = None

        def static_shape(self, name):
            for value in (*self.proto.graph.input, *self.proto.graph.output):
                if value.name == name:
                    return [d.dim_value or -1 for d in value.type.tensor_type.shape.dim]
            raise KeyError(name)

        def session(self, ort):
            if self._session is None:
                self._session = ort.InferenceSession(self.proto.SerializeToString(), providers=["CPUExecutionProvider"])
            return self._session

        def get_tensor_name(self, index):
            return (self.inputs + self.outputs)[index]

        def get_tensor_mode(self, name):
            return INPUT if name in self.inputs else OUTPUT

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self)

        def layer_information(self):
            """One layer per Conv: INT8 input when both its inputs come from DequantizeLinear."""
            producers = {out: node for node in self.proto.graph.node for out in node.output}
            layers = []
            for node in self.proto.graph.node:
                if node.op_type != "Conv":
                    continue
                dqs = [producers[t] for t in node.input[:2] if t in producers and producers[t].op_type == "DequantizeLinear"]
                kind = "Int8" if len(dqs) == 2 else "Half"
                origins = [d.name for d in dqs] + [node.name]
                layers.append({"Name": " + ".join(origins), "LayerType": "CaskConvolution",
                               "Metadata": "\x1e".join(f"[ONNX Layer: {o}]" for o in origins),
                               "Inputs": [{"Format/Datatype": f"Row major {kind} format"}],
                               "Outputs": [{"Format/Datatype": "Half"}]})
            return {"Layers": layers, "Bindings": self.inputs + self.outputs}

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            return Engine(*trt.engines[data]) if data in trt.engines else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, Parser, Runtime
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    cudart = _fake_cudart()
    trt = _fake_tensorrt(cudart)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    return trt


def _ort_reference(model, images):
    import onnxruntime as ort

    session = ort.InferenceSession(model.serialize(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": images[i:i + 1]})[0] for i in range(len(images))])


def test_int8_build_and_run_with_batch_profiles(fake_gpu, tmp_path):
    model = _qdq_chain_model()
    before = model.serialize()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    engine = compile_model(model, tmp_path / "m.engine", precision="int8", workspace_mb=64, batch_sizes=(2, 1),
                           timing_cache=cache)
    assert model.serialize() == before
    (_, flags, pool, verbosity, profiles, cache_in), = fake_gpu.calls
    assert flags == ["FP16", "INT8"] and pool == ("WORKSPACE", 64 << 20) and verbosity == "DETAILED"
    assert [p["x"][1] for p in profiles] == [(1, 4, 8, 8), (2, 4, 8, 8)]
    assert cache_in == b"old" and cache.read_bytes() == b"old+timed"  # cache read before, written after

    sidecar = read_sidecar(engine)
    assert sidecar.batch_sizes == (1, 2) and sidecar.precision == "int8"
    assert sidecar.inputs[0].shape == (-1, 4, 8, 8) and sidecar.device == "Fake GPU 9000 (sm 9.0)"
    assert sidecar.int8_report["ran_int8"] == ["conv_a", "conv_b"] and sidecar.int8_report["ok"]
    assert sidecar.build["readiness"] == {"checked": True, "target": "trt", "errors": 0, "warnings": 0, "codes": {}}
    assert sidecar.tensorrt_major == 10 and sidecar.precision_mode == "builder flags"

    runner = load_runner(engine)
    images = np.random.default_rng(1).random((2, 4, 8, 8), dtype=np.float32)
    reference = _ort_reference(model, images)
    np.testing.assert_allclose(runner.predict(images), reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runner.predict(images[:1]), reference[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="batch sizes \\[1, 2\\], not 3"):
        runner.predict(np.zeros((3, 4, 8, 8), np.float32))
    stats = runner.benchmark(runs=3, warmup=1, batch=2)
    assert stats.runs == 3 and stats.backend == "tensorrt-int8-b2"
    assert json.loads(runner.engine_information())["Layers"]
    runner.close()


def test_static_fp16_build(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BackendError, match="--precision int8"):  # a Q/DQ graph never builds as fp16
        compile_model(_qdq_chain_model(), tmp_path / "m.engine", precision="fp16")
    from graphs import conv_bn_model

    float_model = conv_bn_model()
    engine = compile_model(float_model, tmp_path / "f.engine", precision="fp16")
    (_, flags, _, _, profiles, _), = fake_gpu.calls
    assert flags == ["FP16"] and profiles == []  # batch 1 == the model's batch: a static engine
    assert (tmp_path / "cache" / "tensorrt" / "timing-fake-gpu-9000-trt10.9.0.cache").exists()
    sidecar = read_sidecar(engine)
    assert sidecar.inputs[0].shape == (1, 8, 16, 16) and sidecar.int8_report == {"layer_types": {"fp16": 1}}
    runner = load_runner(engine)
    x = np.random.default_rng(0).random((1, 8, 16, 16), dtype=np.float32)
    import onnxruntime as ort

    reference = ort.InferenceSession(float_model.serialize(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(runner.run({"x": x})[0], reference, rtol=1e-5, atol=1e-6)


def test_stand_in_reports_available_and_real_reports_missing(fake_gpu, monkeypatch):
    assert gpu_available() == (True, "Fake GPU 9000, TensorRT 10.9.0")
    fake_gpu.__version__ = "11.4.0"
    assert gpu_available() == (True, "Fake GPU 9000, TensorRT 11.4.0")
    fake_gpu.__version__ = "12.0.0"
    ok, reason = gpu_available()
    assert not ok and "TensorRT 10 and 11 APIs" in reason
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails like an absent package
    ok, reason = gpu_available()
    assert not ok and "tensorrt package is not importable" in reason
    assert NO_GPU_MESSAGE.endswith("none was found.")


def test_tensorrt_11_builds_strongly_typed_adding_to_fp16(fake_gpu, tmp_path, monkeypatch):
    """TensorRT 11: no precision flag; --precision fp16 on a float graph adds the to-fp16 pass first."""
    from graphs import conv_bn_model

    monkeypatch.setenv("YOLOGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    fake_gpu.__version__ = "11.4.0"
    float_model = conv_bn_model()
    before = float_model.serialize()
    engine = compile_model(float_model, tmp_path / "f.engine", precision="fp16")
    assert float_model.serialize() == before
    (_, flags, _, _, _, _), = fake_gpu.calls
    assert flags == [] and fake_gpu.network_flags == [0]  # 11's networks are strongly typed by default
    sidecar = read_sidecar(engine)
    assert sidecar.tensorrt_major == 11 and sidecar.precision_mode.startswith("strongly typed")
    assert sidecar.build["added_passes"] == "to-fp16" and sidecar.build["plan"]["strongly_typed"]
    assert sidecar.build["readiness"]["target"] == "trt11" and sidecar.build["readiness"]["errors"] == 0
    built = onnx.load_from_string(fake_gpu.engines[next(iter(fake_gpu.engines))][0])
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in built.graph.initializer)  # the graph says fp16
    with pytest.raises(BackendError, match="no weakly typed networks"):
        compile_model(float_model, tmp_path / "w.engine", precision="fp16", typing="weak")


def test_tensorrt_10_strongly_typed_int8_sets_the_creation_flag(fake_gpu, tmp_path):
    engine = compile_model(_qdq_chain_model(), tmp_path / "m.engine", precision="int8", typing="strong")
    (_, flags, _, _, _, _), = fake_gpu.calls
    assert flags == [] and fake_gpu.network_flags == [1 << 1]
    sidecar = read_sidecar(engine)
    assert sidecar.tensorrt_major == 10 and sidecar.build["added_passes"] == ""
    assert sidecar.int8_report["ok"]
    with pytest.raises(BackendError, match="needs INT8 calibration"):
        from graphs import conv_bn_model

        compile_model(conv_bn_model(), tmp_path / "n.engine", precision="int8", typing="strong")
