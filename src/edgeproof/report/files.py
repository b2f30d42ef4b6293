"""Writing a report's files into an output folder: ``report.json`` and ``report.html``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeproof.report.html import write_html
from edgeproof.report.report import Report

__all__ = ["ReportFiles", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written."""

    json: Path
    html: Path


def write_report(report: Report, out_dir: str | Path) -> ReportFiles:
    """Validate and write ``report.json`` and ``report.html`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = report.write_json(out / "report.json")
    html_path = write_html(report, out / "report.html")
    return ReportFiles(json=json_path, html=html_path)
