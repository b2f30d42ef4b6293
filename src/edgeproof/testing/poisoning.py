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
from edgeproof.serialize import JsonFields, fields_json

Family = Literal["badnets", "blend", "label-flip", "sine-burst", "step"]


@dataclass(frozen=True)
class PatchTrigger(JsonFields):
    """BadNets patch: ``pattern`` (h×w values) written at ``(row, col)`` on every channel."""

    row: int
    col: int
    pattern: tuple[tuple[float, ...], ...]
    style: str  # "solid" | "checker" | "random" (how the pattern was made; recorded only)

    family: Family = field(default="badnets", init=False)

    json_order = ("family", "row", "col", "size", "style", ...)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        p = np.asarray(self.pattern, dtype=np.float32)
        h, w = p.shape
        out[..., self.row : self.row + h, self.col : self.col + w] = p
        return out

    def to_json(self) -> dict[str, Any]:
        # the patch's size is stated, derived from the pattern
        return fields_json(self, extra={"size": [len(self.pattern), len(self.pattern[0])]})


@dataclass(frozen=True)
class BlendTrigger(JsonFields):
    """Blended injection (Chen et al. 2017): ``(1 − alpha)·x + alpha·key``."""

    alpha: float
    key: tuple[float, ...] = field(metadata={"json": False})  # flattened, one value per element
    key_seed: int

    family: Family = field(default="blend", init=False)

    json_order = ("family", ...)

    def apply(self, x: np.ndarray) -> np.ndarray:
        k = np.asarray(self.key, dtype=np.float32).reshape(x.shape[1:])
        return ((1.0 - self.alpha) * x + self.alpha * k).astype(np.float32)


@dataclass(frozen=True)
class SineBurstTrigger(JsonFields):
    """``amplitude·sin(2π·frequency_hz·t)`` added to ``channel`` over ``[start, start+length)``,
    ``t`` in seconds from the burst start at ``sample_rate_hz``; clipped to ``domain``."""

    start: int
    length: int
    frequency_hz: float
    amplitude: float
    sample_rate_hz: float = field(metadata={"json": False})
    domain: tuple[float, float] = field(metadata={"json": False})
    channel: int = 0

    family: Family = field(default="sine-burst", init=False)

    json_order = ("family", ...)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        t = np.arange(self.length) / self.sample_rate_hz
        burst = self.amplitude * np.sin(2.0 * math.pi * self.frequency_hz * t)
        seg = out[:, self.channel, self.start : self.start + self.length]
        out[:, self.channel, self.start : self.start + self.length] = seg + burst[: seg.shape[-1]]
        return np.clip(out, *self.domain).astype(np.float32)


@dataclass(frozen=True)
class StepTrigger(JsonFields):
    """A constant ``amplitude`` added to ``channel`` over ``[start, start+length)``, clipped."""

    start: int
    length: int
    amplitude: float
    domain: tuple[float, float] = field(metadata={"json": False})
    channel: int = 0

    family: Family = field(default="step", init=False)

    json_order = ("family", ...)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        out[:, self.channel, self.start : self.start + self.length] += self.amplitude
        return np.clip(out, *self.domain).astype(np.float32)


Trigger = PatchTrigger | BlendTrigger | SineBurstTrigger | StepTrigger


@dataclass(frozen=True)
class LabelFlip(JsonFields):
    """Relabel ``flip_fraction`` of the training samples of class ``source`` (no trigger)."""

    source: int
    flip_fraction: float

    family: Family = field(default="label-flip", init=False)

    json_order = ("family", ...)


@dataclass(frozen=True)
class Poisoning(JsonFields):
    """One attack: a trigger (or a label flip), its target class and the poisoning rate.

    ``poison_rate`` is the fraction of the training set replaced by poisoned samples (for a label
    flip, the fraction relabelled; it follows from ``flip_fraction`` and the class size, and is
    filled in by :func:`poison_dataset`).
    """

    attack: Trigger | LabelFlip
    target: int
    poison_rate: float

    json_order = ("family", ..., "attack")

    @property
    def family(self) -> Family:
        return self.attack.family


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
