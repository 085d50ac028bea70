"""The ultralytics .pt frontend: safe checkpoint reading and lowering to the IR."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from yolograph.data import fixtures
from yolograph.errors import ModelError
from yolograph.frontends.pt import UnsafeCheckpointError, read_checkpoint, state_dict

FIXTURES = fixtures()
N_PT = FIXTURES / "yolov8n-rand.pt"
S_PT = FIXTURES / "yolov8s-rand-nc3.pt"
PWNED = Path("/tmp/yolograph_pwned")

# Missing shared data fails loudly (conftest's fixtures_dir raises), it never skips.
needs_fixtures = pytest.mark.usefixtures("fixtures_dir")


# -- a tiny protocol-2 pickle assembler, so tests can write exactly the opcodes they mean ---------


def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_call(func: bytes, *args: bytes) -> bytes:
    return func + op_tuple(*args) + b"R"


def op_dict(**items: bytes) -> bytes:
    return b"}(" + b"".join(op_str(k) + v for k, v in items.items()) + b"u"


def pickle_bytes(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def op_tensor(key: str, storage: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    persistent = op_tuple(op_str("storage"), op_global("torch", storage), op_str(key), op_str("cpu"), op_int(numel))
    return op_call(
        op_global("torch._utils", "_rebuild_tensor_v2"),
        persistent + b"Q",
        op_int(offset),
        op_tuple(*map(op_int, size)),
        op_tuple(*map(op_int, stride)),
        b"\x89",
        op_call(op_global("collections", "OrderedDict")),
    )


def write_checkpoint(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


def copy_without(
    source: Path, target: Path, *, drop: str | None = None, replace: dict[str, bytes] | None = None
) -> Path:
    """Copy a checkpoint zip, leaving out the record ending in `drop` and swapping records in `replace`."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if drop and info.filename.endswith(drop):
                continue
            suffix = next((k for k in (replace or {}) if info.filename.endswith(k)), None)
            dst.writestr(info.filename, replace[suffix] if suffix else src.read(info.filename))
    return target


# -- safety -------------------------------------------------------------------------------------


@needs_fixtures
def test_malicious_checkpoint_is_refused_without_running():
    PWNED.unlink(missing_ok=True)
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
        read_checkpoint(FIXTURES / "malicious.pt")
    assert not PWNED.exists()


@pytest.mark.parametrize(
    "module, name",
    [("builtins", "eval"), ("subprocess", "Popen"), ("os", "system"), ("torch", "load"), ("numpy", "load")],
)
def test_unlisted_globals_are_refused(tmp_path, module, name):
    marker = tmp_path / "ran"
    body = op_dict(model=op_call(op_global(module, name), op_str(f"open({str(marker)!r}, 'w')")))
    path = write_checkpoint(tmp_path / "evil.pt", pickle_bytes(body))
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}"):
        read_checkpoint(path)
    assert not marker.exists()


def test_protocol4_stack_global_goes_through_the_allowlist(tmp_path):
    body = op_str("builtins") + op_str("exec") + b"\x93" + op_tuple(op_str("x = 1")) + b"R"
    path = write_checkpoint(tmp_path / "evil4.pt", b"\x80\x04" + body + b".")
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):
        read_checkpoint(path)


def test_module_records_are_inert(tmp_path):
    # A module class reconstructed with REDUCE arguments cannot smuggle a call: records take none.
    body = op_call(op_global("ultralytics.nn.modules.conv", "Conv"), op_str("rm -rf /"))
    path = write_checkpoint(tmp_path / "args.pt", pickle_bytes(body))
    with pytest.raises(ModelError, match="cannot be decoded"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "target",
    [
        op_global("torch._utils", "_rebuild_tensor_v2"),
        op_global("torch", "HalfStorage"),
        op_global("ultralytics.nn.modules.conv", "Conv"),
    ],
    ids=["function", "storage-class", "record-class"],
)
def test_build_cannot_modify_allowlisted_globals(tmp_path, target):
    # BUILD with slot state would setattr on the object: e.g. replace a reconstructor's __defaults__.
    body = target + b"N" + op_dict(__defaults__=op_tuple(op_int(1))) + b"\x86" + b"b"
    path = write_checkpoint(tmp_path / "build.pt", pickle_bytes(body))
    with pytest.raises(ModelError):
        read_checkpoint(path)
    from yolograph.frontends.pt import checkpoint

    assert checkpoint._rebuild_tensor_v2.__defaults__ == (False, None, None)


