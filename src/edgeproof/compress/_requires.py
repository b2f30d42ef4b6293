"""Imported first by :mod:`edgeproof.compress`: every candidate is an ONNX graph measured with
ONNX Runtime, so a missing ``[onnx]`` extra is said here, once, naming the extra."""

from edgeproof.extras import needs_extra

with needs_extra("onnx", "to compress a model"):
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
