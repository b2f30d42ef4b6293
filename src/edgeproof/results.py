"""Typed results: what every check returns and what a report is made of.

A :class:`Metric` has a name, a value, a unit, a confidence interval where it is an estimate,
and the settings that produced it. A :class:`Finding` has a severity, a message a person can act
on, and the evidence. Tables and figures carry the details. All of them serialise to JSON that
validates against ``report/report.schema.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeproof.serialize import JsonFields

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


@dataclass(frozen=True)
class Interval(JsonFields):
    """A confidence interval ``[low, high]`` at ``level`` computed by ``method``."""

    low: float = field(metadata={"as": float})
    high: float = field(metadata={"as": float})
    level: float = 0.95
    method: str = "wilson"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Interval:
        return cls(
            low=float("nan") if obj["low"] is None else float(obj["low"]),
            high=float("nan") if obj["high"] is None else float(obj["high"]),
            level=float(obj["level"]),
            method=str(obj["method"]),
        )


@dataclass(frozen=True)
class Metric(JsonFields):
    """One number with its unit, optional confidence interval and provenance.

    ``name`` is local to the check (``accuracy``); the report addresses it as
    ``<check>.<name>`` (``performance.accuracy``), which is what policy files use.
    """

    name: str
    value: float = field(metadata={"as": float})
    unit: str = ""
    ci: Interval | None = None
    description: str = ""
    higher_is_better: bool | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

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
class Finding(JsonFields):
    """Something a person should know or act on, with the evidence behind it."""

    severity: Severity
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Finding:
        return cls(obj["severity"], obj["message"], obj.get("evidence", {}))


@dataclass(frozen=True)
class Table(JsonFields):
    """A titled table; ``rows`` hold JSON scalars in the order of ``columns``."""

    name: str
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[JSONScalar]]
    description: str = ""

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
class Figure(JsonFields):
    """A figure embedded in the report as inline SVG (self-contained, no network).

    ``source`` is the SVG text, or a zero-argument function that draws it: a check hands over
    the drawing, and it runs once, when the SVG is first asked for (:attr:`svg` — writing a
    report, rendering the HTML). An audit whose figures nobody reads (a compression candidate's
    re-audit, a library call that only wants numbers) never draws them.
    """

    name: str
    title: str
    source: str | Callable[[], str] = field(metadata={"json": False})
    description: str = ""

    #: the SVG text, drawn when first asked for
    json_order = ("name", "title", "svg", ...)

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

    def __getstate__(self) -> dict[str, Any]:
        """A figure pickled (a report coming back from a worker process) is drawn first: its
        drawing function is usually a closure over the check's data, which pickle cannot
        carry; the SVG text can."""
        return {"name": self.name, "title": self.title, "source": self.svg,
                "description": self.description}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Figure:
        return cls(obj["name"], obj["title"], obj["svg"], obj.get("description", ""))


@dataclass
class CheckResult(JsonFields):
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
    #: the names of the one to three metrics a reader acts on (:attr:`Check.headline`), shown
    #: first in the report; empty: the first metric stands for the check
    headline: tuple[str, ...] = ()

    @property
    def crashed(self) -> bool:
        """The check failed with an internal error (not by refusing bad input)."""
        return self.status == "error" and self.traceback is not None

    def headline_metrics(self) -> list[Metric]:
        """The metrics named in :attr:`headline` that the check produced, in that order; the
        first metric when none is declared (or none of those declared was produced)."""
        by_name = {m.name: m for m in self.metrics}
        chosen = [by_name[h] for h in self.headline if h in by_name]
        return chosen or self.metrics[:1]

    def metric(self, name: str) -> Metric:
        """The metric called ``name``; KeyError if absent."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.check} has no metric {name!r}")

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
            headline=tuple(str(h) for h in obj.get("headline", ())),
        )
