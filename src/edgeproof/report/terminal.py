"""The terminal summary of a report (rich): checks, findings by severity, policy outcome.

All report text goes into :class:`rich.text.Text` objects, never into console markup, so a check
name or message containing ``[bold]`` or similar is printed literally.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from edgeproof.report.html import format_estimate, format_number
from edgeproof.report.report import Report
from edgeproof.results import CheckResult

__all__ = ["print_summary"]

_STATUS_STYLE = {"ok": "green", "skipped": "dim", "error": "bold red"}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
_NO_UNIT = ("", "fraction")  # dimensionless: printing the unit adds nothing


def _headline(c: CheckResult) -> Text:
    if c.status == "skipped":
        return Text(c.skip_reason or "", style="dim")
    if c.status == "error":
        return Text(c.error or "", style="red")
    if not c.metrics:  # e.g. the baseline comparison: its summary says what it found
        return Text(c.summary, style="dim")
    shown = c.headline_metrics()
    lines = [
        f"{m.name} {format_estimate(m)}{'' if m.unit in _NO_UNIT else ' ' + m.unit}" for m in shown
    ]
    text = Text("\n".join(lines))
    if len(c.metrics) > len(shown):
        text.append(f"\n+{len(c.metrics) - len(shown)} more in the report", style="dim")
    return text


def _checks_table(report: Report) -> Table:
    table = Table(title="edgeproof audit", title_justify="left", expand=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("findings", justify="right")
    table.add_column("headline metrics", overflow="fold")
    for c in report.checks:
        crit = sum(f.severity == "critical" for f in c.findings)
        warn = sum(f.severity == "warning" for f in c.findings)
        findings = Text()
        if crit:
            findings.append(f"{crit}C", style=_SEVERITY_STYLE["critical"])
        if warn:
            findings.append((" " if crit else "") + f"{warn}W", style=_SEVERITY_STYLE["warning"])
        table.add_row(
            Text(c.check),
            Text(c.status, style=_STATUS_STYLE.get(c.status, "")),
            Text(f"{format_number(c.duration_s)} s"),
            findings,
            _headline(c),
        )
    return table


def _findings(report: Report) -> Group | None:
    lines: list[Text] = []
    for severity in ("critical", "warning", "info"):
        for c in report.checks:
            for f in c.findings:
                if f.severity != severity:
                    continue
                line = Text()
                line.append(f"{severity:<8} ", style=_SEVERITY_STYLE[severity])
                line.append(f"{c.check}: ", style="bold")
                line.append(f.message)
                lines.append(line)
    if not lines:
        return None
    return Group(Text("Findings", style="bold underline"), *lines)


def _policy(report: Report) -> Text:
    if report.policy is None:
        return Text("Policy: none applied", style="dim")
    pol = report.policy
    text = Text("Policy ")
    text.append(pol.source, style="bold")
    text.append(": ")
    if pol.passed:
        text.append(f"PASS (all {len(pol.rules)} rules met)", style="bold green")
    else:
        failed = [r for r in pol.rules if not r.passed]
        text.append(f"FAIL ({len(failed)} of {len(pol.rules)} rules failed)", style="bold red")
        for r in failed:
            text.append("\n  ✗ ", style="red")
            text.append(r.message)
    return text


def print_summary(report: Report, console: Console | None = None) -> None:
    """Print the checks table, the findings by severity and the policy outcome."""
    con = console if console is not None else Console()
    con.print(_checks_table(report))
    findings = _findings(report)
    if findings is not None:
        con.print(findings)
    if report.warnings:
        con.print(Text("Warnings while loading", style="bold underline"))
        for w in report.warnings:
            con.print(Text(f"  {w}", style="yellow"))
    con.print(_policy(report))
    con.print(
        Text(
            f"seed {report.seed} · {format_number(report.duration_s)} s · "
            f"{report.tool} {report.tool_version}",
            style="dim",
        )
    )
