"""The ``edgeproof`` command line: a thin shell over the library.

Every option maps onto one library argument. Exit codes: 0 ok; 1 a policy threshold or an
integrity verification failed; 2 bad input or usage (one line, no traceback unless ``--debug``);
3 an internal failure (a bug: rerun with ``--debug`` and report the traceback). An audit whose
checks all ran still exits 2 (or 3) when one of them refused its input (crashed), after writing
the report and naming each such check on stderr.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgeproof._version import __version__
from edgeproof.errors import EdgeproofError, OptionError

if TYPE_CHECKING:
    from edgeproof.report.report import Report

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit code 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _csv_ints(option: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OptionError(
            option, f"{text!r} is not a comma-separated list of integers", "use e.g. 3,32,32"
        ) from None


def _csv_floats(option: str, text: str, n: int) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != n:
        raise OptionError(option, f"{text!r} is not {n} comma-separated numbers", "use e.g. 0,1")
    return vals


def _add_input_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input specification (inferred from metadata and data when omitted)")
    g.add_argument("--shape", help="sample shape without batch, e.g. 1,8,8")
    g.add_argument("--domain", help="value domain lo,hi of valid inputs, e.g. 0,1")
    g.add_argument(
        "--kind", choices=["image", "timeseries", "tabular"], help="kind of input signal"
    )
    g.add_argument("--norm", default="linf", help="threat-model norm: linf or l2 (default linf)")
    g.add_argument(
        "--eps",
        help="perturbation budgets, comma-separated, e.g. 0.01,2/255 "
        "(default: 1%%, 3%%, 10%% of the domain width)",
    )


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data files")
    g.add_argument("--x-key", default="x", help="array name of inputs in .npz (default x)")
    g.add_argument("--y-key", default="y", help="array name of labels in .npz (default y)")
    g.add_argument("--label-column", default="label", help="label column in .csv (default label)")
    g.add_argument("--classes", help="comma-separated class names, in label order")


def _load_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Model, data and threat model from the audit options."""
    from edgeproof.data.loading import load_data
    from edgeproof.models.loading import load_model
    from edgeproof.runner import resolve_threat
    from edgeproof.spec import parse_eps_list

    model = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle)
    data = None
    if args.data:
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        data = load_data(
            args.data,
            x_key=args.x_key,
            y_key=args.y_key,
            label_column=args.label_column,
            classes=classes,
            kind=args.kind,
        )
        data.validate()
    if args.norm not in ("linf", "l2"):
        raise OptionError("--norm", f"unknown norm {args.norm!r}", "use linf or l2")
    threat = resolve_threat(
        model,
        data,
        shape=_csv_ints("--shape", args.shape) if args.shape else None,
        domain=_csv_floats("--domain", args.domain, 2) if args.domain else None,  # type: ignore[arg-type]
        kind=args.kind,
        norm=args.norm,
        eps=parse_eps_list(args.eps) if args.eps else None,
    )
    return model, data, threat


def _cmd_audit(args: argparse.Namespace) -> int:
    from edgeproof.report.files import write_report
    from edgeproof.report.terminal import print_summary
    from edgeproof.runner import audit

    policy = None
    if args.policy:
        from edgeproof.policy import load_policy

        policy = load_policy(args.policy)  # bad policy fails before any work is done
    baseline = None
    if args.baseline:
        from edgeproof.report.report import Report

        baseline = Report.read_json(args.baseline)
    checks = [c.strip() for c in args.checks.split(",") if c.strip()] if args.checks else None
    model, data, threat = _load_inputs(args)
    report = audit(
        model,
        data,
        checks,
        threat=threat,
        seed=args.seed,
        out_dir=args.out,
        batch_size=args.batch_size,
        progress=not args.quiet,
        baseline=baseline,
    )
    if policy is not None:
        report.policy = policy.apply(report)
    files = write_report(report, args.out)
    if not args.quiet:
        print_summary(report)
    print(f"report: {files.html}")
    code = _check_errors_exit(report)
    if report.policy is not None and not report.policy.passed:
        failed = [r.message for r in report.policy.rules if not r.passed]
        print("policy failed: " + "; ".join(failed), file=sys.stderr)
        code = code or 1
    return code


def _check_errors_exit(report: Report) -> int:
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from edgeproof.demo import run_demo
    from edgeproof.report.terminal import print_summary

    result = run_demo(args.out, progress=not args.quiet, seed=args.seed, threads=args.torch_threads)
    if not args.quiet:
        print_summary(result.report)
    how = "cached" if result.cached else f"trained in {result.train_seconds:.1f} s"
    print(f"model: {result.model_path} ({how})")
    print(f"report: {result.files.html}")
    return _check_errors_exit(result.report)


