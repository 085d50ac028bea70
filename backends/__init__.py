"""Built-in backends, one package (or module) each, registered on import with `register_backend`.

ONNX Runtime (`ort`) writes the ONNX file the reference runner executes; TVM and TensorRT are optional
extras whose heavy imports happen only when a model is compiled or run. The registry, runner protocol
and `open_runner` are core: `yolograph.runtime.backend`.
"""

from yolograph.plugins import import_submodules

import_submodules(__name__, __path__)
