"""GradientSHAP: expected gradients over a baseline distribution (Captum's definition).

Lundberg & Lee 2017 (SHAP, NeurIPS) name it; Erion, Janizek, Sturmfels, Lundberg & Lee 2021
("Improving performance of deep learning models with axiomatic attribution priors and expected
gradients", Nature Machine Intelligence) call it *expected gradients*: IG averaged over baselines
``b ~ D`` with one random point of each path::

    φ(x) = E_{b~D, α~U(0,1), ε~N(0,σ²I)} [ (x̃ − b) ⊙ ∇f(b + α(x̃ − b)) ],   x̃ = x + ε

estimated with ``n_samples`` draws per input. Variant followed: Captum 0.9.0's ``GradientShap``
(``multiply_by_inputs=True``) — per draw, a baseline index uniform over the ``B`` given baselines,
Gaussian noise of standard deviation σ (raw input units; default 0, i.e. no noise) added to the
input, ``α`` uniform on ``[0, 1]``, the path point computed as ``α·x̃ + (1 − α)·b``, and the
**noisy** input ``x̃`` in the multiplier ``(x̃ − b)``, as Captum does.

Completeness holds in expectation: ``E[Σ φ] = E[f(x̃) − f(b)]``. The reported δ is
``Σ_j φ_j − (f(x) − mean_s f(b_s))`` over the drawn baselines ``b_s`` of the sample: the Monte
Carlo error of the estimate (it shrinks like ``1/√n_samples``), plus, with σ > 0, the noise's
smoothing of ``f``.

Randomness: each sample's draws (``n_samples`` baseline indices by ``torch.randint``, then the
noise block by ``torch.randn · σ``, then the ``α`` by ``torch.rand``) come from ``generator`` in
sample order, independent of ``internal_batch_size``. Pass :class:`GradientShapDraws` to use
given draws (e.g. another tool's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import as_layout, input_layout
from edgeproof.methods.attribution.base import (
    Attribution,
    AttributionMethod,
    BaselineKind,
    BaselineLike,
    Output,
    TargetLike,
    as_batch,
    check_distribution,
    check_internal_batch_size,
    check_output,
    check_positive_int,
    eval_mode,
    resolve_target,
    scores,
    target_scores,
)

__all__ = ["GradientShap", "GradientShapDraws"]


@dataclass(frozen=True)
class GradientShapDraws:
    """Given random draws for :class:`GradientShap`, one row per input sample.

    Attributes:
        baseline_index: ``(N, n_samples)`` int64 indices into the baselines.
        alpha: ``(N, n_samples)`` path positions in ``[0, 1]``.
        noise: ``(N, n_samples, *shape)`` input noise, or ``None`` for none.
    """

    baseline_index: torch.Tensor
    alpha: torch.Tensor
    noise: torch.Tensor | None = None


class GradientShap(AttributionMethod):
    """Expected gradients of the target score over a baseline distribution.

    Args:
        n_samples: draws per input (default 50; Captum's default is 5).
        sigma: standard deviation of the input noise, raw input units (default 0).
        internal_batch_size: rows per forward/backward pass (default 256).
        output: ``logit`` (default) or ``probability`` of the target class.
    """

    name: ClassVar[str] = "gradient_shap"
    needs_gradients: ClassVar[bool] = True
    baseline_kind: ClassVar[BaselineKind] = "distribution"
    has_delta: ClassVar[bool] = True

    def __init__(
        self,
        *,
        n_samples: int = 50,
        sigma: float = 0.0,
        internal_batch_size: int = 256,
        output: Output = "logit",
    ) -> None:
        self.n_samples = check_positive_int("n_samples", n_samples, 1, "use e.g. 50")
        if not (np.isfinite(sigma) and sigma >= 0):
            raise OptionError("sigma", f"{sigma!r} must be >= 0 (raw input units)", "use 0")
        self.sigma = float(sigma)
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        self.output: Output = check_output(output)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "sigma": self.sigma,
            "internal_batch_size": self.internal_batch_size,
            "output": self.output,
        }

    def _check_draws(
        self, draws: GradientShapDraws, n: int, shape: tuple[int, ...], b: int
    ) -> None:
        ns = self.n_samples
        if tuple(draws.baseline_index.shape) != (n, ns) or tuple(draws.alpha.shape) != (n, ns):
            raise OptionError(
                "draws",
                f"baseline_index {list(draws.baseline_index.shape)} and alpha "
                f"{list(draws.alpha.shape)} do not fit {n} inputs × n_samples={ns}",
                f"give both of shape [{n}, {ns}]",
            )
        idx = draws.baseline_index
        if bool((idx < 0).any()) or bool((idx >= b).any()):
            raise OptionError("draws", f"baseline_index outside 0..{b - 1}", "index the baselines")
        if draws.noise is not None and tuple(draws.noise.shape) != (n, ns, *shape):
            raise OptionError(
                "draws",
                f"noise of shape {list(draws.noise.shape)} does not fit",
                f"give noise of shape {[n, ns, *shape]} or None",
            )

    def attribute(
        self,
        model: nn.Module,
        x: torch.Tensor | np.ndarray,
        *,
        target: TargetLike = None,
        baseline: BaselineLike = None,
        generator: torch.Generator | None = None,
        draws: GradientShapDraws | None = None,
    ) -> Attribution:
        """Expected gradients ``(N, *shape)`` for ``x`` over the baseline distribution
        ``baseline`` ``(B, *shape)`` (one baseline ``(*shape)`` is a distribution of one;
        ``None``: the all-zero input)."""
        xb = as_batch(x)
        dist = check_distribution(
            None if isinstance(baseline, (int, float)) else baseline, xb, "baseline"
        )
        if isinstance(baseline, (int, float)):
            dist = torch.full_like(dist, float(baseline))
        ibs, ns = self.internal_batch_size, self.n_samples
        shape = tuple(xb.shape[1:])
        n, nb = xb.shape[0], dist.shape[0]
        if draws is not None:
            self._check_draws(draws, n, shape, nb)
        layout = input_layout(model, xb)
        view = (-1,) + (1,) * len(shape)
        values = torch.zeros(xb.shape, dtype=torch.float64)
        ref = torch.zeros(n, dtype=torch.float64)
        with eval_mode(model):
            t, _ = resolve_target(model, xb, target, ibs)
            f_x = scores(model, xb, t, self.output, ibs)
            group = max(1, ibs // ns)
            for i0 in range(0, n, group):
                idx = torch.arange(i0, min(n, i0 + group))
                if draws is not None:
                    bi = draws.baseline_index[idx].to(torch.int64)
                    alpha = draws.alpha[idx].float()
                    eps = None if draws.noise is None else draws.noise[idx].float()
                else:
                    bis, epss, alphas = [], [], []
                    for _ in idx:
                        bis.append(torch.randint(nb, (ns,), generator=generator))
                        if self.sigma > 0:
                            epss.append(torch.randn((ns, *shape), generator=generator) * self.sigma)
                        alphas.append(torch.rand(ns, generator=generator))
                    bi, alpha = torch.stack(bis), torch.stack(alphas)
                    eps = torch.stack(epss) if epss else None
                xt = xb[idx].unsqueeze(1).expand(-1, ns, *shape)
                if eps is not None:
                    xt = xt + eps
                xt = xt.reshape(-1, *shape)
                base = dist[bi.reshape(-1)]
                a = alpha.reshape(view)
                pts = a * xt + (1.0 - a) * base
                owner = idx.repeat_interleave(ns)
                ref[idx] = scores(model, base, t[owner], self.output, ibs).view(-1, ns).mean(dim=1)
                for c0 in range(0, pts.shape[0], ibs):
                    p = as_layout(pts[c0 : c0 + ibs], layout).requires_grad_(True)
                    rows = owner[c0 : c0 + ibs]
                    with torch.enable_grad():
                        sc = target_scores(model(p), t[rows], self.output)
                        (g,) = torch.autograd.grad(sc.sum(), p)
                    mult = (xt[c0 : c0 + ibs] - base[c0 : c0 + ibs]).double()
                    values.index_add_(0, rows, g.double() * mult)
        values /= ns
        delta = values.flatten(1).sum(1) - (f_x - ref)
        return Attribution(
            method=self.name,
            values=values,
            target=t,
            output=self.output,
            score=f_x,
            reference_score=ref,
            delta=delta,
            evaluations=n + 2 * n * ns,
            settings=self.settings,
        )
