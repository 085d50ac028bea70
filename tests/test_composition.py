"""Passes from different issues compose in either order."""

from __future__ import annotations

import numpy as np

from yolograph.runtime import OrtRunner
from yolograph.evaluation import iter_image_tensors, open_dataset
from yolograph.pipeline import run_pipeline


def test_nhwc_uint8_before_quantization(yolov8n, coco_dir):
    """Calibration feeds NCHW float images to a model whose input is now NHWC uint8."""
    pipeline = f"cleanup,to-nhwc{{input=uint8}},insert-qdq{{profile=ort-cpu}},calibrate{{images={coco_dir},count=2}}"
    quantized, report = run_pipeline(yolov8n, pipeline, verify=True)
    assert [r.verified for r in report.records] == ["ok", "ok", "deferred", "ok"]
    assert quantized.inputs[0].shape == (1, 640, 640, 3) and quantized.inputs[0].dtype == np.uint8
    image = next(iter_image_tensors(open_dataset(coco_dir).image_paths[40:41], (640, 640)))
    reference = OrtRunner(yolov8n).predict(image)
    scores = OrtRunner(quantized).predict(image)[:, 4:]
    # The strongest detection survives quantization with its class.
    best = np.unravel_index(np.argmax(reference[:, 4:]), reference[:, 4:].shape)
    assert abs(scores[best] - reference[:, 4:][best]) < 0.15
