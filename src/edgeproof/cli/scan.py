"""``edgeproof scan``: scan every model in a folder for a backdoor; a CI gate.

A thin shell over :func:`edgeproof.scan.scan_folder`. Prints the models ranked by threshold ratio
(one line each), lists the files it could not scan with the reason, writes ``report.json`` and
``report.html`` to ``--out``. Exit codes: 1 when a model is over a detector's threshold, 2 on bad
input (not a folder, a folder without model files, bad options) and also when no file of the
folder could be scanned, 3 when the scan of a model crashed (an internal failure), 0 otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from edgeproof.cli import options
from edgeproof.cli.app import formatter
from edgeproof.errors import OptionError

if TYPE_CHECKING:
    from edgeproof.scan import ModelScan, ScanReport

__all__ = ["parse_overrides", "register", "run"]

_DETECTORS = ("final-layer", "head-probe", "freeeagle")  # edgeproof.methods.backdoor's, unimported

_EPILOG = textwrap.dedent("""\
    examples:
      edgeproof scan models/ --out runs/scan                 # data-free detectors, every model
      edgeproof scan models/ --data clean.npz --jobs 4       # + Neural Cleanse and STRIP
      edgeproof scan models/ --threshold final-layer=3.0     # decide final-layer at 3.0
      edgeproof scan models/ --executor ray --ray-address 10.0.0.5:6379   # on a Ray cluster

    exit codes: 0 no model flagged, 1 a model is over a threshold (CI gate), 2 bad input
    (not a folder, no model file, no file could be scanned), 3 a model's scan crashed""")


