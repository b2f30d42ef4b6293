"""The trust ledger: one typed row per compression candidate, the Pareto front, the table.

Rows are measured by :func:`edgeproof.compress.measure.measure` (on the artefact that ships, in
ONNX Runtime) and re-audited by :func:`edgeproof.compress.reaudit.reaudit`; this module keeps the
rows (:class:`Candidate`, :class:`SkippedCandidate`, :class:`PairedDrop`), the ledger table
with the headline trust columns (:data:`TRUST_COLUMNS`: ECE, robust accuracy at the threat
model's largest ε, DNL bit-flip AR(10), the loss Hessian's top eigenvalue and NC1 where the
candidate has gradients, verified accuracy at its smallest ε when a ``certify`` check is
registered) and the Pareto figure. Selection under a budget is :mod:`edgeproof.compress.selection`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeproof.compress.quantize import Parity
from edgeproof.compress.reaudit import TrustCheck
from edgeproof.errors import InternalError
from edgeproof.methods.stats import paired_drop_interval
from edgeproof.results import Figure, Interval, Metric, Table
from edgeproof.serialize import JsonFields, fields_json
from edgeproof.spec import ThreatModel

if TYPE_CHECKING:
    from edgeproof.compress.artefacts import Artefact
    from edgeproof.compress.steps import Built

__all__ = [
    "TRUST_COLUMNS",
    "Candidate",
    "Ledger",
    "PairedDrop",
    "SkippedCandidate",
    "TrustColumn",
    "per_class_accuracy",
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
        "hessian_top_eig",
        "generalization.top_eigenvalue",
        "hessian_top_eig: the largest eigenvalue of the Hessian of the mean cross-entropy over "
        "the weights (sharpness; Lanczos, at most 30 steps, relative residual 1e-3, up to 200 "
        "records; generalization check), on the candidate's PyTorch module (quantized "
        "candidates: through the fake-quant simulation, activation rounding by the clipped "
        "straight-through estimator); larger means weight perturbations cost more loss",
    ),
    TrustColumn(
        "nc1",
        "generalization.nc1",
        "nc1: neural collapse NC1 = tr(Σ_W Σ_B⁺)/K of the penultimate features (Papyan et al. "
        "2020; generalization check, same records); lower means tighter, better separated "
        "classes",
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
class PairedDrop(JsonFields):
    """A candidate's accuracy drop against the baseline on the same evaluation records.

    ``n10``: records the baseline gets right and the candidate wrong; ``n01``: the reverse.
    ``interval``: the exact paired interval of the drop
    (:func:`edgeproof.methods.stats.paired_drop_interval`: Clopper–Pearson on the discordant
    pairs, the interval dual to the exact McNemar test).
    """

    n: int = field(metadata={"key": "records"})
    n10: int = field(metadata={"key": "baseline_only_correct"})
    n01: int = field(metadata={"key": "candidate_only_correct"})
    interval: Interval

    json_order = ("drop", "interval", ...)

    @property
    def value(self) -> float:
        return (self.n10 - self.n01) / self.n if self.n else 0.0

    @classmethod
    def between(cls, base: np.ndarray, cand: np.ndarray, level: float = 0.95) -> PairedDrop:
        """From the per-record correctness of the baseline and the candidate (same records)."""
        n10, n01 = int((base & ~cand).sum()), int((~base & cand).sum())
        return cls(len(base), n10, n01, paired_drop_interval(n10, n01, len(base), level))

    def to_json(self) -> dict[str, Any]:
        # the drop itself is derived from the counts (as :attr:`value`)
        return fields_json(self, extra={"drop": self.value})


@dataclass(frozen=True)
class Candidate(JsonFields):
    """One compressed model and everything measured about it.

    ``drop`` is its accuracy drop against the baseline with the paired interval (``None`` for a
    row built without per-record outcomes); ``correct`` the per-record top-1 correctness on the
    evaluation records (not serialised); ``per_class_records`` the records of each class.
    """

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
    drop: PairedDrop | None = None
    per_class_records: tuple[int, ...] = ()
    correct: np.ndarray | None = field(
        default=None, repr=False, compare=False, metadata={"json": False}
    )

    @property
    def max_class_drop(self) -> float:
        drops = [-d for d in self.per_class_drift if d == d]  # NaN: a class with no record
        return float(max(drops)) if drops else 0.0

    @property
    def worst_class(self) -> int | None:
        """The class whose accuracy dropped most (``None`` when none dropped)."""
        drift = [(d, k) for k, d in enumerate(self.per_class_drift) if d == d]
        if not drift or min(drift)[0] >= 0:
            return None
        return min(drift)[1]

    def trust_value(self, name: str) -> float | None:
        for m in self.trust:
            if m.name == name:
                return m.value
        return None


@dataclass(frozen=True)
class SkippedCandidate(JsonFields):
    """A recipe the search did not measure, and why (not applicable, or the time budget)."""

    name: str
    technique: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass
class Ledger(JsonFields):
    """The baseline and every candidate, in the order they were built.

    ``threat`` is the threat model of the re-audit (its largest ε is the one attacked);
    ``classes`` the evaluation data's class names; ``certify_threat`` the one ``certify``
    proves at (the smallest ε, :data:`~edgeproof.compress.reaudit.TRUST_EPS`); ``artefacts``
    maps a name to the built candidate (not serialised); ``execution`` says where the
    candidates were built and measured (:meth:`edgeproof.execute.Executor.describe`; written
    to compress.json, not part of the ledger's numbers).
    """

    baseline: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[SkippedCandidate] = field(default_factory=list)
    artefacts: dict[str, Built | Artefact] = field(
        default_factory=dict, repr=False, metadata={"json": False}
    )
    threat: ThreatModel | None = field(default=None, metadata={"key": "reaudit_threat"})
    classes: tuple[str, ...] = field(default=(), metadata={"json": False})
    certify_threat: ThreatModel | None = None
    execution: dict[str, Any] = field(default_factory=dict, metadata={"json": False})

    json_order = ("baseline", "candidates", "pareto", ...)

    @property
    def rows(self) -> list[Candidate]:
        return [self.baseline, *self.candidates]

    def artefact(self, name: str) -> Artefact:
        """What candidate ``name`` ships: a built chain's artefact, or the graph artefact a graph
        candidate is."""
        from edgeproof.compress.steps import Built

        entry = self.artefacts[name]
        if isinstance(entry, Built):
            if entry.artefact is None:
                raise InternalError(f"{name}: the built chain has no artefact")
            return entry.artefact
        return entry

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

    def table(self, verdicts: Mapping[str, str] | None = None, *, notes: bool = True) -> Table:
        """The ledger table, decision columns first: candidate, verdict (with ``verdicts``, a
        candidate name → verdict map such as :meth:`Selection.verdicts
        <edgeproof.compress.selection.Selection.verdicts>`: ``chosen``, ``meets budget`` or the
        refusal reasons), the drop with its paired interval,
        the worst class's drop, size, accuracy with its Wilson interval, the trust columns,
        then latency, memory, parity and (``notes``) the notes last. Long because it lays out
        one row of every measured column."""
        present = {m.name for c in self.rows for m in c.trust}
        trust_cols = [t for t in TRUST_COLUMNS if t.metric in present]
        cols = [
            "candidate",
            *(["verdict"] if verdicts is not None else []),
            "drop",
            "drop_ci_low",
            "drop_ci_high",
            "max_class_drop",
            "size_bytes",
            "accuracy",
            "acc_ci_low",
            "acc_ci_high",
            *[t.column for t in trust_cols],
            "p50_ms",
            "p95_ms",
            "threads",
            "peak_rss_mb",
            "parity_top1",
            "expected_macs",
            "technique",
            *(["notes"] if notes else []),
        ]
        rows = []
        for c in self.rows:
            d = c.drop
            rows.append(
                [
                    c.name,
                    *([verdicts.get(c.name, "")] if verdicts is not None else []),
                    round(self.baseline.accuracy - c.accuracy, 4),
                    None if d is None else round(d.interval.low, 4),
                    None if d is None else round(d.interval.high, 4),
                    round(c.max_class_drop, 4),
                    c.size_bytes,
                    round(c.accuracy, 4),
                    round(c.accuracy_ci.low, 4),
                    round(c.accuracy_ci.high, 4),
                    *[_rounded(c.trust_value(t.metric)) for t in trust_cols],
                    round(c.latency_p50_ms, 4),
                    round(c.latency_p95_ms, 4),
                    c.threads,
                    None if c.peak_rss_mb is None else round(c.peak_rss_mb, 2),
                    None if c.parity is None else c.parity.top1_agreement,
                    None if c.expected_macs is None else round(c.expected_macs),
                    c.technique,
                    *(["; ".join(_notes(c))] if notes else []),
                ]
            )
        return Table(
            "ledger", "Compression ledger", cols, rows, self._table_description(trust_cols)
        )

    def _table_description(self, trust_cols: list[TrustColumn]) -> str:
        level = next((c.drop.interval.level for c in self.rows if c.drop is not None), 0.95)
        return " ".join(
            [
                "Accuracy, size, latency and memory measured on the exported ONNX graph in "
                "ONNX Runtime (CPU, batch-1 latency); trust columns re-audited on the "
                "candidate's PyTorch module (every trust metric is in compress.json).",
                f"drop: baseline minus candidate accuracy on the same "
                f"{self.baseline.drop.n if self.baseline.drop else '?'} evaluation records; "
                f"drop_ci_low/high: its exact paired {level:.0%} interval (Clopper-Pearson on "
                "the records only one of the two gets right, dual to the exact McNemar test); a "
                "candidate meets the accuracy budget only when drop_ci_high is within it.",
                "max_class_drop: the largest drop of one class's accuracy (point estimate).",
                *[self._describe(t) + "." for t in trust_cols],
            ]
        )

    def notes_table(self) -> Table:
        """One row per note of a candidate (what the ledger table leaves out when ``notes`` is
        false): re-audit checks that did not run, build notes."""
        rows: list[list[Any]] = [[c.name, n] for c in self.rows for n in _notes(c)]
        return Table(
            "ledger_notes",
            "Notes per candidate",
            ["candidate", "note"],
            rows,
            "Re-audit checks that were skipped or failed, and how each candidate was built.",
        )

    def _describe(self, col: TrustColumn) -> str:
        eps = "?" if self.threat is None else f"{self.threat.eps[-1]:g}"
        norm = "?" if self.threat is None else self.threat.norm
        ct = self.certify_threat
        certify_eps = "?" if ct is None else f"{ct.eps[0]:g}"
        return col.description.format(eps=eps, norm=norm, certify_eps=certify_eps)

    def pareto_figure(self, chosen: str | None = None) -> Figure:
        """Size against accuracy; ``chosen`` (a candidate name) ringed in green."""
        rows, front = self.rows, self.pareto()
        mark = next((c for c in rows if c.name == chosen), None)
        return Figure(
            "pareto",
            "Size vs accuracy",
            lambda: _pareto_svg(rows, front, mark),
            "Each point is one candidate's exported graph (ONNX Runtime top-1 accuracy with its "
            "95% Wilson interval); vermillion: the Pareto front (no candidate both smaller and "
            "more accurate)" + ("; green ring: the chosen candidate." if mark else "."),
        )

    def to_json(self) -> dict[str, Any]:
        # "pareto" is derived: the names of the candidates on the Pareto front
        return fields_json(self, extra={"pareto": [c.name for c in self.pareto()]})


def _pareto_svg(rows: list[Candidate], front: list[Candidate], mark: Candidate | None) -> str:
    """Accuracy against exported size with each accuracy's 95% Wilson interval; the front joined
    by a line. Names label the points, the front's first (a name that fits nowhere without
    overlap is left out and stays the point's tooltip). The size axis is logarithmic when the
    sizes span more than a factor of 10 (int8, pruned and fp32 graphs then keep apart)."""
    from edgeproof.report.charts import Axis, Chart
    from edgeproof.report.charts.colors import BLUE, GREEN, GREY, VERMILLION

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
    if mark is not None:
        chart.scatter(*xy([mark]), color=GREEN, size=7.0, opacity=0.45, label="chosen")
    chart.legend(order=("chosen", "Pareto front", "dominated", "95% CI (Wilson)"))
    return chart.svg()


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, k: int) -> tuple[float, ...]:
    out = []
    for c in range(k):
        mask = y == c
        out.append(float((pred[mask] == c).mean()) if mask.any() else float("nan"))
    return tuple(out)


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _notes(c: Candidate) -> list[str]:
    return list(dict.fromkeys([*_check_notes(c), *c.notes]))


def _check_notes(c: Candidate) -> list[str]:
    """The re-audit checks that did not end ``ok``, for the table's notes column."""
    return [
        f"trust check {t.check} {'skipped' if t.status == 'skipped' else 'failed'}: {t.message}"
        for t in c.trust_checks
        if t.status != "ok"
    ]
