"""One check's section of an HTML page: status, findings, metrics, tables (decision columns
first, long ones scrolling), figures and settings, collapsed unless it holds a warning, a critical
finding or an error. The audit report, the scan page and the compression page all use it.

A figure whose SVG contains a script, an event-handler attribute, embedded HTML (``foreignObject``,
``iframe``, ...) or a link or CSS ``url()``/``@import`` to anything but an in-document anchor or a
``data:image/`` URI is not embedded (a note says why):
a report read back from ``report.json`` must not be able to run code or reach the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from edgeproof.report.html_text import _compact, _e, _terms, format_number
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["DECISION_COLUMNS", "LONG_TABLE_ROWS"]

_SEVERITIES = ("critical", "warning", "info")

_UNSAFE_SVG = re.compile(
    r"<\s*(?:script|foreignObject|iframe|object|embed|link|meta|base|form|img|audio|video)\b"
    r"|<[^>]*\son[a-z]+\s*=|@import|url\(\s*[\"']?\s*(?!#|data:image/)"
    r"|<[^>]*\s(?:[a-z]+:)?(?:href|src)\s*=\s*[\"']?\s*(?!#|data:image/)[^\s\"'>]",
    re.IGNORECASE,
)

_NUM = ' class="num"'

_PROLOG = re.compile(r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!DOCTYPE[^>]*>\s*)?", re.IGNORECASE)


def _anchor(index: int, check: CheckResult) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", check.check).strip("-")[:40] or "check"
    return f"check-{index}-{slug}"


def _finding_anchor(index: int, check: CheckResult, j: int) -> str:
    return f"{_anchor(index, check)}-finding-{j}"


def _check_texts(c: CheckResult) -> list[str]:
    texts = [c.title, c.summary]
    for m in c.metrics:
        texts += [m.name, m.description, m.unit]
    texts += [f.message for f in c.findings]
    for t in c.tables:
        texts += [t.title, t.description, *map(str, t.columns)]
    texts += [f.title for f in c.figures]
    return texts


def _num_class(value: object) -> str:
    return ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _cell(value: object) -> str:
    if value is None:
        return '<td class="num muted">—</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{_e(format_number(value))}</td>'
    return f"<td>{_e(value)}</td>"


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
