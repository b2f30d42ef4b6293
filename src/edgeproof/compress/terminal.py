"""The terminal summary of a compression (rich): the ledger with its trust columns, the
selection, and one line for what was skipped.

All text goes into :class:`rich.text.Text` objects, never console markup: a candidate name or a
reason containing ``[bold]`` is printed literally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeproof.compress.ledger import Ledger, SkippedCandidate

if TYPE_CHECKING:
    from edgeproof.compress.api import CompressionResult

__all__ = ["print_summary", "skipped_line", "summary_table"]

_STYLE = {"chosen": "bold green", "meets budget": "green"}


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def summary_table(result: CompressionResult) -> Table:
    """One line per candidate: verdict, drop and the upper end of its paired interval (what the
    budget is held to), worst class's drop, size, accuracy, every trust column of the ledger,
    p50 latency (percentages in points); the chosen row in bold green, refusals in yellow."""
    ledger, sel = result.ledger, result.selection
    full = ledger.table(sel.verdicts(ledger.rows), notes=False)
    col = {c: i for i, c in enumerate(full.columns)}
    trust = [c for c in ("ece", "robust_acc", "dnl_ar10_pct", "verified_acc") if c in col]
    level = next((c.drop.interval.level for c in ledger.rows if c.drop is not None), 0.95)
    table = Table(title="edgeproof compress", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("candidate", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for name in ("drop %", f"{level:.0%} upper %", "worst class %", "KiB", "accuracy"):
        table.add_column(name, justify="right")
    for name in (*trust, "p50 ms"):
        table.add_column(name, justify="right")
    for c, row in zip(ledger.rows, full.rows, strict=True):
        verdict = str(row[col["verdict"]])
        style = _STYLE.get(verdict, "yellow")
        table.add_row(
            Text(c.name, style=_STYLE.get(verdict, "")),
            Text(verdict.replace("meets budget", "meets"), style=style),
            Text("—" if c.drop is None else f"{c.drop.value * 100:+.2f}"),
            Text("—" if c.drop is None else f"{c.drop.interval.high * 100:+.2f}"),
            Text("—" if c.worst_class is None else f"{c.max_class_drop * 100:.2f}"),
            Text(f"{c.size_bytes / 1024:.1f}"),
            Text(_f(c.accuracy)),
            *[Text(_f(_value(row[col[t]]))) for t in trust],
            Text(_f(c.latency_p50_ms)),
        )
    return table


def _value(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


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
