"""``edgeproof diff``: what changed between two audits (or two folder scans); a CI gate.

A thin shell over :func:`edgeproof.report.diff.diff`. Prints a compact table (significant
changes first), writes ``diff.json`` and ``diff.html`` to ``--out``, prints the JSON with
``--json``. Exit codes: 1 when the ``--fail-on`` policy fails, 2 on bad input (a file that is not
a report, reports of different models), 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING, TextIO

from edgeproof.cli import options
from edgeproof.cli.app import formatter

if TYPE_CHECKING:
    from edgeproof.report.diff import ReportDiff
    from edgeproof.report.scan_diff import ScanDiff

__all__ = ["print_diff", "register", "run"]

_FAIL_ON = ("significant-regression", "any-regression", "never")  # report.diff's, unimported

_EPILOG = textwrap.dedent("""\
    examples:
      edgeproof diff runs/v1 runs/v2                       # two audit --out folders
      edgeproof diff old/report.json new/report.json --out runs/diff
      edgeproof diff runs/scan-a runs/scan-b               # two folder scans
      edgeproof diff runs/v1 runs/v2 --fail-on any-regression --json > diff.json

    significant: the two confidence intervals do not overlap; a metric without an
    interval is not judged unless its values are equal.
    exit codes: 0 the policy passed, 1 it failed (CI gate), 2 bad input (not a report,
    reports of different models)""")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        help="what changed between two audits or two scans (significant changes, CI gate)",
        formatter_class=formatter,
        description="Compare two report.json files of one model (or the --out folders holding "
        "them): every metric with its old and new value and whether the change is "
        "significant (the confidence intervals do not overlap) and for the worse; new and "
        "resolved findings; per-class recall; check status changes. Two folder scans are "
        "compared per model: newly flagged, no longer flagged, ratio and status changes, "
        "models added and removed.",
        epilog=_EPILOG,
    )
    p.add_argument("old", metavar="OLD", help="the earlier report.json, or its folder")
    p.add_argument("new", metavar="NEW", help="the later report.json, or its folder")
    p.add_argument("--out", metavar="DIR", help="write diff.json and diff.html to this folder")
    p.add_argument(
        "--fail-on",
        choices=_FAIL_ON,
        default="significant-regression",
        help="exit 1 on a significant regression (default: a metric or class recall "
        "significantly worse, a check now failing), on any regression (also any worse value, "
        "a new warning or critical finding), or never",
    )
    options.add_json(p, what="the diff (diff.json)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from edgeproof.report.diff import diff

    if args.out is not None:
        from edgeproof.outputs import Output

        options.check_outputs(
            [Output.folder(args.out, ("diff.json", "diff.html"))], [args.old, args.new]
        )
    d = diff(args.old, args.new, fail_on=args.fail_on)
    console = sys.stderr if args.json else sys.stdout
    print_diff(d, console)
    if args.out is not None:
        from edgeproof.report.diff_html import write_diff

        files = write_diff(d, args.out, inputs=(args.old, args.new))
        print(f"diff: {files.html}", file=console)
    if args.json:
        sys.stdout.write(json.dumps(d.to_json(), indent=2, allow_nan=False) + "\n")
    return 1 if d.failed else 0


def print_diff(d: ReportDiff | ScanDiff, out: TextIO) -> None:
    """The compact terminal view: what was compared, the warnings, the changes (significant
    first), the policy's verdict and what fails it."""
    print(f"diff: {d.old.path} → {d.new.path}", file=out)
    for w in d.warnings:
        print(f"warning: {w}", file=out)
    from edgeproof.report.diff import ReportDiff

    if isinstance(d, ReportDiff):
        _print_report_diff(d, out)
    else:
        _print_scan_diff(d, out)
    reasons = d.regressions()
    verdict = "FAIL" if reasons else "PASS"
    print(f"policy {d.fail_on}: {verdict}" + (f" ({len(reasons)})" if reasons else ""), file=out)
    for r in reasons:
        print(f"  {r}", file=out)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def _print_report_diff(d: ReportDiff, out: TextIO) -> None:
    from edgeproof.report.diff_html import metric_order
    from edgeproof.report.html import format_estimate

    shown = [m for m in metric_order(d) if m.changed]
    rows = [["metric", "old [CI]", "new [CI]", "delta", "judgement", "direction"]]
    for m in shown:
        direction = {True: "worse", False: "better", None: "changed"}[m.regression]
        rows.append(
            [
                m.key,
                "-" if m.old is None else format_estimate(m.old),
                "-" if m.new is None else format_estimate(m.new),
                "-" if m.delta is None else f"{m.delta:+.3g}",
                ("SIGNIFICANT " if m.significant else "") + m.judgement,
                direction,
            ]
        )
    if shown:
        _table(rows, out)
    same = len(d.metrics) - len(shown)
    print(
        f"{len(d.significant_changes)} significant change(s); {same} metric(s) unchanged", file=out
    )
    for c in sorted(d.significant_classes, key=lambda c: c.delta):
        print(
            f"class {c.name!r} recall {c.old.recall:.1%} [{c.old.low:.1%}, {c.old.high:.1%}] → "
            f"{c.new.recall:.1%} [{c.new.low:.1%}, {c.new.high:.1%}]: significant",
            file=out,
        )
    for ch in d.checks:
        print(f"check {ch.check}: {ch.old or 'absent'} → {ch.new or 'absent'}", file=out)
    for f in d.new_findings:
        print(f"+ {f.severity} {f.check}: {f.message}", file=out)
    for f in d.resolved_findings:
        print(f"- {f.severity} {f.check}: {f.message} (resolved)", file=out)


def _print_scan_diff(d: ScanDiff, out: TextIO) -> None:
    def ratio(v: float | None) -> str:
        return "-" if v is None else "inf" if v == float("inf") else f"{v:.3g}"

    changed = sorted(d.changed, key=lambda m: (not m.significant_regression, not m.regression))
    rows = [["model", "change", "old ratio", "new ratio", "old status", "new status"]]
    for m in changed:
        rows.append(
            [
                m.file,
                m.change,
                "-" if m.old is None else ratio(m.old.ratio),
                "-" if m.new is None else ratio(m.new.ratio),
                "-" if m.old is None else m.old.status,
                "-" if m.new is None else m.new.status,
            ]
        )
    if changed:
        _table(rows, out)
    print(f"{len(changed)} of {len(d.models)} model file(s) changed", file=out)
