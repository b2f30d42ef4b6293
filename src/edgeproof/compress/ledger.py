"""The trust ledger: one typed row per compression candidate, the Pareto front, and selection.

Every candidate is measured on its **exported ONNX graph in ONNX Runtime** (the artefact that
ships): top-1 accuracy with a 95 % Wilson interval, per-class accuracy drift vs the baseline, size
of the serialised graph, p50/p95 latency at batch 1 (threads stated), and the peak resident memory
of a fresh process running the graph (:func:`measure_peak_rss_mb`). Trust metrics come from the
registered checks re-run on the candidate's PyTorch module (see :mod:`edgeproof.compress.search`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeproof.compress.onnx_export import make_session
from edgeproof.compress.quantize import Parity
from edgeproof.results import Figure, Interval, Metric, Table

__all__ = [
    "Candidate",
    "Ledger",
    "Selection",
    "measure_latency",
    "measure_peak_rss_mb",
    "per_class_accuracy",
]


@dataclass(frozen=True)
class Candidate:
    """One compressed model and everything measured about it."""

    name: str
    technique: str
    settings: dict[str, Any]
    accuracy: float
    accuracy_ci: Interval
    per_class_accuracy: tuple[float, ...]
    per_class_drift: tuple[float, ...]
    size_bytes: int
    latency_p50_ms: float
    latency_p95_ms: float
    threads: int
    peak_rss_mb: float | None
    trust: tuple[Metric, ...] = ()
    parity: Parity | None = None
    float_nodes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    build_s: float = 0.0

    @property
    def max_class_drop(self) -> float:
        return float(-min(self.per_class_drift)) if self.per_class_drift else 0.0

    def trust_value(self, name: str) -> float | None:
        for m in self.trust:
            if m.name == name:
                return m.value
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "technique": self.technique,
            "settings": self.settings,
            "accuracy": self.accuracy,
            "accuracy_ci": self.accuracy_ci.to_json(),
            "per_class_accuracy": list(self.per_class_accuracy),
            "per_class_drift": list(self.per_class_drift),
            "size_bytes": self.size_bytes,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "threads": self.threads,
            "peak_rss_mb": self.peak_rss_mb,
            "trust": [m.to_json() for m in self.trust],
            "parity": None
            if self.parity is None
            else {
                "top1_agreement": self.parity.top1_agreement,
                "max_abs_logit_diff": self.parity.max_abs_logit_diff,
                "samples": self.parity.samples,
            },
            "float_nodes": list(self.float_nodes),
            "notes": list(self.notes),
            "build_s": self.build_s,
        }


@dataclass(frozen=True)
class Selection:
    """The chosen candidate and whether it met the budget."""

    chosen: Candidate
    met_budget: bool
    message: str


@dataclass
class Ledger:
    """The baseline and every candidate, in the order they were built."""

    baseline: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    artefacts: dict[str, Any] = field(default_factory=dict, repr=False)
    """name → the built candidate (module + ONNX bytes); not serialised."""

    @property
    def rows(self) -> list[Candidate]:
        return [self.baseline, *self.candidates]

    def pareto(self) -> list[Candidate]:
        """Candidates not dominated in (smaller size, higher accuracy), sorted by size."""
        rows = self.rows
        front = [
            c
            for c in rows
            if not any(
                (o.size_bytes <= c.size_bytes and o.accuracy >= c.accuracy)
                and (o.size_bytes < c.size_bytes or o.accuracy > c.accuracy)
                for o in rows
            )
        ]
        return sorted(front, key=lambda c: c.size_bytes)

    def select(self, max_drop: float | None, max_size: int | None) -> Selection:
        """Smallest candidate whose accuracy drop ≤ ``max_drop`` and size ≤ ``max_size``.

        If none meets both, the best found is kept and reported: the most accurate candidate
        within ``max_size`` if any fits, else the smallest candidate overall.
        """
        base = self.baseline.accuracy

        def ok(c: Candidate) -> bool:
            return (max_drop is None or base - c.accuracy <= max_drop + 1e-12) and (
                max_size is None or c.size_bytes <= max_size
            )

        meeting = [c for c in self.rows if ok(c)]
        if meeting:
            best = min(meeting, key=lambda c: (c.size_bytes, -c.accuracy))
            return Selection(
                best,
                True,
                f"{best.name} meets the budget "
                f"(accuracy {best.accuracy:.4f} vs baseline {base:.4f}, "
                f"{best.size_bytes} bytes)",
            )
        fits = [c for c in self.rows if max_size is None or c.size_bytes <= max_size]
        best = (
            max(fits, key=lambda c: (c.accuracy, -c.size_bytes))
            if fits
            else min(self.rows, key=lambda c: c.size_bytes)
        )
        parts = []
        if max_drop is not None:
            parts.append(f"accuracy drop <= {max_drop:.2%}")
        if max_size is not None:
            parts.append(f"size <= {max_size} bytes")
        return Selection(
            best,
            False,
            f"no candidate meets the budget ({' and '.join(parts)}); "
            f"kept the best found: {best.name} (accuracy {best.accuracy:.4f}, "
            f"drop {base - best.accuracy:+.4f}, {best.size_bytes} bytes)",
        )

    def table(self) -> Table:
        trust_names = sorted({m.name for c in self.rows for m in c.trust})
        cols = [
            "candidate",
            "technique",
            "accuracy",
            "acc_ci_low",
            "acc_ci_high",
            "max_class_drop",
            "size_bytes",
            "p50_ms",
            "p95_ms",
            "threads",
            "peak_rss_mb",
            "parity_top1",
            *trust_names,
            "notes",
        ]
        rows = []
        for c in self.rows:
            rows.append(
                [
                    c.name,
                    c.technique,
                    round(c.accuracy, 4),
                    round(c.accuracy_ci.low, 4),
                    round(c.accuracy_ci.high, 4),
                    round(c.max_class_drop, 4),
                    c.size_bytes,
                    round(c.latency_p50_ms, 4),
                    round(c.latency_p95_ms, 4),
                    c.threads,
                    None if c.peak_rss_mb is None else round(c.peak_rss_mb, 2),
                    None if c.parity is None else c.parity.top1_agreement,
                    *[c.trust_value(n) for n in trust_names],
                    "; ".join(c.notes),
                ]
            )
        return Table(
            "ledger",
            "Compression ledger",
            cols,
            rows,
            "Measured on the exported ONNX graph in ONNX Runtime (CPU, batch 1 latency).",
        )

    def pareto_figure(self) -> Figure:
        from edgeproof.report.plots import new_figure, svg_of

        fig, ax = new_figure()
        front = self.pareto()
        for c in self.rows:
            ax.scatter(
                c.size_bytes / 1024, c.accuracy, s=18, color="C3" if c in front else "C0", zorder=3
            )
            ax.annotate(
                c.name,
                (c.size_bytes / 1024, c.accuracy),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
            )
        ax.plot(
            [c.size_bytes / 1024 for c in front],
            [c.accuracy for c in front],
            color="C3",
            lw=1,
            label="Pareto front",
        )
        ax.set_xlabel("ONNX size (KiB)")
        ax.set_ylabel("top-1 accuracy (ONNX Runtime)")
        ax.legend(loc="lower right")
        return Figure(
            "pareto",
            "Size vs accuracy",
            svg_of(fig),
            "Each point is one candidate's exported graph; red: Pareto front.",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.to_json(),
            "candidates": [c.to_json() for c in self.candidates],
            "pareto": [c.name for c in self.pareto()],
            "skipped": list(self.skipped),
        }


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, k: int) -> tuple[float, ...]:
    out = []
    for c in range(k):
        mask = y == c
        out.append(float((pred[mask] == c).mean()) if mask.any() else float("nan"))
    return tuple(out)


def measure_latency(
    onnx_bytes: bytes, sample: np.ndarray, *, threads: int = 1, warmup: int = 5, runs: int = 50
) -> tuple[float, float]:
    """p50 and p95 wall latency (ms) of one batch-1 run of the graph in ONNX Runtime."""
    sess = make_session(onnx_bytes, threads=threads)
    x = np.ascontiguousarray(sample[None], np.float32)
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    for _ in range(warmup):
        sess.run(None, {name: x})  # type: ignore[attr-defined]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})  # type: ignore[attr-defined]
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


_RSS_PROBE = """
import resource, sys
import numpy as np
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = int(sys.argv[2])
so.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[3])
sess.run(None, {sess.get_inputs()[0].name: x})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure_peak_rss_mb(onnx_bytes: bytes, x: np.ndarray, *, threads: int = 1) -> float | None:
    """Peak RSS (MiB) of a fresh Python process that loads the graph in ONNX Runtime and runs
    one batch of up to 64 records (``ru_maxrss``; includes the Python + ORT runtime itself).
    ``None`` if the probe process fails."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "m.onnx")
        data = os.path.join(tmp, "x.npy")
        with open(model, "wb") as fh:
            fh.write(onnx_bytes)
        np.save(data, np.ascontiguousarray(x[:64], np.float32))
        try:
            res = subprocess.run(
                [sys.executable, "-c", _RSS_PROBE, model, str(threads), data],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            return int(res.stdout.strip().splitlines()[-1]) / 1024.0
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            return None


def summary_metrics(sel: Selection, base: Candidate) -> list[Metric]:
    c = sel.chosen
    return [
        Metric(
            "accuracy",
            c.accuracy,
            "",
            c.accuracy_ci,
            "top-1 of the chosen model (ONNX Runtime)",
            True,
        ),
        Metric(
            "accuracy_drop",
            base.accuracy - c.accuracy,
            "",
            None,
            "baseline minus chosen accuracy",
            False,
        ),
        Metric("size_bytes", float(c.size_bytes), "B", None, "chosen ONNX graph size", False),
        Metric(
            "size_ratio",
            c.size_bytes / max(base.size_bytes, 1),
            "",
            None,
            "chosen / baseline ONNX size",
            False,
        ),
        Metric(
            "latency_p50_ms",
            c.latency_p50_ms,
            "ms",
            None,
            "batch-1 p50 latency",
            False,
            {"threads": c.threads},
        ),
        Metric("budget_met", float(sel.met_budget), "", None, "1 if the budget was met", True),
    ]
