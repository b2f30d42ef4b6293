"""The compression search: build candidates under a time budget, measure each, select one.

Candidates are tried cheapest-first (int8 with each calibration method, weight-only int8/int4,
unstructured / 2:4 / elimination–compensation pruning followed by int8, structured channel removal,
Marchenko–Pastur low-rank, then their int8 versions; these "+int8" candidates use
``calibration="auto"``, the range method chosen on the calibration records alone). The search stops
*starting* new candidates once ``time_budget_s`` has elapsed; what was built is kept (the baseline
is always measured).

Trust re-audit: for each candidate, the registered checks named in :data:`TRUST_CHECKS` that exist
(``edgeproof.checks.available_checks()``) are run on an ``AuditContext`` built with
``edgeproof.models.loading.from_module(candidate_module, spec)``; missing checks are skipped with
a note in the ledger. Quantized candidates are audited through their PyTorch fake-quant simulation,
with a clipped straight-through estimator for the activation rounding so gradient attacks are not
masked (:func:`edgeproof.compress.ledger.reaudit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from edgeproof.compress.ledger import (
    Candidate,
    Ledger,
    per_class_accuracy,
)
from edgeproof.compress.lowrank import factorize_lowrank
from edgeproof.compress.onnx_export import export_onnx
from edgeproof.compress.prune import prune_n_m, prune_unstructured, remove_channels
from edgeproof.compress.quantize import QuantConfig, fold_batchnorm, quantize
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.methods.stats import wilson_interval
from edgeproof.results import Metric
from edgeproof.runtime.memory import probe_peak_rss_mib
from edgeproof.runtime.ort import make_session, run_session, session_latency
from edgeproof.spec import InputSpec

if TYPE_CHECKING:
    from edgeproof.compress.earlyexit import EarlyExitConfig

__all__ = ["TRUST_CHECKS", "Budget", "Built", "CandidateRecipe", "default_recipes", "search"]

TRUST_CHECKS: tuple[str, ...] = ("calibration", "adversarial", "bitflip", "certify")


@dataclass(frozen=True)
class Budget:
    """The user's budget: accuracy drop (absolute, fraction), size (bytes), search time (s)."""

    max_drop: float | None = None
    max_size: int | None = None
    time_budget_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise OptionError("max_drop", f"{self.max_drop} is not in [0, 1]", "use e.g. 1%")
        if self.max_size is not None and self.max_size <= 0:
            raise OptionError(
                "max_size", f"{self.max_size} bytes is not positive", "use e.g. 200KB"
            )
        if not self.time_budget_s > 0:
            raise OptionError(
                "time_budget_s", f"{self.time_budget_s} s is not positive", "use e.g. 120"
            )


@dataclass
class Built:
    """A built candidate before measurement: the torch module and its ONNX graph."""

    module: nn.Module
    onnx_bytes: bytes
    settings: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    parity: object | None = None
    float_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CandidateRecipe:
    """A named way to build a candidate from the baseline module."""

    name: str
    technique: str
    build: Callable[[nn.Module, InputSpec, np.ndarray, np.ndarray], Built]


def _quant(cfg: QuantConfig) -> Callable[[nn.Module, InputSpec, np.ndarray, np.ndarray], Built]:
    def build(m: nn.Module, spec: InputSpec, xc: np.ndarray, xe: np.ndarray) -> Built:
        q = quantize(m, spec.shape, xc, cfg, x_eval=xe)
        notes = [f"left in float: {u.name} ({u.kind}): {u.reason}" for u in q.unquantized]
        if q.calibration_choice is not None:
            kls = ", ".join(f"{k} {v:.3g}" for k, v in q.calibration_choice.kl.items())
            notes.append(
                f"calibration auto → {q.calibration_choice.chosen} (KL to fp32 on the "
                f"calibration records: {kls})"
            )
        return Built(
            q.sim,
            q.onnx_bytes(),
            {
                "scheme": cfg.scheme,
                "calibration": q.config.calibration,
                "group_size": cfg.group_size,
            },
            notes,
            q.parity,
            tuple(f"{f.op_type}:{f.name}" for f in q.float_nodes),
        )

    return build


def _mixed(
    size_fraction: float | None, max_drop: float | None
) -> Callable[[nn.Module, InputSpec, np.ndarray, np.ndarray], Built]:
    """SigmaQuant-style 4/8-bit plan (:mod:`edgeproof.compress.mixed`), executed as a QDQ graph."""

    def build(m: nn.Module, spec: InputSpec, xc: np.ndarray, xe: np.ndarray) -> Built:
        from edgeproof.compress.mixed import allocate_between

        a = allocate_between(m, spec.shape, xc, size_fraction=size_fraction, max_drop=max_drop)
        q = a.quantized
        return Built(
            q.sim,
            q.onnx_bytes(),
            a.settings(),
            [a.message],
            q.parity,
            tuple(f"{f.op_type}:{f.name}" for f in q.float_nodes),
        )

    return build


