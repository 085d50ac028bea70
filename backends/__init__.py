"""Built-in backends. ONNX Runtime is the everywhere-reference; TVM and TensorRT are optional."""
