"""Reports: the typed :class:`Report`, its JSON Schema, the HTML page and the terminal summary.

``report.json`` validates against ``report.schema.json`` (shipped here); ``report.html`` is one
self-contained page (:func:`render_html`); :func:`print_summary` prints the terminal view;
:func:`write_report` writes both files into an output folder.
"""

from edgeproof.report.files import ReportFiles, write_report
from edgeproof.report.html import format_estimate, format_number, render_html, write_html
from edgeproof.report.report import (
    SCHEMA_VERSION,
    PolicyOutcome,
    PolicyRuleResult,
    Report,
    environment,
    load_schema,
)
from edgeproof.report.terminal import print_summary

__all__ = [
    "SCHEMA_VERSION",
    "PolicyOutcome",
    "PolicyRuleResult",
    "Report",
    "ReportFiles",
    "environment",
    "format_estimate",
    "format_number",
    "load_schema",
    "print_summary",
    "render_html",
    "write_html",
    "write_report",
]