# -- tensors ------------------------------------------------------------------------------------


def test_tensors_honour_dtype_strides_and_offsets(tmp_path):
    base = np.arange(24, dtype=np.float32)
    half = np.arange(12, dtype=np.float16) / 4
    body = op_dict(
        plain=op_tensor("0", "FloatStorage", 24, 0, (2, 3, 4), (12, 4, 1)),
        transposed=op_tensor("0", "FloatStorage", 24, 0, (4, 6), (1, 4)),
        offset_slice=op_tensor("0", "FloatStorage", 24, 5, (3, 2), (6, 2)),
        half=op_tensor("1", "HalfStorage", 12, 2, (10,), (1,)),
        size=op_call(op_global("torch", "Size"), op_tuple(op_int(1), op_int(3))),
    )
    path = write_checkpoint(tmp_path / "t.pt", pickle_bytes(body), {"0": base.tobytes(), "1": half.tobytes()})
    got = read_checkpoint(path).contents
    np.testing.assert_array_equal(got["plain"], base.reshape(2, 3, 4))
    np.testing.assert_array_equal(got["transposed"], base.reshape(6, 4).T)
    expected_slice = np.array([[base[5 + 6 * i + 2 * j] for j in range(2)] for i in range(3)])
    np.testing.assert_array_equal(got["offset_slice"], expected_slice)
    assert got["half"].dtype == np.float16
    np.testing.assert_array_equal(got["half"], half[2:])
    assert got["transposed"].flags.c_contiguous and got["transposed"].flags.writeable
    assert got["size"] == (1, 3)


