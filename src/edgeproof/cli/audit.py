"""``edgeproof audit``: load a model (and data), run every applicable check, write the report."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.cli import options
from edgeproof.cli.app import formatter

if TYPE_CHECKING:
    from edgeproof.policy import Policy
    from edgeproof.report.report import Report

__all__ = ["check_errors_exit", "register", "run"]

_EPILOG = textwrap.dedent("""\
    examples:
      edgeproof audit model.safetensors --arch zoo:resnet20 --data val.npz --out runs/a
      edgeproof audit model.pt2 --data builtin:digits --checks performance,calibration
      edgeproof audit model.onnx --data val.npz --policy policy.toml  # CI gate
      edgeproof audit model.pt2 --data val.npz --set adversarial.max_samples=none  # every record
      edgeproof audit weights.safetensors              # data-free checks only
      edgeproof audit model.pt2 --data a.npz --data b.npz --out runs/a --executor processes
                                                       # runs/a/a/ and runs/a/b/, worst exit code

    policy.toml:
      [thresholds]
      "performance.accuracy" = ">= 0.95"
      "calibration.ece" = "<= 0.05\"""")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "audit",
        help="audit a model (and data) with every applicable check",
        formatter_class=formatter,
        description="Load MODEL, plan the checks its format and the data allow, run them, "
        "and write report.json + report.html to --out.",
        epilog=_EPILOG,
    )
    options.add_model(a, help="model file: .safetensors, .pt2, TorchScript .pt, .onnx, .pt/.pth")
    options.add_interface(a)
    options.add_data(
        a,
        help="validation data: .npz, .csv, image folder, IDX, CIFAR-10 binary, "
        "or builtin:digits / builtin:breast-cancer / builtin:synth-ecg; repeat it to audit "
        "several data sets, each report in OUT/<data set name>/",
        repeatable=True,
    )
    a.add_argument(
        "--checks",
        help="comma-separated check names (default: all applicable, except those `edgeproof "
        "checks` marks as only with --checks)",
    )
    options.add_settings(a)
    options.add_output(a, default="runs/audit", help="output folder (default runs/audit)")
    a.add_argument("--policy", help="TOML file of metric thresholds; exit 1 if any fails")
    a.add_argument(
        "--baseline",
        help="report.json of a sealed baseline audit: flag per-class "
        "accuracy shifts (poisoning symptom)",
    )
    options.add_seed(a)
    a.add_argument(
        "--batch-size", type=options.at_least(1), default=256, help="evaluation batch size"
    )
    options.add_threads(a, default="1, or all cores for the checks that gain from them")
    options.add_executor(a, per="data set (with several --data)", default="inprocess")
    options.add_jobs(
        a,
        help="data sets audited at once with several --data (default: the available cores "
        "with --executor processes or ray)",
    )
    options.add_quiet(a)
    options.add_json(a, what="the report (report.json)")
    options.add_spec(a)
    a.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.cli.flags import flag_of
    from edgeproof.runner import audit, resolve_threat

    sources = list(args.data or [])
    options.check_outputs(
        [options.report_folder(args.out)],
        [*options.model_inputs(args), *sources, args.policy, args.baseline],
    )
    policy = None
    if args.policy:
        from edgeproof.policy import load_policy

        policy = load_policy(args.policy)  # bad policy fails before any work is done
    baseline = None
    if args.baseline:
        from edgeproof.report.report import Report

        baseline = Report.read_json(args.baseline)
    names = [c.strip() for c in args.checks.split(",") if c.strip()] if args.checks else None
    checks = options.build_checks(names, options.check_settings(args))
    model = options.load_model_arg(args)
    datas = [options.load_data_arg(args, s, kind=args.kind) for s in sources]
    spec = options.spec_kwargs(args)
    threats = [resolve_threat(model, d, **spec) for d in datas] or [
        resolve_threat(model, None, **spec)
    ]
    common: dict[str, Any] = dict(
        seed=args.seed,
        batch_size=args.batch_size,
        threads=args.threads,
        progress=not args.quiet,
        baseline=baseline,
        name_of=flag_of,
    )
    if len(datas) <= 1:
        data = datas[0] if datas else None
        report = audit(model, data, checks, threat=threats[0], out_dir=args.out, **common)
        return _finish(args, report, policy, Path(args.out))
    from edgeproof.audit_many import audit_datasets, dataset_folders

    reports = audit_datasets(
        model,
        datas,
        checks,
        threat=threats,
        executor=args.executor,
        jobs=options.jobs_arg(args),
        ray_address=args.ray_address,
        out_dir=args.out,
        **common,
    )
    folders = [Path(args.out) / f for f in dataset_folders(datas)]
    codes = [_finish(args, r, policy, f, many=True) for r, f in zip(reports, folders)]
    if args.json:  # one JSON array of the reports, in --data order
        docs = [json.loads((f / "report.json").read_text(encoding="utf-8")) for f in folders]
        sys.stdout.write(json.dumps(docs, indent=2) + "\n")
    return max(codes)


def _finish(
    args: argparse.Namespace, report: Report, policy: Policy | None, out: Path, many: bool = False
) -> int:
    """Apply the policy, write the report into ``out``, print its summary; its exit code."""
    from edgeproof.report.files import write_report
    from edgeproof.report.terminal import print_summary

    if policy is not None:
        report.policy = policy.apply(report)
    files = write_report(report, out)
    console = options.summary_console(args)
    if not args.quiet:
        print_summary(report, console)
    where = f"report of {(report.data or {}).get('name')}" if many else "report"
    console.print(f"{where}: {files.html}", highlight=False, soft_wrap=True)
    if args.json and not many:
        options.emit_file(files.json)
    code = check_errors_exit(report)
    if report.policy is not None and not report.policy.passed:
        failed = [r.message for r in report.policy.rules if not r.passed]
        prefix = f"{(report.data or {}).get('name')}: " if many else ""
        print(f"{prefix}policy failed: " + "; ".join(failed), file=sys.stderr)
        code = code or 1
    return code


def check_errors_exit(report: Report) -> int:
    """One stderr line per check that ended in ``error``; the exit code they call for.

    Every check has run and the report is written by now; the code tells a CI job that the audit
    is incomplete: 3 when a check crashed (an internal failure, its traceback is in the report),
    2 when checks only refused bad input (e.g. NaN weights), 0 when none errored.
    """
    errored = [r for r in report.checks if r.status == "error"]
    for r in errored:
        print(f"edgeproof: error: {r.check}: {r.error}", file=sys.stderr)
    if not errored:
        return 0
    return 3 if any(r.crashed for r in errored) else 2
