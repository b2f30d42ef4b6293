"""``edgeproof demo``: the main job on the built-in model and data."""

from __future__ import annotations

import argparse

from edgeproof.cli import options
from edgeproof.cli.app import formatter

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "demo",
        help="train (or reuse) a zoo CNN on built-in digits and audit it",
        formatter_class=formatter,
        description="The main job on the built-in model and data: trains a LeNet-5 on "
        "builtin:digits/train (cached after the first run), audits it on the test "
        "split with every applicable check, and writes the report.",
        epilog="example:\n  edgeproof demo --out runs/demo",
    )
    options.add_output(d, default="runs/demo", help="output folder (default runs/demo)")
    options.add_seed(d, help="audit seed")
    options.add_threads(d, default="1, or all cores for the checks that gain from them")
    options.add_quiet(d)
    options.add_json(d, what="the report (report.json)")
    d.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.cli.audit import check_errors_exit
    from edgeproof.demo import run_demo
    from edgeproof.report.terminal import print_summary

    options.check_outputs([options.report_folder(args.out)], [])
    result = run_demo(args.out, progress=not args.quiet, seed=args.seed, threads=args.threads)
    console = options.summary_console(args)
    if not args.quiet:
        print_summary(result.report, console)
    how = "cached" if result.cached else f"trained in {result.train_seconds:.1f} s"
    console.print(f"model: {result.model_path} ({how})", highlight=False, soft_wrap=True)
    console.print(f"report: {result.files.html}", highlight=False, soft_wrap=True)
    if args.json:
        options.emit_file(result.files.json)
    return check_errors_exit(result.report)
