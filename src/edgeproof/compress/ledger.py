"""The trust ledger: one typed row per compression candidate, the Pareto front, and selection.

Every candidate is measured on its **exported ONNX graph in ONNX Runtime** (the artefact that
ships): top-1 accuracy with a 95 % Wilson interval, per-class accuracy drift vs the baseline, size
of the serialised graph, p50/p95 latency at batch 1 (threads stated), and the peak resident memory
of a fresh process running the graph (:func:`edgeproof.runtime.memory.probe_peak_rss_mib`).
Trust metrics come from the
registered checks re-run on the candidate's PyTorch module by :func:`reaudit`, with the small
settings of :data:`REAUDIT_SETTINGS` so a search over a dozen candidates stays fast; the headline
trust columns of the ledger table are :data:`TRUST_COLUMNS` (ECE, robust accuracy at the threat
model's ε, DNL bit-flip AR(10), verified accuracy when a ``certify`` check is registered).

Quantized candidates are audited through their PyTorch fake-quant simulation. Rounding has zero
gradient, so gradient attacks on it would be masked (robust accuracy = clean accuracy, a false
result). :func:`straight_through` wraps every activation fake-quantizer in the *clipped
straight-through estimator* (Bengio et al. 2013, arXiv 1308.3432; Hubara et al. 2016): the
forward value is the fake-quantized one bit for bit, the gradient is the identity inside the
quantizer's representable range and zero outside it. The attack is therefore a white-box attack
on the quantized model itself, not a transfer from the fp32 model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeproof.compress.quantize import ActFakeQuant, Parity
from edgeproof.data.dataset import Dataset
from edgeproof.results import Figure, Interval, Metric, Table
from edgeproof.spec import InputSpec, ThreatModel

__all__ = [
    "REAUDIT_SETTINGS",
    "TRUST_COLUMNS",
    "Candidate",
    "Ledger",
    "Selection",
    "StraightThrough",
    "TrustColumn",
    "per_class_accuracy",
    "reaudit",
    "straight_through",
]


@dataclass(frozen=True)
class TrustColumn:
    """One headline trust column of the ledger table.

    Attributes:
        column: the column name in :meth:`Ledger.table`.
        metric: the ``<check>.<metric>`` name in :attr:`Candidate.trust`.
        description: what the number is and how it was measured (goes in the table description).
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
        "(adversarial check, up to 100 seeded records); quantized candidates are attacked "
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
        "model's largest ε (certify check; fake-quant candidates bounded through their "
        "quantizers)",
    ),
)

REAUDIT_SETTINGS: dict[str, dict[str, Any]] = {
    "calibration": {"n_bins": 15, "resamples": 100},
    "adversarial": {
        "attacks": ("fgsm", "pgd"),
        "pgd_steps": 10,
        "pgd_restarts": 1,
        "bisection_steps": 0,
        "max_samples": 100,
    },
    "bitflip": {
        "num_layers": 10,
        "max_k": 10,
        "random_seeds": 2,
        "budgets": (),
        "eval_samples": 200,
    },
    "certify": {"methods": ("crown",), "max_samples": 50, "pgd_steps": 10},
}
"""Small settings per check for re-auditing every candidate (checks not named: defaults)."""


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
                    "; ".join(c.notes),
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
                    *[t.description + "." for t in trust_cols],
                ]
            ),
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


class StraightThrough(nn.Module):
    """A fake-quantizer with the clipped straight-through estimator as its gradient.

    Forward: exactly ``fq(x)``. Backward: ``∂y/∂x = 1`` where ``x`` lies inside the quantizer's
    representable range ``[(0 - zp)·s, (255 - zp)·s]``, ``0`` outside (Bengio et al. 2013).
    """

    def __init__(self, fq: ActFakeQuant) -> None:
        super().__init__()
        self.fq = fq
        self.lo = (0 - fq.zero_point) * fq.scale
        self.hi = (255 - fq.zero_point) * fq.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fq(x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return y
        inside = ((x >= self.lo) & (x <= self.hi)).to(x.dtype)
        return y.detach() + (x - x.detach()) * inside


def straight_through(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` whose calibrated activation fake-quantizers are wrapped in
    :class:`StraightThrough`; returns ``(copy, number wrapped)`` (the module itself if none)."""
    names = [
        n for n, m in module.named_modules() if isinstance(m, ActFakeQuant) and m.observer is None
    ]
    if not names:
        return module, 0
    out = copy.deepcopy(module)
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        fq = getattr(parent, attr)
        setattr(parent, attr, StraightThrough(fq))
    return out, len(names)


def _as_exported(module: nn.Module) -> tuple[nn.Module, bool]:
    """``module`` with BatchNorm folded into the preceding Conv/Linear as in the exported graph
    (``fold_batchnorm``; function-preserving), so weight-level checks such as DNL see the
    deployed weights for every candidate alike; ``(module, False)`` if it has no BatchNorm or
    cannot be traced."""
    from edgeproof.compress.quantize import fold_batchnorm
    from edgeproof.errors import SpecError

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return module, False
    try:
        return fold_batchnorm(module), True
    except SpecError:
        return module, False


def reaudit(
    module: nn.Module,
    spec: InputSpec,
    data: Dataset,
    *,
    checks: tuple[str, ...],
    seed: int = 0,
    threat: ThreatModel | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[Metric], list[str]]:
    """Re-run the registered ``checks`` on one candidate; returns its metrics and notes.

    Each check is built with ``get_check(name, **settings[name])`` (default
    :data:`REAUDIT_SETTINGS`) and run on one shared :class:`AuditContext` over
    ``from_module(straight_through(fold_batchnorm(module)), spec)`` (BatchNorm folded as in the
    exported graph, only when the module has BatchNorm); the threat model is reduced to its largest
    ε (the spec's budget) so the attack runs once per candidate. Metrics are renamed
    ``<check>.<metric>``. A check that is not registered, skips, or fails is recorded as a note
    and the others still run.
    """
    from edgeproof.checks import available_checks, get_check
    from edgeproof.checks.base import AuditContext
    from edgeproof.models.loading import from_module

    conf = REAUDIT_SETTINGS if settings is None else settings
    notes: list[str] = []
    metrics: list[Metric] = []
    registered = set(available_checks())
    missing = [c for c in checks if c not in registered]
    if missing:
        notes.append(f"not re-audited (check not registered): {', '.join(missing)}")
    todo = [c for c in checks if c in registered]
    if not todo:
        return metrics, notes
    audited, folded = _as_exported(module)
    if folded:
        notes.append("trust re-audit on the BatchNorm-folded module (the weights the ONNX holds)")
    audited, wrapped = straight_through(audited)
    if wrapped:
        notes.append(
            f"trust re-audit: {wrapped} activation fake-quantizers use a clipped "
            "straight-through estimator for gradients (forward unchanged)"
        )
    base = threat if threat is not None else ThreatModel(spec)
    ctx = AuditContext(
        model=from_module(audited, spec),
        data=data,
        threat=ThreatModel(base.input, base.norm, (base.eps[-1],)),
        seed=seed,
    )
    for name in todo:
        try:
            check = get_check(name, **dict(conf.get(name, {})))
            reason = check.skip_reason(ctx)
            if reason:
                notes.append(f"{name} skipped: {reason}")
                continue
            res = check.run(ctx)
        except Exception as exc:  # a failing check is recorded, the others still run
            notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
            continue
        for m in res.metrics:
            metrics.append(
                Metric(
                    f"{name}.{m.name}",
                    m.value,
                    m.unit,
                    m.ci,
                    m.description,
                    m.higher_is_better,
                    m.settings,
                )
            )
    return metrics, notes
