"""The trust ledger: one typed row per compression candidate, the Pareto front, and selection.

Rows are measured by :func:`edgeproof.compress.measure.measure` (on the artefact that ships, in
ONNX Runtime) and re-audited by :func:`edgeproof.compress.reaudit.reaudit`; this module keeps the
rows (:class:`Candidate`, :class:`SkippedCandidate`), the selection under a budget
(:meth:`Ledger.select`), the ledger table with the headline trust columns
(:data:`TRUST_COLUMNS`: ECE, robust accuracy at the threat model's largest ε, DNL bit-flip
AR(10), verified accuracy at its smallest ε when a ``certify`` check is registered) and the
Pareto figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeproof.compress.quantize import Parity
from edgeproof.compress.reaudit import TrustCheck
from edgeproof.results import Figure, Interval, Metric, Table
from edgeproof.spec import ThreatModel

__all__ = [
    "TRUST_COLUMNS",
    "Candidate",
    "Ledger",
    "Selection",
    "SkippedCandidate",
    "TrustColumn",
    "per_class_accuracy",
    "summary_metrics",
]


@dataclass(frozen=True)
class TrustColumn:
    """One headline trust column of the ledger table.

    Attributes:
        column: the column name in :meth:`Ledger.table`.
        metric: the ``<check>.<metric>`` name in :attr:`Candidate.trust`.
        description: what the number is and how it was measured (goes in the table
            description); ``{eps}`` and ``{norm}`` stand for the re-audit's ε and norm,
            ``{certify_eps}`` for the ε ``certify`` proves at (the smallest).
    """

    column: str
    metric: str
    description: str


TRUST_COLUMNS: tuple[TrustColumn, ...] = (
    TrustColumn(
        "ece",
        "calibration.ece",
        "ece: expected calibration error, 15 equal-width bins (calibration check); lower is better",
    ),
    TrustColumn(
        "robust_acc",
        "adversarial.robust_accuracy",
        "robust_acc: accuracy under the worst of FGSM and PGD-10 at the threat model's largest ε "
        "= {eps} ({norm}; adversarial check, up to 100 seeded records); quantized candidates "
        "are attacked "
        "white-box through their fake-quant simulation with a clipped straight-through "
        "estimator for the activation rounding (no transfer from fp32)",
    ),
    TrustColumn(
        "dnl_ar10_pct",
        "bitflip.dnl_ar_10",
        "dnl_ar10_pct: accuracy reduction AR(10) = (acc_clean - acc_10)/acc_clean in % after the "
        "10 DNL sign flips (w -> -w) of the largest weights in the first 10 layers (bitflip "
        "check, up to 200 records), on the weights the exported graph holds (BatchNorm folded; "
        "dequantized grid values for quantized candidates); higher is more fragile",
    ),
    TrustColumn(
        "verified_acc",
        "certify.verified_accuracy",
        "verified_acc: fraction of up to 50 seeded records proved robust by CROWN at the threat "
        "model's smallest ε = {certify_eps} ({norm}; certify check, no branch-and-bound); for "
        "quantized candidates, proved for the PyTorch fake-quant simulation (its rounding "
        "enclosed soundly), not for the integer ONNX graph",
    ),
)


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
    expected_macs: float | None = None
    """Expected MACs per sample (early-exit candidates; ``None`` when not measured)."""
    trust_checks: tuple[TrustCheck, ...] = ()
    """How each re-audit check ended (a failed check is an error of this candidate)."""
    artefact_kind: str = "graph"

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
            "expected_macs": self.expected_macs,
            "trust_checks": [t.to_json() for t in self.trust_checks],
            "artefact_kind": self.artefact_kind,
        }


@dataclass(frozen=True)
class Selection:
    """The chosen candidate and whether it met the budget."""

    chosen: Candidate
    met_budget: bool
    message: str


@dataclass(frozen=True)
class SkippedCandidate:
    """A recipe the search did not measure, and why (not applicable, or the time budget)."""

    name: str
    technique: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "technique": self.technique, "reason": self.reason}


@dataclass
class Ledger:
    """The baseline and every candidate, in the order they were built.

    ``threat`` is the threat model of the re-audit (its largest ε is the one attacked);
    ``certify_threat`` the one ``certify`` proves at (the smallest ε,
    :data:`~edgeproof.compress.reaudit.TRUST_EPS`); ``artefacts`` maps a name to the built
    candidate (not serialised).
    """

    baseline: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[SkippedCandidate] = field(default_factory=list)
    artefacts: dict[str, Any] = field(default_factory=dict, repr=False)
    threat: ThreatModel | None = None
    certify_threat: ThreatModel | None = None

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
        present = {m.name for c in self.rows for m in c.trust}
        trust_cols = [t for t in TRUST_COLUMNS if t.metric in present]
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
            "expected_macs",
            *[t.column for t in trust_cols],
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
                    None if c.expected_macs is None else round(c.expected_macs),
                    *[_rounded(c.trust_value(t.metric)) for t in trust_cols],
                    "; ".join([*_check_notes(c), *c.notes]),
                ]
            )
        return Table(
            "ledger",
            "Compression ledger",
            cols,
            rows,
            " ".join(
                [
                    "Accuracy, size, latency and memory measured on the exported ONNX graph in "
                    "ONNX Runtime (CPU, batch-1 latency); trust columns re-audited on the "
                    "candidate's PyTorch module (every trust metric is in compress.json).",
                    *[self._describe(t) + "." for t in trust_cols],
                ]
            ),
        )

    def _describe(self, col: TrustColumn) -> str:
        eps = "?" if self.threat is None else f"{self.threat.eps[-1]:g}"
        norm = "?" if self.threat is None else self.threat.norm
        ct = self.certify_threat
        certify_eps = "?" if ct is None else f"{ct.eps[0]:g}"
        return col.description.format(eps=eps, norm=norm, certify_eps=certify_eps)

    def pareto_figure(self) -> Figure:
        rows, front = self.rows, self.pareto()
        return Figure(
            "pareto",
            "Size vs accuracy",
            lambda: _pareto_svg(rows, front),
            "Each point is one candidate's exported graph (ONNX Runtime top-1 accuracy with its "
            "95% Wilson interval); vermillion: the Pareto front (no candidate both smaller and "
            "more accurate).",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.to_json(),
            "candidates": [c.to_json() for c in self.candidates],
            "pareto": [c.name for c in self.pareto()],
            "skipped": [s.to_json() for s in self.skipped],
            "reaudit_threat": None if self.threat is None else self.threat.to_json(),
            "certify_threat": None
            if self.certify_threat is None
            else self.certify_threat.to_json(),
        }


def _pareto_svg(rows: list[Candidate], front: list[Candidate]) -> str:
    """Accuracy against exported size with each accuracy's 95% Wilson interval; the front joined
    by a line. Names label the points, the front's first (a name that fits nowhere without
    overlap is left out and stays the point's tooltip). The size axis is logarithmic when the
    sizes span more than a factor of 10 (int8, pruned and fp32 graphs then keep apart)."""
    from edgeproof.report.charts import Axis, Chart
    from edgeproof.report.charts.colors import BLUE, GREY, VERMILLION

    on_front = {id(c) for c in front}
    rest = [c for c in rows if id(c) not in on_front]
    kib = [c.size_bytes / 1024 for c in rows]
    log = min(kib) > 0 and max(kib) / min(kib) > 10
    chart = Chart(
        600,
        360,
        x=Axis("ONNX size (KiB)", scale="log" if log else "linear"),
        y=Axis("top-1 accuracy (ONNX Runtime)"),
    )

    def xy(cs: list[Candidate]) -> tuple[list[float], list[float]]:
        return [c.size_bytes / 1024 for c in cs], [c.accuracy for c in cs]

    chart.errorbars(
        [c.size_bytes / 1024 for c in rows],
        [c.accuracy_ci.low for c in rows],
        [c.accuracy_ci.high for c in rows],
        color=GREY,
        label="95% CI (Wilson)",
    )
    chart.line(*xy(front), color=VERMILLION, width=1.2, label="Pareto front")
    chart.scatter(
        *xy(front),
        color=VERMILLION,
        size=3.5,
        opacity=1.0,
        point_labels=[c.name for c in front],
    )
    if rest:
        chart.scatter(
            *xy(rest),
            color=BLUE,
            size=3.5,
            opacity=0.9,
            label="dominated",
            point_labels=[c.name for c in rest],
        )
    chart.legend(order=("Pareto front", "dominated", "95% CI (Wilson)"))
    return chart.svg()


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, k: int) -> tuple[float, ...]:
    out = []
    for c in range(k):
        mask = y == c
        out.append(float((pred[mask] == c).mean()) if mask.any() else float("nan"))
    return tuple(out)


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


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _check_notes(c: Candidate) -> list[str]:
    """The re-audit checks that did not end ``ok``, for the table's notes column."""
    return [
        f"trust check {t.check} {'skipped' if t.status == 'skipped' else 'failed'}: {t.message}"
        for t in c.trust_checks
        if t.status != "ok"
    ]
