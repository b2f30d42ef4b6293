"""The files of a folder scan (:class:`edgeproof.scan.ScanReport`): ``report.json`` and
``report.html``.

``report.json`` is validated against ``scan.schema.json`` (shipped beside the audit report's
schema, whose ``check_result`` definition the per-model evidence reuses) before it is written.
The HTML page has the same parts and safety rules as an audit report (:mod:`edgeproof.report.html`:
inline CSS and SVG, every text escaped): the verdict, the ranked table, the models by
architecture, the files not scanned, then one section of evidence per scanned model (metrics,
findings, per-class anomaly table and figure, Neural Cleanse's reconstructed trigger when it ran)
in rank order, and the provenance.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.atomic import atomic_write_text
from edgeproof.outputs import Output, check_output_paths
from edgeproof.report.check_section import _check_section, _table
from edgeproof.report.files import ReportFiles
from edgeproof.report.html import _template
from edgeproof.report.html_text import _e, _kv
from edgeproof.report.report import load_schema

if TYPE_CHECKING:
    from edgeproof.scan import ScanReport

__all__ = ["load_scan_schema", "render_scan_html", "validate_scan_json", "write_scan_report"]


def load_scan_schema() -> dict[str, Any]:
    """The scan report JSON Schema shipped in the package."""
    text = resources.files("edgeproof.report").joinpath("scan.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_scan_json(obj: Any) -> None:
    """Validate a scan ``report.json`` object (raises ``jsonschema.ValidationError``)."""
    import jsonschema
    from referencing import Registry, Resource

    report_schema = load_schema()
    registry: Registry[Any] = Registry().with_resource(
        report_schema["$id"], Resource.from_contents(report_schema)
    )
    jsonschema.Draft202012Validator(load_scan_schema(), registry=registry).validate(obj)


def _verdict(report: ScanReport) -> str:
    flagged = len(report.flagged)
    scanned = len(report.scanned)
    skipped = len(report.not_scanned)
    cards = [
        f'<div class="card {"fail" if flagged else "pass"}"><div class="k">Flagged</div>'
        f'<div class="v">{flagged}</div><div class="small">of {scanned} scanned model(s)</div>'
        "</div>",
        f'<div class="card{" warn" if skipped else ""}"><div class="k">Not scanned</div>'
        f'<div class="v">{skipped}</div><div class="small muted">unreadable, not a classifier, '
        "refused or crashed</div></div>",
        f'<div class="card"><div class="k">Architectures</div>'
        f'<div class="v">{len(report.groups())}</div>'
        f'<div class="small muted">{report.jobs} worker process(es)</div></div>',
    ]
    return f'<div class="verdict" id="verdict">{"".join(cards)}</div>'


def _provenance(report: ScanReport) -> str:
    pop = dict(report.thresholds.population)
    items: list[tuple[str, Any]] = [
        ("folder", report.folder),
        ("detectors", ", ".join(report.settings.detectors)),
        ("threshold rule", "score > the (1 − FPR) quantile of clean models' scores"),
        ("calibration FPR", report.thresholds.fpr),
        ("calibration population", {k: pop[k] for k in ("archs", "seed", "split") if k in pop}),
    ]
    if report.overrides:
        items.append(("thresholds given", report.overrides))
    items += [("note", n) for n in report.notes]
    data = (
        _kv(
            (k, v)
            for k, v in report.data.items()
            if k in ("name", "format", "records", "sample_shape", "kind")
        )
        if report.data is not None
        else '<p class="muted">none: data-free detectors only</p>'
    )
    return (
        '<div class="grid">'
        f'<div class="panel"><h3>Scan</h3>{_kv(items)}</div>'
        f'<div class="panel"><h3>Clean samples</h3>{data}</div>'
        "</div>"
    )


def _footer(report: ScanReport) -> str:
    env = report.environment
    facts: list[tuple[str, Any]] = [
        ("seed", report.settings.seed),
        ("created", report.created),
        ("scan time", f"{report.duration_s:.3g} s"),
        ("worker processes", report.jobs),
        ("torch threads per worker", 1),
    ]
    facts += [(k, env[k]) for k in ("cpu_count", "python", "platform", "machine") if k in env]
    versions = env.get("versions") or {}
    facts += [(k, v) for k, v in versions.items() if v is not None]
    return (
        f'<footer id="provenance"><h3>Provenance</h3>{_kv(facts)}'
        "<p>The same content, with every detector's per-class anomalies, is in "
        "<code>report.json</code>.</p></footer>"
    )


def render_scan_html(report: ScanReport) -> str:
    """The scan as one self-contained HTML page."""
    header = (
        '<header class="top"><h1>edgeproof backdoor scan</h1>'
        f'<div class="muted"><strong>{_e(report.folder)}</strong> · {_e(report.created)}</div>'
        "</header>"
    )
    sections: list[str] = []
    for i, m in enumerate(report.scanned):
        ev = report.evidence(m)
        if ev is not None:
            sections.append(_check_section(i, ev))
    body = (
        header
        + _verdict(report)
        + _provenance(report)
        + _table(report.ranking_table())
        + _table(report.groups_table())
        + (_table(truth) if (truth := report.truth_table()) is not None else "")
        + "<h3>Evidence per model</h3>"
        + "".join(sections)
        + _footer(report)
    )
    return _template().substitute(
        title=_e(f"edgeproof scan: {report.folder}"),
        generator=_e("edgeproof"),
        body=body,
    )


def write_scan_report(report: ScanReport, out_dir: str | Path) -> ReportFiles:
    """Validate and write ``report.json`` and ``report.html`` into ``out_dir`` (atomically).

    Refuses (``OptionError("out_dir", ...)``) a folder inside the scanned folder, or one that
    contains it (:func:`edgeproof.outputs.check_output_paths`).
    """
    out = Path(out_dir)
    check_output_paths(
        [Output.folder(out, ("report.json", "report.html"), option="out_dir")], [report.folder]
    )
    obj = report.to_json()
    validate_scan_json(obj)
    out.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(
        out / "report.json", json.dumps(obj, indent=2, allow_nan=False) + "\n"
    )
    html_path = atomic_write_text(out / "report.html", render_scan_html(report))
    return ReportFiles(json=json_path, html=html_path)
