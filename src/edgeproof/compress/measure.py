"""One measurement for every candidate: :func:`measure`.

Whatever the artefact (:mod:`edgeproof.compress.artefacts`: one graph or an early-exit cascade),
a candidate is measured on **what ships, in ONNX Runtime**, on the evaluation records: top-1
accuracy with a 95 % Wilson interval, the drop against the baseline with its exact paired interval
on the same records (:class:`~edgeproof.compress.ledger.PairedDrop`, at ``confidence``),
per-class accuracy and its drift from the baseline, the
size of the serialised graph, p50/p95 batch-1 latency (the artefact's own way to run, threads
stated, :mod:`edgeproof.runtime`), the peak resident memory of a fresh process running the graph
(:class:`edgeproof.runtime.memory.RssProbe`; that process runs while the re-audit does, after
the latency is measured), the agreement of its PyTorch form with
what runs (parity), expected MACs where the cost depends on the input — and the trust re-audit
of its PyTorch form (:func:`edgeproof.compress.reaudit.reaudit`) on the first ``audit_records``
evaluation records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeproof.compress.artefacts import Artefact
from edgeproof.compress.ledger import Candidate, PairedDrop, per_class_accuracy
from edgeproof.compress.reaudit import TRUST_CHECKS, TrustAudit, reaudit, reaudit_graph
from edgeproof.compress.steps import Built
from edgeproof.data.dataset import Dataset
from edgeproof.methods.stats import wilson_interval
from edgeproof.runtime.memory import RssProbe
from edgeproof.spec import ThreatModel

__all__ = ["MeasureSettings", "measure", "measure_artefact"]


@dataclass(frozen=True)
class MeasureSettings:
    """How every candidate of a search is measured.

    Attributes:
        threat: the threat model of the re-audit (at its largest ε); ``None``: no re-audit.
        checks: the checks re-run on every candidate.
        threads: CPU threads of ONNX Runtime (latency, RSS) and of the re-audit.
        seed: the re-audit's seed.
        audit_records: the first this many evaluation records are re-audited.
        reaudit_settings: per-check settings (default :data:`~edgeproof.compress.reaudit.
            REAUDIT_SETTINGS`).
        confidence: the level of each drop's paired interval (two-sided).
    """

    threat: ThreatModel | None
    checks: tuple[str, ...] = TRUST_CHECKS
    threads: int = 1
    seed: int = 0
    audit_records: int = 200
    reaudit_settings: Mapping[str, Mapping[str, Any]] | None = None
    confidence: float = 0.95


def measure(
    name: str,
    technique: str,
    built: Built,
    data: Dataset,
    settings: MeasureSettings,
    *,
    baseline: Candidate | None = None,
    build_s: float = 0.0,
    audit_data: Dataset | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Candidate:
    """Measure one built candidate on ``data`` (per-class drift against ``baseline``).

    ``data`` is in the units the artefact takes; ``audit_data`` (default ``data``) holds the
    same records in the threat model's raw input units, for the re-audit. ``on_stage`` is
    told ``"measure"`` then ``"re-audit"`` as each begins (progress)."""
    art = built.artefact
    if art is None:
        raise ValueError(f"{name}: the chain built no artefact")  # Chain.apply always does
    return measure_artefact(
        name,
        technique,
        art,
        data,
        settings,
        row_settings=built.settings,
        notes=built.notes,
        baseline=baseline,
        build_s=build_s,
        audit_data=audit_data,
        on_stage=on_stage,
    )


def measure_artefact(
    name: str,
    technique: str,
    art: Artefact,
    data: Dataset,
    settings: MeasureSettings,
    *,
    row_settings: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    baseline: Candidate | None = None,
    build_s: float = 0.0,
    audit_data: Dataset | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Candidate:
    """:func:`measure` of an artefact: its PyTorch form re-audited, or — an artefact with no
    PyTorch form (``module`` is ``None``: a third-party graph) — the graph itself
    (:func:`~edgeproof.compress.reaudit.reaudit_graph`)."""
    stage = on_stage or (lambda _stage: None)
    threads = settings.threads
    stage("measure")
    out = art.run(data.x, threads=threads)
    pred = out.logits.argmax(1)
    hits = np.asarray(pred == data.y, dtype=bool)
    correct = int(hits.sum())
    base_hits = hits if baseline is None or baseline.correct is None else baseline.correct
    pc = per_class_accuracy(pred, data.y, data.num_classes)
    base = baseline.per_class_accuracy if baseline is not None else None
    drift = tuple(a - b for a, b in zip(pc, base)) if base else tuple(0.0 for _ in pc)
    p50, p95 = art.latency(data.x, out, threads=threads)
    probe = RssProbe(art.onnx_bytes, data.x, threads=threads)  # runs during the re-audit
    stage("re-audit")
    trust = _trust(art, data if audit_data is None else audit_data, settings)
    rss = probe.result()
    return Candidate(
        name=name,
        technique=technique,
        settings={**(row_settings or {}), **art.settings(data.x, data.y, out, threads=threads)},
        accuracy=correct / max(len(data), 1),
        accuracy_ci=wilson_interval(correct, len(data)),
        per_class_accuracy=pc,
        per_class_drift=drift,
        size_bytes=len(art.onnx_bytes),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        threads=threads,
        peak_rss_mb=rss,
        trust=trust.metrics,
        parity=art.parity(data.x, out),
        float_nodes=art.float_nodes,
        notes=tuple(dict.fromkeys([*notes, *trust.notes])),
        build_s=build_s,
        expected_macs=art.expected_macs(out),
        trust_checks=trust.checks,
        artefact_kind=art.kind,
        drop=PairedDrop.between(base_hits, hits, settings.confidence),
        per_class_records=tuple(int((data.y == k).sum()) for k in range(data.num_classes)),
        correct=hits,
    )


def _trust(art: Artefact, data: Dataset, settings: MeasureSettings) -> TrustAudit:
    if settings.threat is None or not settings.checks:
        return TrustAudit()
    audit = data.subset(np.arange(min(settings.audit_records, len(data))))
    if art.module is None:
        return reaudit_graph(
            art.onnx_bytes,
            settings.threat,
            audit,
            checks=settings.checks,
            seed=settings.seed,
            settings=settings.reaudit_settings,
            threads=settings.threads,
        )
    return reaudit(
        art.module,
        settings.threat,
        audit,
        checks=settings.checks,
        seed=settings.seed,
        settings=settings.reaudit_settings,
        threads=settings.threads,
    )
