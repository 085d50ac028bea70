"""Built-in passes, registered on import (one pass per module)."""

# fmt: off
from yolograph.passes import cleanup, fold_bn  # noqa: F401  (foundation)
from yolograph.passes import (  # noqa: F401  (quantization)
    adaptive_rounding, bias_correction, calibrate, fast_dfl, insert_qdq, mixed_precision,
)
from yolograph.passes import prune  # noqa: F401  (structured pruning)
from yolograph.passes import to_nhwc  # noqa: F401  (layout)
