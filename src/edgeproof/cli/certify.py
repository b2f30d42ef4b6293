"""``edgeproof certify``: prove (or refute) robustness of a model on data within ε, by bound
propagation; write the report (the ``certify`` check alone) and say what was proved."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING

from edgeproof.cli import options
from edgeproof.cli.app import formatter

if TYPE_CHECKING:
    from edgeproof.results import CheckResult

__all__ = ["CERTIFY_FLAGS", "name_of", "register", "run"]

_METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")

#: the certify check's settings and the flags that set them (the check's errors name these)
CERTIFY_FLAGS: dict[str, str] = {
    "methods": "--methods",
    "max_samples": "--max-samples",
    "bab_budget_s": "--bab-budget",
    "alpha_iterations": "--alpha-iterations",
    "alpha_intermediate": "--alpha-intermediate",
    "pgd_steps": "--pgd-steps",
    "min_verified": "--min-verified",
}

_EPILOG = textwrap.dedent("""\
    examples:
      edgeproof certify model.safetensors --data builtin:digits --eps 0.01,0.02
      edgeproof certify model.pt --shape 3,32,32 --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26 \\
          --data val.npz --eps 1/255 --methods crown,alpha-crown --bab-budget 5
      edgeproof certify model.safetensors --data val.npz --eps 0.01 --min-verified 0.8  # CI gate

    what is proved: for each sample and ε, that no input in the threat set (the L∞ or L2 ball
    of radius ε around it, in raw input units, clipped to the input domain) changes the
    predicted class: a proved lower bound of f_y − max_{j≠y} f_j that is > 0. falsified: the
    sample is misclassified, or an input in the set (found by PGD or branch-and-bound and
    checked by a forward pass) is misclassified. unknown: neither.

    exit codes: 0 no counterexample and the --min-verified gate (if any) met; 1 a correctly
    classified sample has a counterexample within some ε, or verified accuracy at the largest
    ε is below --min-verified; 2 bad input (also: a model the engine cannot bound); 3 internal
    error""")


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in _METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown bound method(s) {', '.join(bad)}" if bad else "no method given"
        )
    return names


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def _fraction(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "certify",
        help="prove robustness within ε by bound propagation (IBP, CROWN, α-CROWN, BaB)",
        formatter_class=formatter,
        description="Certify MODEL on the samples of --data: per sample and ε, verified "
        "(proved robust), falsified (a checked counterexample) or unknown; writes report.json "
        "+ report.html to --out.",
        epilog=_EPILOG,
    )
    options.add_model(c, help="model file: .safetensors, .pt2, TorchScript .pt, .pt/.pth")
    options.add_data(c, required=True, help="labelled samples to certify (a path or builtin:NAME)")
    g = c.add_argument_group("certification")
    g.add_argument(
        "--methods",
        type=_methods,
        default=("ibp", "crown", "alpha-crown"),
        help="bound methods, comma-separated, from "
        f"{', '.join(_METHODS)} (default ibp,crown,alpha-crown; α-CROWN only where CROWN "
        "leaves a sample open)",
    )
    g.add_argument(
        "--max-samples",
        type=options.at_least(1),
        default=50,
        metavar="N",
        help="certify a seeded subset of at most N samples (default 50)",
    )
    g.add_argument(
        "--bab-budget",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="seconds of branch-and-bound per sample left open (default 0: off; needs a "
        "piecewise-linear model: ReLU, max pooling, linear layers)",
    )
    g.add_argument(
        "--alpha-iterations",
        type=options.at_least(1),
        default=20,
        metavar="N",
        help="α-CROWN optimisation steps (default 20)",
    )
    g.add_argument(
        "--alpha-intermediate",
        action="store_true",
        help="α-CROWN also optimises the intermediate layers' slopes (tighter, ~10x slower)",
    )
    g.add_argument(
        "--pgd-steps",
        type=options.at_least(0),
        default=20,
        metavar="N",
        help="PGD steps of the counterexample search (default 20; 0: no attack)",
    )
    g.add_argument(
        "--min-verified",
        type=_fraction,
        default=None,
        metavar="F",
        help="exit 1 if the verified accuracy at the largest ε is below F (e.g. 0.8)",
    )
    options.add_output(c, default="runs/certify", help="output folder (default runs/certify)")
    options.add_seed(c)
    c.add_argument(
        "--batch-size", type=options.at_least(1), default=256, help="evaluation batch size"
    )
    options.add_threads(c, default="1")
    options.add_quiet(c)
    options.add_spec(c)
    c.set_defaults(handler=run)


def name_of(parameter: str) -> str:
    """The flag of a library parameter in this command's messages."""
    from edgeproof.cli.flags import flag_of

    return CERTIFY_FLAGS.get(parameter.removeprefix("certify.")) or flag_of(parameter)


