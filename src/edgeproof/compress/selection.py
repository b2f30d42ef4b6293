"""Selection under a budget, with confidence: :func:`select`.

A candidate meets the budget when

* its size is within ``max_size``;
* the **upper end** of the two-sided interval of its accuracy drop against the baseline — the
  exact paired interval on the same evaluation records (:class:`~edgeproof.compress.ledger.
  PairedDrop`, :func:`edgeproof.methods.stats.paired_drop_interval`: Clopper–Pearson on the
  discordant pairs, dual to the exact McNemar test; level :attr:`Budget.confidence
  <edgeproof.compress.search.Budget>`, 95 % by default) — is within ``max_drop``: a drop whose
  point estimate is within the budget but whose bound is not is *not shown* to meet it;
* no class's accuracy dropped by more than ``max_class_drop`` (the point estimate of each
  class's drift: a candidate that hides one class's loss behind the average is not chosen).

The smallest candidate that meets the budget is chosen (ties: the more accurate). The baseline
meets any accuracy budget (its drop is 0 on every record), so when no compressed candidate can
be shown to meet it the baseline is kept and the message says so — with, for the candidate
closest to resolving, how many evaluation records at the same disagreement rates would
(:func:`edgeproof.methods.stats.records_to_resolve`). When nothing meets the budget (a size
limit nothing fits), the best found is kept: the most accurate within ``max_size``, else the
smallest. Every candidate not chosen for a reason is a :class:`Refusal` with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from edgeproof.compress.ledger import Candidate, Ledger
from edgeproof.methods.stats import records_to_resolve
from edgeproof.results import Metric
from edgeproof.serialize import JsonFields

__all__ = ["Refusal", "Selection", "select", "summary_metrics"]


@dataclass(frozen=True)
class Refusal(JsonFields):
    """A candidate that does not meet the budget, and why.

    ``reasons``: ``size``, ``drop`` (the point estimate is over ``max_drop``), ``drop_bound``
    (only its upper bound is), ``class_drop``, ``no_outcomes`` (no per-record outcomes to pair).
    ``records_needed``: for ``drop_bound``, the evaluation records that would resolve it.
    """

    candidate: str
    reasons: tuple[str, ...]
    message: str
    records_needed: int | None = None


@dataclass(frozen=True)
class Selection(JsonFields):
    """The chosen candidate, whether it met the budget, and every refusal."""

    chosen: Candidate = field(metadata={"as": attrgetter("name")})
    met_budget: bool
    message: str
    refusals: tuple[Refusal, ...] = ()
    records_needed: int | None = None
    """Evaluation records that would let the closest refused candidate be shown to meet the
    accuracy budget (``None``: none would, or none was refused on its bound alone)."""

    def verdicts(self, rows: Sequence[Candidate]) -> dict[str, str]:
        """``chosen``, ``meets budget`` or ``over: <reasons>`` for each row (the ledger table's
        verdict column, :meth:`Ledger.table <edgeproof.compress.ledger.Ledger.table>`)."""
        return {c.name: _verdict(c, self) for c in rows}

    def refusal(self, name: str) -> Refusal | None:
        return next((r for r in self.refusals if r.candidate == name), None)


_REASON_NAMES = {
    "drop_bound": "drop upper bound",
    "drop": "drop",
    "class_drop": "class drop",
    "size": "size",
    "no_outcomes": "no outcomes",
}


def _verdict(c: Candidate, selection: Selection) -> str:
    if c.name == selection.chosen.name:
        return "chosen"
    refusal = selection.refusal(c.name)
    if refusal is None:
        return "meets budget"
    return "over: " + ", ".join(_REASON_NAMES.get(r, r) for r in refusal.reasons)


def _pct(x: float) -> str:
    return f"{x:.2%}"


def drop_text(c: Candidate) -> str:
    """``drop 0.35% [-0.88%, 1.59%]`` (the paired interval), or the point drop alone."""
    if c.drop is None:
        return "drop unknown"
    iv = c.drop.interval
    return f"drop {_pct(c.drop.value)} [{_pct(iv.low)}, {_pct(iv.high)}]"


def _drop_reason(c: Candidate, max_drop: float) -> tuple[str, str, int | None] | None:
    d = c.drop
    if d is None:
        return "no_outcomes", "no per-record outcomes to pair with the baseline", None
    iv = d.interval
    if iv.high <= max_drop + 1e-12:
        return None
    how = f"{iv.level:.0%} exact McNemar on {d.n} records: {d.n10} lost, {d.n01} gained"
    if d.value > max_drop + 1e-12:
        return "drop", f"{drop_text(c)} is over the {_pct(max_drop)} budget ({how})", None
    need = records_to_resolve(d.n10, d.n01, d.n, max_drop, iv.level)
    text = (
        f"{drop_text(c)}: within {_pct(max_drop)} as a point estimate, but its upper bound "
        f"is not ({how})"
    )
    if need is not None:
        text += f"; about {need:,} evaluation records at these disagreement rates would resolve it"
    return "drop_bound", text, need


def _class_reason(
    c: Candidate, base: Candidate, limit: float, classes: Sequence[str]
) -> str | None:
    k = c.worst_class
    if k is None or c.max_class_drop <= limit + 1e-12:
        return None
    name = classes[k] if k < len(classes) else str(k)
    records = f" on {c.per_class_records[k]} records" if k < len(c.per_class_records) else ""
    return (
        f"class {name} drops {_pct(c.max_class_drop)} (accuracy "
        f"{base.per_class_accuracy[k]:.3f} -> {c.per_class_accuracy[k]:.3f}{records}), over the "
        f"per-class limit of {_pct(limit)}, behind an overall drop of "
        f"{_pct(base.accuracy - c.accuracy)}"
    )


def _refusal(
    c: Candidate,
    base: Candidate,
    max_drop: float | None,
    max_size: int | None,
    max_class_drop: float | None,
    classes: Sequence[str],
) -> Refusal | None:
    reasons: list[str] = []
    texts: list[str] = []
    need = None
    if max_size is not None and c.size_bytes > max_size:
        reasons.append("size")
        texts.append(f"{c.size_bytes} bytes is over the {max_size}-byte limit")
    if max_drop is not None and (got := _drop_reason(c, max_drop)) is not None:
        reasons.append(got[0])
        texts.append(got[1])
        need = got[2]
    if max_class_drop is not None and c is not base:
        why = _class_reason(c, base, max_class_drop, classes)
        if why is not None:
            reasons.append("class_drop")
            texts.append(why)
    if not reasons:
        return None
    return Refusal(c.name, tuple(reasons), "; ".join(texts), need)


def _listed(refusals: Sequence[Refusal], limit: int = 3) -> str:
    parts = [f"{r.candidate} ({r.message})" for r in refusals[:limit]]
    if len(refusals) > limit:
        parts.append(f"{len(refusals) - limit} more in the ledger")
    return "; ".join(parts)


def _resolvable(refusals: Sequence[Refusal]) -> Refusal | None:
    """The candidate refused on its drop's bound alone that the fewest records would resolve."""
    only = [r for r in refusals if r.reasons == ("drop_bound",) and r.records_needed is not None]
    return min(only, key=lambda r: r.records_needed or 0) if only else None


