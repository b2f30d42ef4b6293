"""The compression search: build candidates under a time budget, measure each, keep the ledger.

Candidates are chains of steps (:mod:`edgeproof.compress.steps`), tried in order — by default
:func:`edgeproof.compress.recipes.default_recipes`, cheapest first. Each is built on one shared
:class:`~edgeproof.compress.context.BuildContext` and measured by the one
:func:`~edgeproof.compress.measure.measure` (the baseline, ``Chain()``, first). A chain that cannot
apply to the model (:class:`~edgeproof.errors.NotApplicableError`) is recorded as skipped with its
reason; any other error is raised. The search stops *starting* new candidates once
``time_budget_s`` has elapsed; what was built is kept, and every candidate not started is
recorded as skipped (and said on ``log``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from edgeproof.compress.context import BuildContext
from edgeproof.compress.ledger import Ledger, SkippedCandidate
from edgeproof.compress.measure import MeasureSettings, measure
from edgeproof.compress.reaudit import TRUST_CHECKS, at_largest_eps, at_smallest_eps
from edgeproof.compress.recipes import default_recipes
from edgeproof.compress.steps import Chain
from edgeproof.data.dataset import Dataset
from edgeproof.errors import NotApplicableError, OptionError
from edgeproof.spec import InputSpec, ThreatModel

__all__ = ["Budget", "default_recipes", "network_units", "resolve_compress_threat", "search"]


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


def resolve_compress_threat(
    module: nn.Module, spec: InputSpec, data: Dataset | None, threat: ThreatModel | None
) -> ThreatModel:
    """The threat model of the re-audit: ``threat``, or exactly what ``edgeproof audit``
    resolves for this model and data (:func:`edgeproof.runner.resolve_threat`: ε of 1, 3 and
    10 % of the domain width, L∞)."""
    from edgeproof.models.loading import from_module
    from edgeproof.runner import resolve_threat

    if threat is not None:
        return threat
    return resolve_threat(from_module(module, spec), data)


def network_units(data: Dataset, module: nn.Module, threat: ThreatModel) -> Dataset:
    """``data`` (in the audit's raw input units) as ``module`` takes it: normalised when the
    threat model's input declares a normalisation applied outside the model or per-feature
    ranges (the raw data first put in the audit's units, :meth:`Dataset.in_units_of`)
    (:meth:`edgeproof.models.loaded.LoadedModel.preprocess`); ``data`` itself otherwise.

    Candidates are built, calibrated and measured in the network's units (each is a drop-in
    replacement for ``module``); the trust re-audit stays in raw units, the candidate wrapped
    as the audit wraps the model (:meth:`~edgeproof.models.loaded.LoadedModel.for_spec`)."""
    import torch

    from edgeproof.models.loading import from_module

    net = from_module(module, threat.input).for_spec(threat.input)
    if net.module is module:
        return data
    with torch.no_grad():
        audit_units = data.in_units_of(threat.input).x
        x = net.preprocess(torch.from_numpy(np.ascontiguousarray(audit_units, np.float32))).numpy()
    return replace(data, x=np.ascontiguousarray(x, np.float32), domain=None)


def search(
    module: nn.Module,
    spec: InputSpec,
    calib: Dataset,
    evaluation: Dataset,
    budget: Budget,
    *,
    recipes: Sequence[Chain] | None = None,
    threat: ThreatModel | None = None,
    threads: int = 1,
    checks: tuple[str, ...] = TRUST_CHECKS,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Ledger:
    """Build and measure the baseline and every recipe within ``budget.time_budget_s``.

    ``threat``: the re-audit's threat model (default: what ``edgeproof audit`` resolves,
    :func:`resolve_compress_threat`); every candidate is attacked at its largest ε. ``calib``
    and ``evaluation`` are in raw input units (:func:`network_units`).
    """
    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    module = module.eval()
    threat = resolve_compress_threat(module, spec, evaluation, threat)
    net_calib, net_eval = (network_units(d, module, threat) for d in (calib, evaluation))
    ctx = BuildContext(spec, net_calib, threads=threads, seed=seed)
    settings = MeasureSettings(threat, tuple(checks), threads, seed)
    base_built = Chain().apply(module, ctx)
    baseline = measure("fp32", "baseline", base_built, net_eval, settings, audit_data=evaluation)
    ledger = Ledger(baseline, threat=at_largest_eps(threat), certify_threat=at_smallest_eps(threat))
    ledger.artefacts["fp32"] = base_built
    for chain in default_recipes() if recipes is None else recipes:
        elapsed = time.perf_counter() - t0
        if elapsed > budget.time_budget_s:
            why = f"not started: the time budget of {budget.time_budget_s:g} s was spent"
            ledger.skipped.append(SkippedCandidate(chain.name, chain.technique, why))
            say(f"{chain.name}: skipped, {why} ({elapsed:.0f} s elapsed)")
            continue
        tb = time.perf_counter()
        try:
            built = chain.apply(module, ctx)
        except NotApplicableError as exc:
            ledger.skipped.append(SkippedCandidate(chain.name, chain.technique, str(exc)))
            say(f"{chain.name}: skipped, not applicable: {exc}")
            continue
        build_s = time.perf_counter() - tb
        cand = measure(
            chain.name,
            chain.technique,
            built,
            net_eval,
            settings,
            baseline=baseline,
            build_s=build_s,
            audit_data=evaluation,
        )
        ledger.candidates.append(cand)
        ledger.artefacts[cand.name] = built
        line = f"{cand.name}: accuracy {cand.accuracy:.4f}, {cand.size_bytes} B, "
        line += f"p50 {cand.latency_p50_ms:.3f} ms"
        if cand.expected_macs is not None:
            line += f", expected MACs {cand.expected_macs:.0f}"
        say(line)
    return ledger
