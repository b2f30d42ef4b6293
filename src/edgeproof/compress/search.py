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
from functools import partial

import numpy as np
from torch import nn

from edgeproof.compress.context import BuildContext
from edgeproof.compress.ledger import Candidate, Ledger, SkippedCandidate
from edgeproof.compress.measure import MeasureSettings, measure
from edgeproof.compress.reaudit import TRUST_CHECKS, at_largest_eps, at_smallest_eps
from edgeproof.compress.recipes import default_recipes
from edgeproof.compress.steps import Chain
from edgeproof.data.dataset import Dataset
from edgeproof.errors import NotApplicableError, OptionError
from edgeproof.spec import InputSpec, ThreatModel

__all__ = [
    "CLASS_DROP_DEFAULT",
    "CLASS_DROP_MULTIPLE",
    "Budget",
    "Progress",
    "candidate_line",
    "default_recipes",
    "network_units",
    "progress_teller",
    "resolve_compress_threat",
    "search",
]


CLASS_DROP_MULTIPLE = 3.0
"""Default per-class budget: this many times the overall ``max_drop``."""
CLASS_DROP_DEFAULT = 0.05
"""Default per-class budget without a ``max_drop``: 5 points."""


@dataclass(frozen=True)
class Budget:
    """The user's budget: accuracy drop (absolute, fraction), per-class drop, size (bytes),
    search time (s), and the confidence of the drop's interval.

    A candidate meets ``max_drop`` only when the upper end of the two-sided ``confidence``
    interval of its drop against the baseline — the exact paired interval on the same
    evaluation records (:func:`edgeproof.methods.stats.paired_drop_interval`) — is within it.
    ``max_class_drop``: the largest drop of any one class's accuracy (a point estimate: the
    classes of an evaluation split are small); ``None`` means :attr:`class_drop_limit`'s
    default, ``CLASS_DROP_MULTIPLE`` (3) × ``max_drop``, or ``CLASS_DROP_DEFAULT`` (5 points)
    without a ``max_drop``.
    """

    max_drop: float | None = None
    max_size: int | None = None
    time_budget_s: float = 120.0
    max_class_drop: float | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise OptionError("max_drop", f"{self.max_drop} is not in [0, 1]", "use e.g. 1%")
        if self.max_class_drop is not None and not 0.0 <= self.max_class_drop <= 1.0:
            raise OptionError(
                "max_class_drop", f"{self.max_class_drop} is not in [0, 1]", "use e.g. 3%"
            )
        if self.max_size is not None and self.max_size <= 0:
            raise OptionError(
                "max_size", f"{self.max_size} bytes is not positive", "use e.g. 200KB"
            )
        if not self.time_budget_s > 0:
            raise OptionError(
                "time_budget_s", f"{self.time_budget_s} s is not positive", "use e.g. 120"
            )
        if not 0.5 <= self.confidence < 1.0:
            raise OptionError(
                "confidence", f"{self.confidence} is not in [0.5, 1)", "use e.g. 0.95"
            )

    @property
    def class_drop_limit(self) -> float:
        """The per-class drop held in the selection: ``max_class_drop`` or its default."""
        if self.max_class_drop is not None:
            return self.max_class_drop
        if self.max_drop is not None:
            return min(1.0, CLASS_DROP_MULTIPLE * self.max_drop)
        return CLASS_DROP_DEFAULT


Progress = Callable[[str, str, int, int], None]
"""``progress(candidate, stage, index, total)``: candidate ``index`` of ``total`` (the baseline is
0) enters ``stage`` — ``build``, ``measure``, ``re-audit`` — or ``done`` / ``skipped``."""


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
    progress: Progress | None = None,
) -> Ledger:
    """Build and measure the baseline and every recipe within ``budget.time_budget_s``.

    ``log`` is told one line per candidate; ``progress`` each stage (:data:`Progress`).

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
    settings = MeasureSettings(threat, tuple(checks), threads, seed, confidence=budget.confidence)
    chains = list(default_recipes() if recipes is None else recipes)
    tell = progress_teller(progress, len(chains) + 1)
    tell("fp32", 0, "build")
    base_built = Chain().apply(module, ctx)
    baseline = measure(
        "fp32",
        "baseline",
        base_built,
        net_eval,
        settings,
        audit_data=evaluation,
        on_stage=lambda s: tell("fp32", 0, s),
    )
    tell("fp32", 0, "done")
    ledger = Ledger(
        baseline,
        threat=at_largest_eps(threat),
        classes=tuple(evaluation.classes),
        certify_threat=at_smallest_eps(threat),
    )
    ledger.artefacts["fp32"] = base_built
    for i, chain in enumerate(chains, start=1):
        elapsed = time.perf_counter() - t0
        if elapsed > budget.time_budget_s:
            why = f"not started: the time budget of {budget.time_budget_s:g} s was spent"
            ledger.skipped.append(SkippedCandidate(chain.name, chain.technique, why))
            say(f"{chain.name}: skipped, {why} ({elapsed:.0f} s elapsed)")
            tell(chain.name, i, "skipped")
            continue
        tb = time.perf_counter()
        tell(chain.name, i, "build")
        try:
            built = chain.apply(module, ctx)
        except NotApplicableError as exc:
            ledger.skipped.append(SkippedCandidate(chain.name, chain.technique, str(exc)))
            say(f"{chain.name}: skipped, not applicable: {exc}")
            tell(chain.name, i, "skipped")
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
            on_stage=partial(tell, chain.name, i),
        )
        ledger.candidates.append(cand)
        ledger.artefacts[cand.name] = built
        tell(cand.name, i, "done")
        say(candidate_line(cand))
    return ledger


def progress_teller(progress: Progress | None, total: int) -> Callable[[str, int, str], None]:
    """``progress`` as ``tell(candidate, index, stage)`` (a no-op without one)."""

    def tell(name: str, index: int, stage: str) -> None:
        if progress is not None:
            progress(name, stage, index, total)

    return tell


def candidate_line(cand: Candidate) -> str:
    """One line of a measured candidate: accuracy, the drop with its interval, size, latency."""
    from edgeproof.compress.selection import drop_text

    line = f"{cand.name}: accuracy {cand.accuracy:.4f}, {drop_text(cand)}, {cand.size_bytes} B, "
    line += f"p50 {cand.latency_p50_ms:.3f} ms"
    if cand.expected_macs is not None:
        line += f", expected MACs {cand.expected_macs:.0f}"
    return line
