"""The poisoning symptom: a class whose accuracy moved while overall accuracy did not.

Targeted label-flip poisoning (e.g. relabelling 0.5% of one minority class; Poisoned Acoustics,
arXiv 2602.22258) leaves overall accuracy inside its confidence interval while one class's recall
collapses. Given a baseline report (sealed when the model and data were known to be good) and the
current report, :func:`compare_per_class` flags each class whose current recall lies outside the
baseline's Wilson interval for that class while the current overall accuracy lies inside the
baseline's overall interval. When overall accuracy moved too, the change is general (new data,
different model), not the targeted pattern, and one ``info`` finding says so.

Reads the performance check's ``per_class`` table (columns ``class``, ``support``, ``recall``,
``recall low``, ``recall high``) and its ``accuracy`` metric with its CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeproof.results import CheckResult, Finding, Metric

if TYPE_CHECKING:
    from edgeproof.report.report import Report

__all__ = ["ClassAccuracy", "compare_per_class", "per_class_accuracy"]


@dataclass(frozen=True)
class ClassAccuracy:
    """One class's recall (accuracy on its records) with its interval and support."""

    name: str
    support: int
    recall: float
    low: float
    high: float


def _performance(report: Report) -> CheckResult | None:
    try:
        res = report.check("performance")
    except KeyError:
        return None
    return res if res.status == "ok" else None


def per_class_accuracy(report: Report) -> dict[str, ClassAccuracy]:
    """The ``per_class`` table of the report's performance check, by class name ({} if absent)."""
    res = _performance(report)
    if res is None:
        return {}
    table = next((t for t in res.tables if t.name == "per_class"), None)
    if table is None:
        return {}
    col = {c: i for i, c in enumerate(table.columns)}
    need = ("class", "support", "recall", "recall low", "recall high")
    if any(c not in col for c in need):
        return {}
    out = {}
    for row in table.rows:
        rec, lo, hi = (row[col[c]] for c in ("recall", "recall low", "recall high"))
        if rec is None or lo is None or hi is None:
            continue
        name = str(row[col["class"]])
        out[name] = ClassAccuracy(
            name, int(row[col["support"]] or 0), float(rec), float(lo), float(hi)
        )
    return out


def _accuracy(report: Report) -> Metric | None:
    res = _performance(report)
    if res is None:
        return None
    try:
        return res.metric("accuracy")
    except KeyError:
        return None


def compare_per_class(baseline: Report, current: Report) -> list[Finding]:
    """Findings for classes whose recall left the baseline's CI while overall accuracy did not.

    Returns an ``info`` finding (and nothing else) when either report lacks per-class results,
    or when overall accuracy itself left the baseline's interval.
    """
    base_acc, cur_acc = _accuracy(baseline), _accuracy(current)
    base_cls, cur_cls = per_class_accuracy(baseline), per_class_accuracy(current)
    if base_acc is None or cur_acc is None or base_acc.ci is None or not base_cls or not cur_cls:
        return [
            Finding(
                "info",
                "baseline comparison skipped: the baseline or the current report "
                "has no performance check with per-class results; run both audits "
                "with data",
            )
        ]
    lo, hi = base_acc.ci.low, base_acc.ci.high
    overall = {
        "baseline_accuracy": base_acc.value,
        "baseline_accuracy_ci": [lo, hi],
        "current_accuracy": cur_acc.value,
    }
    if not lo <= cur_acc.value <= hi:
        return [
            Finding(
                "info",
                f"overall accuracy moved from {base_acc.value:.1%} [{lo:.1%}, {hi:.1%}] to "
                f"{cur_acc.value:.1%}: a general change (other data or model), not the pattern of "
                "targeted poisoning; per-class comparison not flagged",
                overall,
            )
        ]
    out = []
    for name, b in base_cls.items():
        c = cur_cls.get(name)
        if c is None or b.low <= c.recall <= b.high:
            continue
        direction = "dropped" if c.recall < b.low else "rose"
        out.append(
            Finding(
                "critical" if direction == "dropped" else "warning",
                f"class {name!r} recall {direction} from {b.recall:.1%} "
                f"[{b.low:.1%}, {b.high:.1%}] "
                f"to {c.recall:.1%} while overall accuracy stayed within its interval "
                f"({cur_acc.value:.1%} vs {lo:.1%}–{hi:.1%}): the symptom of targeted label-flip "
                "poisoning. Verify the training data against its seal (`edgeproof verify`) and "
                "inspect this class's labels",
                {
                    "class": name,
                    "baseline_recall": b.recall,
                    "baseline_recall_ci": [b.low, b.high],
                    "baseline_support": b.support,
                    "current_recall": c.recall,
                    "current_support": c.support,
                    **overall,
                },
            )
        )
    return out
