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

A figure whose SVG contains a script, an event-handler attribute, embedded HTML (``foreignObject``,
``iframe``, ...) or a link or CSS ``url()``/``@import`` to anything but an in-document anchor or a
``data:image/`` URI is not embedded (a note says why):
a report read back from ``report.json`` must not be able to run code or reach the network.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from edgeproof.atomic import atomic_write_text
from edgeproof.report.report import Report
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = [
    "DECISION_COLUMNS",
    "GLOSSARY",
    "format_estimate",
    "format_number",
    "headline_metrics",
    "render_html",
    "write_html",
]

_SEVERITIES = ("critical", "warning", "info")
_UNSAFE_SVG = re.compile(
    r"<\s*(?:script|foreignObject|iframe|object|embed|link|meta|base|form|img|audio|video)\b"
    r"|<[^>]*\son[a-z]+\s*=|@import|url\(\s*[\"']?\s*(?!#|data:image/)"
    r"|<[^>]*\s(?:[a-z]+:)?(?:href|src)\s*=\s*[\"']?\s*(?!#|data:image/)[^\s\"'>]",
    re.IGNORECASE,
)
_NUM = ' class="num"'
_PROLOG = re.compile(r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!DOCTYPE[^>]*>\s*)?", re.IGNORECASE)


def _e(value: object) -> str:
    """Escape any value for HTML text and attribute context."""
    return html.escape(str(value), quote=True)


def format_number(value: float | int | None) -> str:
    """A number for people: integers with thousands separators, floats to about 3 significant
    digits (``0.953``, ``12.3``, ``123.4``), ``—`` for missing or non-finite values."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    v = float(value)
    if not math.isfinite(v):
        return "—"
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    return f"{v:.3g}"


def format_estimate(metric: Metric) -> str:
    """``value [low, high]`` (e.g. ``0.953 [0.93, 0.97]``), or just the value without a CI."""
    text = format_number(metric.value)
    if metric.ci is not None:
        text += f" [{format_number(metric.ci.low)}, {format_number(metric.ci.high)}]"
    return text


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


def _anchor(index: int, check: CheckResult) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", check.check).strip("-")[:40] or "check"
    return f"check-{index}-{slug}"


def _finding_anchor(index: int, check: CheckResult, j: int) -> str:
    return f"{_anchor(index, check)}-finding-{j}"


#: abbreviations the checks use in metric names, columns and messages, defined wherever they are
#: shown (matched as whole tokens; ``_`` separates tokens, so ``dnl_ar_10`` shows DNL and AR)
GLOSSARY: dict[str, str] = {
    "AR": "accuracy reduction after k bit flips, (acc_clean − acc_k) / acc_clean, in %",
    "DNL": "Deep Neural Lesion: sign-bit flips chosen by weight magnitude (Galil et al. 2024)",
    "1P-DNL": "one-pass DNL: flips chosen by |weight × gradient| from one forward/backward pass",
    "ECE": "expected calibration error: mean |accuracy − confidence| over confidence bins",
    "MCE": "maximum calibration error: the largest |accuracy − confidence| of any bin",
    "NLL": "negative log-likelihood of the true class (nats)",
    "ACR": "average certified radius of randomised smoothing (L2)",
    "TIC": "Takeuchi information criterion: expected excess of new-data loss over train loss",
    "NC1": "neural collapse 1: within-class over between-class variability of the features",
    "MACs": "multiply-accumulate operations for one sample",
    "FGSM": "fast gradient sign method (one step)",
    "PGD": "projected gradient descent attack (Madry et al. 2018)",
    "APGD": "auto-PGD with the cross-entropy loss (Croce & Hein 2020)",
    "IG": "Integrated Gradients",
    "KL": "Kullback–Leibler divergence",
    "CI": "confidence interval",
    "ESD": "empirical spectral density: the eigenvalues of WᵀW",
    "MP": "Marchenko–Pastur: the spectrum of a random matrix of the same shape",
    "α": "power-law exponent of the layer's ESD tail (Martin & Mahoney); 2–6 is well trained",
    "ε": "perturbation budget of the threat model (in input units)",
}
_GLOSSARY_RE = {
    term: re.compile(
        rf"(?<![A-Za-z0-9-]){re.escape(term)}(?![A-Za-z])",
        0 if term in ("α", "ε") else re.IGNORECASE,
    )
    for term in GLOSSARY
}


def _terms_in(texts: Iterable[str]) -> list[str]:
    """The glossary terms that occur in ``texts``, in glossary order."""
    blob = "\n".join(texts)
    return [t for t, rx in _GLOSSARY_RE.items() if rx.search(blob)]


def _terms(texts: Iterable[str]) -> str:
    found = _terms_in(texts)
    if not found:
        return ""
    items = "".join(f"<dt>{_e(t)}</dt><dd>{_e(GLOSSARY[t])}</dd>" for t in found)
    return f'<dl class="terms">{items}</dl>'


def _check_texts(c: CheckResult) -> list[str]:
    texts = [c.title, c.summary]
    for m in c.metrics:
        texts += [m.name, m.description, m.unit]
    texts += [f.message for f in c.findings]
    for t in c.tables:
        texts += [t.title, t.description, *map(str, t.columns)]
    texts += [f.title for f in c.figures]
    return texts


def _compact(value: Any, depth: int = 0) -> str:
    """A short one-line rendering of a JSON-like value: strings as-is, numbers via
    :func:`format_number`, lists as ``[a, b]``, mappings as ``k: v; k: v``."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, Mapping):
        inner = "; ".join(f"{k}: {_compact(v, depth + 1)}" for k, v in value.items())
        return f"{{{inner}}}" if depth else inner
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_compact(v, depth + 1) for v in value) + "]"
    return str(value)