def test_tensor_past_its_storage_is_an_error(tmp_path):
    body = op_dict(t=op_tensor("0", "FloatStorage", 4, 2, (3,), (1,)))
    path = write_checkpoint(tmp_path / "t.pt", pickle_bytes(body), {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ModelError, match="reaches past its storage"):
        read_checkpoint(path)


def test_expanded_tensor_cannot_blow_up_memory(tmp_path):
    body = op_dict(t=op_tensor("0", "FloatStorage", 1, 0, (1 << 30, 1 << 30), (0, 0)))
    path = write_checkpoint(tmp_path / "t.pt", pickle_bytes(body), {"0": np.zeros(1, np.float32).tobytes()})
    with pytest.raises(ModelError, match="more elements than its storage"):
        read_checkpoint(path)


def test_short_storage_record_is_an_error(tmp_path):
    body = op_dict(t=op_tensor("0", "FloatStorage", 8, 0, (8,), (1,)))
    path = write_checkpoint(tmp_path / "t.pt", pickle_bytes(body), {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ModelError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_unknown_storage_dtype_is_an_error(tmp_path):
    body = op_dict(t=op_tensor("0", "BFloat16Storage", 4, 0, (4,), (1,)))
    path = write_checkpoint(tmp_path / "t.pt", pickle_bytes(body), {"0": bytes(8)})
    with pytest.raises(ModelError, match=r"torch\.BFloat16Storage.*float16 or float32"):
        read_checkpoint(path)


def test_not_a_zip_is_an_error(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"\x80\x02" + b"\x00" * 64)
    with pytest.raises(ModelError, match="pre-1.6"):
        read_checkpoint(path)
    with pytest.raises(ModelError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")


# -- the fixtures -------------------------------------------------------------------------------


@needs_fixtures
def test_fixture_checkpoint_reads_as_records_and_arrays():
    contents = read_checkpoint(N_PT).contents
    assert contents["ema"] is None and contents["version"] == "8.4.190"
    model = contents["model"]
    assert model.type_name == "DetectionModel"
    weights = state_dict(model)
    assert weights["model.0.conv.weight"].shape == (16, 3, 3, 3)
    assert weights["model.0.conv.weight"].dtype == np.float16
    assert weights["model.0.bn.num_batches_tracked"].dtype == np.int64
    assert weights["model.0.bn.num_batches_tracked"].shape == ()  # a 0-d tensor stays 0-d
    assert weights["model.22.dfl.conv.weight"].shape == (1, 16, 1, 1)
    np.testing.assert_array_equal(weights["model.22.dfl.conv.weight"].ravel(), np.arange(16))
    assert weights["model.22.cv3.2.2.bias"].shape == (80,)
    assert sum(v.size for k, v in weights.items() if k.endswith((".weight", ".bias"))) == 3_157_200
    np.testing.assert_array_equal(model.get("stride"), [8.0, 16.0, 32.0])
    assert model.get("stride").dtype == np.float32
    assert all(np.all(v > 0) for k, v in weights.items() if k.endswith("running_var"))


@needs_fixtures
def test_truncated_checkpoint_is_an_error(tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(N_PT.read_bytes()[: N_PT.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated"):
        read_checkpoint(truncated)


@needs_fixtures
def test_missing_storage_record_is_an_error(tmp_path):
    target = copy_without(N_PT, tmp_path / "missing.pt", drop="/data/7")
    with pytest.raises(ModelError, match=r"tensor storage '7'.*incomplete"):
        read_checkpoint(target)


@needs_fixtures
def test_fixture_with_unknown_storage_class_is_an_error(tmp_path):
    with zipfile.ZipFile(N_PT) as archive:
        pkl = archive.read("yolov8n-rand/data.pkl")
    assert pkl.count(b"torch\nHalfStorage\n") == 1
    patched = pkl.replace(b"torch\nHalfStorage\n", b"torch\nComplexFloatStorage\n")
    target = copy_without(N_PT, tmp_path / "dtype.pt", replace={"/data.pkl": patched})
    with pytest.raises(ModelError, match="ComplexFloatStorage"):
        read_checkpoint(target)


@needs_fixtures
def test_corrupted_storage_bytes_fail_the_crc(tmp_path):
    target = tmp_path / "flipped.pt"
    shutil.copy(N_PT, target)
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo("yolov8n-rand/data/0")
    raw = bytearray(target.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    data_start = info.header_offset + 30 + name_len + extra_len
    raw[data_start] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="truncated or corrupt"):
        read_checkpoint(target)


# -- lowering: what is refused ------------------------------------------------------------------


def patched_fixture(tmp_path: Path, *swaps: tuple[bytes, bytes]) -> Path:
    """A copy of the n fixture whose data.pkl has each `old` byte string replaced by `new`."""
    with zipfile.ZipFile(N_PT) as archive:
        pkl = archive.read("yolov8n-rand/data.pkl")
    for old, new in swaps:
        assert old in pkl, old
        pkl = pkl.replace(old, new)
    return copy_without(N_PT, tmp_path / "patched.pt", replace={"/data.pkl": pkl})


@needs_fixtures
def test_unknown_blocks_are_named_as_unsupported(tmp_path):
    from yolograph.frontends.pt import load_checkpoint_model

    # C2fCIB is a real ultralytics block (YOLOv10) that yolograph does not lower.
    path = patched_fixture(tmp_path, (b"ultralytics.nn.modules.block\nC2f\n", b"ultralytics.nn.modules.block\nC2fCIB\n"))
    with pytest.raises(ModelError, match=r"^unsupported: C2fCIB\. yolograph lowers .*C3k2.* with a Detect, ") as error:
        load_checkpoint_model(path)
    assert "\n" not in str(error.value)


@needs_fixtures
def test_unknown_heads_and_inconsistent_tasks_are_refused(tmp_path):
    from yolograph.frontends.pt import load_checkpoint_model

    head = patched_fixture(tmp_path, (b"ultralytics.nn.modules.head\nDetect\n", b"ultralytics.nn.modules.head\nRTDETRDecoder\n"))
    with pytest.raises(ModelError, match=r"^unsupported: RTDETRDecoder\. "):
        load_checkpoint_model(head)
    # A detect checkpoint relabelled as segmentation: the task and the head disagree.
    relabelled = patched_fixture(
        tmp_path,
        (b"ultralytics.nn.tasks\nDetectionModel\n", b"ultralytics.nn.tasks\nSegmentationModel\n"),
        (b"ultralytics.nn.modules.head\nDetect\n", b"ultralytics.nn.modules.head\nSegment\n"),
    )
    with pytest.raises(ModelError, match=r"^unsupported: task 'detect' with a Segment head"):
        load_checkpoint_model(relabelled)
    task = patched_fixture(tmp_path, (op_str("detect"), op_str("pose")))
    with pytest.raises(ModelError, match=r"^unsupported: task 'pose' with a Detect head"):
        load_checkpoint_model(task)


@needs_fixtures
def test_a_non_stock_bn_eps_is_lowered_with_that_eps(tmp_path):
    from yolograph.frontends.pt import load_checkpoint_model

    # Not the stock YOLOv8 topology any more, so the record walker lowers it, eps read from each BatchNorm2d.
    eps = patched_fixture(tmp_path, (b"G" + struct.pack(">d", 1e-3), b"G" + struct.pack(">d", 1e-5)))
    model = load_checkpoint_model(eps)
    epsilons = {float(node.attrs["epsilon"]) for node in model.graph.nodes if node.op == "BatchNormalization"}
    assert len(epsilons) == 1 and epsilons.pop() == pytest.approx(1e-5)
    assert model.outputs[0].shape == (1, 84, 8400)


@needs_fixtures
def test_edited_module_trees_are_refused():
    from yolograph.frontends.pt.lowering import check_architecture, select_model_record

    def fresh():
        return select_model_record(read_checkpoint(N_PT))

    record = fresh()
    record.get("yaml")["head"][0][3] = ["None", 2, "bilinear"]
    with pytest.raises(ModelError, match=r"^unsupported: layer 10 is nn.Upsample"):
        check_architecture(record)
    record = fresh()
    del record.children["model"].children["0"].children["bn"]  # a fused Conv
    with pytest.raises(ModelError, match=r"^unsupported: fused Conv at model.0"):
        check_architecture(record)
    record = fresh()
    record.get("yaml")["backbone"].append([-1, 1, "Conv", [1024, 3, 2]])
    with pytest.raises(ModelError, match=r"^unsupported: a custom model yaml with 24 layers"):
        check_architecture(record)


@needs_fixtures
def test_weights_that_do_not_fit_the_yaml_are_refused(tmp_path):
    from yolograph.frontends.pt import load_checkpoint_model

    # Give scale n the width of s in the yaml's scales table: every conv then has the wrong width.
    with zipfile.ZipFile(N_PT) as archive:
        pkl = archive.read("yolov8n-rand/data.pkl")
    n_width = pkl.index(b"G" + struct.pack(">d", 0.25), pkl.index(op_str("scales")))
    pkl = pkl[:n_width] + b"G" + struct.pack(">d", 0.5) + pkl[n_width + 9 :]
    broken = copy_without(N_PT, tmp_path / "width.pt", replace={"/data.pkl": pkl})
    expected = r"model\.0\.conv\.weight' has shape \[16, 3, 3, 3\] but this YOLOv8 spec needs \[32, 3, 3, 3\]"
    with pytest.raises(ModelError, match=expected):
        load_checkpoint_model(broken)


# -- lowering: numerics against the official ultralytics exports ---------------------------------


def max_error_ratios(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """max|a-b| / max|ref| for the box rows (0-3) and the class-score rows (4+) separately."""
    groups = {"box": slice(0, 4), "cls": slice(4, None)}
    return {
        name: float(np.abs(output[:, rows] - reference[:, rows]).max() / np.abs(reference[:, rows]).max())
        for name, rows in groups.items()
    }


@pytest.fixture(scope="module")
def lowered():
    """Lowered fixture models, unfused and after fold-bn, built once per test module."""
    from yolograph.frontends.pt import load_checkpoint_model
    from yolograph.pipeline import run_pipeline

    cache: dict[tuple[str, bool], object] = {}

    def get(stem: str, folded: bool):
        if (stem, False) not in cache:
            cache[(stem, False)] = load_checkpoint_model(FIXTURES / f"{stem}.pt")
        if folded and (stem, True) not in cache:
            cache[(stem, True)] = run_pipeline(cache[(stem, False)], "fold-bn")[0]
        return cache[(stem, folded)]

    return get


def run_ort(model_or_path, images: np.ndarray) -> np.ndarray:
    from yolograph.runtime import OrtOptions, OrtRunner

    return OrtRunner(model_or_path, OrtOptions(threads=2)).predict(images)


@needs_fixtures
@pytest.mark.parametrize("stem", ["yolov8n-rand", "yolov8s-rand-nc3"])
@pytest.mark.parametrize("folded", [False, True], ids=["unfused", "fold-bn"])
def test_lowered_checkpoint_matches_the_official_export(lowered, stem, folded):
    model = lowered(stem, folded)
    ops = [node.op for node in model.graph.nodes]
    assert ops.count("BatchNormalization") == (0 if folded else 57)
    assert ops.count("Conv") == 64
    io = np.load(FIXTURES / f"{stem}.io.npz")
    reference = io["output0"]
    output = run_ort(model, io["images"].astype(np.float32))
    assert output.shape == reference.shape
    ratios = max_error_ratios(output, reference)
    assert ratios["box"] <= 1e-3 and ratios["cls"] <= 1e-3, ratios


@needs_fixtures
def test_lowered_checkpoint_matches_the_export_on_a_real_image(lowered):
    from yolograph.data import coco128
    from yolograph.evaluation.preprocess import preprocess_image

    image = sorted((coco128() / "images").rglob("*.jpg"))[0]
    tensor, _ = preprocess_image(image, 640)
    reference = run_ort(str(FIXTURES / "yolov8n-rand.onnx"), tensor)
    output = run_ort(lowered("yolov8n-rand", True), tensor)
    ratios = max_error_ratios(output, reference)
    assert ratios["box"] <= 1e-3 and ratios["cls"] <= 1e-3, ratios
    # A real image is not the npz noise: the check would catch a model that ignores its input.
    noise = np.load(FIXTURES / "yolov8n-rand.io.npz")["output0"]
    assert np.abs(reference - noise).max() > 1.0


@needs_fixtures
def test_unfused_lowering_equals_the_unfused_ultralytics_export(lowered):
    # fixtures/yolov8n-rand-bn.onnx is ultralytics' own export of the same checkpoint without Conv+BN
    # fusion: the same graph as the lowering, so the two agree to float rounding (bit for bit today).
    images = np.load(FIXTURES / "yolov8n-rand.io.npz")["images"].astype(np.float32)
    reference = run_ort(str(FIXTURES / "yolov8n-rand-bn.onnx"), images)
    ratios = max_error_ratios(run_ort(lowered("yolov8n-rand", False), images), reference)
    assert ratios["box"] <= 1e-6 and ratios["cls"] <= 1e-6, ratios


@needs_fixtures
def test_metadata_comes_from_the_checkpoint(lowered):
    n_model, s_model = lowered("yolov8n-rand", False), lowered("yolov8s-rand-nc3", False)
    s_facts = s_model.facts
    assert s_facts.names == {0: "fixture_class_0", 1: "fixture_class_1", 2: "fixture_class_2"}
    assert s_facts.num_classes == 3 and s_facts.task == "detect"
    assert s_facts.stride == 32 and s_facts.imgsz == (640, 640) and s_facts.reg_max == 16
    assert s_model.metadata["version"] == "8.4.190"
    assert s_model.metadata["source_checkpoint"] == "yolov8s-rand-nc3.pt"
    assert n_model.facts.num_classes == 80 and n_model.facts.names[79] == "toothbrush"
    assert n_model.source == str(N_PT)


@needs_fixtures
def test_load_model_dispatches_pt_files():
    from yolograph.frontends import load_model

    model = load_model(N_PT)
    assert model.outputs[0].shape == (1, 84, 8400)
    PWNED.unlink(missing_ok=True)
    with pytest.raises(UnsafeCheckpointError):
        load_model(FIXTURES / "malicious.pt")
    assert not PWNED.exists()


@pytest.mark.parametrize("scale", ["n", "s", "m", "l", "x"])
def test_every_stock_scale_keeps_its_name_and_multipliers(scale):
    from yolograph.frontends.pt.lowering import _multipliers
    from yolograph.frontends.yolov8_arch import YOLOV8_SCALES

    scales = {k: list(v) for k, v in YOLOV8_SCALES.items()}
    assert _multipliers({"scales": scales, "scale": scale}) == (*YOLOV8_SCALES[scale], scale)
    edited = {**scales, scale: [0.5, 0.5, 1024]}
    assert _multipliers({"scales": edited, "scale": scale}) == (0.5, 0.5, 1024, "custom")
    with pytest.raises(ModelError, match="scale 'q'"):
        _multipliers({"scales": scales, "scale": "q"})
    # No 'scale' key: ultralytics guesses it from the yaml file name.
    assert _multipliers({"scales": scales, "yaml_file": f"yolov8{scale}.yaml"})[3] == scale


# -- lowering other scales: a synthetic ultralytics-layout checkpoint -----------------------------


def op_value(value, storages: dict[str, bytes]) -> bytes:
    """Pickle opcodes for plain data, numpy tensors (as torch storages) and `FakeModule`s."""
    if value is None or isinstance(value, bool):
        return {None: b"N", True: b"\x88", False: b"\x89"}[value]
    if isinstance(value, int):
        return op_int(value)
    if isinstance(value, float):
        return b"G" + struct.pack(">d", value)
    if isinstance(value, str):
        return op_str(value)
    if isinstance(value, tuple):
        return op_tuple(*(op_value(v, storages) for v in value))
    if isinstance(value, list):
        return b"](" + b"".join(op_value(v, storages) for v in value) + b"e"
    if isinstance(value, dict):
        return b"}(" + b"".join(op_value(k, storages) + op_value(v, storages) for k, v in value.items()) + b"u"
    if isinstance(value, np.ndarray):
        storage = {np.float16: "HalfStorage", np.float32: "FloatStorage", np.int64: "LongStorage"}[value.dtype.type]
        key = str(len(storages))
        value = np.array(value, order="C")
        storages[key] = value.tobytes()
        strides = tuple(s // value.itemsize for s in value.strides)
        return op_tensor(key, storage, value.size, 0, value.shape, strides)
    if isinstance(value, FakeModule):
        module, name = value.qualname.rsplit(".", 1)
        state = {"training": False, "_parameters": value.params, "_buffers": value.buffers, "_modules": value.modules}
        return op_global(module, name) + b")\x81" + op_value({**state, **value.attrs}, storages) + b"b"
    raise TypeError(type(value))


class FakeModule:
    def __init__(self, qualname: str, params=None, buffers=None, modules=None, **attrs):
        self.qualname = qualname
        self.params, self.buffers, self.modules, self.attrs = params or {}, buffers or {}, modules or {}, attrs


def fake_detection_model(spec, yaml: dict, rng: np.random.Generator, imgsz: int) -> FakeModule:
    """A DetectionModel tree laid out as ultralytics pickles it, with float16 random weights."""
    from yolograph.frontends.yolov8_arch import YOLOV8_LAYERS, expected_weight_shapes

    shapes = expected_weight_shapes(spec)
    nn, ul = "torch.nn.modules", "ultralytics.nn.modules"

    def tensor(key, low=-0.1, high=0.1):
        return rng.uniform(low, high, shapes[key]).astype(np.float16)

    def conv(key):
        bn = FakeModule(
            f"{nn}.batchnorm.BatchNorm2d",
            params={"weight": tensor(f"{key}.bn.weight", 0.5, 1.5), "bias": tensor(f"{key}.bn.bias")},
            buffers={
                "running_mean": tensor(f"{key}.bn.running_mean"),
                "running_var": tensor(f"{key}.bn.running_var", 0.5, 2.0),
                "num_batches_tracked": np.zeros((), np.int64),
            },
            eps=0.001,
        )
        conv2d = FakeModule(f"{nn}.conv.Conv2d", params={"weight": tensor(f"{key}.conv.weight"), "bias": None})
        silu = FakeModule(f"{nn}.activation.SiLU")
        return FakeModule(f"{ul}.conv.Conv", modules={"conv": conv2d, "bn": bn, "act": silu})

    def cv1_cv2(key):
        return {"cv1": conv(f"{key}.cv1"), "cv2": conv(f"{key}.cv2")}

    def count(prefix):
        return len({k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)})

    layers = {}
    for index, (_, _, module, _) in enumerate(YOLOV8_LAYERS):
        key = f"model.{index}"
        if module == "Conv":
            layers[str(index)] = conv(key)
        elif module == "C2f":
            bottlenecks = {
                str(j): FakeModule(f"{ul}.block.Bottleneck", modules=cv1_cv2(f"{key}.m.{j}"))
                for j in range(count(f"{key}.m."))
            }
            m = FakeModule(f"{nn}.container.ModuleList", modules=bottlenecks)
            layers[str(index)] = FakeModule(f"{ul}.block.C2f", modules={**cv1_cv2(key), "m": m})
        elif module == "SPPF":
            pool = FakeModule(f"{nn}.pooling.MaxPool2d", kernel_size=5, stride=1, padding=2)
            layers[str(index)] = FakeModule(f"{ul}.block.SPPF", modules={**cv1_cv2(key), "m": pool})
        elif module == "Upsample":
            layers[str(index)] = FakeModule(f"{nn}.upsampling.Upsample", scale_factor=2.0, mode="nearest")
        elif module == "Concat":
            layers[str(index)] = FakeModule(f"{ul}.conv.Concat", d=1)
        else:
            branches = {}
            for branch in ("cv2", "cv3"):
                levels = {}
                for level in range(3):
                    last = f"{key}.{branch}.{level}.2"
                    final = FakeModule(
                        f"{nn}.conv.Conv2d", params={"weight": tensor(f"{last}.weight"), "bias": tensor(f"{last}.bias")}
                    )
                    parts = {"0": conv(f"{key}.{branch}.{level}.0"), "1": conv(f"{key}.{branch}.{level}.1"), "2": final}
                    levels[str(level)] = FakeModule(f"{nn}.container.Sequential", modules=parts)
                branches[branch] = FakeModule(f"{nn}.container.ModuleList", modules=levels)
            dfl_weight = np.arange(16, dtype=np.float16).reshape(1, 16, 1, 1)
            dfl_conv = FakeModule(f"{nn}.conv.Conv2d", params={"weight": dfl_weight})
            branches["dfl"] = FakeModule(f"{ul}.block.DFL", modules={"conv": dfl_conv})
            layers[str(index)] = FakeModule(
                f"{ul}.head.Detect", modules=branches, nc=spec.num_classes, nl=3, reg_max=16,
                stride=np.array([8.0, 16.0, 32.0], np.float32),
            )  # fmt: skip
    sequential = FakeModule(f"{nn}.container.Sequential", modules=layers)
    return FakeModule(
        "ultralytics.nn.tasks.DetectionModel",
        modules={"model": sequential},
        yaml=yaml, nc=spec.num_classes, names=dict(spec.names), task="detect",
        stride=np.array([8.0, 16.0, 32.0], np.float32), args={"imgsz": imgsz, "task": "detect"},
    )  # fmt: skip


@needs_fixtures
def test_a_synthetic_m_checkpoint_lowers_with_its_classes_and_image_size(tmp_path):
    from yolograph.frontends.pt import load_checkpoint_model
    from yolograph.frontends.yolov8_arch import YoloV8Spec

    spec = YoloV8Spec.from_scale("m", num_classes=5)
    spec = YoloV8Spec(**{**spec.__dict__, "names": {i: f"part_{i}" for i in range(5)}})
    yaml = dict(read_checkpoint(N_PT).contents["model"].get("yaml"), scale="m", nc=5, yaml_file="yolov8m.yaml")
    tree = fake_detection_model(spec, yaml, np.random.default_rng(0), imgsz=320)
    storages: dict[str, bytes] = {}
    # A mid-training checkpoint: the weights are in 'ema', 'model' is None.
    body = op_value({"model": None, "ema": tree, "version": "8.4.190", "train_args": {"imgsz": 640}}, storages)
    path = write_checkpoint(tmp_path / "yolov8m-synthetic.pt", pickle_bytes(body), storages)

    model = load_checkpoint_model(path)
    assert model.outputs[0].shape == (1, 9, (40 * 40 + 20 * 20 + 10 * 10))
    assert model.facts.imgsz == (320, 320)
    assert model.facts.names == {i: f"part_{i}" for i in range(5)}
    assert model.metadata["yolograph_builder"] == "m"
    # The weights landed where the state dict names them (layer 7 is capped by max_channels=768).
    record = read_checkpoint(path).contents["ema"]
    conv7 = record.children["model"].children["7"].children["conv"].parameters["weight"]
    assert conv7.shape == (576, 384, 3, 3)
    lowered = {t.name: t.values for t in model.graph.tensors().values() if hasattr(t, "values")}
    np.testing.assert_array_equal(lowered["model.7.conv.weight"], conv7.astype(np.float32))
    cv3_bias = state_dict(record)["model.22.cv3.1.2.bias"]
    assert cv3_bias.shape == (5,)
    np.testing.assert_array_equal(lowered["model.22.cv3.1.2.bias"], cv3_bias.astype(np.float32))
