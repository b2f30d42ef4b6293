"""ONNX Runtime sessions on the CPU, with the thread count stated, and batched runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgeproof.errors import InternalError, SpecError
from edgeproof.extras import needs_extra
from edgeproof.runtime.latency import LatencyStats, measure_latency

if TYPE_CHECKING:
    import onnx

__all__ = [
    "make_session",
    "per_record_latency_ms",
    "run_session",
    "session_forward",
    "session_latency",
]


def make_session(
    model: onnx.ModelProto | bytes,
    *,
    threads: int = 1,
    optimized_path: str | None = None,
    disable_optimizations: bool = False,
) -> object:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (inter-op 1)."""
    with needs_extra("onnx", "to run a graph with ONNX Runtime"):
        import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if disable_optimizations:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise InternalError(f"ONNX Runtime could not load the exported graph: {exc}") from exc


def run_session(session: object, x: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
    """Run all outputs of ``session`` over ``x`` in batches, concatenated along axis 0."""
    inp = session.get_inputs()[0].name  # type: ignore[attr-defined]
    parts: list[list[np.ndarray]] = []
    for i in range(0, x.shape[0], batch_size):
        feed = {inp: np.ascontiguousarray(x[i : i + batch_size], np.float32)}
        res = session.run(None, feed)  # type: ignore[attr-defined]
        if not parts:
            parts = [[] for _ in res]
        for j, r in enumerate(res):
            parts[j].append(np.asarray(r))
    return [np.concatenate(p, axis=0) for p in parts]


def session_forward(
    session: object, *, batch_size: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``session`` as a function ``Tensor -> Tensor``: a batch of inputs to its first output.

    The batch is fed to the session's first input as a contiguous float32 array (whatever the
    tensor's dtype and memory layout); the first output comes back as a float32 tensor on the
    CPU. No gradient flows through it: it is what forward-only attacks
    (:class:`edgeproof.methods.attacks.Square`) call, on an fp32 export or a quantized QDQ graph
    alike. The batch is cut into chunks of ``batch_size`` (default: whole), or of the graph's
    batch dimension where the graph fixes it (a graph exported for batch 1 is run record by
    record).

    Raises:
        SpecError: if the inputs do not have the rank or a fixed dimension the graph declares.
        InternalError: if ONNX Runtime fails on inputs of the declared shape.
    """
    first = session.get_inputs()[0]  # type: ignore[attr-defined]
    name = str(first.name)
    declared = list(first.shape)
    fixed_batch = declared[0] if declared and isinstance(declared[0], int) else None
    chunk = fixed_batch or batch_size

    def check(shape: tuple[int, ...]) -> None:
        bad = len(shape) != len(declared) or any(
            isinstance(d, int) and d != s for d, s in zip(declared[1:], shape[1:], strict=False)
        )
        if bad:
            raise SpecError(
                f"the ONNX graph's input {name!r} has shape {declared} but the inputs have shape "
                f"{list(shape)}; give data of the model's input shape"
            )

    def forward(x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        check(tuple(arr.shape))
        step = chunk or max(arr.shape[0], 1)
        parts = []
        try:
            for i in range(0, arr.shape[0], step):
                res = session.run(None, {name: arr[i : i + step]})  # type: ignore[attr-defined]
                parts.append(np.asarray(res[0], dtype=np.float32))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InternalError(
                f"ONNX Runtime failed on inputs of shape {list(arr.shape)}: {exc}"
            ) from exc
        if not parts:  # an empty batch: no call, no logits
            return torch.zeros((0, 0), dtype=torch.float32)
        return torch.from_numpy(np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0])

    return forward


def session_latency(
    model: onnx.ModelProto | bytes, sample: np.ndarray, *, threads: int = 1, runs: int = 50
) -> LatencyStats:
    """Latency of one batch-1 call of the graph on ``sample`` (one record, no batch axis):
    5 warm-up calls, then ``runs`` timed calls (fewer, at least 3, for a graph so slow that
    they would take over 3 s), by :func:`~edgeproof.runtime.latency.measure_latency`."""
    sess = make_session(model, threads=threads)
    x = np.ascontiguousarray(sample[None], np.float32)
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]

    def call() -> object:
        return sess.run(None, {name: x})  # type: ignore[attr-defined]

    return measure_latency(call, batch=1, budget_s=1.0, warmup=5, min_runs=runs, max_runs=runs)


def per_record_latency_ms(
    model: onnx.ModelProto | bytes, x: np.ndarray, *, threads: int = 1, warmup: int = 5
) -> np.ndarray:
    """Wall time (ms) of one batch-1 call per record of ``x``, after ``warmup`` untimed calls:
    for graphs whose cost depends on the input (an early-exit cascade)."""
    sess = make_session(model, threads=threads)
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    xs = np.ascontiguousarray(x, np.float32)
    for j in range(min(warmup, len(xs))):
        sess.run(None, {name: xs[j : j + 1]})  # type: ignore[attr-defined]
    lat = np.zeros(len(xs))
    for j in range(len(xs)):
        t0 = time.perf_counter()
        sess.run(None, {name: xs[j : j + 1]})  # type: ignore[attr-defined]
        lat[j] = (time.perf_counter() - t0) * 1000.0
    return lat
