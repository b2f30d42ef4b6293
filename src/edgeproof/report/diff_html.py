"""The files of a diff (:mod:`edgeproof.report.diff`, :mod:`edgeproof.report.scan_diff`):
``diff.json`` (validated against ``diff.schema.json``, shipped here, before it is written) and
``diff.html``.

The page has the look and the safety rules of the audit report (:mod:`edgeproof.report.html`:
one self-contained file, inline CSS, every text escaped): the verdict of the policy, what fails
it, the warnings, then the metrics (significant changes first), per-class recall, the checks
whose status changed and the new and resolved findings; for two scans, the models that changed.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from edgeproof.atomic import atomic_write_text
from edgeproof.outputs import Output, check_output_paths
from edgeproof.report.changes import ClassShift, FindingChange, MetricChange
from edgeproof.report.diff import ReportDiff
from edgeproof.report.files import ReportFiles
from edgeproof.report.html import _template
from edgeproof.report.html_text import _e, format_estimate, format_number
from edgeproof.report.scan_diff import ModelChange, ModelState, ScanDiff

__all__ = [
    "metric_order",
    "render_diff_html",
    "validate_diff_json",
    "write_diff",
]

DIFF_FILES = ("diff.json", "diff.html")


def metric_order(d: ReportDiff) -> list[MetricChange]:
    """The metrics as shown: significant changes first (regressions before improvements), then
    the other changes, then the unchanged ones; report order within each group."""

    def rank(m: MetricChange) -> int:
        if m.significant:
            return 0 if m.regression else 1
        return 3 if not m.changed else 2

    return sorted(d.metrics, key=rank)


def _card(key: str, value: object, note: str, cls: str = "") -> str:
    return (
        f'<div class="card {cls}"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div>'
        f'<div class="small muted">{_e(note)}</div></div>'
    )


def _verdict(d: ReportDiff | ScanDiff, cards: list[str]) -> str:
    failed = d.failed
    policy = _card(
        "Policy",
        "FAIL" if failed else "PASS",
        f"fail on {d.fail_on}",
        "fail" if failed else "pass",
    )
    return f'<div class="verdict" id="verdict">{policy}{"".join(cards)}</div>'


def _notes(d: ReportDiff | ScanDiff) -> str:
    out = ""
    reasons = d.regressions()
    if reasons:
        items = "".join(f'<li class="critical">{_e(r)}</li>' for r in reasons)
        out += f'<h3>Fails the policy</h3><ul class="findings" id="regressions">{items}</ul>'
    if d.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in d.warnings)
        out += (
            f'<div class="notice" id="diff-warnings"><strong>Warnings</strong><ul>{items}</ul>'
            "</div>"
        )
    return out


def _direction(regression: bool | None, changed: bool) -> str:
    if not changed:
        return '<span class="badge skipped">same</span>'
    if regression is None:
        return '<span class="badge info">changed</span>'
    return (
        '<span class="badge fail">worse</span>'
        if regression
        else '<span class="badge pass">better</span>'
    )


def _metric_row(m: MetricChange) -> str:
    old = "—" if m.old is None else format_estimate(m.old)
    new = "—" if m.new is None else format_estimate(m.new)
    delta = "—" if m.delta is None else f"{m.delta:+.3g}"
    unit = f' <span class="small muted">{_e(m.unit)}</span>' if m.unit else ""
    judged = (
        f'<span class="badge critical">{_e(m.judgement)}</span>'
        if m.significant
        else _e(m.judgement)
    )
    return (
        f"<tr><td><code>{_e(m.key)}</code>{unit}</td>"
        f'<td class="num">{_e(old)}</td><td class="num">{_e(new)}</td>'
        f'<td class="num">{_e(delta)}</td><td>{judged}</td>'
        f"<td>{_direction(m.regression, m.changed)}</td></tr>"
    )


def _metrics(d: ReportDiff) -> str:
    if not d.metrics:
        return '<p class="muted">Neither report has a metric.</p>'
    rows = "".join(_metric_row(m) for m in metric_order(d))
    return (
        '<h3>Metrics</h3><p class="caption">Significant: the two confidence intervals do not '
        "overlap. A metric without an interval is not judged unless its values are equal. "
        "Significant changes first.</p>"
        '<div class="tablewrap"><table id="metrics"><thead><tr><th>Metric</th>'
        '<th class="num">Old [CI]</th><th class="num">New [CI]</th><th class="num">Δ</th>'
        f"<th>Judgement</th><th>Direction</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _class_row(c: ClassShift) -> str:
    def side(r: float, lo: float, hi: float, n: int) -> str:
        return f"{format_number(r)} [{format_number(lo)}, {format_number(hi)}] (n={n})"

    sig = '<span class="badge critical">yes</span>' if c.significant else "no"
    return (
        f"<tr><td>{_e(c.name)}</td>"
        f'<td class="num">{_e(side(c.old.recall, c.old.low, c.old.high, c.old.support))}</td>'
        f'<td class="num">{_e(side(c.new.recall, c.new.low, c.new.high, c.new.support))}</td>'
        f'<td class="num">{_e(f"{c.delta:+.3g}")}</td><td>{sig}</td>'
        f"<td>{_direction(c.regression, c.delta != 0)}</td></tr>"
    )


def _classes(d: ReportDiff) -> str:
    if not d.classes:
        return ""
    shown = sorted(d.classes, key=lambda c: (not c.significant, c.delta))
    rows = "".join(_class_row(c) for c in shown)
    return (
        '<h3>Per-class recall</h3><p class="caption">From the performance check\'s per-class '
        "table; significant: the two Wilson intervals do not overlap.</p>"
        '<div class="tablewrap"><table id="classes"><thead><tr><th>Class</th>'
        '<th class="num">Old recall [CI]</th><th class="num">New recall [CI]</th>'
        '<th class="num">Δ</th><th>Significant</th><th>Direction</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _checks(d: ReportDiff) -> str:
    if not d.checks:
        return '<h3>Checks</h3><p class="muted" id="checks">Every check has the same status.</p>'
    rows = "".join(
        f"<tr><td>{_e(c.title)} <code>{_e(c.check)}</code></td>"
        f"<td>{_e(c.old or 'absent')}</td><td>{_e(c.new or 'absent')}</td></tr>"
        for c in d.checks
    )
    return (
        '<h3>Checks whose status changed</h3><div class="tablewrap"><table id="checks">'
        "<thead><tr><th>Check</th><th>Old</th><th>New</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _finding_list(title: str, fs: tuple[FindingChange, ...], anchor: str) -> str:
    if not fs:
        return f'<h3>{_e(title)}</h3><p class="muted" id="{anchor}">none</p>'
    items = "".join(
        f'<li class="{_e(f.severity)}"><span class="badge {_e(f.severity)}">{_e(f.severity)}'
        f"</span> <code>{_e(f.check)}</code>: {_e(f.message)}</li>"
        for f in fs
    )
    return f'<h3>{_e(title)}</h3><ul class="findings" id="{anchor}">{items}</ul>'


def _sides(old: dict[str, object], new: dict[str, object]) -> str:
    keys = [k for k in old if k in new]
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e('—' if old[k] is None else old[k])}</td>"
        f"<td>{_e('—' if new[k] is None else new[k])}</td></tr>"
        for k in keys
    )
    return (
        '<footer id="provenance"><h3>The two reports</h3><table id="sides"><thead><tr>'
        f"<th></th><th>old</th><th>new</th></tr></thead><tbody>{rows}</tbody></table>"
        "<p>The same content is in <code>diff.json</code>.</p></footer>"
    )


def _report_body(d: ReportDiff) -> str:
    worse = sum(m.significant_regression for m in d.metrics)
    cards = [
        _card(
            "Significant",
            len(d.significant_changes),
            f"metric changes, {worse} for the worse",
            "crit" if worse else "",
        ),
        _card("Classes", len(d.significant_classes), "significant per-class recall shifts"),
        _card("New findings", len(d.new_findings), f"{len(d.resolved_findings)} resolved"),
        _card("Checks", len(d.checks), "status changes"),
    ]
    return (
        _verdict(d, cards)
        + _notes(d)
        + _metrics(d)
        + _classes(d)
        + _checks(d)
        + _finding_list("New findings", d.new_findings, "new-findings")
        + _finding_list("Resolved findings", d.resolved_findings, "resolved-findings")
        + _sides(d.old.to_json(), d.new.to_json())
    )


def _model_side(s: ModelState | None) -> str:
    if s is None:
        return "absent"
    ratio = "—" if s.ratio is None else "∞" if math.isinf(s.ratio) else format_number(s.ratio)
    return f"{s.status}; ratio {ratio}; {','.join(s.flagged_by) or 'not flagged'}"


def _model_row(m: ModelChange) -> str:
    badge = _direction(True, True) if m.regression else _direction(None, m.change != "unchanged")
    delta = "—" if m.delta is None else f"{m.delta:+.3g}"
    return (
        f"<tr><td>{_e(m.file)}</td><td>{_e(m.change)}</td><td>{_e(_model_side(m.old))}</td>"
        f'<td>{_e(_model_side(m.new))}</td><td class="num">{_e(delta)}</td><td>{badge}</td></tr>'
    )


def _scan_body(d: ScanDiff) -> str:
    flagged = sum(m.new is not None and m.new.flagged and not (m.old and m.old.flagged)
                  for m in d.models)  # fmt: skip
    cards = [
        _card("Newly flagged", flagged, "models over a threshold now", "crit" if flagged else ""),
        _card("Changed", len(d.changed), f"of {len(d.models)} model file(s)"),
    ]
    shown = sorted(d.models, key=lambda m: (not m.significant_regression, not m.regression))
    rows = "".join(_model_row(m) for m in shown)
    table = (
        '<h3>Models</h3><div class="tablewrap"><table id="models"><thead><tr><th>File</th>'
        '<th>Change</th><th>Old</th><th>New</th><th class="num">Δ ratio</th><th>Direction</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
    )
    return _verdict(d, cards) + _notes(d) + table + _sides(d.old.to_json(), d.new.to_json())


def render_diff_html(d: ReportDiff | ScanDiff) -> str:
    """The diff as one self-contained HTML page."""
    what = "audits" if isinstance(d, ReportDiff) else "scans"
    header = (
        f'<header class="top"><h1>edgeproof diff of two {what}</h1>'
        f'<div class="muted"><strong>{_e(d.old.path)}</strong> → '
        f"<strong>{_e(d.new.path)}</strong></div></header>"
    )
    body = _report_body(d) if isinstance(d, ReportDiff) else _scan_body(d)
    return _template().substitute(
        title=_e(f"edgeproof diff: {d.old.path} → {d.new.path}"),
        generator=_e("edgeproof"),
        body=header + body,
    )


def validate_diff_json(obj: Any) -> None:
    """Validate a ``diff.json`` object against ``diff.schema.json`` shipped in the package
    (raises ``jsonschema.ValidationError``)."""
    import jsonschema

    text = resources.files("edgeproof.report").joinpath("diff.schema.json").read_text("utf-8")
    jsonschema.Draft202012Validator(json.loads(text)).validate(obj)


def write_diff(
    d: ReportDiff | ScanDiff, out_dir: str | Path, *, inputs: tuple[str, ...] = ()
) -> ReportFiles:
    """Write ``diff.json`` and ``diff.html`` into ``out_dir`` (each atomically).

    Refuses (``OptionError("out_dir", ...)``) a folder that is, contains or would replace one of
    the compared files (``inputs``, default: the two report paths).
    """
    out = Path(out_dir)
    check_output_paths(
        [Output.folder(out, DIFF_FILES, option="out_dir")], list(inputs or (d.old.path, d.new.path))
    )
    out.mkdir(parents=True, exist_ok=True)
    obj = d.to_json()
    validate_diff_json(obj)
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    json_path = atomic_write_text(out / "diff.json", text, option="out_dir")
    html_path = atomic_write_text(out / "diff.html", render_diff_html(d), option="out_dir")
    return ReportFiles(json=json_path, html=html_path)
