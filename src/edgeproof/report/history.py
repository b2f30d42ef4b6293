"""A model's audits over time: :func:`history` of a folder of ``report.json`` files →
:class:`History` (``history.json`` and ``history.html``, :mod:`edgeproof.report.history_html`).

The folder is searched with its subfolders (``runs/v1/report.json``, ``runs/v2/report.json``,
``runs/nightly.json``): every JSON file that is an edgeproof audit report counts, every other
JSON file (model sidecars, scans, diffs, histories) is left out silently, and a report that does
not read is listed as skipped with the reason. The reports are ordered by their ``created``
timestamp (then by path).

They must be of one model, as in a diff (:func:`edgeproof.report.diff.model_mismatch`): the model
most of the reports share is the one tracked (a tie goes to the newest), and a report of another
model is listed as skipped with the reason, not refused. A change of data set between two runs
is a warning.

For each metric: its value and confidence interval in every run (``None`` where the run does not
have it); for each finding (matched across runs as a diff matches them,
:func:`~edgeproof.report.changes.finding_key`): its message in every run where it occurs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeproof._version import __version__
from edgeproof.errors import InputFileError
from edgeproof.report.changes import finding_key, iter_metrics, value_json
from edgeproof.report.diff import data_warnings, is_audit_json, model_mismatch
from edgeproof.report.report import Report
from edgeproof.results import Metric
from edgeproof.serialize import JsonFields

__all__ = [
    "HISTORY_FORMAT",
    "FindingTrack",
    "History",
    "HistoryRun",
    "MetricSeries",
    "history",
]

HISTORY_FORMAT = "edgeproof-history"
HISTORY_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class HistoryRun(JsonFields):
    """One report file of the folder: included in the trend, or skipped with the reason."""

    path: str
    label: str
    created: str
    model: str
    data: str | None
    records: int | None
    reason: str | None = None

    json_order = (..., "included", "reason")

    @property
    def included(self) -> bool:
        return self.reason is None


def _points_json(points: Sequence[Metric | None]) -> list[dict[str, Any] | None]:
    return [None if m is None else value_json(m) for m in points]


@dataclass(frozen=True)
class MetricSeries(JsonFields):
    """One metric over the included runs: ``points[i]`` is run ``i``'s metric, or ``None``."""

    check: str
    name: str = field(metadata={"key": "metric"})
    unit: str
    higher_is_better: bool | None
    points: tuple[Metric | None, ...] = field(metadata={"as": _points_json})

    @property
    def key(self) -> str:
        return f"{self.check}.{self.name}"


@dataclass(frozen=True)
class FindingTrack(JsonFields):
    """One finding over the included runs: ``messages[i]`` is its text in run ``i``, or
    ``None`` where run ``i`` does not have it."""

    check: str
    severity: str
    messages: tuple[str | None, ...]

    @property
    def latest(self) -> str:
        """Its most recent text."""
        return next(m for m in reversed(self.messages) if m is not None)


@dataclass(frozen=True)
class History(JsonFields):
    """The audits of one model in a folder, oldest first (module docstring).

    Attributes:
        folder: the folder searched.
        runs: every report file found, in ``created`` order, skipped ones with their reason.
        metrics: one series per metric of the included runs (first appearance order).
        findings: one track per finding of the included runs.
        warnings: data changes between consecutive included runs.
    """

    folder: str
    runs: tuple[HistoryRun, ...]
    metrics: tuple[MetricSeries, ...]
    findings: tuple[FindingTrack, ...]
    warnings: tuple[str, ...]

    json_header: ClassVar[Mapping[str, Any]] = {
        "format": HISTORY_FORMAT,
        "schema_version": HISTORY_SCHEMA_VERSION,
        "tool": "edgeproof",
        "tool_version": __version__,
    }
    json_order = ("folder", "runs", "warnings", ...)

    @property
    def included(self) -> list[HistoryRun]:
        return [r for r in self.runs if r.included]

    @property
    def skipped(self) -> list[HistoryRun]:
        return [r for r in self.runs if not r.included]


# ----------------------------------------------------------------------------- building


