"""``certify_model``: per-sample verdicts and certified margins of a PyTorch model over ε.

For each ε and each correctly classified sample, every requested bound method gives a lower bound
of the smallest margin ``f_y(x') − max_{j≠y} f_j(x')`` over the threat set (the L∞ or L2 ball
around the sample, clipped to the input domain); a positive bound *verifies* the sample. PGD
(:class:`edgeproof.methods.attacks.PGD`) looks for counterexamples; a sample it fools is
*falsified* (its adversarial input is judged by a forward pass of the model). Samples left open
may go to branch-and-bound (:mod:`~edgeproof.certify.bab`) within a per-sample time budget. A
misclassified sample is falsified by its own clean input. Whatever is neither verified nor
falsified is ``unknown``.

The model is traced once (:func:`~edgeproof.certify.graph.trace`); it is used in eval mode and not
modified. A fake-quant simulation works like any module as long as its quantizers have a
registered bound (:func:`~edgeproof.certify.graph.register_module`); quantized weights need
nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from edgeproof.certify.bab import BabResult, BabSettings, branch_and_bound
from edgeproof.certify.bounds import METHODS, AlphaSettings, Method, compute_bounds, margin_spec
from edgeproof.certify.graph import BoundGraph, trace
from edgeproof.certify.sets import InputSet, l2_ball, linf_ball
from edgeproof.errors import InternalError, OptionError, SpecError, param
from edgeproof.models.modules import eval_mode, set_training
from edgeproof.serialize import JsonFields
from edgeproof.spec import InputSpec, Norm

__all__ = ["CertifyResult", "EpsResult", "MethodResult", "Verdict", "certify_model"]

Verdict = Literal["verified", "falsified", "unknown"]
VERDICTS: tuple[str, ...] = ("verified", "falsified", "unknown")


@dataclass(frozen=True)
class MethodResult:
    """One bound method at one ε.

    Attributes:
        method: ``ibp``, ``crown-ibp``, ``crown`` or ``alpha-crown``.
        margin_lower: ``(N,)`` lower bounds of each sample's smallest margin; NaN for samples
            not bounded (misclassified, or falsified by the attack, which no sound bound can
            verify). α-CROWN is run only where CROWN (when requested too) did not verify; there
            its entry is CROWN's bound, which α-CROWN never goes below.
        verified: ``(N,)`` the bound is positive.
        time_s: seconds for the samples this method bounded.
        bounded: how many samples this method bounded.
    """

    method: str
    margin_lower: np.ndarray
    verified: np.ndarray
    time_s: float
    bounded: int


@dataclass(frozen=True)
class EpsResult:
    """Everything measured at one ε.

    Attributes:
        eps: the radius.
        methods: per bound method, its result.
        broken_by: ``(N,)`` int8: 1 a PGD adversarial input (found at this or a smaller ε), 2 a
            branch-and-bound counterexample, 0 none (misclassified samples are 0 too).
        pgd_fooled: ``(N,)`` PGD found an adversarial input (at this ε or a smaller one, whose
            adversarial inputs lie in this set too).
        bab: per sample sent to branch-and-bound, its result.
        verdict: ``(N,)`` ``verified`` / ``falsified`` / ``unknown``.
        lower_bound: ``(N,)`` the best proven lower bound of the smallest margin (max over the
            methods and branch-and-bound; NaN for misclassified samples).
        bab_time_s: seconds spent in branch-and-bound.
        pgd_time_s: seconds spent in the attack.
    """

    eps: float
    methods: Mapping[str, MethodResult]
    broken_by: np.ndarray
    pgd_fooled: np.ndarray
    bab: Mapping[int, BabResult]
    verdict: np.ndarray
    lower_bound: np.ndarray
    bab_time_s: float
    pgd_time_s: float

    def count(self, verdict: str) -> int:
        return int((self.verdict == verdict).sum())


def _count(flags: np.ndarray) -> int:
    return int(flags.sum())


def _eps_summary(r: EpsResult) -> dict[str, Any]:
    """The counts of one ε (the JSON of a :class:`CertifyResult`)."""
    return {
        "eps": r.eps,
        "counts": {v: r.count(v) for v in VERDICTS},
        "verified_by": {m: _count(mr.verified) for m, mr in r.methods.items()},
        "pgd_fooled": _count(r.pgd_fooled),
        "bab": len(r.bab),
    }


def _eps_summaries(per_eps: Sequence[EpsResult]) -> list[dict[str, Any]]:
    return [_eps_summary(r) for r in per_eps]


@dataclass(frozen=True)
class CertifyResult(JsonFields):
    """Verdicts and certified margins of ``N`` samples over several ε.

    Attributes:
        norm: ``linf`` or ``l2``.
        domain: the input domain the sets are clipped to.
        clean_correct: ``(N,)`` the model classifies the clean sample correctly.
        per_eps: one :class:`EpsResult` per ε (ascending).
        methods: the bound methods run.
        settings: the settings that produced the result.
    """

    norm: str
    domain: tuple[float, float]
    clean_correct: np.ndarray = field(metadata={"as": _count})
    per_eps: tuple[EpsResult, ...] = field(metadata={"as": _eps_summaries})
    methods: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    #: the JSON is a summary: counts of samples, the number of them (``n``) second
    json_order = ("norm", "domain", "n", ..., "per_eps")

    @property
    def n(self) -> int:
        return int(self.clean_correct.size)

    @property
    def eps(self) -> tuple[float, ...]:
        return tuple(r.eps for r in self.per_eps)

    def at(self, eps: float) -> EpsResult:
        for r in self.per_eps:
            if math.isclose(r.eps, eps, rel_tol=1e-12, abs_tol=1e-15):
                return r
        raise KeyError(f"no result at ε={eps:g}")

    def verified_accuracy(self, eps: float, method: str | None = None) -> float:
        """Fraction of all samples verified at ``eps`` (by ``method``, or by any)."""
        r = self.at(eps)
        k = r.count("verified") if method is None else int(r.methods[method].verified.sum())
        return k / self.n if self.n else float("nan")


def _threat_set(norm: str, x: Tensor, eps: float, domain: tuple[float, float]) -> InputSet:
    return linf_ball(x, eps, domain) if norm == "linf" else l2_ball(x, eps, domain)


def _check_bab_applies(graph: BoundGraph, spec: InputSpec, settings: BabSettings) -> None:
    """Refuse branch-and-bound up front (not at the first open sample) where it cannot run:
    ReLU splitting on a model that is not piecewise-linear, with too many input dimensions
    for input splitting."""
    if graph.piecewise_linear or math.prod(spec.shape) <= settings.input_split_dims:
        return
    bad = next(n for n in graph.nodes if n.op is not None and not n.op.piecewise_linear)
    assert bad.op is not None
    raise OptionError(
        "bab_budget_s",
        f"branch-and-bound splits ReLUs, but node '{bad.name}' ({bad.op.kind}) is not "
        "piecewise-linear",
        f"set {param('bab_budget_s')} to 0 (bound without branching) or bound a ReLU network",
    )


def certify_model(
    module: nn.Module,
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    spec: InputSpec,
    eps: float | Sequence[float],
    norm: Norm = "linf",
    *,
    methods: Sequence[str] = ("ibp", "crown", "alpha-crown"),
    bab_budget_s: float = 0.0,
    alpha_iterations: int = 20,
    alpha_intermediate: bool = False,
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    graph: BoundGraph | None = None,
    bab: BabSettings | None = None,
) -> CertifyResult:
    """Certify ``module`` on samples ``x`` (raw domain) with labels ``y`` at each ε.

    Args:
        module: a PyTorch classifier returning ``(batch, K)`` logits (used in eval mode).
        x: inputs ``(N, *spec.shape)``.
        y: labels ``(N,)``.
        spec: the input specification (its ``domain`` clips the threat sets).
        eps: one radius or several (≥ 0), in the units of the domain.
        norm: ``linf`` or ``l2``.
        methods: bound methods, any of ``ibp``, ``crown-ibp``, ``crown``, ``alpha-crown``.
        bab_budget_s: per-sample branch-and-bound budget for samples no method verified and PGD
            did not falsify (0: no branch-and-bound).
        alpha_iterations: α-CROWN iterations.
        alpha_intermediate: α-CROWN also optimises the slopes of the intermediate bounds
            (auto_LiRPA's ``alpha-CROWN``; tighter, about ten times slower).
        pgd_steps, pgd_restarts: the PGD attack that looks for counterexamples (0 steps: none).
        batch_size: samples bounded together.
        seed: seeds the attack and the branch-and-bound searches.
        graph: a graph traced from ``module`` already (reused across calls).
        bab: branch-and-bound settings (its budget is replaced by ``bab_budget_s``).

    Raises:
        OptionError: an unknown method, ε < 0, a non-positive batch size, or an operation the
            engine cannot bound (named with its node).
        SpecError: inputs that do not fit the spec or leave its domain, labels out of range.
    """
    methods = tuple(methods)
    eps_list = _validated_settings(methods, eps, norm, batch_size, bab_budget_s)
    alpha = AlphaSettings(iterations=alpha_iterations, intermediate=alpha_intermediate)
    xt, yt = _validated_inputs(x, y, spec)
    was_training = module.training
    eval_mode(module)
    try:
        g = graph if graph is not None else trace(module, spec.shape)
        correct, k = _clean_predictions(module, xt, yt, batch_size)
        bab_settings = _bab_settings(g, spec, bab, bab_budget_s)
        run = _Run(
            module=module,
            graph=g,
            x=xt,
            y=yt,
            correct=correct,
            classes=k,
            domain=spec.domain,
            norm=norm,
            methods=methods,
            alpha=alpha,
            bab=bab_settings,
            pgd_steps=pgd_steps,
            pgd_restarts=pgd_restarts,
            batch_size=batch_size,
            seed=seed,
        )
        per_eps = _each_eps(run, eps_list)
    finally:
        set_training(module, was_training)
    return _result(run, per_eps, bab_budget_s, alpha_iterations, alpha_intermediate)


def _result(
    run: _Run,
    per_eps: list[EpsResult],
    bab_budget_s: float,
    alpha_iterations: int,
    alpha_intermediate: bool,
) -> CertifyResult:
    """The call's result, with the settings that produced it."""
    return CertifyResult(
        norm=run.norm,
        domain=run.domain,
        clean_correct=run.correct,
        per_eps=tuple(per_eps),
        methods=run.methods,
        settings={
            "methods": list(run.methods),
            "bab_budget_s": bab_budget_s,
            "alpha_iterations": alpha_iterations,
            "alpha_intermediate": alpha_intermediate,
            "pgd_steps": run.pgd_steps,
            "pgd_restarts": run.pgd_restarts,
            "batch_size": run.batch_size,
            "seed": run.seed,
        },
    )


def _validated_settings(
    methods: tuple[str, ...],
    eps: float | Sequence[float],
    norm: str,
    batch_size: int,
    bab_budget_s: float,
) -> tuple[float, ...]:
    """Check the methods, radii, norm, batch size and budget; returns the radii as floats."""
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise OptionError(
            "methods",
            f"unknown bound method(s) {bad}" if bad else "no method given",
            f"use some of {', '.join(METHODS)}",
        )
    eps_list = (float(eps),) if isinstance(eps, (int, float)) else tuple(float(e) for e in eps)
    if not eps_list:
        raise OptionError("eps", "no radius given", "give e.g. eps=0.01 or eps=(0.01, 0.03)")
    for e in eps_list:
        if not math.isfinite(e) or e < 0:
            raise OptionError("eps", f"ε={e:g} is negative or not finite", "give ε >= 0")
    if norm not in ("linf", "l2"):
        raise OptionError("norm", f"unknown norm {norm!r}", "use linf or l2")
    if batch_size < 1:
        raise OptionError("batch_size", f"{batch_size} is < 1", "use e.g. 32")
    if bab_budget_s < 0 or not math.isfinite(bab_budget_s):
        raise OptionError(
            "bab_budget_s", f"{bab_budget_s} is negative or not finite", "use e.g. 5, or 0"
        )
    return eps_list


def _validated_inputs(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, spec: InputSpec
) -> tuple[Tensor, Tensor]:
    """The inputs as float and the labels as long tensors, after checking they fit the spec's
    shape and domain and each other."""
    xt = torch.as_tensor(x).float()
    yt = torch.as_tensor(y).long()
    if tuple(xt.shape[1:]) != tuple(spec.shape):
        raise SpecError(
            f"inputs of shape {list(xt.shape[1:])} do not fit the spec's {list(spec.shape)}"
        )
    if yt.shape != (xt.shape[0],):
        raise SpecError(f"{yt.shape[0] if yt.dim() else 0} labels for {xt.shape[0]} inputs")
    lo, hi = spec.domain
    if xt.numel() and (float(xt.min()) < lo - 1e-6 or float(xt.max()) > hi + 1e-6):
        raise SpecError(
            f"inputs span [{float(xt.min()):g}, {float(xt.max()):g}] outside the domain "
            f"[{lo:g}, {hi:g}]; give inputs in the domain or the domain of the data"
        )
    return xt, yt


def _clean_predictions(
    module: nn.Module, xt: Tensor, yt: Tensor, batch_size: int
) -> tuple[np.ndarray, int]:
    """Which samples the model classifies correctly, and its number of classes (the labels
    must be among them)."""
    with torch.no_grad():
        chunks = [module(xt[i : i + batch_size]) for i in range(0, xt.shape[0], batch_size)]
    logits = torch.cat(chunks) if chunks else torch.zeros(0, 1)
    k = int(logits.shape[1]) if logits.dim() == 2 else 0
    if xt.shape[0] and (logits.dim() != 2 or int(yt.max()) >= k or int(yt.min()) < 0):
        raise SpecError(f"labels must lie in [0, {k}) for a model with {k} outputs")
    correct = (logits.argmax(1) == yt).numpy() if xt.shape[0] else np.zeros(0, dtype=bool)
    return correct, k


def _bab_settings(
    g: BoundGraph, spec: InputSpec, bab: BabSettings | None, bab_budget_s: float
) -> BabSettings | None:
    """``bab`` with the budget ``bab_budget_s``, checked to apply to ``g``; ``None`` for no
    branch-and-bound (a zero budget)."""
    if bab_budget_s <= 0:
        return None
    base = vars(bab) if bab is not None else {}
    settings = BabSettings(**{**base, "budget_s": bab_budget_s})
    _check_bab_applies(g, spec, settings)
    return settings


def _each_eps(run: _Run, eps_list: tuple[float, ...]) -> list[EpsResult]:
    """The results at each ε in increasing order; a sample broken at one ε is carried to the
    larger ones (remembering whether PGD or branch-and-bound broke it)."""
    per_eps: list[EpsResult] = []
    broken = np.zeros(run.x.shape[0], dtype=np.int8)  # 1: by PGD, 2: by branch-and-bound
    for e in sorted(eps_list):
        r = run.at(e, broken)
        per_eps.append(r)
        broken = np.where(broken > 0, broken, r.broken_by)
    return per_eps


@dataclass(frozen=True)
class _Run:
    """The settings of one ``certify_model`` call, shared by its ε values."""

    module: nn.Module
    graph: BoundGraph
    x: Tensor
    y: Tensor
    correct: np.ndarray
    classes: int
    domain: tuple[float, float]
    norm: str
    methods: tuple[str, ...]
    alpha: AlphaSettings
    bab: BabSettings | None
    pgd_steps: int
    pgd_restarts: int
    batch_size: int
    seed: int

    def bounds(self, eps: float, method: str, todo: np.ndarray) -> tuple[np.ndarray, float]:
        """Margin lower bounds ``(N,)`` of ``method`` on the samples ``todo`` (NaN elsewhere)
        and the seconds spent."""
        lower = np.full(int(self.x.shape[0]), np.nan)
        idx = np.flatnonzero(todo)
        t0 = time.perf_counter()
        for s in range(0, idx.size, self.batch_size):
            ii = torch.from_numpy(idx[s : s + self.batch_size])
            spec = margin_spec(self.y[ii], self.classes)
            iset = _threat_set(self.norm, self.x[ii], eps, self.domain)
            m: Method = method  # type: ignore[assignment]
            r = compute_bounds(self.graph, iset, spec, m, alpha=self.alpha)
            lower[ii.numpy()] = r.lower.min(1).values.double().numpy()
        return lower, time.perf_counter() - t0

    def attack(self, eps: float, todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """PGD on the samples ``todo``: fooled ``(N,)`` and the smallest margin at the attack's
        final points ``(N,)`` (an upper bound of the smallest margin over the set; NaN for
        samples not attacked)."""
        from edgeproof.methods.attacks import PGD
        from edgeproof.methods.attacks.base import Budget

        n = int(self.x.shape[0])
        fooled = np.zeros(n, dtype=bool)
        margin = np.full(n, np.nan)
        idx = np.flatnonzero(todo)
        if not idx.size:
            return fooled, margin
        attack = None
        if self.pgd_steps > 0 and eps > 0:
            attack = PGD(steps=self.pgd_steps, restarts=self.pgd_restarts, random_start=True)
        gen = torch.Generator().manual_seed(self.seed)
        for s in range(0, idx.size, self.batch_size):
            ii = torch.from_numpy(idx[s : s + self.batch_size])
            xs, ys = self.x[ii], self.y[ii]
            if attack is not None:
                budget = Budget(norm=self.norm, eps=eps, domain=self.domain)  # type: ignore[arg-type]
                res = attack.perturb(self.module, xs, ys, budget, generator=gen)
                fooled[ii.numpy()] = res.success.numpy()
                xs = res.x_adv
            with torch.no_grad():
                out = self.module(xs).double()
            spec = margin_spec(ys, self.classes, torch.float64)
            margin[ii.numpy()] = torch.einsum("brk,bk->br", spec, out).min(1).values.numpy()
        return fooled, margin

    def at(self, eps: float, broken_before: np.ndarray) -> EpsResult:
        """Attack first, then bound what the attack did not break: IBP, CROWN-IBP and CROWN on
        every such sample; α-CROWN only where CROWN (if requested) left it open, since α-CROWN
        starts from CROWN's slopes and keeps its best bound (never looser). A sample broken at a
        smaller ε (``broken_before``: 1 by PGD, 2 by branch-and-bound) is broken here too (its
        counterexample lies in this larger set) and is neither attacked nor bounded again. Every
        bound is checked against the margin at the attack's final point, an upper bound of the
        true smallest margin: a bound above it would be unsound (a bug), and raises."""
        n = int(self.x.shape[0])
        t_pgd = time.perf_counter()
        fooled, pgd_margin = self.attack(eps, self.correct & (broken_before == 0))
        fooled |= broken_before == 1
        t_pgd = time.perf_counter() - t_pgd
        open_ = self.correct & ~fooled & (broken_before == 0)
        results: dict[str, MethodResult] = {}
        order = [m for m in METHODS if m in self.methods]
        for m in order:
            todo = open_.copy()
            if m == "alpha-crown" and "crown" in results:
                todo &= ~results["crown"].verified
            lower, dt = self.bounds(eps, m, todo)
            if m == "alpha-crown" and "crown" in results:
                # where CROWN verified, α-CROWN's bound is at least CROWN's
                skipped = open_ & ~todo
                lower[skipped] = results["crown"].margin_lower[skipped]
            bad = np.flatnonzero(
                np.isfinite(lower) & (lower > pgd_margin + 1e-4 * (1 + np.abs(pgd_margin)))
            )
            if bad.size:
                raise InternalError(
                    f"{m} bounds the margin of samples {bad.tolist()} above the margin the model "
                    f"has inside the set at ε={eps:g}: a bound is unsound (a bug in "
                    "edgeproof.certify)"
                )
            verified = np.where(np.isfinite(lower), lower, -np.inf) > 0
            results[m] = MethodResult(m, lower, verified, dt, int(todo.sum()))
        results = {m: results[m] for m in self.methods}
        verified = np.zeros(n, dtype=bool)
        best = np.full(n, np.nan)
        for mr in results.values():
            verified |= mr.verified
            best = np.fmax(best, mr.margin_lower)
        pgd_fooled = fooled.copy()
        bab_results: dict[int, BabResult] = {}
        t_bab = time.perf_counter()
        if self.bab is not None:
            gen = torch.Generator().manual_seed(self.seed + 1)
            for i in np.flatnonzero(open_ & ~verified):
                iset = _threat_set(self.norm, self.x[i : i + 1], eps, self.domain)
                spec = margin_spec(self.y[i : i + 1], self.classes)
                res = branch_and_bound(self.graph, self.module, iset, spec, self.bab, generator=gen)
                bab_results[int(i)] = res
                if res.verdict == "verified":
                    verified[i] = True
                elif res.verdict == "falsified":
                    fooled[i] = True
                if res.verdict != "falsified" and math.isfinite(res.lower_bound):
                    best[i] = float(np.fmax(best[i], res.lower_bound))
        t_bab = time.perf_counter() - t_bab
        verdict = np.full(n, "unknown", dtype="<U9")
        verdict[verified] = "verified"
        verdict[fooled | (broken_before > 0)] = "falsified"
        verdict[~self.correct] = "falsified"
        broken_by = np.where(pgd_fooled, 1, np.where(fooled, 2, 0)).astype(np.int8)
        broken_by = np.where(broken_before > 0, broken_before, broken_by)
        return EpsResult(
            eps=eps,
            methods=results,
            broken_by=broken_by,
            pgd_fooled=pgd_fooled,
            bab=bab_results,
            verdict=verdict,
            lower_bound=best,
            bab_time_s=t_bab,
            pgd_time_s=t_pgd,
        )