def _met_message(
    best: Candidate, base: Candidate, refusals: Sequence[Refusal], sizes: dict[str, int]
) -> str:
    smaller = [r for r in refusals if sizes[r.candidate] < best.size_bytes]
    n = base.drop.n if base.drop is not None else 0
    if best is base and refusals:
        msg = (
            f"no compressed candidate can be shown to meet the budget on these {n:,} evaluation "
            f"records; kept {base.name} (the uncompressed baseline, {base.size_bytes} bytes)"
        )
        closest = _resolvable(refusals)
        if closest is not None:
            msg += f". Closest: {closest.candidate}, {closest.message}"
        return msg
    worst = "" if best.worst_class is None else f", worst class -{_pct(best.max_class_drop)}"
    msg = (
        f"{best.name} meets the budget ({drop_text(best)}{worst}; accuracy {best.accuracy:.4f} "
        f"vs baseline {base.accuracy:.4f} on {n:,} records, {best.size_bytes} bytes)"
    )
    if smaller:
        msg += f"; smaller candidates not chosen: {_listed(smaller)}"
    return msg


def select(
    ledger: Ledger,
    max_drop: float | None,
    max_size: int | None,
    *,
    max_class_drop: float | None = None,
) -> Selection:
    """Select from the ledger's rows under the budget; see the module docstring."""
    rows, classes = ledger.rows, ledger.classes
    base = rows[0]
    refusals = {
        c.name: r
        for c in rows
        if (r := _refusal(c, base, max_drop, max_size, max_class_drop, classes)) is not None
    }
    ordered = tuple(refusals.values())
    closest = _resolvable(ordered)
    need = None if closest is None else closest.records_needed
    meeting = [c for c in rows if c.name not in refusals]
    if meeting:
        best = min(meeting, key=lambda c: (c.size_bytes, -c.accuracy))
        msg = _met_message(best, base, ordered, {c.name: c.size_bytes for c in rows})
        return Selection(best, True, msg, ordered, need)
    fits = [c for c in rows if max_size is None or c.size_bytes <= max_size]
    best = (
        max(fits, key=lambda c: (c.accuracy, -c.size_bytes))
        if fits
        else min(rows, key=lambda c: c.size_bytes)
    )
    parts = []
    if max_drop is not None:
        parts.append(f"accuracy drop <= {max_drop:.2%} at its upper bound")
    if max_class_drop is not None:
        parts.append(f"per-class drop <= {max_class_drop:.2%}")
    if max_size is not None:
        parts.append(f"size <= {max_size} bytes")
    msg = (
        f"no candidate meets the budget ({' and '.join(parts) or 'none given'}); "
        f"kept the best found: {best.name} (accuracy {best.accuracy:.4f}, "
        f"{drop_text(best)}, {best.size_bytes} bytes)"
    )
    if closest is not None:
        msg += f". Closest: {closest.candidate}, {closest.message}"
    return Selection(best, False, msg, ordered, need)


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
            None if c.drop is None else c.drop.interval,
            "baseline minus chosen accuracy on the same evaluation records (interval: exact "
            "paired, Clopper-Pearson on the records only one of them gets right, McNemar)",
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