def _candidates(folder: Path) -> tuple[list[tuple[Path, Report]], list[tuple[Path, str]]]:
    """(reports read, [(file, why it was skipped)]) of the folder and its subfolders."""
    from edgeproof.structured import read_json

    reports: list[tuple[Path, Report]] = []
    skipped: list[tuple[Path, str]] = []
    for p in sorted(folder.rglob("*.json")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        try:
            obj = read_json(p, error=InputFileError, what="report file")
        except InputFileError as exc:
            if p.name == "report.json":
                skipped.append((p, exc.problem))
            continue
        if not is_audit_json(obj):
            continue  # a sidecar, a scan, a diff, a history: not an audit
        try:
            reports.append((p, Report.read_json(p)))
        except InputFileError as exc:
            skipped.append((p, exc.problem))
    return reports, skipped


def _when(created: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _labels(folder: Path, paths: Sequence[Path]) -> list[str]:
    """A short label per report: its folder's name for ``…/NAME/report.json``, else the file's
    stem; the path inside the folder where two would read the same."""
    short = [
        (p.parent.name if p.name == "report.json" and p.parent != folder else p.stem) for p in paths
    ]
    rel = [p.relative_to(folder).as_posix() for p in paths]
    return [s if short.count(s) == 1 else r for s, r in zip(short, rel)]


def _reference(reports: Sequence[Report]) -> int:
    """The index of the report whose model most of the others share (a tie: the newest)."""
    counts = [sum(not model_mismatch(a, b) for b in reports) for a in reports]
    return max(range(len(reports)), key=lambda i: (counts[i], i))


def _run(path: Path, label: str, r: Report | None, reason: str | None) -> HistoryRun:
    data = {} if r is None else (r.data or {})
    records = data.get("records")
    return HistoryRun(
        path=str(path),
        label=label,
        created="" if r is None else r.created,
        model="" if r is None else str(r.model.get("name") or r.model.get("path") or "model"),
        data=None if r is None or r.data is None else str(data.get("name")),
        records=records if isinstance(records, int) else None,
        reason=reason,
    )


def _series(reports: Sequence[Report]) -> list[MetricSeries]:
    keyed = [{(c, m.name): m for c, m in iter_metrics(r)} for r in reports]
    order: dict[tuple[str, str], Metric] = {}
    for k in keyed:
        for key, m in k.items():
            order.setdefault(key, m)
    return [
        MetricSeries(key[0], key[1], m.unit, m.higher_is_better, tuple(k.get(key) for k in keyed))
        for key, m in order.items()
    ]


def _tracks(reports: Sequence[Report]) -> list[FindingTrack]:
    tracks: dict[tuple[str, str, str, int], list[str | None]] = {}
    for i, r in enumerate(reports):
        seen: dict[tuple[str, str, str], int] = {}
        for c in r.checks:
            for f in c.findings:
                key = finding_key(c.check, f)
                n = seen[key] = seen.get(key, -1) + 1
                tracks.setdefault((*key, n), [None] * len(reports))[i] = f.message
    return [FindingTrack(k[0], k[1], tuple(v)) for k, v in tracks.items()]


def history(folder: str | Path) -> History:
    """The audits of one model in ``folder`` and its subfolders, oldest first (module
    docstring).

    Raises:
        InputFileError: ``folder`` is not a folder, or holds no readable audit report.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputFileError(root, "is not a folder", "give the folder that holds the reports")
    found, unreadable = _candidates(root)
    if not found:
        extra = f" ({len(unreadable)} unreadable report.json)" if unreadable else ""
        raise InputFileError(
            root,
            f"holds no edgeproof audit report, in it or its subfolders{extra}",
            "give the folder the audits' output folders are in (runs/ for runs/v1/report.json)",
        )
    found.sort(key=lambda pr: (_when(pr[1].created), str(pr[0])))
    labels = dict(zip([p for p, _ in found], _labels(root, [p for p, _ in found])))
    reports = [r for _, r in found]
    ref = reports[_reference(reports)]
    runs: list[HistoryRun] = []
    included: list[Report] = []
    for p, r in found:
        mismatch = model_mismatch(r, ref)  # this report's value first, the tracked one's second
        reason = (
            f"a different model than the one tracked ({'; '.join(mismatch)})" if mismatch else None
        )
        runs.append(_run(p, labels[p], r, reason))
        if reason is None:
            included.append(r)
    runs += [_run(p, p.relative_to(root).as_posix(), None, why) for p, why in unreadable]
    later = [x for x in runs if x.included][1:]
    warnings = [
        f"{run.label}: {w}"
        for run, a, b in zip(later, included, included[1:])
        for w in data_warnings(a, b)
    ]
    return History(
        folder=str(root),
        runs=tuple(runs),
        metrics=tuple(_series(included)),
        findings=tuple(_tracks(included)),
        warnings=tuple(warnings),
    )
