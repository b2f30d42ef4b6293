"""The terminal summary of a compression (rich): the ledger with its trust columns, the
selection, and one line for what was skipped.

All text goes into :class:`rich.text.Text` objects, never console markup: a candidate name or a
reason containing ``[bold]`` is printed literally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeproof.compress.ledger import Ledger, SkippedCandidate

if TYPE_CHECKING:
    from edgeproof.compress.api import CompressionResult

__all__ = ["print_summary", "skipped_line", "summary_table"]

_STYLE = {"chosen": "bold green", "meets budget": "green"}


def _pct(v: object) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{v:.2%}"


def _num(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "—" if v is None else str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.4g}"


def summary_table(result: CompressionResult) -> Table:
    """Candidate, verdict, drop with its paired interval, worst class drop, size, accuracy,
    every trust column of the ledger, p50 latency; the chosen row in bold green."""
    ledger, sel = result.ledger, result.selection
    t = ledger.table(sel, notes=False)
    col = {c: i for i, c in enumerate(t.columns)}
    trust = [c for c in ("ece", "robust_acc", "dnl_ar10_pct", "verified_acc") if c in col]
    level = next((r.drop.interval.level for r in ledger.rows if r.drop is not None), 0.95)
    table = Table(title="edgeproof compress", title_justify="left")
    table.add_column("candidate")
    table.add_column("verdict")
    table.add_column(f"drop [{level:.0%} paired CI]", justify="right")
    table.add_column("worst class", justify="right")
    table.add_column("size B", justify="right")
    table.add_column("accuracy", justify="right")
    for c in trust:
        table.add_column(c, justify="right")
    table.add_column("p50 ms", justify="right")
    for row in t.rows:
        verdict = str(row[col["verdict"]])
        drop = f"{_pct(row[col['drop']])} [{_pct(row[col['drop_ci_low']])}, "
        drop += f"{_pct(row[col['drop_ci_high']])}]"
        table.add_row(
            Text(str(row[col["candidate"]]), style=_STYLE.get(verdict, "")),
            Text(verdict, style=_STYLE.get(verdict, "yellow")),
            Text(drop),
            Text(_pct(row[col["max_class_drop"]])),
            Text(_num(row[col["size_bytes"]])),
            Text(_num(row[col["accuracy"]])),
            *[Text(_num(row[col[c]])) for c in trust],
            Text(_num(row[col["p50_ms"]])),
        )
    return table


def _group(skipped: Sequence[SkippedCandidate]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for s in skipped:
        key = s.reason if s.reason.startswith("not started") else "not applicable"
        groups.setdefault(key, []).append(s.name)
    return groups


def skipped_line(ledger: Ledger) -> str:
    """``3 of 17 candidates skipped: 2 not started: the time budget of 60 s was spent (a, b);
    1 not applicable (c)`` — or ``no candidate skipped``; every reason is in the report."""
    total = len(ledger.candidates) + len(ledger.skipped)
    if not ledger.skipped:
        return f"no candidate skipped ({total} measured)"
    parts = []
    for reason, names in _group(ledger.skipped).items():
        shown = ", ".join(names[:4]) + (f", +{len(names) - 4} more" if len(names) > 4 else "")
        parts.append(f"{len(names)} {reason} ({shown})")
    return f"{len(ledger.skipped)} of {total} candidates skipped: " + "; ".join(parts)


def print_summary(result: CompressionResult, console: Console | None = None) -> None:
    """Print the ledger table, the selection message and the skipped line."""
    con = console if console is not None else Console()
    con.print(summary_table(result))
    sel = result.selection
    style = "green" if sel.met_budget and sel.chosen is not result.ledger.baseline else "yellow"
    con.print(Text(sel.message, style=style))
    con.print(Text(skipped_line(result.ledger), style="dim" if not result.ledger.skipped else ""))
