"""Neural Cleanse trigger inversion (Wang et al., IEEE S&P 2019, "Neural Cleanse: Identifying
and Mitigating Backdoor Attacks in Neural Networks"), with a few clean samples.

For every class ``t``, find a mask ``m`` (one value per spatial position / time step, shared by
the channels) and a pattern ``p`` (one value per input element) so that
``x' = (1 − m)⊙x + m⊙p`` goes to ``t`` for clean ``x``, minimising
``CE(f(x'), t) + λ·‖m‖₁``. A backdoor target needs an unusually *small* mask. Follows the
reference implementation (``bolunwang/backdoor``, ``visualizer.py``) in its choices:

* parametrisation ``m = tanh(a)/2 + 1/2`` and ``p = lo + (hi − lo)·(tanh(b)/2 + 1/2)`` (the
  pattern stays in the input domain ``[lo, hi]``);
* the regulariser is ``Σ|m| / C`` as in the reference (the mask sum; the reference divides by the
  colour channels because its mask is stored per channel — ours is one plane, so the division is
  by 1);
* Adam with ``lr = 0.1``, ``betas = (0.5, 0.9)``;
* λ adaptation per epoch: start at ``init_cost = 1e-3``; after each epoch, an attack success
  ≥ ``attack_threshold`` (0.99) counts towards raising λ, below it towards lowering it; after
  ``patience`` (5) epochs in a row λ is multiplied by 1.5 (up) or divided by 1.5^1.5 (down);
* the reported mask is the smallest-L1 one among epochs whose attack success reached the
  threshold (if none did, the last one, flagged ``reached = False``);
* early stop after ``early_stop_patience`` (10) epochs without a 1% improvement of the best L1
  once λ has been raised and lowered (the reference's rule, with its default patience of 10).

Budget: an epoch is ``ceil(n / batch_size)`` steps over the clean samples; at most ``epochs``
epochs per class (reference: 5 epochs of ~many steps; ours is sized for small data, stated in the
settings) and, optionally, ``max_seconds`` for the whole run (classes not reached are reported as
not run).

Anomaly index (the paper, §IV-C): with the L1 norms ``n_t``, ``MAD = median |n − median(n)|``,
``index_t = |n_t − median| / (1.4826·MAD)``; a class with ``n_t < median`` and index > 2 is
flagged. Per-class anomaly here = the signed index ``(median − n_t)/(1.4826·MAD)`` (positive on
the small side), model score = its maximum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeproof.errors import DataError, OptionError
from edgeproof.methods.backdoor.scoring import MAD_TO_SIGMA, DetectorResult
from edgeproof.models.modules import eval_mode

__all__ = ["NeuralCleanseConfig", "ReversedTrigger", "neural_cleanse", "reverse_trigger"]

ANOMALY_FLAG = 2.0


@dataclass(frozen=True)
class NeuralCleanseConfig:
    """Neural Cleanse settings (reference defaults except the epoch budget)."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.1
    init_cost: float = 1e-3
    attack_threshold: float = 0.99
    patience: int = 5
    cost_multiplier: float = 1.5
    early_stop_patience: int = 10
    max_seconds: float | None = None

    def validate(self) -> None:
        if self.epochs < 1:
            raise OptionError("nc_epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise OptionError("nc_batch_size", f"must be >= 1, got {self.batch_size}")
        if not self.lr > 0 or not self.init_cost > 0:
            raise OptionError("nc_lr", "lr and init_cost must be > 0")
        if not 0.0 < self.attack_threshold <= 1.0:
            raise OptionError("nc_attack_threshold", f"{self.attack_threshold} not in (0, 1]")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise OptionError("nc_max_seconds", f"must be > 0, got {self.max_seconds}")


@dataclass(frozen=True)
class ReversedTrigger:
    """The inverted trigger of one class.

    Attributes:
        target: the class.
        mask: ``(1, *spatial)`` in [0, 1].
        pattern: ``(C, *spatial)`` in the input domain.
        l1: ``Σ mask``.
        attack_success: fraction of the clean samples sent to ``target`` by the trigger.
        reached: whether the attack success reached the threshold at some epoch.
        epochs: epochs run.
    """

    target: int
    mask: np.ndarray
    pattern: np.ndarray
    l1: float
    attack_success: float
    reached: bool
    epochs: int


def reverse_trigger(
    module: nn.Module,
    x: torch.Tensor,
    target: int,
    domain: tuple[float, float],
    cfg: NeuralCleanseConfig,
    generator: torch.Generator,
    deadline: float | None = None,
) -> ReversedTrigger:
    """Invert the trigger of class ``target`` on clean inputs ``x`` (see the module docstring)."""
    lo, hi = domain
    n = x.shape[0]
    mask_shape = (1, *x.shape[2:])
    a = (torch.rand(mask_shape, generator=generator) * 2 - 1).mul_(0.5).requires_grad_(True)
    b = (torch.rand(x.shape[1:], generator=generator) * 2 - 1).mul_(0.5).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=cfg.lr, betas=(0.5, 0.9))
    cost = cfg.init_cost
    up = down = 0
    raised = lowered = False
    best_l1 = math.inf
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    last: tuple[np.ndarray, np.ndarray, float] = (np.zeros(0), np.zeros(0), 0.0)
    stale = 0
    labels_all = torch.full((n,), target, dtype=torch.long)
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):  # noqa: B007 - epoch is reported
        perm = torch.randperm(n, generator=generator)
        hits = 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            xb = x[idx]
            mask = torch.tanh(a) / 2 + 0.5
            pattern = lo + (hi - lo) * (torch.tanh(b) / 2 + 0.5)
            adv = (1 - mask) * xb + mask * pattern
            logits = module(adv)
            ce = F.cross_entropy(logits, labels_all[: idx.numel()])
            loss = ce + cost * mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            hits += int((logits.argmax(1) == target).sum())
        with torch.no_grad():
            mask = torch.tanh(a) / 2 + 0.5
            pattern = lo + (hi - lo) * (torch.tanh(b) / 2 + 0.5)
            l1 = float(mask.sum())
        acc = hits / n
        last = (mask.numpy().copy(), pattern.numpy().copy(), acc)
        improved = acc >= cfg.attack_threshold and l1 < best_l1 * 0.99
        stale = 0 if improved else stale + 1
        if acc >= cfg.attack_threshold and l1 < best_l1:
            best_l1 = l1
            best = last
        if raised and lowered and stale >= cfg.early_stop_patience:
            break
        if acc >= cfg.attack_threshold:
            up, down = up + 1, 0
        else:
            up, down = 0, down + 1
        if up >= cfg.patience:
            up = 0
            cost *= cfg.cost_multiplier
            raised = True
        elif down >= cfg.patience:
            down = 0
            cost /= cfg.cost_multiplier**1.5
            lowered = True
        if deadline is not None and time.perf_counter() > deadline:
            break
    chosen = best if best is not None else last
    return ReversedTrigger(
        target=target,
        mask=chosen[0],
        pattern=chosen[1],
        l1=float(chosen[0].sum()),
        attack_success=float(chosen[2]),
        reached=best is not None,
        epochs=epoch,
    )


