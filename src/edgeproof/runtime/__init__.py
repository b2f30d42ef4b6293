"""Runtime measurement used by checks and compression alike: threads, latency, memory, MACs,
ONNX Runtime sessions and the CPU's features. Nothing here imports a check or a compressor."""
