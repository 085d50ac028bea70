"""INT8 quantization helpers: Q/DQ profiles and placement rules, observers, scale math, calibration data,
sensitivity analysis. The passes themselves live in passes/ (insert-qdq, calibrate, ...)."""

from __future__ import annotations

# The recommended ort-cpu pipeline, without its data source (see default_int8_pipeline).
_DEFAULT_INT8_TEMPLATE = "fold-bn,cleanup,fast-dfl,insert-qdq{{profile=ort-cpu}},calibrate{{method=percentile,count=32,images={images}}}"


def default_int8_pipeline(images: str, count: int = 32) -> str:
    """The recommended INT8 pipeline for the ort-cpu profile, calibrating on the first `count` images of `images`."""
    return _DEFAULT_INT8_TEMPLATE.format(images=images).replace("count=32", f"count={count}")


# With a placeholder data source: pipelines must name their calibration images (nothing is read silently).
DEFAULT_INT8_PIPELINE = _DEFAULT_INT8_TEMPLATE.format(images="IMAGES")
