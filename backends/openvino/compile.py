"""Convert the optimized ONNX IR (float or Q/DQ) into an OpenVINO IR with OpenVINO's own converter.

Artifact = three files side by side:
  <output>.xml / <output>.bin  `openvino.convert_model` of the pipeline's ONNX, written by
                               `openvino.save_model` (float weights kept f32 unless fp16_weights),
  <output>.xml.json            the sidecar (sidecar.py): source hash, pipeline, OpenVINO version,
                               device, requested and resolved inference precision, runtime options.
The IR is saved in a temporary folder beside the output, then moved in: .bin, .xml, sidecar last
(an old sidecar is removed first), so no reader ever sees a half-written file or a sidecar that
describes other weights. Compiling the IR once on the target device at the end checks the device and
records the precision OpenVINO really runs (bf16 on AVX512_BF16 CPUs unless told f32).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from yolograph.backends.openvino.settings import (RuntimeConfig, check_device, first_line, import_openvino,
                                                  resolved_precision)
from yolograph.backends.openvino.sidecar import sidecar_path, write_sidecar
from yolograph.errors import BackendError, ModelError
from yolograph.ir import metadata as keys
from yolograph.ir.model import Model
from yolograph.ir.serialization import check_output_path


def compile_model(model: Model, output: Path, config: RuntimeConfig, *, fp16_weights: bool = False,
                  quiet: bool = False) -> Path:
    """Write `model` as an OpenVINO IR at `output` (.xml) with its .bin and sidecar; returns the .xml."""
    output = Path(output)
    if output.suffix != ".xml":
        raise BackendError(f"The openvino backend writes an OpenVINO IR; name the output with .xml, not {output.name!r}.")
    if model.source and Path(model.source).exists() and output.resolve() == Path(model.source).resolve():
        raise ModelError(f"Refusing to overwrite the input model {output}; choose another output path.")
    check_output_path(output)
    ov = import_openvino()
    core = ov.Core()
    check_device(core, config.device)
    payload = model.serialize()
    start = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.stem}.", dir=output.parent) as temp:
        onnx_path = Path(temp) / "model.onnx"
        onnx_path.write_bytes(payload)
        try:
            converted = ov.convert_model(str(onnx_path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise BackendError(f"OpenVINO cannot convert the model: {first_line(exc)}.") from exc
        staged = Path(temp) / output.name
        ov.save_model(converted, str(staged), compress_to_fp16=fp16_weights)
        compiled = _compile_on_device(core, staged, config)
        resolved = resolved_precision(compiled)
        devices = _execution_devices(compiled)
        inputs = [_port(p) for p in compiled.inputs]
        outputs = [_port(p) for p in compiled.outputs]
        del compiled
        sidecar_path(output).unlink(missing_ok=True)  # the old sidecar must not describe the new weights
        os.replace(staged.with_suffix(".bin"), output.with_suffix(".bin"))
        os.replace(staged, output)
    facts = model.facts
    data = {
        "source": model.source,
        "source_sha256": hashlib.sha256(payload).hexdigest(),
        "pipeline": model.metadata.get(keys.PIPELINE),
        "qdq_profile": model.metadata.get(keys.QDQ_PROFILE),
        "int8": any(n.op == "QuantizeLinear" for n in model.graph.nodes),
        "openvino_version": ov.get_version(),
        "runtime": config.to_json(),
        "inference_precision": resolved,
        "execution_devices": devices,
        "fp16_weights": fp16_weights,
        "inputs": inputs,
        "outputs": outputs,
        "imgsz": list(facts.imgsz) if facts.imgsz else None,
        "metadata": dict(model.metadata),
        "compile_seconds": round(time.perf_counter() - start, 3),
    }
    write_sidecar(output, data)
    if not quiet:
        requested = config.inference_precision or "OpenVINO's default"
        sys.stderr.write(f"openvino {ov.get_version().split('-')[0]}: {config.device} "
                         f"({', '.join(devices) or 'device chosen at run time'}), inference precision "
                         f"{resolved or 'not reported'} (asked: {requested}), hint {config.performance_hint}\n")
    return output


def _compile_on_device(core: Any, xml: Path, config: RuntimeConfig) -> Any:
    try:
        return core.compile_model(str(xml), config.device, config.properties())
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"OpenVINO cannot compile the model for {config.device}: {first_line(exc)}.") from exc


def _execution_devices(compiled: Any) -> list[str]:
    try:
        return [str(d) for d in compiled.get_property("EXECUTION_DEVICES")]
    except RuntimeError:
        return []


def _port(port: Any) -> dict[str, Any]:
    shape = port.get_partial_shape()
    dims = [d.get_length() if d.is_static else -1 for d in shape] if shape.rank.is_static else []
    return {"name": port.get_any_name(), "shape": dims, "dtype": str(port.get_element_type().to_dtype())}

