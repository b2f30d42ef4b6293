"""The HTML page of a compression's report (``Report.kind == "compress"``).

It leads with what a reader of a compression acts on: the selection (what was chosen and why,
or that nothing could be shown to meet the budget), the ledger table (verdict, the drop with its
exact paired interval, worst class, size, accuracy, trust columns — one line per row, notes in
their own table), the Pareto figure with the chosen candidate marked, and the refused and
skipped candidates one row each. Then the cards — the source model and the written artefacts,
the calibration and the evaluation set (how each was split), the threat model — and one
collapsed section per candidate. Everything is escaped as in :mod:`edgeproof.report.html`, whose
pieces it reuses (with :mod:`edgeproof.report.check_section` and
:mod:`edgeproof.report.html_text`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeproof.report.check_section import (
    _anchor,
    _check_section,
    _figure,
    _findings,
    _metrics_table,
    _table,
)
from edgeproof.report.html import _data_items, _footer, _threat_items
from edgeproof.report.html_text import _e, _kv
from edgeproof.report.report import Report
from edgeproof.results import CheckResult

__all__ = ["render_compress_body"]

_STYLE = (
    "<style>"
    "main { max-width: 1320px; }"
    'table.data[data-name="ledger"] { font-size: 13px; }'
    'table.data[data-name="ledger"] td, table.data[data-name="ledger"] th { padding: 3px 7px; }'
    'table.data[data-name="ledger"] td, table.data[data-name="ledger"] th'
    " { white-space: nowrap; }"
    'table.data[data-name="ledger"] tr.chosen td { background: var(--ok-bg); font-weight: 600; }'
    'table.data[data-name="refused"] td:nth-child(3),'
    'table.data[data-name="skipped"] td:nth-child(3),'
    'table.data[data-name="ledger_notes"] td:nth-child(2) { min-width: 420px; }'
    "details.candidate > summary { font-size: 16px; color: var(--fg); padding: 6px 0; }"
    "</style>"
)


def _model_items(model: Mapping[str, Any]) -> list[tuple[str, Any]]:
    labels = {
        "path": "source model",
        "arch": "architecture",
        "source_size_bytes": "source ONNX size (B)",
        "chosen": "chosen candidate",
        "chosen_size_bytes": "chosen ONNX size (B)",
        "artefacts": "written",
    }
    items = [(labels.get(k, k), "—" if v is None else v) for k, v in model.items()]
    return [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in items]


def _data_card(part: Mapping[str, Any]) -> str:
    role = str(part.get("role", "data"))
    rest = {k: v for k, v in part.items() if k not in ("role", "split")}
    split = f'<p class="small">{_e(part.get("split", ""))}</p>' if part.get("split") else ""
    return (
        f'<div class="panel" data-role="{_e(role)}"><h3>{_e(role.capitalize())} data</h3>'
        f"{split}{_kv(_data_items(rest))}</div>"
    )


def _cards(report: Report) -> str:
    data = "".join(_data_card(p) for p in report.datasets)
    if not data and report.data is not None:
        data = _data_card({"role": "evaluation", **report.data})
    return (
        '<div class="grid" id="cards">'
        f'<div class="panel"><h3>Model</h3>{_kv(_model_items(report.model))}</div>'
        f"{data}"
        f'<div class="panel"><h3>Threat model of the re-audit</h3>'
        f"{_kv(_threat_items(report.threat))}</div></div>"
    )


def _mark_chosen(table_html: str, chosen: str) -> str:
    """Give the chosen row of the ledger table the ``chosen`` class."""
    return table_html.replace(
        f"<tr><td>{_e(chosen)}</td>", f'<tr class="chosen"><td>{_e(chosen)}</td>', 1
    )


def _ledger(c: CheckResult, chosen: str) -> str:
    by_name = {t.name: t for t in c.tables}
    parts = [f'<section class="check" id="{_anchor(0, c)}">']
    parts.append(f'<div class="head"><h2>{_e(c.title or c.check)}</h2></div>')
    if c.findings:
        parts.append(_findings(c.findings))
    if "ledger" in by_name:
        parts.append(_mark_chosen(_table(by_name["ledger"]), chosen))
    parts.extend(_figure(f) for f in c.figures)
    parts.extend(_table(by_name[n]) for n in ("refused", "skipped") if n in by_name)
    if c.metrics:
        parts.append(_metrics_table(c.metrics))
    for name, what in (("ledger_notes", "Notes per candidate"), ("ledger_full", "Every column")):
        if name in by_name:
            parts.append(
                f"<details><summary>{what} ({len(by_name[name].rows)} rows)</summary>"
                f"{_table(by_name[name])}</details>"
            )
    parts.append("</section>")
    return "".join(parts)


def _candidate(index: int, c: CheckResult) -> str:
    return (
        f'<details class="candidate"><summary><strong>{_e(c.title or c.check)}</strong> '
        f'<span class="muted">{_e(c.summary)}</span></summary>'
        f"{_check_section(index, c)}</details>"
    )


def render_compress_body(report: Report) -> str:
    """The page body of a compression report (header to footer)."""
    model = report.model.get("path") or "model"
    ledger = next((c for c in report.checks if c.check == "compress"), None)
    chosen = str(report.model.get("chosen", ""))
    header = (
        '<header class="top"><h1>edgeproof compression report</h1>'
        f'<div class="muted"><strong>{_e(model)}</strong> → <strong>{_e(chosen)}</strong>'
        f" · {_e(report.created)} · {_e(report.tool)} {_e(report.tool_version)}</div>"
        "</header>"
    )
    rest = [c for c in report.checks if c is not ledger]
    details = "".join(_candidate(i + 1, c) for i, c in enumerate(rest))
    return (
        _STYLE
        + header
        + ("" if ledger is None else _ledger(ledger, chosen))
        + _cards(report)
        + (f"<h2>Candidates</h2>{details}" if details else "")
        + _footer(report)
    )
