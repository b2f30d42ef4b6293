"""FreeEagle: data-free backdoor detection by optimising inputs to the head (Fu et al., USENIX
Security 2023, "FreeEagle: Detecting Complex Neural Trojans in Data-Free Cases").

Follows the public code (``MLBackdoorDetection/backdoor_inspection_new.py``, MIT) with its
defaults:

1. Split the classifier at an inner layer (:func:`~edgeproof.methods.backdoor.head.split_model`,
   ``kind="freeeagle"``): ``logits = head(z)``.
2. For every class ``c``, one dummy embedding ``z_c`` (``num_dummy = 1``) drawn uniform in [0, 1)
   (``torch.rand_like`` of the embedding template) is optimised for ``steps = 1000`` Adam steps
   (``lr = 1e-2``, ``weight_decay = 0.005``, i.e. an L2 term added to the gradient, not AdamW) to
   minimise ``CE(head(z_c), c)``; where the embedding follows a ReLU (``bound_on``) it is clamped
   to ``[0, 999]`` after every step.
3. The class-tendency matrix ``M[s, t] = softmax(head(z_s))[t]`` (``metric = softmax_score``) with
   the diagonal set to 0 (and negatives to 0, which softmax never gives).
4. Tendency of each target class ``T_t = mean_s M[s, t] · K/(K−1)`` (the mean over the other
   sources); anomaly = ``(max T − Q3) / IQR`` with FreeEagle's quartile rule
   (:func:`~edgeproof.methods.backdoor.scoring.quartile_anomaly`).

One deliberate difference, optional: by default the K dummies are optimised *together* as one
batch with the per-class losses summed (``reduction="sum"``), which gives every ``z_c`` exactly the
gradient it would get alone (the head is in eval mode, so samples do not interact; Adam's state is
per element), so the result equals the per-class loop up to float rounding, K times faster.
``batched=False`` runs the reference's per-class loop. The per-class draws are made from one
generator in class order, as the reference draws them from torch's global generator; seeding both
alike gives the same starting points.

Not implemented: the transpose correction (off by default in the reference) and ``num_dummy > 1``
(the reference forces 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeproof.errors import OptionError
from edgeproof.methods.backdoor.head import HeadSplit
from edgeproof.methods.backdoor.scoring import DetectorResult, quartile_anomaly

__all__ = ["FreeEagleConfig", "class_tendency", "freeeagle", "optimise_dummies"]


@dataclass(frozen=True)
class FreeEagleConfig:
    """FreeEagle's settings (defaults = the reference code's)."""

    steps: int = 1000
    lr: float = 1e-2
    weight_decay: float = 0.005
    upper_bound: float = 999.0
    batched: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise OptionError("freeeagle_steps", f"must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise OptionError("freeeagle_lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise OptionError("freeeagle_weight_decay", f"must be >= 0, got {self.weight_decay}")


def _optimise(
    head: torch.nn.Module,
    z0: torch.Tensor,
    labels: torch.Tensor,
    nonnegative: bool,
    cfg: FreeEagleConfig,
) -> torch.Tensor:
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.steps):
        opt.zero_grad()
        loss = F.cross_entropy(head(z), labels, reduction="sum")
        loss.backward()
        opt.step()
        if nonnegative:
            with torch.no_grad():
                z.clamp_(0.0, cfg.upper_bound)
    return z.detach()


def optimise_dummies(
    split: HeadSplit, num_classes: int, cfg: FreeEagleConfig, generator: torch.Generator
) -> torch.Tensor:
    """The optimised dummy embedding of every class, ``(K, *embedding_shape)``."""
    cfg.validate()
    head = split.head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    try:
        z0 = torch.rand((num_classes, *split.embedding_shape), generator=generator)
        labels = torch.arange(num_classes)
        with torch.enable_grad():
            if cfg.batched:
                return _optimise(head, z0, labels, split.nonnegative, cfg)
            rows = [
                _optimise(head, z0[c : c + 1], labels[c : c + 1], split.nonnegative, cfg)
                for c in range(num_classes)
            ]
        return torch.cat(rows, dim=0)
    finally:
        for p in head.parameters():
            p.requires_grad_(True)


def class_tendency(split: HeadSplit, dummies: torch.Tensor) -> np.ndarray:
    """``M[s, t]``: softmax score of class ``t`` for the dummy of source ``s``; diagonal 0."""
    with torch.inference_mode():
        probs = F.softmax(split.head(dummies), dim=1).double().numpy()
    m: np.ndarray = np.maximum(probs, 0.0)
    np.fill_diagonal(m, 0.0)
    return m


def freeeagle(
    split: HeadSplit,
    num_classes: int,
    *,
    config: FreeEagleConfig | None = None,
    seed: int = 0,
) -> DetectorResult:
    """Run FreeEagle on a split model (see the module docstring).

    Returns a :class:`DetectorResult` whose ``per_class`` is ``(T_t − Q3)/IQR``, ``score`` the
    anomaly ``(max T − Q3)/IQR``, with the tendency matrix and vector as indicators.
    """
    cfg = config or FreeEagleConfig()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    dummies = optimise_dummies(split, num_classes, cfg, gen)
    matrix = class_tendency(split, dummies)
    k = num_classes
    tendency = matrix.mean(axis=0) * k / (k - 1)
    score, per_class = quartile_anomaly(tendency)
    return DetectorResult(
        detector="freeeagle",
        per_class=per_class,
        suspected_target=int(np.argmax(tendency)),
        score=score,
        indicators={"tendency": tendency, "tendency_matrix": matrix},
        settings={
            "steps": cfg.steps,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "batched": cfg.batched,
            "split": split.where,
            "nonnegative": split.nonnegative,
            "seed": seed,
        },
        seconds=time.perf_counter() - t0,
    )
