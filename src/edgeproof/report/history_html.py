"""The files of a :class:`~edgeproof.report.history.History`: ``history.json``
(validated against ``history.schema.json``, shipped here, before it is written) and
``history.html``.

The page has the look and the safety rules of the audit report (:mod:`edgeproof.report.html`:
one self-contained file, inline CSS and SVG, no script needed, every text escaped): the runs in
``created`` order (skipped ones with the reason), then per check one small line chart per metric
(value over the runs, its confidence interval as a band, drawn with
:mod:`edgeproof.report.charts`), then a table of the findings over time.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from edgeproof.atomic import atomic_write_text
from edgeproof.outputs import Output, check_output_paths
from edgeproof.report.files import ReportFiles
from edgeproof.report.history import History, MetricSeries
from edgeproof.report.html import _template
from edgeproof.report.html_text import _e, format_estimate

__all__ = [
    "HISTORY_FILES",
    "metric_chart",
    "render_history_html",
    "validate_history_json",
    "write_history",
]

HISTORY_FILES = ("history.json", "history.html")


def metric_chart(series: MetricSeries, labels: list[str]) -> str:
    """One metric over the runs as an SVG line chart: the value with markers, its interval as
    a grey band (where the runs have one); a run without the metric breaks the line."""
    from edgeproof.report.charts import Axis, Chart

    nan = math.nan
    values = [nan if m is None else m.value for m in series.points]
    lows = [nan if m is None or m.ci is None else m.ci.low for m in series.points]
    highs = [nan if m is None or m.ci is None else m.ci.high for m in series.points]
    unit = "" if series.unit in ("", "fraction") else f" ({series.unit})"
    chart = Chart(
        360,
        200,
        x=Axis("run", scale="category", categories=tuple(labels), grid=False),
        y=Axis(f"{series.name}{unit}"),
    )
    xs = list(range(len(labels)))
    banded = any(math.isfinite(v) for v in lows)
    if banded:
        level = next(m.ci.level for m in series.points if m is not None and m.ci is not None)
        chart.band(xs, lows, highs, label=f"{level:.0%} CI")
    chart.line(xs, values, label=series.name if banded else None, marker="circle")
    return chart.svg()


def _runs_table(h: History) -> str:
    rows = "".join(
        f"<tr><td>{_e(r.label)}</td><td>{_e(r.created or '—')}</td><td>{_e(r.model or '—')}</td>"
        f'<td>{_e(r.data or "—")}</td><td class="num">{_e(r.records or "—")}</td><td>'
        + (
            '<span class="badge ok">included</span>'
            if r.included
            else f'<span class="badge skipped">skipped</span> {_e(r.reason)}'
        )
        + f'</td><td class="small muted">{_e(r.path)}</td></tr>'
        for r in h.runs
    )
    return (
        '<h3>Runs</h3><p class="caption">Oldest first, by the <code>created</code> time of each '
        'report.</p><div class="tablewrap"><table id="runs"><thead><tr><th>Run</th>'
        '<th>Created</th><th>Model</th><th>Data</th><th class="num">Records</th><th>Trend</th>'
        f"<th>File</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _latest(series: MetricSeries) -> str:
    m = next((m for m in reversed(series.points) if m is not None), None)
    if m is None:
        return ""
    direction = {True: "higher is better", False: "lower is better", None: "no direction"}
    return f"latest {format_estimate(m)}; {direction[series.higher_is_better]}"


def _charts(h: History, labels: list[str]) -> str:
    by_check: dict[str, list[MetricSeries]] = {}
    for s in h.metrics:
        by_check.setdefault(s.check, []).append(s)
    out = [
        '<h3>Metrics over time</h3><p class="caption">One chart per metric: the value in each '
        "run and, where the run estimated one, its confidence interval (grey band).</p>"
    ]
    for check, series in by_check.items():
        figures = "".join(
            f'<figure class="trend" data-metric="{_e(s.key)}"><div class="svg">'
            f"{metric_chart(s, labels)}</div><figcaption><code>{_e(s.key)}</code> "
            f'<span class="muted">{_e(_latest(s))}</span></figcaption></figure>'
            for s in series
        )
        out.append(
            f'<section class="check" id="trend-{_e(check)}"><h2>{_e(check)}</h2>'
            f'<div class="trends">{figures}</div></section>'
        )
    return "".join(out)


def _findings_table(h: History, labels: list[str]) -> str:
    if not h.findings:
        return '<h3>Findings over time</h3><p class="muted" id="findings">No run has a finding.</p>'
    head = "".join(f'<th class="num">{_e(label)}</th>' for label in labels)
    rows = []
    for f in h.findings:
        cells = "".join(
            '<td class="num muted">—</td>'
            if m is None
            else f'<td class="num" title="{_e(m)}">●</td>'
            for m in f.messages
        )
        rows.append(
            f'<tr><td><span class="badge {_e(f.severity)}">{_e(f.severity)}</span> '
            f"<code>{_e(f.check)}</code> {_e(f.latest)}</td>{cells}</tr>"
        )
    return (
        '<h3>Findings over time</h3><p class="caption">● the run has the finding (numbers in '
        "its message may differ from run to run; hover for its text), — it has not.</p>"
        '<div class="tablewrap"><table id="findings"><thead><tr><th>Finding (latest text)</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


_STYLE = (
    "<style>.trends { display: flex; flex-wrap: wrap; gap: 8px 20px; } "
    "figure.trend { margin: 6px 0; width: 360px; }</style>"
)


def render_history_html(h: History) -> str:
    """The history as one self-contained HTML page."""
    labels = [r.label for r in h.included]
    model = h.included[-1].model if h.included else ""
    header = (
        '<header class="top"><h1>edgeproof history</h1>'
        f'<div class="muted"><strong>{_e(model)}</strong> · {_e(h.folder)} · '
        f"{len(h.included)} run(s), {len(h.skipped)} skipped</div></header>"
    )
    warnings = ""
    if h.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in h.warnings)
        warnings = f'<div class="notice" id="history-warnings"><ul>{items}</ul></div>'
    body = (
        _STYLE
        + header
        + warnings
        + _runs_table(h)
        + _charts(h, labels)
        + _findings_table(h, labels)
        + '<footer id="provenance"><p>The same content is in <code>history.json</code>.</p>'
        "</footer>"
    )
    return _template().substitute(
        title=_e(f"edgeproof history: {model or h.folder}"), generator=_e("edgeproof"), body=body
    )


def validate_history_json(obj: Any) -> None:
    """Validate a ``history.json`` object against ``history.schema.json`` shipped in the package
    (raises ``jsonschema.ValidationError``)."""
    import jsonschema

    text = resources.files("edgeproof.report").joinpath("history.schema.json").read_text("utf-8")
    jsonschema.Draft202012Validator(json.loads(text)).validate(obj)


def write_history(h: History, out_dir: str | Path) -> ReportFiles:
    """Write ``history.json`` and ``history.html`` into ``out_dir`` (each atomically).

    Refuses (``OptionError("out_dir", ...)``) a folder that is, contains or would replace one of
    the reports read (a folder inside the searched one is fine: its files are not reports).
    """
    out = Path(out_dir)
    check_output_paths(
        [Output.folder(out, HISTORY_FILES, option="out_dir")], [r.path for r in h.runs]
    )
    out.mkdir(parents=True, exist_ok=True)
    obj = h.to_json()
    validate_history_json(obj)
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    json_path = atomic_write_text(out / "history.json", text, option="out_dir")
    html_path = atomic_write_text(out / "history.html", render_history_html(h), option="out_dir")
    return ReportFiles(json=json_path, html=html_path)
