"""The trust re-audit of a compression candidate: the audit's own runner, the caller's threat.

Every candidate is re-audited by :func:`edgeproof.runner.run_checks` — the one plan/skip/isolate
loop behind ``edgeproof audit`` — on an :class:`~edgeproof.checks.base.AuditContext` over its
PyTorch module, with the caller's :class:`~edgeproof.spec.ThreatModel` reduced to one ε (so each
attack runs once per candidate): its largest, except where :data:`TRUST_EPS` says otherwise —
``certify`` proves robustness at the smallest ε, where proofs exist for most samples, so the
column shows what compression costs in proved robustness rather than a column of zeros — and the
small settings of :data:`REAUDIT_SETTINGS` (certify: CROWN alone, up to 50 records, no
branch-and-bound: a bounded cost per candidate).
A check that is not registered is noted; one that cannot run is ``skipped`` with its reason; one
that refuses its input or crashes is a failed check of that candidate (:class:`TrustCheck`,
status ``error``, ``crashed`` for an internal failure), as in an audit, and the others still run.

What is audited is what ships: BatchNorm folded into the preceding layer as in the exported
graph (:func:`~edgeproof.compress.folding.fold_batchnorm`, only when the module has BatchNorm),
so weight-level checks such as DNL see the deployed weights. Quantized candidates are audited
through their PyTorch fake-quant simulation. Rounding has zero gradient, so gradient attacks on
it would be masked (robust accuracy = clean accuracy, a false result): :func:`straight_through`
wraps every activation fake-quantizer in the *clipped straight-through estimator* (Bengio et al.
2013, arXiv 1308.3432; Hubara et al. 2016): the forward value is the fake-quantized one bit for
bit, the gradient is the identity inside the quantizer's representable range and zero outside
it. The attack is therefore a white-box attack on the quantized model itself.

What ``certify`` proves for a quantized candidate is a statement about that PyTorch fake-quant
simulation — weights at their dequantized int8 grid values, every activation quantizer's staircase
``s·(clamp(round(x/s) + zp, 0, 255) − zp)`` enclosed soundly (between ``x ± s/2``, or its range
over the input's bounds; :class:`edgeproof.certify.ops.UniformQuantizer`) — not about the ONNX
integer graph that ships (its int32 accumulation and requantisation rounding are
not modelled; the parity columns measure how far the two agree on data).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from edgeproof.certify.bound_graph import Builder, register_module
from edgeproof.checks import available_checks, check_info, get_check
from edgeproof.checks.base import AuditContext, Check
from edgeproof.compress.folding import fold_batchnorm, has_batchnorm
from edgeproof.compress.simulate import ActFakeQuant, _bound_fake_quant
from edgeproof.data.dataset import Dataset
from edgeproof.errors import SpecError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module
from edgeproof.results import CheckResult, CheckStatus, Metric
from edgeproof.runner import run_checks
from edgeproof.serialize import JsonFields
from edgeproof.spec import ThreatModel

__all__ = [
    "QUANTIZED_CERTIFY_NOTE",
    "REAUDIT_SETTINGS",
    "REAUDIT_SETTINGS_GRAPH",
    "TRUST_CHECKS",
    "TRUST_EPS",
    "StraightThrough",
    "TrustAudit",
    "TrustCheck",
    "at_largest_eps",
    "at_smallest_eps",
    "reaudit",
    "reaudit_graph",
    "straight_through",
]

TRUST_CHECKS: tuple[str, ...] = (
    "calibration",
    "adversarial",
    "bitflip",
    "certify",
    "generalization",
)
"""The registered checks re-run on every candidate (those not registered are noted)."""

REAUDIT_SETTINGS: dict[str, dict[str, Any]] = {
    "calibration": {"n_bins": 15, "resamples": 100},
    "adversarial": {
        "attacks": ("fgsm", "pgd"),
        "pgd_steps": 10,
        "pgd_restarts": 1,
        "bisection_steps": 0,
        "max_samples": 100,
    },
    "bitflip": {
        "num_layers": 10,
        "max_k": 10,
        "random_seeds": 2,
        "budgets": (),
        "eval_samples": 200,
    },
    # what compression does to flatness: λ₁ of the loss Hessian and NC1 only (no trace, density,
    # TIC or conflict), at most 30 Lanczos steps on at most 200 records (about 0.5 s on LeNet-5
    # and digits, one thread); skipped with the reason where the candidate has no gradients
    "generalization": {
        "parts": ("collapse",),
        "top_k": 1,
        "iterations": 30,
        "eig_tol": 1e-3,
        "max_samples": 200,
    },
    "certify": {"methods": ("crown",), "max_samples": 50, "bab_budget_s": 0.0, "pgd_steps": 10},
}
"""Small settings per check for re-auditing every candidate (checks not named: defaults)."""

REAUDIT_SETTINGS_GRAPH: dict[str, dict[str, Any]] = {
    **REAUDIT_SETTINGS,
    "adversarial": {"attacks": ("square",), "square_queries": 200, "max_samples": 100},
}
"""The settings of a re-audit on a graph (forward only: the Square attack, 200 queries)."""

TRUST_EPS: dict[str, Literal["smallest", "largest"]] = {"certify": "smallest"}
"""The ε of the threat model each check is re-audited at (checks not named: the largest)."""

QUANTIZED_CERTIFY_NOTE = (
    "certify on a quantized candidate: proved for its PyTorch fake-quant simulation (int8-grid "
    "weights, each activation quantizer's rounding enclosed soundly), not for the ONNX integer "
    "graph that ships"
)


@dataclass(frozen=True)
class TrustCheck(JsonFields):
    """How one re-audit check ended on one candidate.

    ``message`` is the skip reason or the error; ``traceback`` is kept only for a crash (an
    internal failure, exit code 3), not for a check that refused its input (exit code 2).
    """

    check: str
    status: CheckStatus
    message: str | None = None
    traceback: str | None = None
    duration_s: float = 0.0

    json_order = ("check", "status", "message", "crashed", ...)

    @property
    def crashed(self) -> bool:
        return self.status == "error" and self.traceback is not None

    @classmethod
    def of(cls, result: CheckResult) -> TrustCheck:
        return cls(
            result.check,
            result.status,
            result.error or result.skip_reason,
            result.traceback,
            result.duration_s,
        )


@dataclass(frozen=True)
class TrustAudit:
    """The re-audit of one candidate: its metrics (``<check>.<metric>``), how each check
    ended, and notes on what was audited."""

    metrics: tuple[Metric, ...] = ()
    checks: tuple[TrustCheck, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def errored(self) -> tuple[TrustCheck, ...]:
        return tuple(c for c in self.checks if c.status == "error")


def at_largest_eps(threat: ThreatModel) -> ThreatModel:
    """``threat`` with only its largest ε (the budget every candidate is attacked at)."""
    return ThreatModel(threat.input, threat.norm, (threat.eps[-1],))


def at_smallest_eps(threat: ThreatModel) -> ThreatModel:
    """``threat`` with only its smallest ε (where ``certify`` re-audits every candidate)."""
    return ThreatModel(threat.input, threat.norm, (min(threat.eps),))


class StraightThrough(nn.Module):
    """A fake-quantizer with the clipped straight-through estimator as its gradient.

    Forward: exactly ``fq(x)``. Backward: ``∂y/∂x = 1`` where ``x`` lies inside the quantizer's
    representable range ``[(0 - zp)·s, (255 - zp)·s]``, ``0`` outside (Bengio et al. 2013).
    """

    def __init__(self, fq: ActFakeQuant) -> None:
        super().__init__()
        self.fq = fq
        self.lo = (0 - fq.zero_point) * fq.scale
        self.hi = (255 - fq.zero_point) * fq.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fq(x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return y
        inside = ((x >= self.lo) & (x <= self.hi)).to(x.dtype)
        return y.detach() + (x - x.detach()) * inside


def straight_through(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` whose calibrated activation fake-quantizers are wrapped in
    :class:`StraightThrough`; returns ``(copy, number wrapped)`` (the module itself if none)."""
    names = [
        n for n, m in module.named_modules() if isinstance(m, ActFakeQuant) and m.observer is None
    ]
    if not names:
        return module, 0
    out = copy.deepcopy(module)
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, attr, StraightThrough(getattr(parent, attr)))
    return out, len(names)


