"""What changed between two audits of one model: :func:`diff_reports` → :class:`ReportDiff`.

Two ``report.json`` files of the same model (before and after retraining, new data, a new
release) are compared part by part:

* **metrics**, matched by check and metric name (their settings may differ: the class that
  ``min_class_recall`` names, a bootstrap seed). A change is **significant when the two
  confidence intervals do not overlap** (``new.low > old.high`` or ``new.high < old.low``).
  A metric without an interval in either report is ``no interval: not judged`` unless the two
  values are exactly equal; intervals at different confidence levels are not judged either.
  Two 95% intervals that do not overlap is a conservative test (for equal standard errors it
  rejects "no change" at about p < 0.006), so a significant change is a real one, and a real
  change can still read as not significant. The direction comes from the metric's
  ``higher_is_better``: a worse value is a **regression**; a metric without a direction
  (``None``) only changes.
* **findings**, matched by check, severity and message with the numbers outside quotes
  normalised (``"recall 85.7%"`` and ``"recall 84.1%"`` are one finding; ``class '3'`` and
  ``class '8'`` are two): the new ones and the resolved ones.
* **per-class recall**, from the performance check's ``per_class`` table with its Wilson
  interval columns: significant when the two intervals do not overlap, the same rule.
* **check status**: ``ok`` → ``error`` and the like, and the checks only one report has.

Reports of different models (architecture, parameter count or class names differ where both
reports know them, or a different report ``kind``) are refused with a
:class:`ReportMismatchError`; different data (name or record count) is a warning in the diff.

The policy (``fail_on``) decides :attr:`ReportDiff.failed`:

* ``significant-regression`` (default): a metric or a class's recall got significantly worse,
  or a check that ran now fails with an error;
* ``any-regression``: also any worse value, significant or not (judged or not), a new warning
  or critical finding, and a check that ran and now does not;
* ``never``: the diff never fails.

:func:`diff` reads two paths (a ``report.json``, or the folder holding one) and diffs two audit
reports, or two folder scans (:mod:`edgeproof.report.scan_diff`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from edgeproof._version import __version__
from edgeproof.errors import InputFileError, OptionError, UserError
from edgeproof.report.changes import (
    CheckChange,
    ClassShift,
    FindingChange,
    MetricChange,
    ReportSide,
    finding_key,
    iter_metrics,
    judge,
)
from edgeproof.report.report import Report
from edgeproof.results import Finding, Metric
from edgeproof.serialize import JsonFields, fields_json

if TYPE_CHECKING:
    from edgeproof.report.scan_diff import ScanDiff

__all__ = [
    "DIFF_FORMAT",
    "DIFF_SCHEMA_VERSION",
    "CheckChange",
    "ClassShift",
    "FailOn",
    "FindingChange",
    "MetricChange",
    "ReportDiff",
    "ReportMismatchError",
    "ReportSide",
    "check_fail_on",
    "data_warnings",
    "diff",
    "diff_reports",
    "is_audit_json",
    "model_mismatch",
    "read_input",
    "resolve_input",
]

DIFF_FORMAT = "edgeproof-diff"
DIFF_SCHEMA_VERSION = "1.0"

#: when a diff fails (module docstring)
FailOn = Literal["significant-regression", "any-regression", "never"]
FAIL_ON: tuple[str, ...] = get_args(FailOn)


class ReportMismatchError(UserError):
    """The two reports are not of one model (or not of one kind): their numbers do not compare."""


def check_fail_on(fail_on: str) -> FailOn:
    """``fail_on`` checked against :data:`FailOn` (an :class:`OptionError` otherwise)."""
    if fail_on not in FAIL_ON:
        raise OptionError(
            "fail_on", f"{fail_on!r} is not a diff policy", f"use one of {', '.join(FAIL_ON)}"
        )
    return fail_on  # type: ignore[return-value]


# ----------------------------------------------------------------------------- the diff


@dataclass(frozen=True)
class ReportDiff(JsonFields):
    """What changed from the ``old`` audit report to the ``new`` one (module docstring).

    Attributes:
        metrics: every metric of either report, in report order (the old report's, then the
            ones only the new report has).
        new_findings, resolved_findings: findings only the new / only the old report has.
        classes: per-class recall in both reports (classes in both only).
        checks: the checks whose status differs or that only one report has.
        warnings: what makes the comparison less clean (other data, another threat model).
        fail_on: the policy :attr:`failed` applies.
    """

    old: ReportSide
    new: ReportSide
    metrics: tuple[MetricChange, ...]
    new_findings: tuple[FindingChange, ...] = field(metadata={"json": False})
    resolved_findings: tuple[FindingChange, ...] = field(metadata={"json": False})
    classes: tuple[ClassShift, ...]
    checks: tuple[CheckChange, ...]
    warnings: tuple[str, ...]
    fail_on: FailOn = "significant-regression"

    kind = "audit"
    rule = (
        "significant: the two confidence intervals do not overlap; a metric without an "
        "interval is not judged unless its values are equal"
    )

    json_header: ClassVar[Mapping[str, Any]] = {
        "format": DIFF_FORMAT,
        "schema_version": DIFF_SCHEMA_VERSION,
        "tool": "edgeproof",
        "tool_version": __version__,
    }
    json_order = (
        "kind",
        ...,
        "fail_on",
        "failed",
        "regressions",
        "warnings",
        "rule",
        "metrics",
        "findings",
        "classes",
        "checks",
    )

    @property
    def significant_changes(self) -> list[MetricChange]:
        return [m for m in self.metrics if m.significant]

    @property
    def significant_classes(self) -> list[ClassShift]:
        return [c for c in self.classes if c.significant]

    def regressions(self, fail_on: FailOn | None = None) -> list[str]:
        """What fails the policy ``fail_on`` (default :attr:`fail_on`), one line each."""
        policy = fail_on or self.fail_on
        if policy == "never":
            return []
        anyr = policy == "any-regression"
        out: list[str] = []
        for m in self.metrics:
            if m.significant_regression or (anyr and m.regression):
                how = "significantly " if m.significant else ""
                out.append(f"{m.key} got {how}worse: {_num(m.old)} → {_num(m.new)}")
        for c in self.classes:
            if c.significant_regression or (anyr and c.regression):
                how = " significantly" if c.significant else ""
                old, new = f"{c.old.recall:.1%}", f"{c.new.recall:.1%}"
                out.append(f"class {c.name!r} recall dropped{how}: {old} → {new}")
        for ch in self.checks:
            if ch.failed_now or (anyr and ch.lost):
                out.append(f"check {ch.check}: {ch.old} → {ch.new or 'absent'}")
        if anyr:
            out += [
                f"new {f.severity} finding in {f.check}: {f.message}"
                for f in self.new_findings
                if f.severity in ("warning", "critical")
            ]
        return out

    @property
    def failed(self) -> bool:
        """The policy :attr:`fail_on` fails (the CLI exits 1)."""
        return bool(self.regressions())

    def to_json(self) -> dict[str, Any]:
        # the findings are one object: those new in the new report and those resolved in it
        findings = {"new": self.new_findings, "resolved": self.resolved_findings}
        return fields_json(self, extra={"findings": findings})


def _num(m: Metric | None) -> str:
    from edgeproof.report.html import format_estimate

    return "absent" if m is None else format_estimate(m)


def _identity(report: Report) -> dict[str, Any]:
    spec = report.threat.get("input") if isinstance(report.threat.get("input"), Mapping) else {}
    names = spec.get("class_names") if isinstance(spec, Mapping) else None
    return {
        "kind": report.kind,
        "arch": report.model.get("arch"),
        "parameters": report.model.get("parameters"),
        "classes": None if names is None else [str(n) for n in names],
    }


def model_mismatch(a: Report, b: Report) -> list[str]:
    """How the models of two reports differ (empty: the same model, as far as both know):
    kind always, architecture, parameter count and class names where both reports have them."""
    ia, ib = _identity(a), _identity(b)
    out: list[str] = []
    for key in ("kind", "arch", "parameters", "classes"):
        va, vb = ia[key], ib[key]
        if va is None or vb is None or va == vb:
            continue
        if key == "classes":
            out.append(f"classes {_short(va)} vs {_short(vb)}")
        else:
            out.append(f"{key} {va} vs {vb}")
    return out


def _short(names: Sequence[str]) -> str:
    shown = ",".join(names[:6])
    return f"[{shown}{',…' if len(names) > 6 else ''}] ({len(names)})"


def data_warnings(a: Report, b: Report) -> list[str]:
    """What makes two reports of one model less comparable: other data, another threat model."""
    out: list[str] = []
    da, db = a.data or {}, b.data or {}
    if (da.get("name"), da.get("records")) != (db.get("name"), db.get("records")):
        out.append(
            f"the data differ: {da.get('name')} ({da.get('records')} records) vs "
            f"{db.get('name')} ({db.get('records')} records); a change can come from the data, "
            "not the model"
        )
    ta = {k: a.threat.get(k) for k in ("norm", "eps")}
    tb = {k: b.threat.get(k) for k in ("norm", "eps")}
    if ta != tb:
        out.append(
            f"the threat models differ (norm {ta['norm']} ε {ta['eps']} vs norm {tb['norm']} "
            f"ε {tb['eps']}): robustness metrics measure different things"
        )
    return out


def _metric_changes(old: Report, new: Report) -> list[MetricChange]:
    a = {(c, m.name): m for c, m in iter_metrics(old)}
    b = {(c, m.name): m for c, m in iter_metrics(new)}
    out: list[MetricChange] = []
    for key in [*a, *(k for k in b if k not in a)]:
        ma, mb = a.get(key), b.get(key)
        unit = mb.unit if mb is not None else ma.unit if ma is not None else ""
        if ma is None or mb is None:
            which = "new" if ma is None else "old"
            out.append(MetricChange(*key, unit, ma, mb, None, f"only in the {which} report"))
        else:
            out.append(MetricChange(*key, unit, ma, mb, *judge(ma, mb)))
    return out


def _findings(r: Report) -> dict[tuple[str, str, str], list[Finding]]:
    out: dict[tuple[str, str, str], list[Finding]] = {}
    for c in r.checks:
        for f in c.findings:
            out.setdefault(finding_key(c.check, f), []).append(f)
    return out


def _finding_changes(old: Report, new: Report) -> tuple[list[FindingChange], list[FindingChange]]:
    """(new, resolved): a finding is matched by :func:`finding_key`, one for one."""
    a, b = _findings(old), _findings(new)
    added: list[FindingChange] = []
    resolved: list[FindingChange] = []
    for key, fs in b.items():
        added += [
            FindingChange(key[0], f.severity, f.message, "new") for f in fs[len(a.get(key, ())) :]
        ]
    for key, fs in a.items():
        resolved += [
            FindingChange(key[0], f.severity, f.message, "resolved")
            for f in fs[len(b.get(key, ())) :]
        ]
    return added, resolved


def _class_shifts(old: Report, new: Report) -> list[ClassShift]:
    from edgeproof.integrity.baseline import per_class_accuracy

    a, b = per_class_accuracy(old), per_class_accuracy(new)
    return [ClassShift(name, a[name], b[name]) for name in a if name in b]


def _check_changes(old: Report, new: Report) -> list[CheckChange]:
    a = {c.check: c for c in old.checks}
    b = {c.check: c for c in new.checks}
    out: list[CheckChange] = []
    for name in [*a, *(n for n in b if n not in a)]:
        ca, cb = a.get(name), b.get(name)
        sa, sb = (None if ca is None else ca.status), (None if cb is None else cb.status)
        if sa != sb:
            title = (cb or ca).title  # type: ignore[union-attr]
            out.append(CheckChange(name, title, sa, sb))
    return out


def diff_reports(
    old: Report | str | Path,
    new: Report | str | Path,
    *,
    fail_on: FailOn = "significant-regression",
    names: tuple[str, str] = ("old report", "new report"),
) -> ReportDiff:
    """Compare two audit reports of one model (module docstring: the rule, the policy).

    ``old``/``new``: :class:`Report` objects or paths of ``report.json`` files (or of the
    folders holding them). ``names``: how the messages name reports given as objects.

    Raises:
        ReportMismatchError: the reports are of different models or kinds (names both).
        InputFileError: a path is not a readable audit report (names it).
    """
    policy = check_fail_on(fail_on)
    ra, pa = _as_report(old, names[0])
    rb, pb = _as_report(new, names[1])
    mismatch = model_mismatch(ra, rb)
    if mismatch:
        raise ReportMismatchError(
            f"{pa} and {pb} are audits of different models ({'; '.join(mismatch)}): a diff "
            "compares two audits of one model; diff reports of the same architecture and classes"
        )
    added, resolved = _finding_changes(ra, rb)
    return ReportDiff(
        old=ReportSide.of(ra, pa),
        new=ReportSide.of(rb, pb),
        metrics=tuple(_metric_changes(ra, rb)),
        new_findings=tuple(added),
        resolved_findings=tuple(resolved),
        classes=tuple(_class_shifts(ra, rb)),
        checks=tuple(_check_changes(ra, rb)),
        warnings=tuple(data_warnings(ra, rb)),
        fail_on=policy,
    )


def _as_report(r: Report | str | Path, name: str) -> tuple[Report, str]:
    if isinstance(r, Report):
        return r, name
    kind, obj, path = read_input(r)
    if kind != "audit":
        raise InputFileError(
            path, "is a folder scan, not an audit report", "diff two audit reports, or use diff()"
        )
    assert isinstance(obj, Report)
    return obj, str(path)


# ----------------------------------------------------------------------------- reading


def resolve_input(path: str | Path) -> Path:
    """The report file ``path`` names: the file itself, or ``report.json`` in a folder."""
    p = Path(path)
    if p.is_dir():
        inner = p / "report.json"
        if not inner.is_file():
            raise InputFileError(
                p,
                "is a folder without a report.json",
                "give the report.json an audit or a scan wrote, or the output folder holding it",
            )
        return inner
    return p


def read_input(path: str | Path) -> tuple[Literal["audit", "scan"], Report | dict[str, Any], Path]:
    """Read an audit or a scan ``report.json`` (or the folder holding one), validated against
    its schema: ``("audit", Report, file)`` or ``("scan", the scan's JSON, file)``.

    Raises :class:`InputFileError` naming the file for anything that is not one of the two.
    """
    from edgeproof.structured import read_json

    p = resolve_input(path)
    obj = read_json(p, error=InputFileError, what="report file")
    if isinstance(obj, dict) and obj.get("format") == "edgeproof-scan":
        return "scan", _validated_scan(obj, p), p
    if not is_audit_json(obj):
        what = obj.get("format") if isinstance(obj, dict) else None
        raise InputFileError(
            p,
            f"is {'an ' + str(what)[:40] + ' file' if isinstance(what, str) else 'JSON'}, not an "
            "edgeproof audit or scan report",
            "give the report.json that `edgeproof audit` or `edgeproof scan` wrote",
        )
    return "audit", Report.read_json(p), p


def is_audit_json(obj: object) -> bool:
    """Whether a parsed JSON document looks like an audit ``report.json`` (it may still fail its
    schema): an object with ``checks`` and ``schema_version`` and no ``format`` (scans, diffs,
    histories and model sidecars name theirs)."""
    return (
        isinstance(obj, dict)
        and "checks" in obj
        and "schema_version" in obj
        and obj.get("format") is None
    )


def _validated_scan(obj: dict[str, Any], p: Path) -> dict[str, Any]:
    import jsonschema

    from edgeproof.report.scan import validate_scan_json

    try:
        validate_scan_json(obj)
    except jsonschema.ValidationError as exc:
        raise InputFileError(
            p,
            f"does not match the scan report schema at {exc.json_path}: "
            f"{exc.message.splitlines()[0][:160]}",
        ) from None
    return obj


def diff(
    old: str | Path, new: str | Path, *, fail_on: FailOn = "significant-regression"
) -> ReportDiff | ScanDiff:
    """Diff two audit reports (:func:`diff_reports`) or two folder scans
    (:func:`edgeproof.report.scan_diff.diff_scans`), whichever the two paths hold.

    Raises:
        ReportMismatchError: one is an audit and the other a scan, or they are of different
            models (audits).
        InputFileError: a path is not a readable report (names it).
        OptionError: ``fail_on`` is not a policy.
    """
    policy = check_fail_on(fail_on)
    ka, a, pa = read_input(old)
    kb, b, pb = read_input(new)
    if ka != kb:
        raise ReportMismatchError(
            f"{pa} is {'an audit report' if ka == 'audit' else 'a folder scan'} and {pb} is "
            f"{'an audit report' if kb == 'audit' else 'a folder scan'}: diff two audits or two "
            "scans"
        )
    if isinstance(a, Report) and isinstance(b, Report):
        return diff_reports(a, b, fail_on=policy, names=(str(pa), str(pb)))
    from edgeproof.report.scan_diff import diff_scans

    assert isinstance(a, dict) and isinstance(b, dict)
    return diff_scans(a, b, fail_on=policy, names=(str(pa), str(pb)))
