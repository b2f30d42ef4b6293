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


def summary_table(result: CompressionResult) -> Table:
    """The compact ledger (:func:`edgeproof.compress.report.compact_ledger`: verdict, drop with
    its paired interval, worst class, size, accuracy, every trust column, p50 latency); the
    chosen row in bold green, refused ones' verdict in yellow."""
    from edgeproof.compress.report import compact_ledger

    t = compact_ledger(result)
    table = Table(title="edgeproof compress", title_justify="left")
    for j, c in enumerate(t.columns):
        table.add_column(c, justify="left" if j < 2 else "right", overflow="fold")
    for row in t.rows:
        verdict = str(row[1])
        style = _STYLE.get(verdict, "")
        cells = [Text("—" if v is None else str(v)) for v in row]
        cells[0].stylize(style)
        cells[1].stylize(_STYLE.get(verdict, "yellow"))
        table.add_row(*cells)
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
