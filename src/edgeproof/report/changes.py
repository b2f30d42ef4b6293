"""The typed changes a diff is made of (:mod:`edgeproof.report.diff`): one metric in two
reports (:class:`MetricChange`, judged by :func:`judge`), a finding only one report has
(:class:`FindingChange`, matched by :func:`finding_key`), one class's recall
(:class:`ClassShift`), a check whose status changed (:class:`CheckChange`), and what each report
was (:class:`ReportSide`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edgeproof.report.report import Report
from edgeproof.results import CheckStatus, Finding, Interval, Metric
from edgeproof.serialize import JsonFields

if TYPE_CHECKING:
    from edgeproof.integrity.baseline import ClassAccuracy

__all__ = [
    "CheckChange",
    "ClassShift",
    "FindingChange",
    "MetricChange",
    "ReportSide",
    "finding_key",
    "iter_metrics",
    "judge",
    "normalise_message",
    "value_json",
]

_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*|\.\d+)(?:[eE][-+]?\d+)?")
_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")


def normalise_message(message: str) -> str:
    """``message`` with every number outside quotes replaced by ``#`` (the key findings are
    matched on): ``"recall 85.7% of class '8'"`` → ``"recall #% of class '8'"``."""
    parts = _QUOTED.split(message)
    return "".join(p if i % 2 else _NUMBER.sub("#", p) for i, p in enumerate(parts))


def finding_key(check: str, finding: Finding) -> tuple[str, str, str]:
    """What identifies a finding across reports: check, severity, normalised message."""
    return (check, finding.severity, normalise_message(finding.message))


# ----------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class ReportSide(JsonFields):
    """One of the two reports: where it came from and what it audited."""

    path: str
    created: str
    model: str
    arch: str | None
    data: str | None
    records: int | None
    tool_version: str

    @classmethod
    def of(cls, report: Report, path: str) -> ReportSide:
        data = report.data or {}
        records = data.get("records")
        return cls(
            path=path,
            created=report.created,
            model=str(report.model.get("name") or report.model.get("path") or "model"),
            arch=report.model.get("arch"),
            data=None if report.data is None else str(data.get("name")),
            records=int(records) if isinstance(records, int) else None,
            tool_version=report.tool_version,
        )


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _ci_json(ci: Interval | None) -> dict[str, Any] | None:
    if ci is None:
        return None
    return {
        "low": _finite(ci.low),
        "high": _finite(ci.high),
        "level": ci.level,
        "method": ci.method,
    }


def value_json(m: Metric) -> dict[str, Any]:
    """``{"value": ..., "ci": {...} | None}`` of a metric, non-finite numbers as ``None``."""
    return {"value": _finite(m.value), "ci": _ci_json(m.ci)}


def _worse(delta: float, higher_is_better: bool | None) -> bool | None:
    """Whether a change of ``delta`` is for the worse; ``None`` without a direction."""
    if higher_is_better is None:
        return None
    if delta == 0:
        return False
    return delta < 0 if higher_is_better else delta > 0


@dataclass(frozen=True)
class MetricChange(JsonFields):
    """One metric in the two reports (``old``/``new`` ``None``: absent from that report).

    Attributes:
        significant: the intervals do not overlap (``True``), overlap or the values are equal
            (``False``), or it was not judged (``None``; :attr:`judgement` says why).
        judgement: ``intervals do not overlap``, ``intervals overlap``, ``unchanged``,
            ``no interval: not judged``, ``intervals at different levels: not judged``,
            ``no value: not judged``, ``only in the old report``, ``only in the new report``.
    """

    check: str
    name: str = field(metadata={"key": "metric"})
    unit: str
    old: Metric | None = field(metadata={"as": value_json})
    new: Metric | None = field(metadata={"as": value_json})
    significant: bool | None
    judgement: str

    json_order = (
        "check",
        "metric",
        "unit",
        "higher_is_better",
        "old",
        "new",
        "delta",
        ...,
        "regression",
    )

    @property
    def key(self) -> str:
        return f"{self.check}.{self.name}"

    @property
    def higher_is_better(self) -> bool | None:
        m = self.new if self.new is not None else self.old
        return None if m is None else m.higher_is_better

    @property
    def delta(self) -> float | None:
        """``new − old``; ``None`` when either is absent or not finite."""
        if self.old is None or self.new is None:
            return None
        d = self.new.value - self.old.value
        return d if math.isfinite(d) else None

    @property
    def regression(self) -> bool | None:
        """The value got worse (by the metric's direction); ``None``: no direction, or no delta."""
        d = self.delta
        return None if d is None else _worse(d, self.higher_is_better)

    @property
    def significant_regression(self) -> bool:
        return bool(self.significant and self.regression)

    @property
    def changed(self) -> bool:
        return self.judgement != "unchanged"


def judge(old: Metric, new: Metric) -> tuple[bool | None, str]:
    """(significant, judgement) of one metric in two reports: the module docstring's rule."""
    a, b = old.value, new.value
    if not (math.isfinite(a) and math.isfinite(b)):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return False, "unchanged"
        return None, "no value: not judged"
    if a == b:
        return False, "unchanged"
    if old.ci is None or new.ci is None:
        return None, "no interval: not judged"
    if old.ci.level != new.ci.level:
        return None, "intervals at different levels: not judged"
    bounds = (old.ci.low, old.ci.high, new.ci.low, new.ci.high)
    if not all(math.isfinite(x) for x in bounds):
        return None, "no interval: not judged"
    apart = new.ci.low > old.ci.high or new.ci.high < old.ci.low
    return (True, "intervals do not overlap") if apart else (False, "intervals overlap")


@dataclass(frozen=True)
class FindingChange(JsonFields):
    """A finding one report has and the other has not (``change``: ``new`` or ``resolved``)."""

    check: str
    severity: str
    message: str
    change: Literal["new", "resolved"]


def _recall_json(c: ClassAccuracy) -> dict[str, Any]:
    return {"recall": c.recall, "low": c.low, "high": c.high, "support": c.support}


@dataclass(frozen=True)
class ClassShift(JsonFields):
    """One class's recall (performance ``per_class``) in the two reports, with its intervals."""

    name: str = field(metadata={"key": "class"})
    old: ClassAccuracy = field(metadata={"as": _recall_json})
    new: ClassAccuracy = field(metadata={"as": _recall_json})

    json_order = (..., "delta", "significant", "regression")

    @property
    def delta(self) -> float:
        return self.new.recall - self.old.recall

    @property
    def significant(self) -> bool:
        """The two recall intervals do not overlap."""
        return self.new.low > self.old.high or self.new.high < self.old.low

    @property
    def regression(self) -> bool:
        return self.delta < 0

    @property
    def significant_regression(self) -> bool:
        return self.significant and self.regression


@dataclass(frozen=True)
class CheckChange(JsonFields):
    """A check whose status differs (``None``: the report has no such check)."""

    check: str
    title: str
    old: CheckStatus | None
    new: CheckStatus | None

    @property
    def failed_now(self) -> bool:
        """It ran in the old report and fails with an error in the new one."""
        return self.old == "ok" and self.new == "error"

    @property
    def lost(self) -> bool:
        """It ran in the old report and does not run (or is gone) in the new one."""
        return self.old == "ok" and self.new != "ok"


def iter_metrics(report: Report) -> Iterable[tuple[str, Metric]]:
    """``(check, metric)`` for every metric of ``report``, first of each name per check."""
    seen: set[tuple[str, str]] = set()
    for c in report.checks:
        for m in c.metrics:
            if (c.check, m.name) not in seen:
                seen.add((c.check, m.name))
                yield c.check, m
