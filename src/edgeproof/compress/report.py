"""The sections of a compression's report: the ledger first, then one per candidate.

:func:`ledger_section` is the ``compress`` section a reader acts on: the selection (a finding
that says what was chosen and why, or that nothing could be shown to meet the budget), the
ledger table (verdict, the drop with its exact paired interval, the worst class, size,
accuracy, the trust columns; notes in their own table so rows stay one line), the Pareto
figure with the chosen candidate marked, and one row per refused or skipped candidate with its
reason. :func:`candidate_section` holds one candidate's detail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from edgeproof.compress.ledger import Candidate, Ledger
from edgeproof.compress.reaudit import TrustCheck
from edgeproof.compress.search import Budget
from edgeproof.compress.selection import Selection, summary_metrics
from edgeproof.results import CheckResult, Finding, Metric, Severity, Table


class CompressionResult(Protocol):
    """What these sections read of :class:`edgeproof.compress.api.CompressionResult` (a
    protocol, so this module does not import the api that imports it)."""

    ledger: Ledger
    selection: Selection
    budget: Budget

    @property
    def data(self) -> Sequence[Any]: ...

    def errored_checks(self) -> list[tuple[str, TrustCheck]]: ...


__all__ = ["candidate_section", "compact_ledger", "ledger_section"]


def _selection_finding(result: CompressionResult) -> Finding:
    sel = result.selection
    kept_baseline = sel.chosen is result.ledger.baseline and bool(result.ledger.candidates)
    severity: Severity = "info" if sel.met_budget and not kept_baseline else "warning"
    evidence: dict[str, object] = {"chosen": sel.chosen.name}
    if sel.records_needed is not None:
        evidence["records_needed"] = sel.records_needed
    return Finding(severity, sel.message, evidence)


def _refused_table(result: CompressionResult) -> Table:
    return Table(
        "refused",
        "Candidates not meeting the budget",
        ["candidate", "reasons", "why", "records_needed"],
        [
            [r.candidate, ", ".join(r.reasons), r.message, r.records_needed]
            for r in result.selection.refusals
        ],
        "One row per candidate the budget refused; records_needed: evaluation records at the "
        "same disagreement rates that would show its drop within the budget.",
    )


def _skipped_table(result: CompressionResult) -> Table:
    return Table(
        "skipped",
        "Candidates not measured",
        ["candidate", "technique", "reason"],
        [[s.name, s.technique, s.reason] for s in result.ledger.skipped],
        "Recipes that did not apply to this model, or were not started once the search's time "
        "budget was spent.",
    )


def _pts(v: float) -> str:
    return f"{v * 100:+.2f}"


def _drop_cell(c: Candidate) -> str:
    if c.drop is None:
        return "—"
    iv = c.drop.interval
    return f"{_pts(c.drop.value)} [{_pts(iv.low)}, {_pts(iv.high)}]"


def compact_ledger(result: CompressionResult) -> Table:
    """The ledger as a reader scans it, one short line per candidate: verdict, drop with its
    paired interval and the worst class's drop (percentage points), size (KiB), accuracy with
    its Wilson interval, every trust column, p50 latency. The full table is ``ledger_full``."""
    ledger, sel = result.ledger, result.selection
    full = ledger.table(sel.verdicts(ledger.rows), notes=False)
    col = {c: i for i, c in enumerate(full.columns)}
    trust = [c for c in ("ece", "robust_acc", "dnl_ar10_pct", "verified_acc") if c in col]
    level = next((c.drop.interval.level for c in ledger.rows if c.drop is not None), 0.95)
    rows = []
    for c, row in zip(ledger.rows, full.rows, strict=True):
        worst = "—" if c.worst_class is None else f"{c.max_class_drop * 100:.2f}"
        acc = f"{c.accuracy:.3f} [{c.accuracy_ci.low:.3f}, {c.accuracy_ci.high:.3f}]"
        rows.append(
            [
                c.name,
                row[col["verdict"]],
                _drop_cell(c),
                worst,
                round(c.size_bytes / 1024, 1),
                acc,
                *[row[col[t]] for t in trust],
                round(c.latency_p50_ms, 3),
            ]
        )
    cols = ["candidate", "verdict", f"drop pts [{level:.0%} CI]", "worst class pts"]
    cols += ["KiB", "accuracy [95% CI]", *trust, "p50 ms"]
    desc = (
        f"drop: baseline minus candidate accuracy in percentage points, with its exact paired "
        f"{level:.0%} interval (McNemar); accuracy with its 95% Wilson interval; KiB: the "
        "ONNX graph. " + full.description
    )
    return Table("ledger", "Compression ledger", cols, rows, desc)


def ledger_section(result: CompressionResult, duration_s: float = 0.0) -> CheckResult:
    """The ``compress`` section: selection, ledger, Pareto figure, refused and skipped rows."""
    sel, ledger = result.selection, result.ledger
    findings = [_selection_finding(result)]
    findings += [
        Finding(
            "warning",
            f"{name}: trust check {t.check} failed: {t.message}",
            {"candidate": name, "check": t.check, "crashed": t.crashed},
        )
        for name, t in result.errored_checks()
    ]
    full = ledger.table(sel.verdicts(ledger.rows), notes=False)
    tables = [compact_ledger(result)]
    if sel.refusals:
        tables.append(_refused_table(result))
    if ledger.skipped:
        tables.append(_skipped_table(result))
    notes = ledger.notes_table()
    if notes.rows:
        tables.append(notes)
    tables.append(Table("ledger_full", "Every measured column", full.columns, full.rows))
    budget = result.budget
    return CheckResult(
        check="compress",
        title="Compression ledger",
        status="ok",
        summary=sel.message,
        metrics=summary_metrics(sel, ledger.baseline),
        findings=findings,
        tables=tables,
        figures=[ledger.pareto_figure(sel.chosen.name)],
        settings={
            "threads": sel.chosen.threads,
            "max_drop": budget.max_drop,
            "max_class_drop": budget.class_drop_limit,
            "max_size": budget.max_size,
            "time_budget_s": budget.time_budget_s,
            "confidence": budget.confidence,
            "data": {p.role: p.split for p in result.data},
        },
        duration_s=duration_s,
    )


def _per_class_table(c: Candidate, base: Candidate, classes: tuple[str, ...]) -> Table:
    rows = [
        [
            classes[k] if k < len(classes) else str(k),
            c.per_class_records[k] if k < len(c.per_class_records) else None,
            round(base.per_class_accuracy[k], 4),
            round(acc, 4),
            round(c.per_class_drift[k], 4),
        ]
        for k, acc in enumerate(c.per_class_accuracy)
    ]
    return Table(
        "per_class",
        "Accuracy per class",
        ["class", "records", "baseline", "candidate", "drift"],
        rows,
        "Top-1 accuracy of each class on the evaluation records; drift = candidate - baseline.",
    )


def _candidate_metrics(c: Candidate, base: Candidate) -> list[Metric]:
    out = [
        Metric("accuracy", c.accuracy, "", c.accuracy_ci, "top-1 (ONNX Runtime)", True),
        Metric(
            "accuracy_drop",
            base.accuracy - c.accuracy,
            "",
            None if c.drop is None else c.drop.interval,
            "baseline minus candidate on the same records (exact paired interval, McNemar)",
            False,
        ),
        Metric("max_class_drop", c.max_class_drop, "", None, "worst class's drop", False),
        Metric("size_bytes", float(c.size_bytes), "B", None, "ONNX graph size", False),
        Metric(
            "latency_p50_ms",
            c.latency_p50_ms,
            "ms",
            None,
            "batch-1 p50 latency",
            False,
            {"threads": c.threads},
        ),
    ]
    return out + list(c.trust)


def candidate_section(c: Candidate, result: CompressionResult) -> CheckResult:
    """One candidate's detail: its metrics and every trust metric, per-class accuracy, how each
    re-audit check ended, its notes and build settings."""
    sel, base = result.selection, result.ledger.baseline
    refusal = sel.refusal(c.name)
    verdict = (
        "chosen"
        if c.name == sel.chosen.name
        else ("meets the budget" if refusal is None else f"not chosen: {refusal.message}")
    )
    checks = Table(
        "trust_checks",
        "Re-audit checks",
        ["check", "status", "message"],
        [[t.check, t.status, t.message] for t in c.trust_checks],
    )
    tables = [_per_class_table(c, base, result.ledger.classes)]
    if c.trust_checks:
        tables.append(checks)
    if c.notes:
        tables.append(Table("notes", "Notes", ["note"], [[n] for n in c.notes]))
    return CheckResult(
        check=f"candidate-{c.name}",
        title=f"{c.name} ({c.technique})",
        status="ok",
        summary=verdict,
        metrics=_candidate_metrics(c, base),
        tables=tables,
        settings={k: v for k, v in c.settings.items() if _plain(v)},
        duration_s=c.build_s,
    )


def _plain(v: object) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, tuple, dict))