def _then_int8(
    prep: Callable[[nn.Module, np.ndarray], tuple[nn.Module, dict[str, object], list[str]]],
    quantized: bool,
) -> Callable[[nn.Module, InputSpec, np.ndarray, np.ndarray], Built]:
    def build(m: nn.Module, spec: InputSpec, xc: np.ndarray, xe: np.ndarray) -> Built:
        pm, settings, notes = prep(m, xc)
        if quantized:
            b = _quant(QuantConfig("int8"))(pm, spec, xc, xe)
            b.settings.update(settings)
            b.notes[:0] = notes
            return b
        onnx_model = export_onnx(fold_batchnorm(pm), spec.shape)
        return Built(pm, onnx_model.SerializeToString(), settings, notes)

    return build


def _prep_unstructured(
    ratio: float, method: str
) -> Callable[..., tuple[nn.Module, dict[str, object], list[str]]]:
    def prep(m: nn.Module, xc: np.ndarray) -> tuple[nn.Module, dict[str, object], list[str]]:
        from edgeproof.compress.prune import recalibrate_batchnorm, sparsity

        p = recalibrate_batchnorm(prune_unstructured(m, ratio, method=method, x_calib=xc), xc)
        return (
            p,
            {"sparsity": round(sparsity(p), 4), "prune": method},
            ["dense ONNX storage: zeros are not smaller on disk"],
        )

    return prep


def _prep_nm(m: nn.Module, xc: np.ndarray) -> tuple[nn.Module, dict[str, object], list[str]]:
    from edgeproof.compress.prune import recalibrate_batchnorm

    return (
        recalibrate_batchnorm(prune_n_m(m, 2, 4), xc),
        {"pattern": "2:4"},
        ["dense ONNX storage: 2:4 zeros need a sparse kernel to be faster"],
    )


def _prep_channels(ratio: float) -> Callable[..., tuple[nn.Module, dict[str, object], list[str]]]:
    def prep(m: nn.Module, xc: np.ndarray) -> tuple[nn.Module, dict[str, object], list[str]]:
        gm, done = remove_channels(m, ratio, xc)
        if not done:
            raise OptionError("ratio", "no layer pair can lose channels in this model")
        return (
            gm,
            {"channel_ratio": ratio, "shrunk": [f"{d.producer}->{d.consumer}" for d in done]},
            [],
        )

    return prep


def _prep_lowrank(m: nn.Module, xc: np.ndarray) -> tuple[nn.Module, dict[str, object], list[str]]:
    gm, rep = factorize_lowrank(m)
    factored = [f"{r.name}:{r.rank_kept}/{r.full_rank}" for r in rep if r.factored]
    if not factored:
        raise OptionError("lowrank", "no layer has a Marchenko-Pastur rank that saves parameters")
    return gm, {"factored": factored}, []


def default_recipes() -> list[CandidateRecipe]:
    """The search order, cheapest first."""
    r = [
        CandidateRecipe(f"int8-{c}", "ptq-int8", _quant(QuantConfig("int8", c)))
        for c in ("percentile", "minmax", "mse", "entropy")
    ]
    r += [
        CandidateRecipe("w8", "weight-only-int8", _quant(QuantConfig("w8"))),
        CandidateRecipe("w4g32", "weight-only-int4", _quant(QuantConfig("w4", group_size=32))),
        CandidateRecipe("mixed-s50", "mixed-precision", _mixed(0.5, None)),
        CandidateRecipe("mixed-d1", "mixed-precision", _mixed(None, 0.01)),
        CandidateRecipe(
            "prune50+int8",
            "magnitude-pruning+int8",
            _then_int8(_prep_unstructured(0.5, "magnitude"), True),
        ),
        CandidateRecipe(
            "ec50+int8",
            "elimination-compensation+int8",
            _then_int8(_prep_unstructured(0.5, "ec"), True),
        ),
        CandidateRecipe("2:4+int8", "n:m-pruning+int8", _then_int8(_prep_nm, True)),
        CandidateRecipe("channels25", "channel-removal", _then_int8(_prep_channels(0.25), False)),
        CandidateRecipe(
            "channels25+int8", "channel-removal+int8", _then_int8(_prep_channels(0.25), True)
        ),
        CandidateRecipe(
            "channels50+int8", "channel-removal+int8", _then_int8(_prep_channels(0.5), True)
        ),
        CandidateRecipe("lowrank-mp", "mp-lowrank", _then_int8(_prep_lowrank, False)),
        CandidateRecipe("lowrank-mp+int8", "mp-lowrank+int8", _then_int8(_prep_lowrank, True)),
    ]
    return r


def _trust(
    module: nn.Module, spec: InputSpec, data: Dataset, seed: int, checks: tuple[str, ...]
) -> tuple[list[Metric], list[str]]:
    """Re-audit one candidate: :func:`edgeproof.compress.ledger.reaudit` with its small settings
    (straight-through estimator for the fake-quant rounding, threat reduced to its largest ε)."""
    from edgeproof.compress.ledger import reaudit

    return reaudit(module, spec, data, checks=checks, seed=seed)


