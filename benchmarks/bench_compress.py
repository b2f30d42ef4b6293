"""Benchmark: the compression search, and edgeproof int8 against ONNX Runtime at its best.

Sections (each one run of its own; ``python benchmarks/bench_compress.py SECTION``):

* ``search`` — the full default search (:func:`edgeproof.compress.default_recipes`, every
  candidate re-audited with the default trust checks) on the tests' LeNet-5 (``zoo:lenet5``
  trained on ``builtin:digits/train`` for 20 epochs, seed 0, lr 3e-3, as ``tests/conftest.py``):
  ``builtin:digits/train`` calibrates, ``builtin:digits`` evaluates, 1 thread. Wall time, CPU time
  (this process and its children: the RSS probes) and where it goes (building, each re-audit
  check, the rest of the measurement), from the ledger's own timings.
* ``int8`` — edgeproof int8 (calibration ``auto``, and the fixed minmax/entropy methods) against
  ONNX Runtime ``quantize_static`` at its best: QDQ, per-channel int8 weights, U8S8 and S8S8
  activations, MinMax and Entropy calibration, ``reduce_range`` where edgeproof uses it too
  (x86 without VNNI, :func:`edgeproof.compress.quantize.int8_needs_reduced_range`), calibration
  fed in batches of 64 — on ResNet-20 (3×32×32: ``builtin:digits`` upsampled 4× and repeated over
  3 channels, 2 epochs of training) and the zoo CNN-LSTM (``builtin:synth-ecg``, 15 epochs). Same
  fp32 graph, same 256 calibration records (the first of the training split), same test split.
  Latency at batch 1 and 32, 1 intra-op thread for every contender, measured round-robin (every
  row once per round) so load drift hits every row alike; ratios are medians of per-round ratios
  with a 95 % bootstrap interval. Quantize time, medians of interleaved repeats (wall and CPU):
  *from the exported graph*, the peers' starting point (``quantize_static`` from the fp32 graph
  to its QDQ graph; edgeproof's ``quantize`` from a ``Prepared`` whose folded module and fp32
  graph were built untimed) — the ratios against the 2× target — and, for edgeproof, *from the
  model* (BatchNorm folding and the fp32 export included: what a user pays once). NNCF runs in
  its own venv (``make nncf-venv``, or ``EDGEPROOF_NNCF_PYTHON``); without it its row says so.
* ``mixed`` — mixed precision (SigmaQuant-style) vs uniform int4/int8 at equal size
  (``docs/benchmarks/compress_mixed.md``).

``search`` and ``int8`` write their blocks of ``docs/benchmarks/compress.md`` (each replaces only
its own block); no argument runs all three.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeproof.compress.folding import fold_batchnorm
from edgeproof.compress.onnx_export import export_onnx
from edgeproof.compress.quantize import (
    Prepared,
    QuantConfig,
    int8_needs_reduced_range,
    quantize,
)
from edgeproof.data.dataset import Dataset
from edgeproof.data.loading import load_data
from edgeproof.models.train import train_model
from edgeproof.runtime.cpu import cpu_name
from edgeproof.runtime.ort import make_session, run_session

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "compress.md"
NNCF_PY = Path(
    os.environ.get(
        "EDGEPROOF_NNCF_PYTHON",
        str(Path(__file__).resolve().parents[1] / ".venv-nncf" / "bin" / "python"),
    )
)
CALIB_RECORDS = 256
ORT_CALIB_BATCH = 64
ROUNDS = 25
RUNS_PER_ROUND = {1: 20, 32: 3}
WARMUP = 10
QUANT_REPEATS = 5

# Run by NNCF_PY (a separate venv: nncf pins its own torch/onnx); argv: fp32.onnx calib.npy out.onnx
_NNCF_SCRIPT = """
import sys, time
import numpy as np, onnx, nncf
src, calib, dst = sys.argv[1:4]
model = onnx.load(src)
x = np.load(calib)
name = model.graph.input[0].name
data = nncf.Dataset([x[i : i + 1] for i in range(len(x))], lambda s: {name: s})
t0 = time.perf_counter()
q = nncf.quantize(model, data, subset_size=len(x))
onnx.save(q, dst)
print(f"nncf {nncf.__version__}: quantize took {time.perf_counter() - t0:.2f} s")
"""


def _load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def _machine() -> str:
    return f"{cpu_name()}, {platform.machine()}; load average {_load()} (shared machine)"


def _replace_block(name: str, text: str) -> None:
    """Replace this section's block of ``compress.md`` (keeping the other sections)."""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    old = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
    block = f"{start}\n{text.strip()}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = (old.strip() + "\n\n" + block if old.strip() else block) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(new.strip() + "\n", encoding="utf-8")


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# --------------------------------------------------------------------------------------------
# search