def parse_overrides(text: str) -> dict[str, float]:
    """``"final-layer=3,head-probe=5.5"`` → ``{"final-layer": 3.0, "head-probe": 5.5}``."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        det, sep, value = part.partition("=")
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if not sep or det.strip() not in _DETECTORS or not math.isfinite(v):
            raise OptionError(
                "threshold_overrides",
                f"{part!r} is not DETECTOR=NUMBER with DETECTOR one of {', '.join(_DETECTORS)}",
                "use e.g. final-layer=3.0,head-probe=5",
            )
        out[det.strip()] = v
    return out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scan",
        help="scan every model in a folder for a backdoor (ranked table, CI gate)",
        formatter_class=formatter,
        description="Load every model file in DIR (.safetensors with or without sidecar, "
        ".pt2, TorchScript, .onnx, state-dict .pt), run the data-free backdoor detectors on "
        "each in parallel worker processes (and Neural Cleanse + STRIP with --data), compare "
        "each score with the threshold calibrated for the model's architecture, and rank the "
        "models. Files that cannot be scanned are listed with the reason; the scan goes on.",
        epilog=_EPILOG,
    )
    p.add_argument("folder", metavar="DIR", help="folder of model files (not searched recursively)")
    options.add_data(
        p,
        help="clean samples (.npz, .csv, image folder, builtin:NAME): Neural Cleanse and STRIP "
        "run on the models whose input shape they fit",
    )
    options.add_output(p, default="runs/scan", help="output folder (default runs/scan)")
    p.add_argument(
        "--jobs",
        type=options.at_least(1),
        default=None,
        metavar="N",
        help="workers, one torch thread each (default: the available cores)",
    )
    options.add_executor(p, per="model", default="processes")
    p.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="finished results, keyed by each file's bytes, the data, the settings and the "
        "edgeproof version: a repeated scan rescans only what changed, an interrupted one "
        "resumes (default OUT/cache)",
    )
    p.add_argument("--no-cache", action="store_true", help="rescan every model, keep no cache")
    p.add_argument(
        "--detectors",
        default=",".join(_DETECTORS),
        help=f"comma-separated data-free detectors (default {','.join(_DETECTORS)})",
    )
    p.add_argument(
        "--threshold",
        metavar="DET=VALUE,...",
        help="decide these detectors at these scores on every architecture instead of the "
        "calibrated thresholds, e.g. final-layer=3.0",
    )
    p.add_argument(
        "--thresholds",
        metavar="FILE",
        help="a recalibrated thresholds file (as benchmarks/bench_backdoor.py writes) instead of "
        "the shipped one",
    )
    p.add_argument(
        "--freeeagle-steps",
        type=options.at_least(1),
        default=1000,
        help="FreeEagle optimisation steps per class (default 1000)",
    )
    p.add_argument(
        "--nc-epochs",
        type=options.at_least(1),
        default=20,
        help="Neural Cleanse epochs per class with --data (default 20, at most 30 s per model)",
    )
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="the files may run code: TorchScript outside the pure-tensor allowlist, full "
        "unpickling (only for files you trust)",
    )
    p.add_argument("--trust-pickle", action="store_true", help="the same as --trust-code")
    options.add_seed(p)
    options.add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.cli.flags import flag_of
    from edgeproof.report.scan import write_scan_report
    from edgeproof.runtime.threads import available_cores
    from edgeproof.scan import scan_folder

    options.check_outputs(
        [options.report_folder(args.out)], [args.folder, args.data, args.thresholds]
    )
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    overrides = parse_overrides(args.threshold) if args.threshold else None
    thresholds = None
    if args.thresholds:
        from edgeproof.methods.backdoor import load_thresholds

        thresholds = load_thresholds(args.thresholds)
    clean = options.load_data_arg(args, args.data) if args.data else None

    def progress(m: ModelScan) -> None:
        if not args.quiet:
            flag = " FLAGGED" if m.flagged else ""
            print(f"  {m.file}: {m.status}{flag} ({m.duration_s:.2f} s)", file=sys.stderr)

    report = scan_folder(
        args.folder,
        clean=clean,
        jobs=args.jobs or available_cores(),
        executor=args.executor,
        ray_address=args.ray_address,
        cache=None if args.no_cache else (args.cache or str(Path(args.out) / "cache")),
        detectors=detectors,
        thresholds=thresholds,
        threshold_overrides=overrides,
        freeeagle_steps=args.freeeagle_steps,
        nc_epochs=args.nc_epochs,
        trust_code=bool(args.trust_code or args.trust_pickle),
        seed=args.seed,
        progress=progress,
        name_of=flag_of,
    )
    files = write_scan_report(report, args.out)
    print_ranking(report)
    for r in report.truth_rows():
        tpr = "-" if r["tpr"] is None else f"{r['true_positives']}/{r['backdoored']}"
        fpr = "-" if r["fpr"] is None else f"{r['false_positives']}/{r['clean']}"
        auc = "-" if r["auroc"] is None else f"{r['auroc']:.2f}"
        print(f"population.json labels: {r['detector']}: TPR {tpr}, FPR {fpr}, AUROC {auc}")
    print(f"report: {files.html}")
    for note in report.notes:
        if "cache" in note:
            print(f"edgeproof: {note}", file=sys.stderr)
    for m in report.not_scanned:
        print(f"edgeproof: not scanned: {m.file}: {m.status}: {m.reason}", file=sys.stderr)
    if not report.scanned:
        print(
            f"edgeproof: error: no model in {args.folder} could be scanned "
            f"({len(report.models)} file(s), see above)",
            file=sys.stderr,
        )
        return 2
    if report.crashed:
        return 3
    return 1 if report.flagged else 0


def print_ranking(report: ScanReport) -> None:
    """The ranked table on stdout: one line per model, grouped counts after it."""
    dets = list(report.settings.detectors)
    head = ["#", "model", "architecture", "ratio", "flagged by", "target", *dets]
    rows: list[list[str]] = []
    for i, m in enumerate(report.scanned, 1):
        scores = {v.result.detector: v.result.score for v in m.verdicts}
        t = m.suspected_target
        rows.append(
            [
                str(i),
                m.file,
                m.group,
                _fmt(m.ratio),
                ",".join(m.flagged_by) or "-",
                "-" if t is None else m.classes[t],
                *[_fmt(scores.get(d)) for d in dets],
            ]
        )
    widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    groups = report.groups()
    print(
        f"{len(report.scanned)} scanned ({len(groups)} architecture(s): "
        + ", ".join(f"{g} {len(ms)}" for g, ms in groups.items())
        + f"), {len(report.flagged)} flagged, {len(report.not_scanned)} not scanned"
    )


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if v == math.inf else f"{v:.3g}"
