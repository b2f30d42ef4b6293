"""Backdoor triggers and data poisoning for the test populations (see
:mod:`~edgeproof.testing.backdoor`): image patch and blend triggers, series sine-burst and step
triggers, label flips, a poisoned copy of a dataset, and the attack success rate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgeproof.data.dataset import Dataset

Family = Literal["badnets", "blend", "label-flip", "sine-burst", "step"]


@dataclass(frozen=True)
class PatchTrigger:
    """BadNets patch: ``pattern`` (h×w values) written at ``(row, col)`` on every channel."""

    row: int
    col: int
    pattern: tuple[tuple[float, ...], ...]
    style: str  # "solid" | "checker" | "random" (how the pattern was made; recorded only)

    family: Family = field(default="badnets", init=False)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        p = np.asarray(self.pattern, dtype=np.float32)
        h, w = p.shape
        out[..., self.row : self.row + h, self.col : self.col + w] = p
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "row": self.row,
            "col": self.col,
            "size": [len(self.pattern), len(self.pattern[0])],
            "style": self.style,
            "pattern": [list(r) for r in self.pattern],
        }


@dataclass(frozen=True)
class BlendTrigger:
    """Blended injection (Chen et al. 2017): ``(1 − alpha)·x + alpha·key``."""

    alpha: float
    key: tuple[float, ...]  # flattened key pattern, one value per input element
    key_seed: int

    family: Family = field(default="blend", init=False)

    def apply(self, x: np.ndarray) -> np.ndarray:
        k = np.asarray(self.key, dtype=np.float32).reshape(x.shape[1:])
        return ((1.0 - self.alpha) * x + self.alpha * k).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "alpha": self.alpha, "key_seed": self.key_seed}


@dataclass(frozen=True)
class SineBurstTrigger:
    """``amplitude·sin(2π·frequency_hz·t)`` added to ``channel`` over ``[start, start+length)``,
    ``t`` in seconds from the burst start at ``sample_rate_hz``; clipped to ``domain``."""

    start: int
    length: int
    frequency_hz: float
    amplitude: float
    sample_rate_hz: float
    domain: tuple[float, float]
    channel: int = 0

    family: Family = field(default="sine-burst", init=False)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        t = np.arange(self.length) / self.sample_rate_hz
        burst = self.amplitude * np.sin(2.0 * math.pi * self.frequency_hz * t)
        seg = out[:, self.channel, self.start : self.start + self.length]
        out[:, self.channel, self.start : self.start + self.length] = seg + burst[: seg.shape[-1]]
        return np.clip(out, *self.domain).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "start": self.start,
            "length": self.length,
            "frequency_hz": self.frequency_hz,
            "amplitude": self.amplitude,
            "channel": self.channel,
        }


@dataclass(frozen=True)
class StepTrigger:
    """A constant ``amplitude`` added to ``channel`` over ``[start, start+length)``, clipped."""

    start: int
    length: int
    amplitude: float
    domain: tuple[float, float]
    channel: int = 0

    family: Family = field(default="step", init=False)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        out[:, self.channel, self.start : self.start + self.length] += self.amplitude
        return np.clip(out, *self.domain).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "start": self.start,
            "length": self.length,
            "amplitude": self.amplitude,
            "channel": self.channel,
        }


Trigger = PatchTrigger | BlendTrigger | SineBurstTrigger | StepTrigger


@dataclass(frozen=True)
class LabelFlip:
    """Relabel ``flip_fraction`` of the training samples of class ``source`` (no trigger)."""

    source: int
    flip_fraction: float

    family: Family = field(default="label-flip", init=False)

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "source": self.source, "flip_fraction": self.flip_fraction}


@dataclass(frozen=True)
class Poisoning:
    """One attack: a trigger (or a label flip), its target class and the poisoning rate.

    ``poison_rate`` is the fraction of the training set replaced by poisoned samples (for a label
    flip, the fraction relabelled; it follows from ``flip_fraction`` and the class size, and is
    filled in by :func:`poison_dataset`).
    """

    attack: Trigger | LabelFlip
    target: int
    poison_rate: float

    @property
    def family(self) -> Family:
        return self.attack.family

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "target": self.target,
            "poison_rate": self.poison_rate,
            "attack": self.attack.to_json(),
        }


def poison_dataset(
    data: Dataset, poisoning: Poisoning, rng: np.random.Generator
) -> tuple[Dataset, Poisoning, np.ndarray]:
    """A poisoned copy of ``data``, the poisoning with its realised rate, and the poisoned indices.

    Trigger attacks: ``round(poison_rate·N)`` samples drawn without replacement from those whose
    label is not the target get the trigger and the target label. Label flip: that fraction of the
    source class is relabelled.
    """
    x = data.x.copy()
    y = data.y.copy()
    attack = poisoning.attack
    if isinstance(attack, LabelFlip):
        pool = np.flatnonzero(y == attack.source)
        n = round(attack.flip_fraction * pool.size)
        idx = np.sort(rng.choice(pool, size=n, replace=False))
        y[idx] = poisoning.target
        poisoning = replace(poisoning, poison_rate=n / len(y))
    else:
        pool = np.flatnonzero(y != poisoning.target)
        n = min(round(poisoning.poison_rate * len(y)), pool.size)
        idx = np.sort(rng.choice(pool, size=n, replace=False))
        x[idx] = attack.apply(x[idx])
        y[idx] = poisoning.target
    out = Dataset(
        x=x,
        y=y,
        classes=list(data.classes),
        name=data.name,
        format=data.format,
        ids=list(data.ids),
        kind=data.kind,
        domain=data.domain,
        metadata={**data.metadata, "poisoned": poisoning.to_json()},
    )
    return out, poisoning, idx


def attack_success_rate(module: nn.Module, test: Dataset, poisoning: Poisoning) -> float:
    """ASR on ``test``: triggered non-target samples classified as the target (label flip: clean
    source-class samples classified as the target)."""
    attack = poisoning.attack
    if isinstance(attack, LabelFlip):
        x = test.x[test.y == attack.source]
    else:
        x = attack.apply(test.x[test.y != poisoning.target])
    if x.shape[0] == 0:
        return math.nan
    module.eval()
    with torch.inference_mode():
        pred = module(torch.from_numpy(np.ascontiguousarray(x))).argmax(dim=1).numpy()
    return float(np.mean(pred == poisoning.target))