def search_main() -> None:
    from edgeproof.compress.api import compress
    from edgeproof.compress.search import Budget
    from edgeproof.models.loading import load_model
    from edgeproof.models.train import train_and_save

    torch.set_num_threads(1)
    train, test = load_data("builtin:digits/train"), load_data("builtin:digits")
    with tempfile.TemporaryDirectory() as tmp:
        path = train_and_save(
            "zoo:lenet5", train, Path(tmp) / "lenet5.safetensors", epochs=20, seed=0, lr=3e-3
        ).path
        model = load_model(path)
    assert model.module is not None and model.spec is not None
    lines: list[str] = []
    t0, c0 = time.perf_counter(), _cpu_s()

    def log(msg: str) -> None:
        lines.append(f"{time.perf_counter() - t0:7.1f} s  {msg}")
        print(lines[-1], flush=True)

    res = compress(
        model.module,
        model.spec,
        train,
        evaluation=test,
        budget=Budget(time_budget_s=1e9),
        threads=1,
        arch=model.arch,
        log=log,
    )
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    rows = res.ledger.rows
    build = sum(c.build_s for c in rows)
    per_check: dict[str, float] = {}
    for c in rows:
        for t in c.trust_checks:
            per_check[t.check] = per_check.get(t.check, 0.0) + t.duration_s
    reaudit = sum(per_check.values())
    verdict = "met" if wall <= 60 else "NOT met"
    out = [
        "## Compression search: the full default search on LeNet-5 / digits",
        "",
        f"Machine: {_machine()}. 1 thread (torch and ONNX Runtime). One run.",
        "",
        f"The default search ({len(rows) - 1} candidates + the fp32 baseline, each measured "
        "in ONNX Runtime and re-audited with the default trust checks at the threat model's "
        f"largest ε = {res.threat.eps[-1]:g}) took **{wall:.1f} s** wall "
        f"({cpu:.1f} s CPU, this process and its RSS probes): target ≤ 60 s at 1 thread "
        f"{verdict}.",
        "",
        "| where | seconds | share of wall |",
        "|---|---|---|",
        f"| building candidates (steps, calibration, QDQ graphs) | {build:.1f} | "
        f"{build / wall:.0%} |",
        *[
            f"| re-audit: `{name}` check | {s:.1f} | {s / wall:.0%} |"
            for name, s in sorted(per_check.items(), key=lambda kv: -kv[1])
        ],
        f"| the rest of the measurement (accuracy, latency, parity; RSS probe during the "
        f"re-audit) | {wall - build - reaudit:.1f} | {(wall - build - reaudit) / wall:.0%} |",
        "",
        "Terminal log of the run (`log` callback):",
        "",
        "```",
        *lines,
        "```",
        "",
        f"Chosen: {res.selection.message}",
    ]
    _replace_block("search", "\n".join(out))


# --------------------------------------------------------------------------------------------
# int8 against ONNX Runtime at its best


@dataclass
class Row:
    """One quantized (or fp32) graph on one model.

    ``model_s``: edgeproof from the PyTorch module (what a user pays once: BatchNorm folding and
    the fp32 export included); ``graph_s`` / ``graph_cpu_s``: wall / CPU seconds from the
    exported fp32 graph (the peers' starting point; for a peer its whole ``quantize_static``).
    """

    method: str
    onnx_bytes: bytes
    accuracy: float = float("nan")
    model_s: list[float] = field(default_factory=list)
    graph_s: list[float] = field(default_factory=list)
    graph_cpu_s: list[float] = field(default_factory=list)
    latency: dict[int, list[float]] = field(default_factory=dict)
    note: str = ""
    peer: bool = False


