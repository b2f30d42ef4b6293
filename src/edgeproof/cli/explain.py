"""``edgeproof explain``: attribution maps with their sanity tests, as a report.

A thin shell over :func:`edgeproof.explain.explain`; writes ``report.json`` and ``report.html``
(per-class mean maps, a few per-sample maps, completeness gaps, sanity verdicts) to ``--out``.
Bad choices (a target class outside the model's classes, ``--n-steps`` ≤ 0, a baseline of the
wrong shape) are one line, exit 2, before any work. Exits like ``audit`` otherwise.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from edgeproof.cli import options
from edgeproof.cli.app import formatter
from edgeproof.errors import OptionError

__all__ = ["parse_baseline", "parse_tolerance", "register", "run"]

_EPILOG = textwrap.dedent("""\
    examples:
      edgeproof explain model.safetensors --data builtin:digits --out runs/x
      edgeproof explain model.safetensors --data val.npz --methods integrated_gradients,occlusion \\
          --target 3 --n-steps 32 --tolerance 0.005
      edgeproof explain model.onnx --data val.npz      # gradient-free methods only

    methods: integrated_gradients, smoothgrad, gradient_shap, occlusion (images, time series),
    frequency_occlusion (time series), feature_ablation, kernel_shap (tabular)""")


def parse_tolerance(text: str) -> float | None:
    """``"0.01"`` → 0.01; ``"none"`` → ``None`` (IG runs ``--n-steps`` once)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise OptionError(
            "tolerance", f"{text!r} is not a positive number or none", "use e.g. 0.01"
        )
    return value


def parse_baseline(text: str) -> Any:
    """A number (the baseline everywhere) or a ``.npy`` / ``.npz`` file holding one sample."""
    try:
        return float(text)
    except ValueError:
        pass
    from pathlib import Path

    import numpy as np

    p = Path(text)
    if p.suffix not in (".npy", ".npz") or not p.is_file():
        raise OptionError(
            "baseline",
            f"{text!r} is neither a number nor an existing .npy/.npz file",
            "give e.g. 0, or a .npy file holding one sample",
        )
    try:
        loaded = np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            with loaded:
                return np.asarray(loaded[loaded.files[0]], dtype=np.float32)
        return np.asarray(loaded, dtype=np.float32)
    except (OSError, ValueError, IndexError) as exc:
        raise OptionError("baseline", f"{p}: not a readable array ({exc})") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "explain",
        help="attribution maps (IG, SmoothGrad, GradientSHAP, occlusion, ...) with sanity tests",
        formatter_class=formatter,
        description="Explain MODEL's class scores on --data with the attribution methods that "
        "fit the data, report Integrated Gradients' completeness gap, and run Adebayo et al.'s "
        "randomisation sanity tests (a method that fails them is flagged, its maps not shown).",
        epilog=_EPILOG,
    )
    options.add_model(p, help="model file: .safetensors, .pt2, TorchScript .pt, .onnx")
    options.add_data(p, required=True, help="samples to explain (npz/csv/image folder/builtin)")
    p.add_argument("--methods", help="comma-separated methods (default: those that fit the data)")
    p.add_argument(
        "--target",
        type=options.at_least(0),
        default=None,
        help="explain this class index for every sample (default: the predicted class)",
    )
    p.add_argument(
        "--n-steps",
        type=int,
        default=16,
        help="Integrated Gradients steps (the start when --tolerance is set; default 16)",
    )
    p.add_argument(
        "--tolerance",
        default="0.01",
        help="IG completeness tolerance |δ|/|f(x)-f(x0)|, steps doubled until met (up to 256); "
        "none: run --n-steps once (default 0.01)",
    )
    p.add_argument(
        "--samples",
        type=options.at_least(1),
        default=64,
        help="samples explained, a seeded subset (default 64)",
    )
    p.add_argument(
        "--baseline",
        metavar="NUMBER|FILE",
        help="reference input of IG/occlusion: a number, or a .npy holding one sample "
        "(default: the low end of the domain for images, zero for time series, the feature "
        "mean for tabular data)",
    )
    p.add_argument("--no-sanity", action="store_true", help="skip the randomisation sanity tests")
    options.add_output(p, default="runs/explain", help="output folder (default runs/explain)")
    options.add_seed(p)
    options.add_threads(p, default="1")
    options.add_quiet(p)
    options.add_spec(p, threat=False)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.cli.audit import check_errors_exit
    from edgeproof.cli.flags import flag_of
    from edgeproof.explain import explain
    from edgeproof.report.files import write_report
    from edgeproof.runner import resolve_threat

    baseline_file = args.baseline if args.baseline and _is_path(args.baseline) else None
    options.check_outputs(
        [options.report_folder(args.out)],
        [*options.model_inputs(args), args.data, baseline_file],
    )
    if args.n_steps < 1:
        raise OptionError("n_steps", f"{args.n_steps} must be >= 1", "use e.g. 16")
    tolerance = parse_tolerance(args.tolerance)
    baseline = parse_baseline(args.baseline) if args.baseline else None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    model = options.load_model_arg(args)
    data = options.load_data_arg(args, args.data, kind=args.kind)
    threat = resolve_threat(model, data, **options.spec_kwargs(args))
    report = explain(
        model,
        data,
        methods=methods,
        target=args.target,
        n_steps=args.n_steps,
        tolerance=tolerance,
        samples=args.samples,
        baseline=baseline,
        sanity=not args.no_sanity,
        threat=threat,
        seed=args.seed,
        threads=args.threads or 1,
        progress=not args.quiet,
        name_of=flag_of,
    )
    files = write_report(report, args.out)
    res = report.checks[0]
    if not args.quiet:
        print(f"attribution: {res.status}: {res.summary or res.skip_reason or res.error}")
        for f in res.findings:
            if f.severity != "info" or "skipped" in f.message:
                print(f"  [{f.severity}] {f.message}")
    print(f"report: {files.html}")
    return check_errors_exit(report)


def _is_path(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False