def _as_exported(module: nn.Module) -> tuple[nn.Module, bool]:
    """``module`` with BatchNorm folded as in the exported graph; ``(module, False)`` if it has
    no BatchNorm or cannot be traced."""
    if not has_batchnorm(module):
        return module, False
    try:
        return fold_batchnorm(module), True
    except SpecError:
        return module, False


class _Refused(Check):
    """A registered check whose settings were refused at construction: it runs as the error it
    raised, so the runner records it like any other failure (refused input or crash)."""

    needs_forward = False

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__()
        self.name = name
        self.title = check_info(name).title
        self._error = error

    def run(self, ctx: AuditContext) -> CheckResult:
        raise self._error


def _instance(name: str, settings: Mapping[str, Any]) -> Check:
    try:
        return get_check(name, **dict(settings))
    except Exception as exc:  # recorded by the runner as this check's failure
        return _Refused(name, exc)


def reaudit(
    module: nn.Module,
    threat: ThreatModel,
    data: Dataset,
    *,
    checks: Sequence[str] = TRUST_CHECKS,
    seed: int = 0,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    threads: int | None = None,
    name_of: Callable[[str], str] | None = None,
) -> TrustAudit:
    """Re-run the registered ``checks`` on one candidate through the audit runner.

    Each check is ``get_check(name, **settings[name])`` (default :data:`REAUDIT_SETTINGS`), run
    by :func:`~edgeproof.runner.run_checks` on one :class:`AuditContext` over
    ``from_module(straight_through(fold_batchnorm(module)), threat.input)`` (as the audit runs
    it: :meth:`~edgeproof.models.loaded.LoadedModel.for_spec`, so ``data`` is in raw input
    units) with :func:`at_largest_eps` of ``threat`` (:func:`at_smallest_eps` for the checks
    :data:`TRUST_EPS` names). Metrics are renamed ``<check>.<metric>``.
    """
    conf = REAUDIT_SETTINGS if settings is None else settings
    todo, notes = _registered(checks)
    if not todo:
        return TrustAudit(notes=tuple(notes))
    audited, folded = _as_exported(module)
    if folded:
        notes.append("trust re-audit on the BatchNorm-folded module (the weights the ONNX holds)")
    audited, wrapped = straight_through(audited)
    if wrapped:
        notes.append(
            f"trust re-audit: {wrapped} activation fake-quantizers use a clipped "
            "straight-through estimator for gradients (forward unchanged)"
        )
    if wrapped and "certify" in todo:
        notes.append(QUANTIZED_CERTIFY_NOTE)
    model = from_module(audited, threat.input)
    return _audit(model, threat, data, todo, conf, seed, threads, name_of, notes)