def neural_cleanse(
    module: nn.Module,
    x_clean: np.ndarray,
    domain: tuple[float, float],
    num_classes: int,
    *,
    config: NeuralCleanseConfig | None = None,
    seed: int = 0,
) -> tuple[DetectorResult, list[ReversedTrigger]]:
    """Invert a trigger for every class and score the mask norms (module docstring).

    Args:
        module: the classifier (raw-domain inputs), put in eval mode; its parameters are not
            changed.
        x_clean: clean samples ``(N, C, ...)`` (a few hundred suffice).
        domain: the input value domain ``(lo, hi)`` (the pattern is kept inside it).
        num_classes: K.
        config: settings (defaults: :class:`NeuralCleanseConfig`).
        seed: seeds the initial mask/pattern and the batch order.
    """
    cfg = config or NeuralCleanseConfig()
    cfg.validate()
    if x_clean.shape[0] == 0:
        raise DataError("neural cleanse needs clean samples, got none")
    t0 = time.perf_counter()
    deadline = None if cfg.max_seconds is None else t0 + cfg.max_seconds
    eval_mode(module)
    x = torch.as_tensor(np.ascontiguousarray(x_clean, dtype=np.float32))
    gen = torch.Generator().manual_seed(seed)
    triggers = _reverse_all(module, x, domain, num_classes, cfg, gen, deadline)
    norms = np.full(num_classes, np.nan)
    for trig in triggers:
        norms[trig.target] = trig.l1
    signed = _anomaly_index(norms)
    score = float(np.nanmax(signed)) if np.any(np.isfinite(signed)) else math.nan
    return (
        DetectorResult(
            detector="neural-cleanse",
            per_class=signed,
            suspected_target=int(np.nanargmin(norms)),
            score=score,
            indicators={"mask_l1": norms, "anomaly_index": np.abs(signed)},
            settings=_settings(cfg, int(x.shape[0]), len(triggers), seed),
            seconds=time.perf_counter() - t0,
        ),
        triggers,
    )


def _reverse_all(
    module: nn.Module,
    x: torch.Tensor,
    domain: tuple[float, float],
    num_classes: int,
    cfg: NeuralCleanseConfig,
    generator: torch.Generator,
    deadline: float | None,
) -> list[ReversedTrigger]:
    """:func:`reverse_trigger` for the classes in order, until the deadline (at least one),
    with the module's parameters frozen meanwhile (restored afterwards)."""
    params = list(module.parameters())
    grads = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    triggers: list[ReversedTrigger] = []
    try:
        with torch.enable_grad():
            for t in range(num_classes):
                if deadline is not None and time.perf_counter() > deadline and triggers:
                    break
                triggers.append(reverse_trigger(module, x, t, domain, cfg, generator, deadline))
    finally:
        for p, g in zip(params, grads):
            p.requires_grad_(g)
    return triggers


def _anomaly_index(norms: np.ndarray) -> np.ndarray:
    """The signed anomaly index ``(median − n_t)/(1.4826·MAD)`` of the mask L1 norms (NaN where
    a class did not run; 0 everywhere when the MAD is 0): positive on the small side."""
    done = norms[np.isfinite(norms)]
    med = float(np.median(done))
    mad = float(np.median(np.abs(done - med)))
    scale = MAD_TO_SIGMA * mad
    signed = (med - norms) / scale if scale > 0 else np.zeros(norms.shape[0])
    return np.where(np.isfinite(norms), signed, np.nan)


def _settings(
    cfg: NeuralCleanseConfig, clean_samples: int, classes_run: int, seed: int
) -> dict[str, Any]:
    return {
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "init_cost": cfg.init_cost,
        "attack_threshold": cfg.attack_threshold,
        "patience": cfg.patience,
        "cost_multiplier": cfg.cost_multiplier,
        "early_stop_patience": cfg.early_stop_patience,
        "max_seconds": cfg.max_seconds,
        "clean_samples": clean_samples,
        "classes_run": classes_run,
        "flag_rule": f"mask L1 below the median with anomaly index > {ANOMALY_FLAG}",
        "seed": seed,
    }
