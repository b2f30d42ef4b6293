"""Compression as a library call: search candidates, select one, write it and its ledger.

:func:`compress` returns a :class:`CompressionResult`; ``edgeproof compress``
(:mod:`edgeproof.cli.compress`) maps each option onto one of its arguments.
:func:`write_artefacts` writes, atomically, into ``out``:

* ``model.onnx`` — the chosen candidate's graph (QDQ for quantized candidates);
* ``model.safetensors`` — its PyTorch state dict (for quantized candidates: the dequantized
  weights of the simulation) with the standard edgeproof metadata;
* ``compress.json`` — chosen candidate, budget, selection message and the whole ledger;
* ``report.json`` (+ ``report.html`` when the HTML renderer is available) — a Report with one
  ``compress`` check holding the ledger table and the Pareto figure.
"""

from __future__ import annotations

import json
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
from edgeproof.errors import SpecError, param
from edgeproof.results import CheckResult, Finding
from edgeproof.spec import InputSpec, ThreatModel

__all__ = ["CompressionResult", "compress", "write_artefacts"]


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
            f"{param('data')}: {data.name} has {n} records; compression needs at least 4 "
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
            f"{param('data')}: {data.name} has sample shape {data.sample_shape} but the model "
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