def reaudit_graph(
    onnx_bytes: bytes,
    threat: ThreatModel,
    data: Dataset,
    *,
    checks: Sequence[str] = TRUST_CHECKS,
    seed: int = 0,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    threads: int | None = None,
    name_of: Callable[[str], str] | None = None,
) -> TrustAudit:
    """:func:`reaudit` of a graph with no PyTorch form (a candidate quantized inside a
    third-party ONNX model): the checks run on an ONNX Runtime session of the graph, so those
    that need gradients or a module are skipped with their reason and ``adversarial`` runs its
    gradient-free attack on the graph."""
    from edgeproof.runtime.ort import make_session

    conf = REAUDIT_SETTINGS_GRAPH if settings is None else settings
    todo, notes = _registered(checks)
    if not todo:
        return TrustAudit(notes=tuple(notes))
    notes.append("trust re-audit on the ONNX graph itself (forward only)")
    model = LoadedModel(
        path=None,
        format="onnx",
        session=make_session(onnx_bytes, threads=threads or 1),
        spec=threat.input,
    )
    return _audit(model, threat, data, todo, conf, seed, threads, name_of, notes)


def _registered(checks: Sequence[str]) -> tuple[list[str], list[str]]:
    """The registered ``checks`` to run, and a note naming those that are not."""
    registered = set(available_checks())
    missing = [c for c in checks if c not in registered]
    notes = [f"not re-audited (check not registered): {', '.join(missing)}"] if missing else []
    return [c for c in checks if c in registered], notes


def _audit(
    model: LoadedModel,
    threat: ThreatModel,
    data: Dataset,
    todo: Sequence[str],
    conf: Mapping[str, Mapping[str, Any]],
    seed: int,
    threads: int | None,
    name_of: Callable[[str], str] | None,
    notes: list[str],
) -> TrustAudit:
    model = model.for_spec(threat.input)
    data = data.in_units_of(threat.input)
    by_name: dict[str, CheckResult] = {}
    for where, reduce in (("largest", at_largest_eps), ("smallest", at_smallest_eps)):
        group = [name for name in todo if TRUST_EPS.get(name, "largest") == where]
        if not group:
            continue
        ctx = AuditContext(model=model, data=data, threat=reduce(threat), seed=seed)
        instances = [_instance(name, conf.get(name, {})) for name in group]
        for name, r in zip(
            group, run_checks(instances, ctx, threads=threads, name_of=name_of), strict=True
        ):
            by_name[name] = r
    results = [by_name[name] for name in todo]
    metrics = [
        Metric(
            f"{r.check}.{m.name}",
            m.value,
            m.unit,
            m.ci,
            m.description,
            m.higher_is_better,
            m.settings,
        )
        for r in results
        for m in r.metrics
    ]
    return TrustAudit(tuple(metrics), tuple(TrustCheck.of(r) for r in results), tuple(notes))


def _bound_straight_through(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    """The bound engine sees through the estimator to its fake-quantizer (the forward pass is
    exactly the quantizer's)."""
    assert isinstance(m, StraightThrough)
    return _bound_fake_quant(b, m.fq, args)


register_module(StraightThrough, _bound_straight_through)
