"""SmoothGrad: gradients averaged over Gaussian-noised copies of the input.

Smilkov, Thorat, Kim, Viégas & Wattenberg 2017, "SmoothGrad: removing noise by adding noise"
(arXiv 1706.03825), eq. 3::

    M̂(x) = 1/n · Σ_s ∇f(x + ε_s),   ε_s ~ N(0, σ² I)

Variant followed: Captum 0.9.0's ``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"`` — the
gradient of the target score, averaged without squaring; ``absolute=True`` averages ``|∇f|``
instead, which is Captum's ``Saliency`` default (``abs=True``). σ is in **raw input units** (the
paper states it as a fraction of the input range, ``σ/(x_max − x_min)``, and recommends 10–20 %;
for inputs in ``[0, 1]`` the default σ = 0.15 is 15 %). The noisy copies are not clipped to the
input domain (neither the paper nor Captum clips).

Randomness: each sample's ``n_samples × shape`` noise block is drawn from ``generator`` in sample
order (``torch.randn · σ``), so a sample's noise does not depend on ``internal_batch_size``. To
reproduce another tool's draws exactly, pass them as ``noise`` ``(N, n_samples, *shape)``.
"""

from __future__ import annotations

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
    check_internal_batch_size,
    check_output,
    check_positive_int,
    eval_mode,
    refuse_baseline,
    resolve_target,
    scores,
    target_scores,
)

__all__ = ["SmoothGrad", "check_noise"]


def check_noise(noise: torch.Tensor | None, x: torch.Tensor, n_samples: int) -> torch.Tensor | None:
    """Explicit noise must have shape ``(N, n_samples, *shape)``."""
    if noise is None:
        return None
    want = (x.shape[0], n_samples, *x.shape[1:])
    if tuple(noise.shape) != want:
        raise OptionError(
            "noise",
            f"shape {list(noise.shape)} does not fit {x.shape[0]} inputs × n_samples={n_samples}",
            f"give noise of shape {list(want)} or None (drawn from the generator)",
        )
    return noise.detach().float()


class SmoothGrad(AttributionMethod):
    """Noise-averaged gradients of the target score.

    Args:
        n_samples: noisy copies per input (default 50, the paper's value).
        sigma: noise standard deviation in raw input units (default 0.15).
        absolute: average ``|∇f|`` instead of ``∇f`` (default False).
        internal_batch_size: rows per forward/backward pass (default 256).
        output: ``logit`` (default) or ``probability`` of the target class.
    """

    name: ClassVar[str] = "smoothgrad"
    needs_gradients: ClassVar[bool] = True
    baseline_kind: ClassVar[BaselineKind] = "none"

    def __init__(
        self,
        *,
        n_samples: int = 50,
        sigma: float = 0.15,
        absolute: bool = False,
        internal_batch_size: int = 256,
        output: Output = "logit",
    ) -> None:
        self.n_samples = check_positive_int("n_samples", n_samples, 1, "use e.g. 50")
        if not (np.isfinite(sigma) and sigma >= 0):
            raise OptionError("sigma", f"{sigma!r} must be >= 0 (raw input units)", "use e.g. 0.15")
        self.sigma = float(sigma)
        self.absolute = bool(absolute)
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        self.output: Output = check_output(output)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "sigma": self.sigma,
            "absolute": self.absolute,
            "internal_batch_size": self.internal_batch_size,
            "output": self.output,
        }

    def attribute(
        self,
        model: nn.Module,
        x: torch.Tensor | np.ndarray,
        *,
        target: TargetLike = None,
        baseline: BaselineLike = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> Attribution:
        """SmoothGrad maps ``(N, *shape)`` for the batch ``x`` (no baseline)."""
        refuse_baseline(self.name, baseline)
        xb = as_batch(x)
        eps_all = check_noise(noise, xb, self.n_samples)
        ibs, ns = self.internal_batch_size, self.n_samples
        shape = tuple(xb.shape[1:])
        n = xb.shape[0]
        layout = input_layout(model, xb)
        values = torch.zeros(xb.shape, dtype=torch.float64)
        with eval_mode(model):
            t, _ = resolve_target(model, xb, target, ibs)
            f_x = scores(model, xb, t, self.output, ibs)
            group = max(1, ibs // ns)
            for i0 in range(0, n, group):
                idx = torch.arange(i0, min(n, i0 + group))
                if eps_all is not None:
                    eps = eps_all[idx]
                else:
                    eps = torch.stack(
                        [torch.randn((ns, *shape), generator=generator) for _ in idx]
                    ).mul_(self.sigma)
                pts = (xb[idx].unsqueeze(1) + eps).reshape(-1, *shape)
                owner = idx.repeat_interleave(ns)
                for c0 in range(0, pts.shape[0], ibs):
                    p = as_layout(pts[c0 : c0 + ibs], layout).requires_grad_(True)
                    rows = owner[c0 : c0 + ibs]
                    with torch.enable_grad():
                        sc = target_scores(model(p), t[rows], self.output)
                        (g,) = torch.autograd.grad(sc.sum(), p)
                    g64 = g.double()
                    if self.absolute:
                        g64 = g64.abs()
                    values.index_add_(0, rows, g64)
        values /= ns
        return Attribution(
            method=self.name,
            values=values,
            target=t,
            output=self.output,
            score=f_x,
            evaluations=n * (ns + 1),
            settings=self.settings,
        )
