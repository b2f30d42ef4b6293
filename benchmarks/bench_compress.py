"""Benchmark: edgeproof int8 PTQ vs ONNX Runtime ``quantize_static`` defaults (and NNCF if present).

Same trained model, same calibration records (256 of the training split), same evaluation split,
one run. Rows per model: fp32 PyTorch, fp32 ONNX Runtime, edgeproof int8 (percentile 99.99 and
MSE calibration), ORT ``quantize_static`` with its defaults (QDQ, MinMax, per-tensor), NNCF
``quantize`` (only when ``/work/nncf-venv/bin/python`` exists; otherwise the row says why it is
missing). Latency: batch 1, median of 200 runs after 20 warm-up runs, 1 intra-op thread, on the
machine the script runs on (the project machine has 2 cores shared with other jobs).

Run: ``python benchmarks/bench_compress.py`` → ``docs/benchmarks/compress.md``.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeproof.compress.onnx_export import export_onnx, make_session, run_session
from edgeproof.compress.quantize import QuantConfig, fold_batchnorm, quantize
from edgeproof.data.dataset import Dataset
from edgeproof.data.loading import load_data
from edgeproof.models.train import train_model

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "compress.md"
NNCF_PY = Path("/work/nncf-venv/bin/python")


def _latency_ms(run: object, x: np.ndarray, runs: int = 200) -> float:
    for _ in range(20):
        run(x)  # type: ignore[operator]
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)  # type: ignore[operator]
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t))


def _ort_row(name: str, onnx_bytes: bytes, test: Dataset) -> tuple[str, float, int, float]:
    sess = make_session(onnx_bytes, threads=1)
    acc = float((run_session(sess, test.x)[0].argmax(1) == test.y).mean())
    inp = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    lat = _latency_ms(lambda x: sess.run(None, {inp: x}), test.x[:1])  # type: ignore[attr-defined]
    return name, acc, len(onnx_bytes), lat


def _ort_static(fp32: bytes, calib: np.ndarray) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(str(src), str(dst), Reader())
        return dst.read_bytes()


def bench(name: str, arch: str, train: Dataset, test: Dataset, epochs: int) -> list[tuple]:
    torch.manual_seed(0)
    model = train_model(arch, train, epochs=epochs, seed=0)
    calib = train.x[:256]
    shape = train.sample_shape
    rows: list[tuple] = []
    with torch.no_grad():
        acc = float((model(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean())
        lat = _latency_ms(lambda x: model(torch.from_numpy(x)), test.x[:1])
    fp32 = export_onnx(fold_batchnorm(model), shape).SerializeToString()
    rows.append((name, "fp32 PyTorch", acc, len(fp32), lat))
    rows.append((name, *_ort_row("fp32 ONNX Runtime", fp32, test)))
    for method in ("percentile", "mse"):
        q = quantize(model, shape, calib, QuantConfig("int8", method), x_eval=test.x)
        rows.append((name, *_ort_row(f"edgeproof int8 [{method}]", q.onnx_bytes(), test)))
        parity = q.parity
        assert parity is not None
        print(f"{name} int8[{method}] parity: top-1 {parity.top1_agreement:.4f}, "
              f"max |Δlogit| {parity.max_abs_logit_diff:.3g}")
    rows.append((name, *_ort_row("ORT quantize_static (defaults)", _ort_static(fp32, calib), test)))
    w4 = quantize(model, shape, calib, QuantConfig("w4"), x_eval=test.x[:64])
    rows.append((name, *_ort_row("edgeproof w4 g32 (weight-only)", w4.onnx_bytes(), test)))
    if NNCF_PY.exists():
        rows.append((name, "NNCF quantize: not run (the NNCF subprocess is not wired yet)",
                     float("nan"), 0, float("nan")))
    else:
        rows.append((name, f"NNCF quantize: skipped ({NNCF_PY} not found)", float("nan"), 0,
                     float("nan")))
    return rows


def main() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    rows += bench("CNN-LSTM / synth-ecg", "zoo:cnn-lstm", load_data("builtin:synth-ecg/train"),
                  load_data("builtin:synth-ecg"), epochs=15)
    rows += bench("ResNet-20 / digits", "zoo:resnet20", load_data("builtin:digits/train"),
                  load_data("builtin:digits"), epochs=8)
    lines = [
        "## Compression (int8 PTQ)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), 1 intra-op thread, "
        "batch-1 median latency over 200 runs; one run, same model and 256 calibration records "
        "for every row.",
        "",
        "| model | method | accuracy | size (bytes) | p50 latency (ms) | latency vs fp32 PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    base: dict[str, float] = {}
    for model, method, acc, size, lat in rows:
        if method == "fp32 PyTorch":
            base[model] = lat
        ratio = lat / base[model] if np.isfinite(lat) and model in base else float("nan")
        acc_s = "—" if not np.isfinite(acc) else f"{acc:.4f}"
        lat_s = "—" if not np.isfinite(lat) else f"{lat:.3f}"
        rat_s = "—" if not np.isfinite(ratio) else f"{ratio:.2f}×"
        lines.append(f"| {model} | {method} | {acc_s} | {size or '—'} | {lat_s} | {rat_s} |")
    lines += ["", "Mixed precision vs uniform int4/int8: not measured (SigmaQuant allocation is "
              "not implemented yet).", ""]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
