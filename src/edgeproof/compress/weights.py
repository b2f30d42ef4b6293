"""Weight quantizers shared by the PyTorch simulation and the ONNX QDQ graph (numpy, exact).

* :func:`quantize_per_channel` — symmetric per-output-channel integers: ``scale_c = max|w_c| /
  (2^(b−1) − 1)``, ``q = clamp(round_half_even(w / scale_c), −(2^(b−1) − 1), 2^(b−1) − 1)`` (the
  restricted symmetric range ONNX Runtime uses for int8 weights, so ``−128`` is never produced).
* :func:`quantize_groups` — symmetric per-group scales along the reduction axis of a weight laid
  out as ``(out, reduce)`` (groups of ``group_size`` consecutive inputs; the last group may be
  shorter), used for int4 weight-only quantization (the layout of ONNX blocked quantization,
  ``DequantizeLinear`` opset 21 ``block_size``).

Both return float32 scales and integer arrays; ``dequantize`` is ``q * scale``. All-zero channels
get scale 1.0 (their integers are 0, so nothing is lost).
"""

from __future__ import annotations

import numpy as np

from edgeproof.errors import OptionError

__all__ = ["as_matrix", "fake_quantize_weight", "quantize_groups", "quantize_per_channel"]


def _qmax(bits: int) -> int:
    if bits not in (2, 3, 4, 7, 8):
        raise OptionError("bits", f"{bits}-bit weights are not supported", "use 4 or 8")
    return (1 << (bits - 1)) - 1


def quantize_per_channel(w: np.ndarray, axis: int, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel quantization of ``w`` along ``axis``; returns ``(q, scales)``."""
    qmax = _qmax(bits)
    w = np.asarray(w, dtype=np.float32)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce) if reduce else np.abs(w)
    scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1.0)).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax)
    return q.astype(np.int32), scale


def as_matrix(w: np.ndarray, out_axis: int) -> np.ndarray:
    """``w`` as ``(out, reduce)``: the output axis first, every other axis flattened in order."""
    w = np.asarray(w, dtype=np.float32)
    return np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)


def quantize_groups(m: np.ndarray, group_size: int, bits: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-group quantization of a ``(out, reduce)`` matrix; ``scales`` is
    ``(out, ceil(reduce / group_size))``."""
    if group_size < 1:
        raise OptionError("group_size", f"must be >= 1, got {group_size}")
    qmax = _qmax(bits)
    m = np.asarray(m, dtype=np.float32)
    o, k = m.shape
    ng = -(-k // group_size)
    pad = ng * group_size - k
    mp = np.pad(m, ((0, 0), (0, pad))).reshape(o, ng, group_size)
    amax = np.abs(mp).max(axis=2)
    scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.round(mp / scale[:, :, None]), -qmax, qmax).reshape(o, ng * group_size)[:, :k]
    return q.astype(np.int32), scale


def fake_quantize_weight(
    w: np.ndarray, out_axis: int, bits: int, group_size: int | None = None
) -> np.ndarray:
    """``dequantize(quantize(w))`` in ``w``'s own layout: per-channel if ``group_size`` is None,
    else per group along the flattened reduction axes."""
    w = np.asarray(w, dtype=np.float32)
    if group_size is None:
        q, s = quantize_per_channel(w, out_axis, bits)
        shape = [1] * w.ndim
        shape[out_axis] = -1
        result: np.ndarray = (q * s.reshape(shape)).astype(np.float32)
        return result
    m = as_matrix(w, out_axis)
    q, s = quantize_groups(m, group_size, bits)
    deq = (q * np.repeat(s, group_size, axis=1)[:, : m.shape[1]]).astype(np.float32)
    moved = np.moveaxis(w, out_axis, 0).shape
    return np.moveaxis(deq.reshape(moved), 0, out_axis)
