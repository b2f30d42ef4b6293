"""Typed results: what every check returns and what a report is made of.

A :class:`Metric` has a name, a value, a unit, a confidence interval where it is an estimate,
and the settings that produced it. A :class:`Finding` has a severity, a message a person can act
on, and the evidence. Tables and figures carry the details. All of them serialise to JSON that
validates against ``report/report.schema.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CheckResult",
    "CheckStatus",
    "Figure",
    "Finding",
    "Interval",
    "JSONScalar",
    "Metric",
    "Severity",
    "Table",
]

JSONScalar = str | int | float | bool | None
Severity = Literal["info", "warning", "critical"]
CheckStatus = Literal["ok", "skipped", "error"]


def _num(v: float | None) -> float | None:
    """JSON has no NaN/Inf: map them to None."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to plain JSON types (NaN → None)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar / array, torch tensor
        return _jsonable(value.tolist())
    return str(value)


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` at ``level`` computed by ``method``."""

    low: float
    high: float
    level: float = 0.95
    method: str = "wilson"

    def to_json(self) -> dict[str, Any]:
        return {
            "low": _num(self.low),
            "high": _num(self.high),
            "level": self.level,
            "method": self.method,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Interval:
        return cls(
            low=float("nan") if obj["low"] is None else float(obj["low"]),
            high=float("nan") if obj["high"] is None else float(obj["high"]),
            level=float(obj["level"]),
            method=str(obj["method"]),
        )


@dataclass(frozen=True)
class Metric:
    """One number with its unit, optional confidence interval and provenance.

    ``name`` is local to the check (``accuracy``); the report addresses it as
    ``<check>.<name>`` (``performance.accuracy``), which is what policy files use.
    """

    name: str
    value: float
    unit: str = ""
    ci: Interval | None = None
    description: str = ""
    higher_is_better: bool | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _num(self.value),
            "unit": self.unit,
            "ci": None if self.ci is None else self.ci.to_json(),
            "description": self.description,
            "higher_is_better": self.higher_is_better,
            "settings": _jsonable(dict(self.settings)),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Metric:
        return cls(
            name=obj["name"],
            value=float("nan") if obj["value"] is None else float(obj["value"]),
            unit=obj.get("unit", ""),
            ci=None if obj.get("ci") is None else Interval.from_json(obj["ci"]),
            description=obj.get("description", ""),
            higher_is_better=obj.get("higher_is_better"),
            settings=obj.get("settings", {}),
        )


@dataclass(frozen=True)
class Finding:
    """Something a person should know or act on, with the evidence behind it."""

    severity: Severity
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "message": self.message,
            "evidence": _jsonable(dict(self.evidence)),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Finding:
        return cls(obj["severity"], obj["message"], obj.get("evidence", {}))


@dataclass(frozen=True)
class Table:
    """A titled table; ``rows`` hold JSON scalars in the order of ``columns``."""

    name: str
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[JSONScalar]]
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "columns": list(self.columns),
            "rows": [_jsonable(list(r)) for r in self.rows],
            "description": self.description,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Table:
        return cls(
            obj["name"],
            obj["title"],
            list(obj["columns"]),
            [list(r) for r in obj["rows"]],
            obj.get("description", ""),
        )


@dataclass(frozen=True, eq=False)
class Figure:
    """A figure embedded in the report as inline SVG (self-contained, no network).

    ``source`` is the SVG text, or a zero-argument function that draws it: a check hands over
    the drawing, and it runs once, when the SVG is first asked for (:attr:`svg` — writing a
    report, rendering the HTML). An audit whose figures nobody reads (a compression candidate's
    re-audit, a library call that only wants numbers) never draws them.
    """

    name: str
    title: str
    source: str | Callable[[], str]
    description: str = ""

    @property
    def svg(self) -> str:
        """The SVG text, drawn on first use."""
        if callable(self.source):
            object.__setattr__(self, "source", self.source())
        assert isinstance(self.source, str)
        return self.source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Figure):
            return NotImplemented
        return (self.name, self.title, self.svg, self.description) == (
            other.name,
            other.title,
            other.svg,
            other.description,
        )

    __hash__ = None  # type: ignore[assignment]  # equal figures may be drawn at different times

    @property
    def drawn(self) -> bool:
        """True once the SVG exists (given as text, or drawn by :attr:`svg`)."""
        return isinstance(self.source, str)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "svg": self.svg,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Figure:
        return cls(obj["name"], obj["title"], obj["svg"], obj.get("description", ""))


@dataclass
class CheckResult:
    """What one check produced, or why it did not run, or how it failed."""

    check: str
    title: str
    status: CheckStatus = "ok"
    summary: str = ""
    metrics: list[Metric] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    skip_reason: str | None = None
    error: str | None = None
    #: kept only when the check crashed (raised something other than a UserError, i.e. a bug)
    traceback: str | None = None
    duration_s: float = 0.0

    @property
    def crashed(self) -> bool:
        """The check failed with an internal error (not by refusing bad input)."""
        return self.status == "error" and self.traceback is not None

    def metric(self, name: str) -> Metric:
        """The metric called ``name``; KeyError if absent."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.check} has no metric {name!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "metrics": [m.to_json() for m in self.metrics],
            "findings": [f.to_json() for f in self.findings],
            "tables": [t.to_json() for t in self.tables],
            "figures": [f.to_json() for f in self.figures],
            "settings": _jsonable(self.settings),
            "skip_reason": self.skip_reason,
            "error": self.error,
            "traceback": self.traceback,
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CheckResult:
        return cls(
            check=obj["check"],
            title=obj["title"],
            status=obj["status"],
            summary=obj.get("summary", ""),
            metrics=[Metric.from_json(m) for m in obj.get("metrics", [])],
            findings=[Finding.from_json(f) for f in obj.get("findings", [])],
            tables=[Table.from_json(t) for t in obj.get("tables", [])],
            figures=[Figure.from_json(f) for f in obj.get("figures", [])],
            settings=dict(obj.get("settings", {})),
            skip_reason=obj.get("skip_reason"),
            error=obj.get("error"),
            traceback=obj.get("traceback"),
            duration_s=float(obj.get("duration_s", 0.0)),
        )
