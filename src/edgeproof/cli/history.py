"""``edgeproof history``: a model's audits over time, as a trend page.

A thin shell over :func:`edgeproof.report.history.history`. Finds the audit reports in FOLDER
and its subfolders, orders them by their ``created`` time, and writes ``history.json`` and
``history.html`` (a line chart per metric with its confidence interval, the findings over time)
to ``--out``. Reports of another model are listed as skipped, with the reason. Exit codes: 2 on
bad input (not a folder, no report in it), 0 otherwise.
"""

from __future__ import annotations

import argparse
import textwrap

from edgeproof.cli import options
from edgeproof.cli.app import formatter

__all__ = ["register", "run"]

_EPILOG = textwrap.dedent("""\
    examples:
      edgeproof history runs --out runs/history      # runs/v1/report.json, runs/v2/report.json, ...

    exit codes: 0 written, 2 bad input (not a folder, no audit report in it)""")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "history",
        help="a model's audits over time: a trend chart per metric, findings over time",
        formatter_class=formatter,
        description="Read every edgeproof audit report in FOLDER and its subfolders, order them "
        "by their created time and write a trend page: per metric a line chart of its value "
        "with its confidence interval, and the findings of each run. Reports of another model "
        "(architecture, parameter count, classes) are listed as skipped with the reason.",
        epilog=_EPILOG,
    )
    p.add_argument("folder", metavar="FOLDER", help="folder of report.json files (searched deep)")
    options.add_output(
        p, default=None, help="write history.json and history.html here", metavar="DIR"
    )
    options.add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.report.history import history
    from edgeproof.report.history_html import write_history

    h = history(args.folder)
    files = write_history(h, args.out)
    if not args.quiet:
        for r in h.runs:
            state = "included" if r.included else f"skipped: {r.reason}"
            print(f"  {r.label}  {r.created or '-'}  {state}")
        for w in h.warnings:
            print(f"warning: {w}")
        print(
            f"{len(h.included)} run(s), {len(h.skipped)} skipped, {len(h.metrics)} metric(s), "
            f"{len(h.findings)} finding(s) tracked"
        )
    print(f"history: {files.html}")
    return 0