def _kv(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_compact(v))}</dd>" for k, v in items)
    return f'<dl class="kv">{rows}</dl>' if rows else '<p class="muted">none</p>'


def _num_class(value: object) -> str:
    return ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _cell(value: object) -> str:
    if value is None:
        return '<td class="num muted">—</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{_e(format_number(value))}</td>'
    return f"<td>{_e(value)}</td>"


# ----------------------------------------------------------------------------- summary


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


# ----------------------------------------------------------------------------- per check


def _metrics_table(metrics: Sequence[Metric]) -> str:
    rows: list[str] = []
    for m in metrics:
        ci = "—"
        if m.ci is not None:
            bounds = f"[{format_number(m.ci.low)}, {format_number(m.ci.high)}]"
            how = f"{format_number(m.ci.level * 100)}% {m.ci.method}"
            ci = f'{_e(bounds)}<div class="small muted">{_e(how)}</div>'
        direction = {True: " ↑", False: " ↓", None: ""}[m.higher_is_better]
        desc = _e(m.description)
        if m.settings:
            settings = ", ".join(f"{k}={_compact(v)}" for k, v in m.settings.items())
            desc += f'<div class="small muted">{_e(settings)}</div>'
        rows.append(
            f"<tr><td><code>{_e(m.name)}</code>{direction}</td>"
            f'<td class="num">{_e(format_number(m.value))}</td>'
            f'<td class="num">{ci}</td><td>{_e(m.unit)}</td><td>{desc}</td></tr>'
        )
    return (
        "<h3>Metrics</h3>"
        '<div class="tablewrap"><table class="metrics"><thead><tr><th>Metric</th>'
        '<th class="num">Value</th><th class="num">Confidence interval</th><th>Unit</th>'
        f"<th>Description</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _findings(findings: Sequence[Finding], anchor: str = "finding") -> str:
    order = {s: i for i, s in enumerate(_SEVERITIES)}
    items: list[str] = []
    ranked = sorted(enumerate(findings), key=lambda jf: order.get(jf[1].severity, len(order)))
    for j, f in ranked:
        evidence = ""
        if f.evidence:
            evidence = (
                '<div class="evidence">'
                + _e("; ".join(f"{k}: {_compact(v)}" for k, v in f.evidence.items()))
                + "</div>"
            )
        items.append(
            f'<li class="{_e(f.severity)}" id="{_e(anchor)}-finding-{j}">'
            f'<span class="badge {_e(f.severity)}">'
            f"{_e(f.severity)}</span> {_e(f.message)}{evidence}</li>"
        )
    return f'<h3>Findings</h3><ul class="findings">{"".join(items)}</ul>'


#: columns that hold a decision (a flag, a verdict): shown right after the first column, so a
#: wide table still shows them without scrolling
DECISION_COLUMNS = frozenset(
    {"flags", "flag", "flagged", "verdict", "status", "result", "sanity", "decision"}
)
#: tables with more rows than this scroll inside their section (the header stays in view)
LONG_TABLE_ROWS = 15


def _column_order(columns: Sequence[str]) -> list[int]:
    decision = [j for j, c in enumerate(columns) if j > 0 and str(c).lower() in DECISION_COLUMNS]
    if not decision:
        return list(range(len(columns)))
    rest = [j for j in range(1, len(columns)) if j not in decision]
    return [0, *decision, *rest]


def _table(t: Table) -> str:
    order = _column_order(t.columns)
    # a column is numeric (right-aligned header) when all its non-null cells are numbers
    numeric = [
        bool(cells) and all(_num_class(v) for v in cells)
        for cells in (
            [r[j] for r in t.rows if j < len(r) and r[j] is not None] for j in range(len(t.columns))
        )
    ]
    head = "".join(f"<th{_NUM if numeric[j] else ''}>{_e(t.columns[j])}</th>" for j in order)
    body = "".join(
        "<tr>" + "".join(_cell(r[j] if j < len(r) else None) for j in order) + "</tr>"
        for r in t.rows
    )
    desc = f'<p class="caption">{_e(t.description)}</p>' if t.description else ""
    long = " long" if len(t.rows) > LONG_TABLE_ROWS else ""
    note = f'<p class="caption">{len(t.rows):,} rows; the table scrolls.</p>' if long else ""
    return (
        f"<h3>{_e(t.title or t.name)}</h3>{desc}{note}"
        f'<div class="tablewrap{long}"><table class="data" data-name="{_e(t.name)}"><thead><tr>'
        f"{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _figure(f: Figure) -> str:
    svg = _PROLOG.sub("", f.svg, count=1)
    if not svg.lstrip().lower().startswith("<svg") or _UNSAFE_SVG.search(svg):
        content = (
            '<p class="notice error">This figure was not embedded: its SVG is not a plain '
            "self-contained drawing (it holds a script, an event handler or an external link).</p>"
        )
    else:
        content = f'<div class="svg">{svg}</div>'
    desc = f' <span class="muted">{_e(f.description)}</span>' if f.description else ""
    return (
        f'<figure data-name="{_e(f.name)}">{content}'
        f"<figcaption><strong>{_e(f.title or f.name)}</strong>{desc}</figcaption></figure>"
    )


def _duration(c: CheckResult) -> str:
    return "not run" if c.status == "skipped" else f"{format_number(c.duration_s)} s"


def _opens(c: CheckResult) -> bool:
    """A section starts expanded when it needs the reader: an error, a warning or a critical."""
    return c.status == "error" or any(f.severity in ("critical", "warning") for f in c.findings)


def _check_section(index: int, c: CheckResult) -> str:
    anchor = _anchor(index, c)
    badges = "".join(
        f'<span class="badge {s}">{n} {s}</span>'
        for s in ("critical", "warning")
        if (n := sum(f.severity == s for f in c.findings))
    )
    parts = [
        f'<section class="check" id="{anchor}">',
        f'<details class="check-body"{" open" if _opens(c) else ""}>',
        f'<summary class="head"><h2>{_e(c.title or c.check)}</h2>'
        f'<code class="name">{_e(c.check)}</code>'
        f'<span class="badge {_e(c.status)}">{_e(c.status)}</span>{badges}'
        f'<span class="dur">{_e(_duration(c))}</span></summary>',
    ]
    if c.summary:
        parts.append(f'<p class="summary">{_e(c.summary)}</p>')
    parts.append(_terms(_check_texts(c)))
    if c.status == "skipped":
        reason = c.skip_reason or "no reason given"
        parts.append(f'<div class="notice"><strong>Skipped:</strong> {_e(reason)}</div>')
    elif c.status == "error":
        parts.append(
            f'<div class="notice error"><strong>Error:</strong> {_e(c.error or "no message")}</div>'
        )
        if c.traceback:
            parts.append(
                f"<details><summary>Traceback</summary><pre>{_e(c.traceback)}</pre></details>"
            )
    if c.findings:
        parts.append(_findings(c.findings, anchor))
    if c.metrics:
        parts.append(_metrics_table(c.metrics))
    parts.extend(_table(t) for t in c.tables)
    if c.figures:
        parts.append("<h3>Figures</h3>")
        parts.extend(_figure(f) for f in c.figures)
    if c.settings:
        parts.append(
            "<details><summary>Settings</summary>"
            f"<pre>{_e(json.dumps(c.settings, indent=2, ensure_ascii=False, default=str))}</pre>"
            "</details>"
        )
    parts.append("</details></section>")
    return "".join(parts)


# ----------------------------------------------------------------------------- footer


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


# ----------------------------------------------------------------------------- public


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
