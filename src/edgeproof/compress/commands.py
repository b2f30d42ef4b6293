"""``edgeproof compress``: search compression candidates, write the chosen one and its ledger.

Library entry point: :func:`compress` (returns a :class:`CompressionResult`); the CLI handler maps
each option onto one of its arguments. Artefacts written atomically to ``--out``:

* ``model.onnx`` — the chosen candidate's graph (QDQ for quantized candidates);
* ``model.safetensors`` — its PyTorch state dict (for quantized candidates: the dequantized
  weights of the simulation) with the standard edgeproof metadata;
* ``compress.json`` — chosen candidate, budget, selection message and the whole ledger;
* ``report.json`` (+ ``report.html`` when the HTML renderer is available) — a Report with one
  ``compress`` check holding the ledger table and the Pareto figure.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeproof.atomic import atomic_write_bytes, atomic_write_text
from edgeproof.compress.earlyexit import EarlyExitConfig
from edgeproof.compress.ledger import Ledger, Selection, summary_metrics
from edgeproof.compress.search import TRUST_CHECKS, Budget, CandidateRecipe, search
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.results import CheckResult, Finding
from edgeproof.spec import InputSpec, ThreatModel

__all__ = [
    "CompressionResult",
    "add_commands",
    "compress",
    "parse_drop",
    "parse_size",
    "write_artefacts",
]


def parse_drop(text: str) -> float:
    """``"1%"`` → 0.01, ``"0.5%"`` → 0.005, ``"0.02"`` → 0.02 (absolute accuracy drop)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise OptionError(
            "--max-drop", f"{text!r} is not a number or percentage", "use e.g. 1% or 0.01"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise OptionError("--max-drop", f"{text!r} is outside [0%, 100%]", "use e.g. 1%")
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
        raise OptionError("--max-size", f"{text!r} is not a size", "use e.g. 200KB, 1.5MiB or 4096")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise OptionError("--max-size", f"{text!r} is not positive", "use e.g. 200KB")
    return value


@dataclass
class CompressionResult:
    """The ledger, the selection and the chosen module."""

    ledger: Ledger
    selection: Selection
    module: nn.Module
    onnx_bytes: bytes
    budget: Budget


def _split(data: Dataset, calib_size: int) -> tuple[Dataset, Dataset]:
    n = len(data)
    if n < 4:
        raise SpecError(
            f"--data: {data.name} has {n} records; compression needs at least 4 "
            "(half calibrate, half evaluate)"
        )
    k = min(calib_size, n // 2)
    return data.subset(np.arange(k)), data.subset(np.arange(k, n))


def compress(
    module: nn.Module,
    spec: InputSpec,
    data: Dataset,
    *,
    evaluation: Dataset | None = None,
    budget: Budget | None = None,
    threads: int = 1,
    calib_size: int = 256,
    checks: tuple[str, ...] = TRUST_CHECKS,
    seed: int = 0,
    recipes: list[CandidateRecipe] | None = None,
    log: Callable[[str], None] | None = None,
    early_exit: EarlyExitConfig | None = None,
) -> CompressionResult:
    """Search, measure and select: the library form of ``edgeproof compress``.

    Without ``evaluation`` the first ``min(calib_size, N/2)`` records of ``data`` calibrate and
    the rest evaluate (so calibration and evaluation never share a record). ``early_exit`` adds
    an early-exit candidate (heads fitted and thresholds calibrated on the calibration part).
    """
    budget = budget or Budget()
    if tuple(data.sample_shape) != tuple(spec.shape):
        raise SpecError(
            f"--data: {data.name} has sample shape {data.sample_shape} but the model "
            f"expects {spec.shape}; pass data shaped like the model input"
        )
    if evaluation is None:
        calib, evaluation = _split(data, calib_size)
    else:
        calib = data.subset(np.arange(min(calib_size, len(data))))
    ledger = search(
        module,
        spec,
        calib,
        evaluation,
        budget,
        threads=threads,
        checks=checks,
        seed=seed,
        recipes=recipes,
        log=log,
        early_exit=early_exit,
    )
    sel = ledger.select(budget.max_drop, budget.max_size)
    built = ledger.artefacts[sel.chosen.name]
    return CompressionResult(ledger, sel, built.module, built.onnx_bytes, budget)


def write_artefacts(
    result: CompressionResult,
    out: str | Path,
    *,
    spec: InputSpec,
    source: str,
    arch: str | None,
    data: Dataset,
    seed: int = 0,
    duration_s: float = 0.0,
) -> list[Path]:
    """Write model.onnx, model.safetensors, compress.json and report.json (+ html) atomically."""
    from safetensors.torch import save as st_save

    from edgeproof.report.report import Report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sel = result.selection
    meta = {
        "format": "edgeproof-compressed",
        "source_model": source,
        "arch": arch,
        "candidate": sel.chosen.to_json(),
        "budget": {
            "max_drop": result.budget.max_drop,
            "max_size": result.budget.max_size,
            "time_budget_s": result.budget.time_budget_s,
        },
        "met_budget": sel.met_budget,
        "selection": sel.message,
        "spec": spec.to_json(),
        "ledger": result.ledger.to_json(),
    }
    paths = [atomic_write_bytes(out / "model.onnx", result.onnx_bytes)]
    tensors = {
        k: v.detach().cpu().contiguous().clone()
        for k, v in result.module.state_dict().items()
        if isinstance(v, torch.Tensor)
    }
    blob = st_save(
        tensors,
        metadata={
            "edgeproof": json.dumps(
                {"candidate": sel.chosen.name, "spec": spec.to_json(), "arch": arch}
            )
        },
    )
    paths.append(atomic_write_bytes(out / "model.safetensors", blob))
    paths.append(atomic_write_text(out / "compress.json", json.dumps(meta, indent=2, default=str)))
    ledger = result.ledger
    check = CheckResult(
        check="compress",
        title="Compression ledger",
        status="ok",
        summary=sel.message,
        metrics=summary_metrics(sel, ledger.baseline),
        findings=[
            Finding(
                "info" if sel.met_budget else "warning", sel.message, {"chosen": sel.chosen.name}
            )
        ]
        + [Finding("info", s) for s in ledger.skipped],
        tables=[ledger.table()],
        figures=[ledger.pareto_figure()],
        settings={
            "threads": sel.chosen.threads,
            "max_drop": result.budget.max_drop,
            "max_size": result.budget.max_size,
        },
        duration_s=duration_s,
    )
    report = Report(
        model={"path": source, "arch": arch, "chosen": sel.chosen.name},
        data=data.to_json(),
        threat=ThreatModel(spec).to_json(),
        checks=[check],
        seed=seed,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=duration_s,
    )
    try:
        paths.append(report.write_json(out / "report.json"))
    except Exception as exc:  # schema mismatch: keep the artefacts, say why the report is missing
        paths.append(
            atomic_write_text(out / "report.error.txt", f"report.json not written: {exc}\n")
        )
    try:
        from edgeproof.report.html import write_html

        paths.append(write_html(report, out / "report.html"))
    except ImportError:
        pass
    return paths


def _handler(args: argparse.Namespace) -> int:
    from edgeproof.data.loading import load_data
    from edgeproof.models.loading import load_model

    budget = Budget(
        max_drop=None if args.max_drop is None else parse_drop(args.max_drop),
        max_size=None if args.max_size is None else parse_size(args.max_size),
        time_budget_s=float(args.time_budget),
    )
    if args.threads < 1:
        raise OptionError("--threads", f"{args.threads} is not >= 1", "use e.g. 1")
    loaded = load_model(args.model, arch=args.arch)
    if loaded.module is None:
        raise OptionError(
            "--arch",
            f"{args.model}: compression needs a runnable PyTorch model",
            "pass --arch zoo:NAME for a weights-only file",
        )
    data = load_data(args.data)
    evaluation = load_data(args.eval) if args.eval else None
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
        threads=args.threads,
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
        arch=args.arch,
        data=data,
        seed=args.seed,
        duration_s=time.perf_counter() - t0,
    )
    print(result.selection.message)
    print(f"wrote {Path(args.out) / 'model.onnx'} and the ledger in {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``edgeproof compress``."""
    p = sub.add_parser(
        "compress",
        help="quantize/prune/factor a model, re-audit every candidate, pick one under a budget",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="example: edgeproof compress model.safetensors --arch zoo:cnn-lstm "
        "--data builtin:synth-ecg/train --eval builtin:synth-ecg --max-drop 1% "
        "--max-size 200KB --time-budget 120 --early-exit --out runs/c",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model file (.safetensors with sidecar, .pt2, TorchScript)")
    p.add_argument("--data", required=True, help="calibration data (npz/csv/builtin:NAME)")
    p.add_argument(
        "--eval",
        default=None,
        help="evaluation data (default: the part of --data not used to calibrate)",
    )
    p.add_argument("--arch", default=None, help="architecture for weights-only files (zoo:NAME)")
    p.add_argument("--max-drop", default=None, help="largest accuracy drop allowed, e.g. 1%%")
    p.add_argument("--max-size", default=None, help="largest ONNX size, e.g. 200KB")
    p.add_argument("--time-budget", type=float, default=120.0, help="search time in seconds")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for latency")
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(handler=_handler)
