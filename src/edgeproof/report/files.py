"""Writing a report's files into an output folder: ``report.json`` and ``report.html``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeproof.outputs import Output, check_output_paths
from edgeproof.report.html import write_html
from edgeproof.report.report import Report

__all__ = ["ReportFiles", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written."""

    json: Path
    html: Path


def write_report(report: Report, out_dir: str | Path) -> ReportFiles:
    """Validate and write ``report.json`` and ``report.html`` into ``out_dir`` (each atomically).

    Refuses (``OptionError("out_dir", ...)``) a folder that is, contains or would replace the
    audited model or data file (:func:`edgeproof.outputs.check_output_paths`).
    """
    out = Path(out_dir)
    inputs = [report.model.get("path"), (report.data or {}).get("name")]
    check_output_paths(
        [Output.folder(out, ("report.json", "report.html"), option="out_dir")],
        [str(i) for i in inputs if isinstance(i, str)],
    )
    out.mkdir(parents=True, exist_ok=True)
    json_path = report.write_json(out / "report.json")
    html_path = write_html(report, out / "report.html")
    return ReportFiles(json=json_path, html=html_path)