def _cmd_checks(args: argparse.Namespace) -> int:
    from edgeproof.checks import available_checks, get_check

    for name in available_checks():
        c = get_check(name)
        needs = [
            n
            for n, flag in (
                ("data", c.needs_data),
                ("forward", c.needs_forward),
                ("gradients", c.needs_gradients),
                ("architecture", c.needs_architecture),
            )
            if flag
        ]
        print(f"{name:14s} {c.title}  (needs: {', '.join(needs) or 'weights only'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgeproof",
        formatter_class=_formatter,
        description="Prepare trained PyTorch models for deployment where failure is expensive.",
        epilog=textwrap.dedent("""\
            examples:
              edgeproof demo
              edgeproof audit model.safetensors --arch zoo:resnet20 --data val.npz --out runs/a
              edgeproof audit weights.safetensors            # data-free checks only

            exit codes: 0 ok, 1 policy/verification failed, 2 bad input (also: a check
            refused its input; the report is still written), 3 internal error"""),
    )
    parser.add_argument("--version", action="version", version=f"edgeproof {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--threads",
        dest="torch_threads",
        type=int,
        help="torch intra-op threads (default: torch's; the demo uses 1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    a = sub.add_parser(
        "audit",
        help="audit a model (and data) with every applicable check",
        formatter_class=_formatter,
        description="Load MODEL, plan the checks its format and the data allow, run them, "
        "and write report.json + report.html to --out.",
        epilog=textwrap.dedent("""\
            examples:
              edgeproof audit model.safetensors --arch zoo:resnet20 --data val.npz --out runs/a
              edgeproof audit model.pt2 --data builtin:digits --checks performance,calibration
              edgeproof audit model.onnx --data val.npz --policy policy.toml  # CI gate
              edgeproof audit weights.safetensors              # data-free checks only

            policy.toml:
              [thresholds]
              "performance.accuracy" = ">= 0.95"
              "calibration.ece" = "<= 0.05\""""),
    )
    a.add_argument("model", help="model file: .safetensors, .pt2, TorchScript .pt, .onnx, .pt/.pth")
    a.add_argument("--arch", help="architecture for weights: zoo:NAME or package.module:callable")
    a.add_argument(
        "--data",
        help="validation data: .npz, .csv, image folder, IDX, CIFAR-10 "
        "binary, or builtin:digits / builtin:breast-cancer",
    )
    a.add_argument(
        "--checks",
        help="comma-separated check names (default: all applicable; see `edgeproof checks`)",
    )
    a.add_argument("--out", default="runs/audit", help="output folder (default runs/audit)")
    a.add_argument("--policy", help="TOML file of metric thresholds; exit 1 if any fails")
    a.add_argument(
        "--baseline",
        help="report.json of a sealed baseline audit: flag per-class "
        "accuracy shifts (poisoning symptom)",
    )
    a.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling .pt/.pth files (executes code from the file!)",
    )
    a.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    a.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    a.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    _add_input_options(a)
    _add_data_options(a)
    a.set_defaults(handler=_cmd_audit)

    d = sub.add_parser(
        "demo",
        help="train (or reuse) a zoo CNN on built-in digits and audit it",
        formatter_class=_formatter,
        description="The main job on the built-in model and data: trains a LeNet-5 on "
        "builtin:digits/train (cached after the first run), audits it on the test "
        "split with every applicable check, and writes the report.",
        epilog="example:\n  edgeproof demo --out runs/demo",
    )
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--seed", type=int, default=0, help="audit seed (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    d.set_defaults(handler=_cmd_demo)

    c = sub.add_parser(
        "checks",
        help="list the available checks and what they need",
        epilog="example:\n  edgeproof checks",
        formatter_class=_formatter,
    )
    c.set_defaults(handler=_cmd_checks)

    for add in _area_commands():
        add(sub)
    return parser


def _area_commands() -> list[Any]:
    """Subcommands contributed by the library's areas (train, seal, compress, ...)."""
    from edgeproof.compress.commands import add_commands as compress_commands
    from edgeproof.diagnostics.commands import add_commands as diagnostics_commands
    from edgeproof.integrity.commands import add_commands as integrity_commands
    from edgeproof.models.commands import add_commands as models_commands

    return [models_commands, compress_commands, diagnostics_commands, integrity_commands]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(args.debug)
    try:
        if args.torch_threads is not None:
            if args.torch_threads < 1:
                raise OptionError("--threads", f"{args.torch_threads} is not a positive integer")
            import torch

            torch.set_num_threads(args.torch_threads)
        code: int = args.handler(args)
        return code
    except EdgeproofError as exc:
        if debug:
            raise
        print(f"edgeproof: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeproof: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal failure: one line, traceback with --debug
        if debug:
            raise
        print(
            f"edgeproof: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