def run(args: argparse.Namespace) -> int:
    from edgeproof.checks.certify import CertifyCheck
    from edgeproof.errors import OptionError
    from edgeproof.report.files import write_report
    from edgeproof.runner import audit, resolve_threat

    options.check_outputs(
        [options.report_folder(args.out)], [*options.model_inputs(args), args.data]
    )
    try:
        check = CertifyCheck(
            methods=args.methods,
            max_samples=args.max_samples,
            bab_budget_s=args.bab_budget,
            alpha_iterations=args.alpha_iterations,
            alpha_intermediate=args.alpha_intermediate,
            pgd_steps=args.pgd_steps,
        )
    except OptionError as exc:
        print(f"edgeproof: error: {exc.render(name_of)}", file=sys.stderr)
        return exc.exit_code
    model = options.load_model_arg(args)
    data = options.load_data_arg(args, args.data, kind=args.kind)
    threat = resolve_threat(model, data, **options.spec_kwargs(args))
    report = audit(
        model,
        data,
        [check],
        threat=threat,
        seed=args.seed,
        out_dir=args.out,
        batch_size=args.batch_size,
        threads=args.threads,
        progress=not args.quiet,
        name_of=name_of,
    )
    result = report.checks[0]
    if result.status == "skipped":
        # nothing was certified: the model or data cannot be (write nothing, one line)
        print(f"edgeproof: error: certify: {result.skip_reason}", file=sys.stderr)
        return 2
    files = write_report(report, args.out)
    if result.status == "error":
        print(f"edgeproof: error: certify: {result.error}", file=sys.stderr)
        print(f"report: {files.html}")
        return 3 if result.crashed else 2
    broken = _print_verdicts(result, quiet=args.quiet)
    print(f"report: {files.html}")
    code = 0
    if broken:
        print(
            "certify: counterexamples found for correctly classified samples at ε = "
            + ", ".join(f"{e:g}" for e in broken),
            file=sys.stderr,
        )
        code = 1
    verified = result.metric("verified_accuracy").value
    if args.min_verified is not None and verified < args.min_verified:
        print(
            f"certify: verified accuracy {verified:.1%} at the largest ε is below "
            f"--min-verified {args.min_verified:g}",
            file=sys.stderr,
        )
        code = 1
    return code


def _print_verdicts(result: CheckResult, *, quiet: bool) -> list[float]:
    """One line per ε (unless ``quiet``); returns the ε at which a correctly classified sample
    has a counterexample."""
    table = next(t for t in result.tables if t.name == "verdicts")
    col = {c: i for i, c in enumerate(table.columns)}
    norm = result.settings.get("norm", "")
    broken: list[float] = []
    for row in table.rows:
        eps, n = float(row[col["eps"]]), int(row[col["n"]])  # type: ignore[arg-type]
        if int(row[col["counterexamples"]]):  # type: ignore[arg-type]
            broken.append(eps)
        if not quiet:
            print(
                f"{norm} ε={eps:g}: verified {row[col['verified']]}/{n}, falsified "
                f"{row[col['falsified']]} ({row[col['counterexamples']]} counterexamples), "
                f"unknown {row[col['unknown']]}"
            )
    return broken
