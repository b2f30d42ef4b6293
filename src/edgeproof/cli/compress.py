"""``edgeproof compress``: search compression candidates, re-audit each, write the chosen one."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from edgeproof.cli import options
from edgeproof.cli.app import formatter
from edgeproof.errors import OptionError

__all__ = ["parse_drop", "parse_size", "register", "run"]


def parse_drop(text: str) -> float:
    """``"1%"`` → 0.01, ``"0.5%"`` → 0.005, ``"0.02"`` → 0.02 (absolute accuracy drop)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise OptionError(
            "max_drop", f"{text!r} is not a number or percentage", "use e.g. 1% or 0.01"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise OptionError("max_drop", f"{text!r} is outside [0%, 100%]", "use e.g. 1%")
    return value


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


def parse_size(text: str) -> int:
    """``"200KB"`` → 200000, ``"1.5MiB"`` → 1572864, ``"4096"`` → 4096 bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _UNITS:
        raise OptionError("max_size", f"{text!r} is not a size", "use e.g. 200KB, 1.5MiB or 4096")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise OptionError("max_size", f"{text!r} is not positive", "use e.g. 200KB")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="quantize/prune/factor a model, re-audit every candidate, pick one under a budget",
        description="Search compression candidates, measure each on its exported ONNX graph, "
        "re-audit it, and write the chosen one with the whole ledger.",
        epilog="example: edgeproof compress model.safetensors --arch zoo:cnn-lstm "
        "--data builtin:synth-ecg/train --eval builtin:synth-ecg --max-drop 1% "
        "--max-size 200KB --time-budget 120 --early-exit --out runs/c",
        formatter_class=formatter,
    )
    options.add_model(p, help="model file (.safetensors with sidecar, .pt2, TorchScript)")
    options.add_data(p, required=True, help="calibration data (npz/csv/builtin:NAME)")
    p.add_argument(
        "--eval",
        default=None,
        help="evaluation data (default: the part of --data not used to calibrate)",
    )
    p.add_argument("--max-drop", default=None, help="largest accuracy drop allowed, e.g. 1%%")
    p.add_argument("--max-size", default=None, help="largest ONNX size, e.g. 200KB")
    p.add_argument(
        "--time-budget",
        type=options.positive_float,
        default=120.0,
        help="search time in seconds (default 120)",
    )
    options.add_threads(p, default="1")
    options.add_seed(p)
    p.add_argument(
        "--early-exit",
        action="store_true",
        help="also try exit heads at intermediate blocks (zoo backbones), thresholds to --max-drop",
    )
    p.add_argument(
        "--exit-criterion",
        choices=("max-softmax", "entropy"),
        default="max-softmax",
        help="early-exit rule: max-softmax >= tau, or entropy <= T (default max-softmax)",
    )
    options.add_output(p, default=None, help="output folder")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.compress.api import compress, write_artefacts
    from edgeproof.compress.earlyexit import EarlyExitConfig
    from edgeproof.compress.search import Budget
    from edgeproof.errors import param
    from edgeproof.spec import InputSpec

    budget = Budget(
        max_drop=None if args.max_drop is None else parse_drop(args.max_drop),
        max_size=None if args.max_size is None else parse_size(args.max_size),
        time_budget_s=float(args.time_budget),
    )
    loaded = options.load_model_arg(args)
    if loaded.module is None:
        raise OptionError(
            "arch",
            f"{args.model}: compression needs a runnable PyTorch model",
            f"pass {param('arch')} zoo:NAME for a weights-only file",
        )
    data = options.load_data_arg(args, args.data)
    evaluation = options.load_data_arg(args, args.eval) if args.eval else None
    spec = loaded.spec or InputSpec(
        shape=data.sample_shape,
        domain=data.domain or (0.0, 1.0),
        kind=data.kind,  # type: ignore[arg-type]
        num_classes=data.num_classes,
    )
    t0 = time.perf_counter()
    result = compress(
        loaded.module,
        spec,
        data,
        evaluation=evaluation,
        budget=budget,
        threads=args.threads or 1,
        seed=args.seed,
        log=print,
        early_exit=EarlyExitConfig(criterion=args.exit_criterion.replace("-", "_"))
        if args.early_exit
        else None,
    )
    write_artefacts(
        result,
        args.out,
        spec=spec,
        source=str(args.model),
        arch=args.arch or loaded.arch,
        data=data,
        seed=args.seed,
        duration_s=time.perf_counter() - t0,
    )
    print(result.selection.message)
    print(f"wrote {Path(args.out) / 'model.onnx'} and the ledger in {args.out}")
    return 0
