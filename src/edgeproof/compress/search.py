"""The compression search: build candidates under a time budget, measure each, keep the ledger.

Candidates are chains of steps (:mod:`edgeproof.compress.steps`), tried in order — by default
:func:`edgeproof.compress.recipes.default_recipes`, cheapest first. Each is built on one shared
:class:`~edgeproof.compress.context.BuildContext` and measured by the one
:func:`~edgeproof.compress.measure.measure` (the baseline, ``Chain()``, first). A chain that cannot
apply to the model (:class:`~edgeproof.errors.NotApplicableError`) is recorded as skipped with its
reason; any other error is raised. The search stops *starting* new candidates once
``time_budget_s`` has elapsed; what was built is kept, and every candidate not started is
recorded as skipped (and said on ``log``).

The baseline is measured first, here; the candidates are one task each on an executor
(:mod:`edgeproof.compress.tasks`): in this process by default, or on worker processes or Ray,
with the same ledger (timings aside) in recipe order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from torch import nn

from edgeproof.compress.context import BuildContext
from edgeproof.compress.ledger import Candidate, Ledger
from edgeproof.compress.measure import MeasureSettings, measure
from edgeproof.compress.reaudit import TRUST_CHECKS, at_largest_eps, at_smallest_eps
from edgeproof.compress.recipes import default_recipes
from edgeproof.compress.steps import Built, Chain
from edgeproof.compress.tasks import (
    Measured,
    Planned,
    TaskCommon,
    candidate_executor,
    candidate_line,
    run_candidates,
    run_task,
)
from edgeproof.data.dataset import Dataset
from edgeproof.errors import NotApplicableError, OptionError
from edgeproof.execute import Executor
from edgeproof.runtime.threads import compute_threads
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
    executor: str | Executor = "inprocess",
    jobs: int = 1,
    ray_address: str | None = None,
) -> Ledger:
    """Build and measure the baseline and every recipe within ``budget.time_budget_s``.

    ``log`` is told one line per candidate; ``progress`` each stage (:data:`Progress`; of a
    candidate built in a worker, only when it starts and ends).

    ``threat``: the re-audit's threat model (default: what ``edgeproof audit`` resolves,
    :func:`resolve_compress_threat`); every candidate is attacked at its largest ε. ``calib``
    and ``evaluation`` are in raw input units (:func:`network_units`).

    ``executor``: where the candidates are built and measured, one task each
    (:mod:`edgeproof.compress.tasks`): ``"inprocess"`` (one after another here), ``"processes"``
    (``jobs`` spawned worker processes), ``"ray"`` (``ray_address``: ``None`` starts Ray here
    with ``jobs`` CPUs, ``"auto"`` or ``"HOST:PORT"`` joins a cluster), or an
    :class:`~edgeproof.execute.Executor` (then ``jobs`` and ``ray_address`` are its own). The
    baseline is measured here first. Every backend gives the same ledger, timings aside:
    torch runs on ``threads`` everywhere.
    """
    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    module = module.eval()
    chains = list(default_recipes() if recipes is None else recipes)
    tell = progress_teller(progress, len(chains) + 1)
    ex, own = candidate_executor(executor, jobs, ray_address, len(chains))
    try:
        common = TaskCommon.of(ex, module, threads=threads, seed=seed, checks=checks, tell=tell)
        with compute_threads(threads):
            threat = resolve_compress_threat(module, spec, evaluation, threat)
            net_calib, net_eval = (network_units(d, module, threat) for d in (calib, evaluation))
            ctx = BuildContext(spec, net_calib, threads=threads, seed=seed)
            settings = MeasureSettings(
                threat, tuple(checks), threads, seed, confidence=budget.confidence
            )
            baseline, base_built = _baseline(module, ctx, net_eval, evaluation, settings, tell)
        ledger = _ledger(baseline, threat, evaluation)
        ledger.artefacts["fp32"] = base_built
        shared = _ChainShared(common, module, ctx, net_eval, evaluation, settings, baseline)
        plans = [Planned(c.name, c.technique) for c in chains]
        run_candidates(
            ex,
            _chain_task,
            shared,
            chains,
            plans,
            ledger,
            time_budget_s=budget.time_budget_s,
            t0=t0,
            say=say,
            tell=tell,
        )
    finally:
        if own:
            ex.close()
    return ledger


def _baseline(
    module: nn.Module,
    ctx: BuildContext,
    data: Dataset,
    audit_data: Dataset,
    settings: MeasureSettings,
    tell: Callable[[str, int, str], None],
) -> tuple[Candidate, Built]:
    """The baseline (``Chain()``, the fp32 graph) built and measured here, first."""
    tell("fp32", 0, "build")
    built = Chain().apply(module, ctx)
    baseline = measure(
        "fp32",
        "baseline",
        built,
        data,
        settings,
        audit_data=audit_data,
        on_stage=lambda s: tell("fp32", 0, s),
    )
    tell("fp32", 0, "done")
    return baseline, built


@dataclass(frozen=True)
class _ChainShared:
    """What every candidate task of a search reads (sent to each worker once): the module,
    the build context (calibration records), the evaluation records in the network's and in
    the audit's units, how to measure, and the baseline."""

    common: TaskCommon
    module: nn.Module
    ctx: BuildContext
    data: Dataset
    audit_data: Dataset
    settings: MeasureSettings
    baseline: Candidate


def _chain_task(shared: _ChainShared, item: tuple[int, Chain]) -> Measured:
    """Build and measure one chain (a module-level function: it travels by reference)."""
    return run_task(shared.common, shared, partial(_build_and_measure, item=item))


def _build_and_measure(shared: _ChainShared, item: tuple[int, Chain]) -> Measured:
    i, chain = item
    tell = shared.common.tell
    tb = time.perf_counter()
    try:
        built = chain.apply(shared.module, shared.ctx)
    except NotApplicableError as exc:
        return Measured(skipped=str(exc))
    cand = measure(
        chain.name,
        chain.technique,
        built,
        shared.data,
        shared.settings,
        baseline=shared.baseline,
        build_s=time.perf_counter() - tb,
        audit_data=shared.audit_data,
        on_stage=None if tell is None else partial(tell, chain.name, i),
    )
    return Measured(cand, built)


def _ledger(baseline: Candidate, threat: ThreatModel, evaluation: Dataset) -> Ledger:
    """An empty ledger over ``baseline``: attacked at the largest ε, certified at the smallest."""
    return Ledger(
        baseline,
        threat=at_largest_eps(threat),
        classes=tuple(evaluation.classes),
        certify_threat=at_smallest_eps(threat),
    )


def progress_teller(progress: Progress | None, total: int) -> Callable[[str, int, str], None]:
    """``progress`` as ``tell(candidate, index, stage)`` (a no-op without one)."""

    def tell(name: str, index: int, stage: str) -> None:
        if progress is not None:
            progress(name, stage, index, total)

    return tell
