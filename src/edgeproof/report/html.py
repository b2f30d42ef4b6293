"""The HTML report: one self-contained file that opens with no network.

Layout: a summary first (verdict, model, data, threat model, then every critical and warning
finding and every check error linked to its evidence, the headline metrics each check declares
with their confidence intervals and the abbreviations they use, policy rules), a navigation list
of the checks, then one section per check (status, findings, metrics, tables with the decision
columns first and long ones scrolling, figures, settings), collapsed unless it holds a warning, a
critical finding or an error, and a provenance footer (seed, versions, threads, timing).
Styles live inline in ``template.html``; figures are the inline SVG already stored in
:class:`~edgeproof.results.Figure`. Every piece of text from the report is escaped
(:func:`html.escape`): check names, messages and evidence can come from users.

The shared text pieces (escaping, numbers, the glossary) are in
:mod:`edgeproof.report.html_text`; one check's section, with the rule for which figures are
embedded, in :mod:`edgeproof.report.check_section`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from edgeproof.atomic import atomic_write_text
from edgeproof.report.check_section import (
    _SEVERITIES,
    DECISION_COLUMNS,
    _anchor,
    _check_section,
    _duration,
    _finding_anchor,
)
from edgeproof.report.html_text import GLOSSARY, _e, _kv, _terms, format_estimate, format_number
from edgeproof.report.report import Report
from edgeproof.results import CheckResult, Metric

__all__ = [
    "DECISION_COLUMNS",
    "GLOSSARY",
    "format_estimate",
    "format_number",
    "headline_metrics",
    "render_html",
    "write_html",
]


def headline_metrics(report: Report) -> list[tuple[CheckResult, Metric]]:
    """The headline metrics of each check that ran, in report order: the ones the check declares
    (:attr:`CheckResult.headline`), or its first metric when it declares none."""
    return [(c, m) for c in report.checks if c.status == "ok" for m in c.headline_metrics()]


def _finding_counts(report: Report) -> dict[str, int]:
    counts = dict.fromkeys(_SEVERITIES, 0)
    for c in report.checks:
        for f in c.findings:
            counts[f.severity] = counts.get(f.severity, 0) + 1
    return counts


def _verdict(report: Report) -> str:
    counts = _finding_counts(report)
    by_status = {s: sum(c.status == s for c in report.checks) for s in ("ok", "skipped", "error")}
    cards: list[str] = []
    if report.policy is None:
        cards.append(
            '<div class="card"><div class="k">Policy</div><div class="v">none</div>'
            '<div class="small muted">no policy applied</div></div>'
        )
    else:
        ok = report.policy.passed
        failed = sum(not r.passed for r in report.policy.rules)
        detail = (
            f"all {len(report.policy.rules)} rules met"
            if ok
            else f"{failed} of {len(report.policy.rules)} rules failed"
        )
        cards.append(
            f'<div class="card {"pass" if ok else "fail"}"><div class="k">Policy</div>'
            f'<div class="v">{"PASS" if ok else "FAIL"}</div>'
            f'<div class="small">{_e(detail)}</div></div>'
        )
    cards.append(
        f'<div class="card{" crit" if counts["critical"] else ""}"><div class="k">Critical</div>'
        f'<div class="v">{counts["critical"]}</div><div class="small muted">findings</div></div>'
    )
    cards.append(
        f'<div class="card{" warn" if counts["warning"] else ""}"><div class="k">Warnings</div>'
        f'<div class="v">{counts["warning"]}</div><div class="small muted">findings</div></div>'
    )
    cards.append(
        f'<div class="card"><div class="k">Checks</div><div class="v">{len(report.checks)}</div>'
        f'<div class="small muted">{by_status["ok"]} ok · {by_status["skipped"]} skipped · '
        f"{by_status['error']} error</div></div>"
    )
    return f'<div class="verdict" id="verdict">{"".join(cards)}</div>'


def _threat_items(threat: Mapping[str, Any]) -> list[tuple[str, Any]]:
    spec = threat.get("input") if isinstance(threat.get("input"), Mapping) else {}
    items: list[tuple[str, Any]] = []
    if spec:
        shape = spec.get("shape") or []
        items.append(("input shape", "×".join(str(s) for s in shape) if shape else "unknown"))
        dom = spec.get("domain")
        if isinstance(dom, Sequence) and len(dom) == 2:
            items.append(("domain", f"[{format_number(dom[0])}, {format_number(dom[1])}]"))
        items.append(("kind", spec.get("kind")))
        if spec.get("num_classes") is not None:
            items.append(("classes", spec.get("num_classes")))
        if spec.get("normalization") is not None:
            items.append(("normalisation", "inside the model"))
    if "norm" in threat:
        items.append(("norm", {"linf": "L∞", "l2": "L2"}.get(str(threat["norm"]), threat["norm"])))
    if "eps" in threat:
        items.append(("ε", ", ".join(format_number(e) for e in threat["eps"])))
    known = {"input", "norm", "eps"}
    items.extend((k, v) for k, v in threat.items() if k not in known)
    return items


def _model_items(model: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(k, "—" if v is None else v) for k, v in model.items()]


def _data_items(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for k, v in data.items():
        if k == "classes" and isinstance(v, list) and len(v) > 12:
            v = ", ".join(str(c) for c in v[:12]) + f", … ({len(v)} in all)"
        elif k == "classes" and isinstance(v, list):
            v = ", ".join(str(c) for c in v)
        elif k == "sample_shape" and isinstance(v, list):
            v = "×".join(str(s) for s in v)
        elif k == "metadata" and isinstance(v, Mapping) and not v:
            continue
        items.append((k, "—" if v is None else v))
    return items


def _headline_table(report: Report) -> str:
    rows: list[str] = []
    for i, c in enumerate(report.checks):
        if c.status != "ok":
            continue
        metrics = c.headline_metrics()
        for k, m in enumerate(metrics):
            check_cell = (
                f'<td rowspan="{len(metrics)}"><a href="#{_anchor(i, c)}">'
                f"{_e(c.title or c.check)}</a></td>"
                if k == 0
                else ""
            )
            desc = (
                f'<div class="small muted desc" title="{_e(m.description)}">'
                f"{_e(m.description)}</div>"
                if m.description
                else ""
            )
            rows.append(
                f"<tr>{check_cell}<td><code>{_e(c.check)}.{_e(m.name)}</code>{desc}</td>"
                f'<td class="num">{_e(format_estimate(m))}</td><td>{_e(m.unit)}</td></tr>'
            )
    if not rows:
        return '<p class="muted">No check produced a metric.</p>'
    return (
        '<div class="tablewrap"><table id="headline"><thead><tr><th>Check</th><th>Metric</th>'
        '<th class="num">Value [CI]</th><th>Unit</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _attention(report: Report) -> str:
    """Every critical and warning finding and every check error, each linked to its evidence."""
    order = {"critical": 0, "warning": 1}
    items: list[tuple[int, int, int, str]] = []
    for i, c in enumerate(report.checks):
        if c.status == "error":
            items.append(
                (
                    -1,
                    i,
                    0,
                    f'<li class="critical"><span class="badge error">error</span> '
                    f'<a href="#{_anchor(i, c)}">{_e(c.title or c.check)}</a>: '
                    f"{_e(c.error or 'no message')}</li>",
                )
            )
        for j, f in enumerate(c.findings):
            if f.severity not in order:
                continue
            items.append(
                (
                    order[f.severity],
                    i,
                    j,
                    f'<li class="{_e(f.severity)}"><span class="badge {_e(f.severity)}">'
                    f"{_e(f.severity)}</span> "
                    f'<a href="#{_finding_anchor(i, c, j)}">{_e(c.title or c.check)}</a>: '
                    f"{_e(f.message)}</li>",
                )
            )
    if not items:
        return (
            '<h3>Needs attention</h3><p class="muted" id="attention">No critical or warning '
            "finding and no check error.</p>"
        )
    body = "".join(html_ for *_, html_ in sorted(items, key=lambda t: t[:3]))
    return (
        '<h3>Needs attention</h3><p class="caption">Every critical and warning finding and every '
        "check that failed; each links to its evidence.</p>"
        f'<ul class="findings" id="attention">{body}</ul>'
    )


def _policy_table(report: Report) -> str:
    if report.policy is None:
        return ""
    rows = "".join(
        f'<tr><td><code>{_e(r.metric)}</code></td><td class="num">{_e(r.op)} '
        f'{_e(format_number(r.threshold))}</td><td class="num">{_e(format_number(r.value))}</td>'
        f'<td><span class="badge {"pass" if r.passed else "fail"}">'
        f"{'pass' if r.passed else 'FAIL'}</span></td><td>{_e(r.message)}</td></tr>"
        for r in report.policy.rules
    )
    return (
        f'<h3>Policy <span class="muted small">{_e(report.policy.source)}</span></h3>'
        '<div class="tablewrap"><table id="policy"><thead><tr><th>Metric</th>'
        '<th class="num">Threshold</th><th class="num">Value</th><th>Result</th><th>Message</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _summary(report: Report) -> str:
    data = (
        _kv(_data_items(report.data))
        if report.data is not None
        else '<p class="muted">none: a data-free audit (only checks that need no data ran)</p>'
    )
    warnings = ""
    if report.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in report.warnings)
        warnings = f'<h3>Warnings while loading</h3><ul id="load-warnings">{items}</ul>'
    return (
        _verdict(report)
        + '<div class="grid">'
        + f'<div class="panel"><h3>Model</h3>{_kv(_model_items(report.model))}</div>'
        + f'<div class="panel"><h3>Data</h3>{data}</div>'
        + f'<div class="panel"><h3>Threat model</h3>{_kv(_threat_items(report.threat))}</div>'
        + "</div>"
        + _attention(report)
        + "<h3>Headline metrics</h3>"
        + '<p class="caption">The metrics each check names as the ones to act on; intervals '
        "are the stated confidence intervals of the estimate (the method is in the check's "
        "section).</p>"
        + _headline_table(report)
        + _terms(
            t for c, m in headline_metrics(report) for t in (c.title, m.name, m.description, m.unit)
        )
        + _policy_table(report)
        + warnings
    )


def _nav(report: Report) -> str:
    items = "".join(
        f'<li><a href="#{_anchor(i, c)}">{_e(c.title or c.check)}</a> '
        f'<span class="badge {_e(c.status)}">{_e(c.status)}</span>'
        + (
            "".join(
                f' <span class="badge {s}">{n} {s}</span>'
                for s in ("critical", "warning")
                if (n := sum(f.severity == s for f in c.findings))
            )
        )
        + "</li>"
        for i, c in enumerate(report.checks)
    )
    return (
        '<nav class="toc" id="checks-nav"><div class="toc-head"><strong>Checks</strong>'
        '<span class="tools"><button type="button" id="expand-all">Expand all</button>'
        '<button type="button" id="collapse-all">Collapse all</button></span></div>'
        f"<ol>{items}</ol></nav>"
    )


def _footer(report: Report) -> str:
    env = report.environment
    facts: list[tuple[str, Any]] = [
        ("seed", report.seed),
        ("created", report.created),
        ("audit time", f"{format_number(report.duration_s)} s"),
        ("tool", f"{report.tool} {report.tool_version}"),
        ("report schema", report.schema_version),
    ]
    for key, label in (
        ("torch_threads", "torch threads"),
        ("cpu_count", "CPU cores"),
        ("python", "python"),
        ("platform", "platform"),
        ("machine", "machine"),
    ):
        if key in env:
            facts.append((label, env[key]))
    facts.extend(
        (k, v)
        for k, v in env.items()
        if k not in {"torch_threads", "cpu_count", "python", "platform", "machine", "versions"}
    )
    raw_versions = env.get("versions")
    versions: Mapping[str, Any] = raw_versions if isinstance(raw_versions, Mapping) else {}
    vrows = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e('not installed' if v is None else v)}</td></tr>"
        for k, v in versions.items()
    )
    vtable = (
        f'<table id="versions"><thead><tr><th>package</th><th>version</th></tr></thead>'
        f"<tbody>{vrows}</tbody></table>"
        if vrows
        else ""
    )
    timing = "".join(
        f'<tr><td>{_e(c.check)}</td><td class="num">{_e(_duration(c))}</td></tr>'
        for c in report.checks
    )
    return (
        '<footer id="provenance"><h3>Provenance</h3>'
        '<div class="grid"><div>' + _kv(facts) + "</div><div>" + vtable + "</div>"
        '<div><table id="timing"><thead><tr><th>check</th><th class="num">time</th></tr>'
        f"</thead><tbody>{timing}</tbody></table></div></div>"
        "<p>Every number above can be traced to its check, the check's settings, the seed and "
        "these versions; the same content is in <code>report.json</code>.</p></footer>"
    )


def _template() -> Template:
    text = resources.files("edgeproof.report").joinpath("template.html").read_text("utf-8")
    return Template(text)


def render_html(report: Report) -> str:
    """Render ``report`` as one self-contained HTML page (inline CSS and SVG, no network)."""
    model_name = report.model.get("name") or report.model.get("path") or "model"
    if report.kind == "compress":  # leads with the ledger (edgeproof.report.compress_html)
        from edgeproof.report.compress_html import render_compress_body

        return _template().substitute(
            title=_e(f"edgeproof compression: {model_name}"),
            generator=_e(f"{report.tool} {report.tool_version}"),
            body=render_compress_body(report),
        )
    header = (
        '<header class="top"><h1>edgeproof audit report</h1>'
        f'<div class="muted"><strong>{_e(model_name)}</strong> · {_e(report.created)} · '
        f"{_e(report.tool)} {_e(report.tool_version)}</div></header>"
    )
    body = (
        header
        + _summary(report)
        + _nav(report)
        + "".join(_check_section(i, c) for i, c in enumerate(report.checks))
        + _footer(report)
    )
    return _template().substitute(
        title=_e(f"edgeproof report: {model_name}"),
        generator=_e(f"{report.tool} {report.tool_version}"),
        body=body,
    )


def write_html(report: Report, path: str | Path) -> Path:
    """Write :func:`render_html` of ``report`` to ``path`` atomically; returns the path."""
    return atomic_write_text(path, render_html(report))