def measure(
    name: str,
    technique: str,
    built: Built,
    spec: InputSpec,
    data: Dataset,
    baseline_pc: tuple[float, ...] | None,
    *,
    threads: int,
    checks: tuple[str, ...],
    seed: int,
    build_s: float = 0.0,
    audit_records: int = 200,
) -> Candidate:
    """Measure one built candidate on ``data`` (its ONNX graph in ONNX Runtime)."""
    sess = make_session(built.onnx_bytes, threads=threads)
    logits = run_session(sess, data.x)[0]
    pred = logits.argmax(1)
    k = data.num_classes
    correct = int((pred == data.y).sum())
    pc = per_class_accuracy(pred, data.y, k)
    drift = tuple(a - b for a, b in zip(pc, baseline_pc)) if baseline_pc else tuple(0.0 for _ in pc)
    lat = session_latency(built.onnx_bytes, data.x[0], threads=threads)
    p50, p95 = lat.p50_ms, lat.p95_ms
    rss = probe_peak_rss_mib(built.onnx_bytes, data.x, threads=threads)
    audit = data.subset(np.arange(min(audit_records, len(data))))
    trust, tnotes = _trust(built.module, spec, audit, seed, checks) if checks else ([], [])
    notes = list(built.notes) + tnotes
    if technique.startswith(("ptq-int8", "mixed")) or technique.endswith("+int8"):
        notes.append("trust metrics measured on the PyTorch fake-quant simulation")
    from edgeproof.compress.quantize import Parity

    parity = built.parity if isinstance(built.parity, Parity) else None
    return Candidate(
        name=name,
        technique=technique,
        settings=dict(built.settings),
        accuracy=correct / max(len(data), 1),
        accuracy_ci=wilson_interval(correct, len(data)),
        per_class_accuracy=pc,
        per_class_drift=drift,
        size_bytes=len(built.onnx_bytes),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        threads=threads,
        peak_rss_mb=rss,
        trust=tuple(trust),
        parity=parity,
        float_nodes=built.float_nodes,
        notes=tuple(notes),
        build_s=build_s,
    )


def search(
    module: nn.Module,
    spec: InputSpec,
    calib: Dataset,
    evaluation: Dataset,
    budget: Budget,
    *,
    recipes: list[CandidateRecipe] | None = None,
    threads: int = 1,
    checks: tuple[str, ...] = TRUST_CHECKS,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    early_exit: EarlyExitConfig | None = None,
) -> Ledger:
    """Build and measure candidates within ``budget.time_budget_s``; returns the ledger.

    With ``early_exit`` an early-exit cascade of the baseline (:mod:`edgeproof.compress.earlyexit`)
    is built first and added as candidate ``early-exit-<criterion>``.
    """
    t0 = time.perf_counter()
    module = module.eval()
    xc = calib.x
    base_onnx = export_onnx(fold_batchnorm(module), spec.shape).SerializeToString()
    base_built = Built(module, base_onnx, {"precision": "fp32"})
    baseline = measure(
        "fp32",
        "baseline",
        base_built,
        spec,
        evaluation,
        None,
        threads=threads,
        checks=checks,
        seed=seed,
    )
    ledger = Ledger(baseline)
    ledger.artefacts["fp32"] = base_built
    if early_exit is not None:
        from edgeproof.compress.earlyexit import early_exit_candidate

        tb = time.perf_counter()
        try:
            ee, ee_built = early_exit_candidate(
                module,
                spec,
                calib,
                evaluation,
                max_drop=budget.max_drop if budget.max_drop is not None else 0.01,
                baseline_per_class=baseline.per_class_accuracy,
                config=early_exit,
                threads=threads,
                seed=seed,
            )
            ee = replace(ee, build_s=time.perf_counter() - tb)
            ledger.candidates.append(ee)
            ledger.artefacts[ee.name] = ee_built
            if log is not None:
                log(
                    f"{ee.name}: accuracy {ee.accuracy:.4f}, expected MACs "
                    f"{ee.expected_macs:.0f}, p50 {ee.latency_p50_ms:.3f} ms"
                )
        except OptionError as exc:
            ledger.skipped.append(f"early-exit: {exc}")
    xe = evaluation.x[:256]
    for recipe in recipes if recipes is not None else default_recipes():
        elapsed = time.perf_counter() - t0
        if elapsed > budget.time_budget_s:
            ledger.skipped.append(f"{recipe.name}: time budget of {budget.time_budget_s:g} s spent")
            continue
        tb = time.perf_counter()
        try:
            with torch.no_grad():
                built = recipe.build(module, spec, xc, xe)
        except OptionError as exc:
            ledger.skipped.append(f"{recipe.name}: {exc}")
            continue
        cand = measure(
            recipe.name,
            recipe.technique,
            built,
            spec,
            evaluation,
            baseline.per_class_accuracy,
            threads=threads,
            checks=checks,
            seed=seed,
            build_s=time.perf_counter() - tb,
        )
        ledger.candidates.append(cand)
        ledger.artefacts[cand.name] = built
        if log is not None:
            log(
                f"{cand.name}: accuracy {cand.accuracy:.4f}, {cand.size_bytes} B, "
                f"p50 {cand.latency_p50_ms:.3f} ms"
            )
    return ledger