@dataclass(frozen=True)
class Quantizer:
    """How one row's graph is built. ``from_graph()`` does the untimed preparation (edgeproof:
    BatchNorm folding and the fp32 export, :class:`~edgeproof.compress.quantize.Prepared`) and
    returns the timed part; ``from_model`` (edgeproof only) is the whole path."""

    from_graph: Callable[[], Callable[[], bytes]]
    from_model: Callable[[], bytes] | None
    peer: bool


def _digits_3x32(ds: Dataset) -> Dataset:
    x = np.repeat(np.repeat(ds.x, 4, axis=2), 4, axis=3)
    x = np.ascontiguousarray(np.repeat(x, 3, axis=1), np.float32)
    return Dataset(x, ds.y, ds.classes, f"{ds.name} (3x32x32)", ds.format, domain=(0.0, 1.0))


def _accuracy(onnx_bytes: bytes, test: Dataset) -> float:
    logits = run_session(make_session(onnx_bytes, threads=1), test.x)[0]
    return float((logits.argmax(1) == test.y).mean())


def _ort_static(fp32: bytes, calib: np.ndarray, activation: str, method: str) -> bytes:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            b = ORT_CALIB_BATCH
            self.it = iter([{"input": calib[i : i + b]} for i in range(0, len(calib), b)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=int8_needs_reduced_range(),
            activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
        )
        return dst.read_bytes()


def _nncf(fp32: bytes, calib: np.ndarray) -> tuple[bytes | None, str]:
    """NNCF ``quantize`` (defaults) of the fp32 graph in the NNCF venv; ``(None, why)`` if not."""
    if not NNCF_PY.exists():
        return None, f"not run: {NNCF_PY} not found (NNCF is not installed here)"
    with tempfile.TemporaryDirectory() as tmp:
        src, cal, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "calib.npy", Path(tmp) / "q.onnx"
        src.write_bytes(fp32)
        np.save(cal, np.ascontiguousarray(calib, np.float32))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        res = subprocess.run(
            [str(NNCF_PY), "-c", _NNCF_SCRIPT, str(src), str(cal), str(dst)],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        if res.returncode != 0 or not dst.exists():
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:]
            return None, f"failed: {' '.join(tail)}"
        return dst.read_bytes(), res.stdout.strip().splitlines()[-1]


def _quantizers(
    model: torch.nn.Module, shape: tuple[int, ...], fp32: bytes, calib: np.ndarray
) -> dict[str, Quantizer]:
    """Method label → how to build its graph."""

    def ours(cfg: QuantConfig) -> Quantizer:
        def from_graph() -> Callable[[], bytes]:
            keep = cfg.calibration != "minmax"  # as quantize() builds it without `prepared`
            prep = Prepared(model, shape, calib[: cfg.calibration_samples], keep_values=keep)
            _ = prep.fp32  # the export, untimed
            return lambda: quantize(model, shape, calib, cfg, prepared=prep).onnx_bytes()

        return Quantizer(
            from_graph, lambda: quantize(model, shape, calib, cfg).onnx_bytes(), peer=False
        )

    def ort(act: str, method: str) -> Quantizer:
        return Quantizer(lambda: lambda: _ort_static(fp32, calib, act, method), None, peer=True)

    out = {
        "edgeproof int8 [auto]": ours(QuantConfig("int8")),
        "edgeproof int8 [minmax]": ours(QuantConfig("int8", "minmax")),
        "edgeproof int8 [entropy]": ours(QuantConfig("int8", "entropy")),
    }
    for act in ("u8", "s8"):
        for method in ("MinMax", "Entropy"):
            out[f"ORT quantize_static {act.upper()}S8 {method}"] = ort(act, method)
    return out


def _time_quantizers(makers: dict[str, Quantizer], rows: list[Row]) -> None:
    """``QUANT_REPEATS`` interleaved repeats of every quantizer (both of edgeproof's paths, which
    must build the same graph); a row per quantizer is added to ``rows`` on the first."""
    for _ in range(QUANT_REPEATS):
        for label, q in makers.items():
            timed = q.from_graph()
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            graph = timed()
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            del timed  # frees its activation statistics before the next timing
            row = next((r for r in rows if r.method == label), None)
            if row is None:
                row = Row(label, graph, peer=q.peer)
                rows.append(row)
            assert graph == row.onnx_bytes, f"{label}: another graph on a repeat"
            row.graph_s.append(secs)
            row.graph_cpu_s.append(cpu)
            if q.from_model is not None:
                gc.collect()
                t0 = time.perf_counter()
                assert q.from_model() == graph, f"{label}: the two paths built other graphs"
                row.model_s.append(time.perf_counter() - t0)


def _latency_rounds(rows: list[Row], x: np.ndarray, batch: int) -> None:
    """Per-round mean latency (ms) of one call at ``batch``, every row once per round."""
    xb = np.ascontiguousarray(x[:batch], np.float32)
    sessions = [(r, make_session(r.onnx_bytes, threads=1)) for r in rows]
    feeds = [(r, s, {s.get_inputs()[0].name: xb}) for r, s in sessions]  # type: ignore[attr-defined]
    for _, s, feed in feeds:
        for _ in range(WARMUP):
            s.run(None, feed)  # type: ignore[attr-defined]
    runs = RUNS_PER_ROUND[batch]
    for r, _, _ in feeds:
        r.latency[batch] = []
    for _ in range(ROUNDS):
        for r, s, feed in feeds:
            t0 = time.perf_counter()
            for _ in range(runs):
                s.run(None, feed)  # type: ignore[attr-defined]
            r.latency[batch].append((time.perf_counter() - t0) / runs * 1e3)


def _ratio(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Median of per-round ratios a/b and its 95 % bootstrap interval."""
    r = np.asarray(a) / np.asarray(b)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(r, size=(2000, r.size), replace=True), axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(np.median(r)), float(lo), float(hi)


def bench_int8(
    name: str, arch: str, train: Dataset, test: Dataset, epochs: int
) -> tuple[list[str], list[Row]]:
    t0 = time.perf_counter()
    model = train_model(arch, train, epochs=epochs, seed=0)
    log = [f"{name}: trained {arch} for {epochs} epochs in {time.perf_counter() - t0:.0f} s"]
    shape = train.sample_shape
    calib = np.ascontiguousarray(train.x[:CALIB_RECORDS], np.float32)
    t0 = time.perf_counter()
    fp32 = export_onnx(fold_batchnorm(model), shape).SerializeToString()
    export_s = time.perf_counter() - t0
    rows = [Row("fp32 ONNX Runtime", fp32)]
    _time_quantizers(_quantizers(model, shape, fp32, calib), rows)
    nncf_bytes, why = _nncf(fp32, calib)
    if nncf_bytes is not None:
        rows.append(Row("NNCF quantize (defaults)", nncf_bytes, note=why, peer=True))
    for r in rows:
        r.accuracy = _accuracy(r.onnx_bytes, test)
    for batch in (1, 32):
        _latency_rounds(rows, test.x, batch)
    log.append(
        f"{name}: BatchNorm folding + fp32 export took {export_s:.2f} s (in edgeproof's times "
        "from the model, not in those from the graph)"
    )
    if nncf_bytes is None:
        log.append(f"{name}: NNCF {why}")
    return _int8_table(name, rows, len(test)) + [f"- {s}" for s in log] + [""], rows


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def _int8_table(name: str, rows: list[Row], n: int) -> list[str]:
    out = [
        f"### {name} ({n} test records)",
        "",
        "| method | accuracy | size (B) | p50 batch 1 (ms) | p50 batch 32 (ms) | quantize from "
        "the model (s) | from the graph (s) | from the graph, CPU (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{_median(xs):.2f}" if xs else "—" for xs in (r.model_s, r.graph_s, r.graph_cpu_s)
        ]
        out.append(
            f"| {r.method} | {r.accuracy:.4f} | {len(r.onnx_bytes)} | "
            f"{np.median(r.latency[1]):.3f} | {np.median(r.latency[32]):.3f} | "
            + " | ".join(cells)
            + " |"
        )
    out += ["", *_verdicts(rows, n), ""]
    return out


_TIME_PAIRS = (
    ("edgeproof int8 [minmax]", "ORT quantize_static U8S8 MinMax"),
    ("edgeproof int8 [entropy]", "ORT quantize_static U8S8 Entropy"),
    ("edgeproof int8 [auto]", "ORT quantize_static U8S8 MinMax"),
    ("edgeproof int8 [auto]", "ORT quantize_static U8S8 Entropy"),
)
"""Quantize-time comparisons: each fixed method with ORT's, and ``auto`` (which calibrates and
simulates all four methods) with the fastest and with the slowest peer method."""


def _verdicts(rows: list[Row], n: int) -> list[str]:
    ours = next(r for r in rows if r.method == "edgeproof int8 [auto]")
    peers = [r for r in rows if r.peer]
    out = []
    for batch in (1, 32):
        best = min(peers, key=lambda r: float(np.median(r.latency[batch])))
        mid, lo, hi = _ratio(ours.latency[batch], best.latency[batch])
        ok = "met" if hi <= 1.0 else ("tie (interval covers 1)" if lo <= 1.0 else "NOT met")
        out.append(
            f"- batch {batch}: edgeproof int8 [auto] / the fastest peer ({best.method}) = "
            f"**{mid:.3f}×** [{lo:.3f}, {hi:.3f}] (target ≤ 1.0×: {ok})."
        )
    most = max(peers, key=lambda r: r.accuracy)
    d = round((ours.accuracy - most.accuracy) * n)
    out.append(
        f"- accuracy: edgeproof int8 [auto] {ours.accuracy:.4f} vs the most accurate peer "
        f"({most.method}) {most.accuracy:.4f}: {d:+d} test records (target ≥ theirs: "
        f"{'met' if d >= 0 else 'NOT met'})."
    )
    by = {r.method: r for r in rows}
    for a, b in _TIME_PAIRS:
        ra = _median(by[a].graph_s) / _median(by[b].graph_s)
        rc = _median(by[a].graph_cpu_s) / _median(by[b].graph_cpu_s)
        out.append(
            f"- quantize time from the exported graph, {a} / {b}: **{ra:.2f}×** wall, "
            f"{rc:.2f}× CPU (target ≤ 2×: {'met' if ra <= 2 else 'NOT met'}; from the model "
            f"{_median(by[a].model_s) / _median(by[b].graph_s):.2f}×)."
        )
    u8 = [r for r in peers if "U8S8" in r.method]
    s8 = [r for r in peers if "S8S8" in r.method]
    if u8 and s8:
        mid, lo, hi = _ratio(u8[0].latency[1], s8[0].latency[1])
        out.append(
            f"- activation type on this machine: U8S8 / S8S8 latency at batch 1 = {mid:.2f}× "
            f"[{lo:.2f}, {hi:.2f}] (edgeproof uses uint8 activations)."
        )
    return out


def int8_main() -> None:
    torch.set_num_threads(1)
    digits_train, digits_test = load_data("builtin:digits/train"), load_data("builtin:digits")
    cases = [
        (
            "ResNet-20 / digits 3×32×32",
            "zoo:resnet20",
            _digits_3x32(digits_train),
            _digits_3x32(digits_test),
            2,
        ),
        (
            "CNN-LSTM / synth-ecg",
            "zoo:cnn-lstm",
            load_data("builtin:synth-ecg/train"),
            load_data("builtin:synth-ecg"),
            15,
        ),
    ]
    lines = [
        "## Compression: edgeproof int8 vs ONNX Runtime quantize_static at its best",
        "",
        f"Machine: {_machine()}. 1 intra-op thread for every contender (torch and ONNX Runtime). "
        f"One run. Peers: `quantize_static` QDQ, per-channel int8 weights, U8S8 / S8S8 "
        f"activations, MinMax / Entropy calibration, reduce_range="
        f"{int8_needs_reduced_range()} (as edgeproof here), calibration fed in batches of "
        f"{ORT_CALIB_BATCH}; {CALIB_RECORDS} calibration records for everyone. Latency: "
        f"{ROUNDS} rounds, every row once per round ({RUNS_PER_ROUND[1]} calls at batch 1, "
        f"{RUNS_PER_ROUND[32]} at batch 32, after {WARMUP} warm-up calls); ratios are medians "
        "of per-round ratios with a 95 % bootstrap interval. Quantize time: median of "
        f"{QUANT_REPEATS} interleaved repeats, wall and CPU seconds (CPU: this process, every "
        "thread). *From the graph* is the peers' starting point: `quantize_static` from the "
        "exported fp32 graph to its QDQ graph (its own calibration session, default intra-op "
        "threads); edgeproof's `quantize` from the folded module and its exported fp32 graph "
        "(`Prepared`, built untimed) — calibration on both sides (the PyTorch activations for the "
        "fake-quant simulation, ONNX Runtime's for the graph), the range estimation, for `auto` "
        "the four methods' simulations on the calibration records and their KL to fp32, the QDQ "
        "graph, the PyTorch simulation module it returns and the list of nodes ONNX Runtime "
        "leaves in float (1 thread). *From the model* adds what a user pays once per model: "
        "BatchNorm folding and the fp32 export. Both paths build the same graph (checked on "
        "every repeat). Accuracy: the graph in ONNX Runtime on the whole test split.",
        "",
    ]
    for name, arch, train, test, epochs in cases:
        part, _ = bench_int8(name, arch, train, test, epochs)
        lines += part
    lines.append(f"Load average at the end: {_load()}.")
    _replace_block("int8", "\n".join(lines))


# --- Mixed precision (SigmaQuant-style) vs uniform int4/int8 ------------------------------------

OUT_MIXED = OUT.with_name("compress_mixed.md")


def _acc(onnx_bytes: bytes, test: Dataset) -> float:
    logits = run_session(make_session(onnx_bytes, threads=1), test.x)[0]
    return float((logits.argmax(1) == test.y).mean())


def bench_mixed(name: str, arch: str, train: Dataset, test: Dataset, epochs: int) -> list[str]:
    """Uniform w8 / w4 (group 32, 16, 8) / int8 static and a first+last-8-bit heuristic vs
    SigmaQuant-style mixed plans at size budgets, all executed in ONNX Runtime on ``test``."""
    from edgeproof.compress.mixed import (
        AllocationSettings,
        SizeModel,
        allocate,
        quantizable_layers,
    )

    torch.manual_seed(0)
    model = train_model(arch, train, epochs=epochs, seed=0)
    shape = train.sample_shape
    xc, yc = train.x[:256], train.y[:256]
    n = len(test)
    uniform: list[tuple[str, float, int]] = []
    for label, cfg in [
        ("uniform w8 (per channel)", QuantConfig("w8")),
        ("uniform w4 g32", QuantConfig("w4", group_size=32)),
        ("uniform w4 g16", QuantConfig("w4", group_size=16)),
        ("uniform w4 g8", QuantConfig("w4", group_size=8)),
        ("uniform int8 W8A8 [auto]", QuantConfig("int8")),
    ]:
        b = quantize(model, shape, xc, cfg).onnx_bytes()
        uniform.append((label, _acc(b, test), len(b)))
    names = [ly.name for ly in quantizable_layers(fold_batchnorm(model))]
    heur = {nm: (8 if i in (0, len(names) - 1) else 4) for i, nm in enumerate(names)}
    hb = quantize(model, shape, xc, QuantConfig("mixed", bits_per_layer=heur)).onnx_bytes()
    peers = [*uniform, ("heuristic: first+last 8-bit, rest 4 (g32)", _acc(hb, test), len(hb))]
    sizes = SizeModel.fit(model, shape, xc)
    lo, hi = sizes.smallest, sizes.estimate({})
    budgets: list[tuple[str, int | None]] = [("σ clustering only (no budget)", None)]
    budgets += [
        (f"size budget {f:.0%} of [smallest, all-8]", int(lo + f * (hi - lo)))
        for f in (0.1, 0.25, 0.5, 0.75)
    ]
    budgets += [(f"size budget = {lab}", size) for lab, _, size in peers[2:4] + peers[5:]]
    rows = []
    sens = None
    for label, budget in budgets:
        t0 = time.perf_counter()
        a = allocate(
            model,
            shape,
            xc,
            yc,
            AllocationSettings(max_size=budget),
            size_model=sizes,
            x_eval=test.x,
            y_eval=test.y,
        )
        sens = a.sensitivity
        rows.append((label, a, time.perf_counter() - t0))
    assert sens is not None
    fp32_acc = rows[0][1].fp32_accuracy
    lines = [
        f"### {name} (fp32 accuracy {fp32_acc:.4f} on {n} test records; "
        f"{len(names)} quantizable layers)",
        "",
        "| method | accuracy | size (bytes) | 4-bit layers |",
        "|---|---|---|---|",
    ]
    for label, acc, size in peers:
        lines.append(f"| {label} | {acc:.4f} | {size} | — |")
    lines += [
        "",
        "| SigmaQuant-style mixed (g32) | accuracy | size (bytes) | 4-bit layers | "
        "KL (calib, sim) | best uniform peer at ≤ this size | Δ records vs that peer | "
        "strictly better | uniform rows it dominates (≤ size, more accurate) | "
        "allocation s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, a, secs in rows:
        ok = [p for p in uniform if p[2] <= a.size_bytes]
        best = max(ok, key=lambda p: p[1]) if ok else None
        if best is None:
            peer, delta, better = "none that small", "—", "—"
        else:
            peer = f"{best[0]} ({best[1]:.4f}, {best[2]} B)"
            d = round((a.accuracy - best[1]) * n)
            delta, better = f"{d:+d}", "yes" if d > 0 else "no"
        dom = (
            ", ".join(
                p[0] for p in uniform if a.size_bytes <= p[2] and round((a.accuracy - p[1]) * n) > 0
            )
            or "—"
        )
        lines.append(
            f"| {label} | {a.accuracy:.4f} | {a.size_bytes} | "
            f"{len(a.low_bit_layers)}/{len(a.bits)} | {a.kl:.3g} | {peer} | {delta} | "
            f"{better} | {dom} | {secs:.1f} |"
        )
    lines += [
        "",
        "Sensitivity by module type (only that layer quantized; 256 training records; "
        "weight-only, int4 group 32, int8 per channel):",
        "",
        "| type | bits | layers | mean KL | median KL | mean Δacc | median SQNR (dB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in sens.by_type():
        lines.append(
            f"| {t.kind} | {t.bits} | {t.layers} | {t.mean_kl:.3g} | "
            f"{t.median_kl:.3g} | {t.mean_accuracy_change:+.4f} | "
            f"{t.median_sqnr_db:.1f} |"
        )
    lines.append("")
    return lines


def mixed_main() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    lines = [
        "## Compression: mixed precision vs uniform int4/int8",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), 1 thread; one run. "
        "Every accuracy is the exported QDQ graph run in ONNX Runtime on the test split; sizes "
        "are serialised ONNX bytes. Mixed plans: σ 2-means start, KL-guided refinement "
        "(edgeproof.compress.mixed) on 256 training records; weight-only, int4 group-32, int8 "
        "per channel; a layer is lowered to 4 bits only where that saves bytes. 'Best uniform "
        "peer' = the most accurate uniform row (w8, w4 g32/16/8, "
        "int8 W8A8) whose size is ≤ the mixed plan's; 'strictly better' means more test "
        "records right than it.",
        "",
    ]
    lines += bench_mixed(
        "ResNet-20 / digits",
        "zoo:resnet20",
        load_data("builtin:digits/train"),
        load_data("builtin:digits"),
        epochs=8,
    )
    lines += bench_mixed(
        "CNN-LSTM / synth-ecg",
        "zoo:cnn-lstm",
        load_data("builtin:synth-ecg/train"),
        load_data("builtin:synth-ecg"),
        epochs=15,
    )
    OUT_MIXED.parent.mkdir(parents=True, exist_ok=True)
    OUT_MIXED.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    import sys

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sections = {"search": search_main, "int8": int8_main, "mixed": mixed_main}
    for arg in sys.argv[1:] or list(sections):
        sections[arg]()
