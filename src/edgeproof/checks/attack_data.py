"""The model and samples an attack check works on, the work an attack sweep costs, and the
minimal-ε bisection that checks share (computed once per audit).

Used by :mod:`~edgeproof.checks.adversarial` and the other checks that attack the model
(``fisher``, ``certify``, ``property``); :mod:`edgeproof.checks.adversarial` re-exports every
name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeproof.checks.base import AuditContext, stage_progress
from edgeproof.checks.budget import SampleCount, SampleSetting, resolve_samples
from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.attacks import (
    APGD,
    FGSM,
    PGD,
    Attack,
    Forward,
    MinimalEps,
    Square,
    minimal_eps,
)
from edgeproof.methods.attacks.base import check_domain, check_logits, diameter, frozen_copy
from edgeproof.runtime.ort import session_forward
from edgeproof.spec import Norm

__all__ = [
    "AttackData",
    "attack_data",
    "attack_passes",
    "default_attack_passes",
    "shared_minimal_eps",
]


@dataclass(frozen=True)
class AttackData:
    """The model and samples an attack check works on.

    Attributes:
        model: what the attacks call: an eval-mode copy of the module with frozen parameters,
            or, for an ONNX model, :func:`~edgeproof.runtime.ort.session_forward` over its
            session (forward only).
        x: inputs ``(N, *shape)`` (float32), a seeded subset when the data is larger than
            ``max_samples``.
        y: labels ``(N,)``.
        index: positions of the samples in the dataset.
        num_classes: K, the number of logits the model returns.
        norm: threat norm.
        domain: input domain.
        diameter: the largest useful ε in this norm.
        module: the frozen module (the same object as ``model``) when the model has gradients;
            ``None`` for a forward-only model.
        count: how the sample count was chosen (:mod:`edgeproof.checks.budget`).
    """

    model: Forward
    x: torch.Tensor
    y: torch.Tensor
    index: np.ndarray
    num_classes: int
    norm: Norm
    domain: tuple[float, float]
    diameter: float
    module: nn.Module | None = None
    count: SampleCount | None = None

    @property
    def has_gradients(self) -> bool:
        return self.module is not None

    def gradient_model(self) -> nn.Module:
        """The frozen module; :class:`SpecError` for a forward-only model."""
        if self.module is None:  # the runner skips gradient checks for such models
            raise SpecError("this check differentiates the model: it needs a PyTorch model")
        return self.module


def attack_data(
    ctx: AuditContext, max_samples: SampleSetting, *, passes: float | None = None
) -> AttackData:
    """Validate model, data and threat for an attack check and pick the samples.

    ``max_samples``: a number, ``None`` (all) or ``"auto"`` (the work budget of
    :mod:`edgeproof.checks.budget` at ``passes`` forward-pass equivalents per sample; default:
    those of the default ``adversarial`` check, so checks sharing the minimal-ε bisection pick
    the same samples).

    A PyTorch model is attacked through a frozen eval-mode copy, an ONNX model through its
    session (forward only, batches of ``ctx.batch_size``).

    Raises :class:`SpecError` when the data leave the declared domain or the model's output is
    not ``(batch, K)`` logits of the declared classes.
    """
    data = ctx.require_data()
    module = ctx.model.module
    session = ctx.model.session
    if module is None and session is None:  # the runner skips such models (no forward pass)
        raise SpecError(f"{ctx.model.name}: attacks need a model with a forward pass")
    spec = ctx.threat.input
    k = spec.num_classes if spec.num_classes is not None else data.num_classes
    check_logits(ctx.clean_logits(), k, ctx.model.name)
    if data.num_classes > k:
        raise SpecError(
            f"{data.name}: the data has {data.num_classes} classes but the model outputs {k} "
            "logits; use data labelled for this model"
        )
    check_domain(data.x, spec, data.name)
    n = len(data)
    if max_samples is not None and not isinstance(max_samples, str) and max_samples < 1:
        raise OptionError("max_samples", f"{max_samples} is too few", "use >= 1 or None for all")
    if passes is None:
        passes = default_attack_passes(len(ctx.threat.eps) + 1)
    count = resolve_samples(ctx, max_samples, n, passes=passes)
    if count.n < n:
        rng = np.random.default_rng(ctx.seed)
        index = np.sort(rng.choice(n, size=count.n, replace=False))
    else:
        index = np.arange(n)
    frozen = frozen_copy(module) if module is not None else None
    if frozen is not None:
        forward: Forward = frozen
    else:
        run = session_forward(session, batch_size=ctx.batch_size)
        # the session takes the network's units: the audit's input transform first
        # (outside normalisation, per-feature ranges), as LoadedModel.predict_logits does
        preprocess = ctx.model.preprocess
        forward = run if ctx.model.input_affine is None else (lambda x: run(preprocess(x)))
    return AttackData(
        model=forward,
        x=torch.from_numpy(np.ascontiguousarray(data.x[index])),
        y=torch.from_numpy(np.ascontiguousarray(data.y[index])),
        index=index,
        num_classes=int(k),
        norm=ctx.threat.norm,
        domain=spec.domain,
        diameter=diameter(ctx.threat.norm, spec.domain, spec.numel),
        module=frozen,
        count=count,
    )


def attack_passes(
    attacks: Sequence[Attack], sweep: int, *, pgd: PGD | None, bisection_steps: int
) -> float:
    """Forward-pass equivalents per sample of ``attacks`` at ``sweep`` values of ε plus a
    ``bisection_steps`` minimal-ε bisection with ``pgd`` (a backward pass counts as two)."""

    def cost(a: Attack) -> float:
        if isinstance(a, Square):
            return float(a.n_queries * a.n_restarts)
        steps = getattr(a, "steps", 1)
        restarts = getattr(a, "restarts", 1)
        return 3.0 * steps * restarts + 1.0

    total = sweep * sum(cost(a) for a in attacks)
    if pgd is not None:
        total += bisection_steps * cost(pgd)
    return total


def default_attack_passes(sweep: int) -> float:
    """:func:`attack_passes` of the default ``adversarial`` check (FGSM, PGD-10, APGD-10 and an
    8-step PGD bisection) at ``sweep`` values of ε."""
    pgd = PGD(steps=10)
    return attack_passes([FGSM(), pgd, APGD(steps=10)], sweep, pgd=pgd, bisection_steps=8)


def shared_minimal_eps(
    ctx: AuditContext,
    ad: AttackData,
    *,
    attack: Attack,
    iterations: int,
    upper: float | None,
    batch_size: int,
) -> MinimalEps:
    """Minimal ε per sample of ``attack`` (PGD; Square on forward-only models), computed once
    per audit for the same settings (``ctx.cache``).

    ``upper`` defaults to the domain's diameter for L∞ and to ``min(diameter, 10·max ε)`` for
    L2 (whose diameter grows with √d and would waste the bisection's resolution).
    """
    if upper is None:
        upper = ad.diameter if ad.norm == "linf" else min(ad.diameter, 10 * max(ctx.threat.eps))
    samples = hashlib.sha256(ad.index.astype(np.int64).tobytes()).hexdigest()[:16]
    key = (
        f"minimal_eps:{attack!r}:{iterations}:{upper!r}:{ad.norm}:{ad.domain}:{samples}:{ctx.seed}"
    )
    if key not in ctx.cache:
        ctx.cache[key] = minimal_eps(
            ad.model,
            ad.x,
            ad.y,
            norm=ad.norm,
            domain=ad.domain,
            attack=attack,
            upper=upper,
            iterations=iterations,
            seed=ctx.seed,
            batch_size=batch_size,
            progress=stage_progress(ctx, "minimal ε"),
        )
    out: MinimalEps = ctx.cache[key]
    return out
