"""Built-in passes, registered on import (one pass per module)."""

from yolograph.passes import cleanup, fold_bn  # noqa: F401
from yolograph.passes import adaptive_rounding, bias_correction, calibrate, fast_dfl, insert_qdq, mixed_precision  # noqa: F401,E501  (quantization)
from yolograph.passes import to_nhwc  # noqa: F401  (layout)
from yolograph.passes import prune  # noqa: F401  (structured pruning)
