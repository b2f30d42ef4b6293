"""Head random probing: data-free backdoor triage from the head's response to random latents
(after HTell, Yu et al., arXiv:2605.18908, "Fast and Lightweight Backdoor Detection via Head
Random Probing").

HTell's observation: fed random latent vectors, the prediction head of a backdoored model
concentrates its responses on the target class. Its exact probe distribution and statistics are
not published (no code found); this module's choices, each deliberate:

* **Where**: the input of the final ``Linear`` (``split_model(..., kind="probe")``), the
  "prediction head" in its narrowest sense.
* **Probes** ("architecture-aware"): a ReLU layer's output is non-negative and sparse, so a probe
  is ``z = s·|g|⊙m/√ρ`` with ``g ~ N(0, I)``, ``m`` a Bernoulli(ρ) mask keeping a random
  ``density`` ρ = 0.3 of the units (``|·|`` only where the embedding is non-negative). The scale
  ``s`` runs over ``scales`` (1, 4) × ``unit``, where ``unit`` is the root-mean-square of the
  embedding of uniform-random inputs in the declared input domain (no data: a statement about the
  architecture and its weights), or 1 when the domain is unknown. ``n_probes`` probes per scale,
  seeded.
* **Response statistic**: the mean softmax probability of each class over all probes,
  ``r_k = mean_z softmax(head(z))_k`` (smooth, unlike arg-max counts, which are 0 for most classes).
* **Per-class anomaly**: the robust z-score (median/MAD) of ``log r_k`` across classes; the
  suspected target is the class with the largest, the model score is that maximum.

The density, scales and statistic were chosen on a development population (not the one the
benchmark measures on); they are settings, recorded with every result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from edgeproof.errors import OptionError
from edgeproof.methods.backdoor.head import HeadSplit
from edgeproof.methods.backdoor.scoring import DetectorResult, robust_z

__all__ = ["HeadProbeConfig", "embedding_unit", "head_probe"]


@dataclass(frozen=True)
class HeadProbeConfig:
    n_probes: int = 1024
    scales: tuple[float, ...] = (1.0, 4.0)
    density: float = 0.3

    def validate(self) -> None:
        if self.n_probes < 1:
            raise OptionError("probe_count", f"must be >= 1, got {self.n_probes}")
        if not self.scales or any(not s > 0 for s in self.scales):
            raise OptionError("probe_scales", f"scales {self.scales} must be > 0")
        if not 0.0 < self.density <= 1.0:
            raise OptionError("probe_density", f"{self.density} is not in (0, 1]")


def embedding_unit(
    split: HeadSplit,
    input_shape: tuple[int, ...],
    domain: tuple[float, float] | None,
    *,
    n: int = 64,
    seed: int = 0,
) -> float:
    """RMS of the embedding of ``n`` uniform-random inputs in ``domain`` (1.0 without a domain)."""
    if domain is None:
        return 1.0
    gen = torch.Generator().manual_seed(seed)
    lo, hi = domain
    x = lo + (hi - lo) * torch.rand((n, *input_shape), generator=gen)
    with torch.inference_mode():
        z = split.features(x)
    rms = float(torch.sqrt(torch.mean(z.double() ** 2)))
    return rms if rms > 0 else 1.0


def head_probe(
    split: HeadSplit,
    num_classes: int,
    *,
    unit: float = 1.0,
    config: HeadProbeConfig | None = None,
    seed: int = 0,
) -> DetectorResult:
    """Probe the head with random latents and score each class's response (module docstring)."""
    cfg = config or HeadProbeConfig()
    cfg.validate()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    head = split.head.eval()
    total = torch.zeros(num_classes, dtype=torch.float64)
    with torch.inference_mode():
        for s in cfg.scales:
            g = torch.randn((cfg.n_probes, *split.embedding_shape), generator=gen)
            keep = (torch.rand(g.shape, generator=gen) < cfg.density).to(g.dtype)
            z = (g.abs() if split.nonnegative else g) * keep * (s * unit / cfg.density**0.5)
            total += torch.softmax(head(z).double(), dim=1).sum(dim=0)
    response = (total / (cfg.n_probes * len(cfg.scales))).numpy()
    per_class = robust_z(np.log(np.maximum(response, 1e-300)))
    return DetectorResult(
        detector="head-probe",
        per_class=per_class,
        suspected_target=int(np.argmax(per_class)),
        score=float(np.max(per_class)),
        indicators={"mean_softmax": response},
        settings={
            "n_probes": cfg.n_probes,
            "scales": list(cfg.scales),
            "density": cfg.density,
            "unit": unit,
            "split": split.where,
            "nonnegative": split.nonnegative,
            "seed": seed,
        },
        seconds=time.perf_counter() - t0,
    )
