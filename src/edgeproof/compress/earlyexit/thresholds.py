"""The exit rule, exit costs and the calibration of exit thresholds to an accuracy budget.

Exit at the first head whose max-softmax ≥ τ_i (``"max_softmax"``) or whose softmax entropy (nats)
≤ T_i (``"entropy"``); the final stage always answers. Costs: MACs from
:func:`edgeproof.runtime.macs.count_macs` per stage and per head; leaving at exit i costs stages
0..i plus heads 0..i. The threshold search is described in :mod:`edgeproof.compress.earlyexit`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from edgeproof.compress.earlyexit.backbone import EarlyExitModel, batched
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.runtime.macs import count_macs
from edgeproof.serialize import JsonFields

__all__ = [
    "CRITERIA",
    "EXIT_RATE_GRID",
    "MAX_COMBINATIONS",
    "Calibration",
    "CascadeOutput",
    "Criterion",
    "ExitRule",
    "all_exit_logits",
    "calibrate_thresholds",
    "cascade_from",
    "cascade_predict",
    "exit_costs",
    "exit_scores",
    "mac_costs",
]

Criterion = Literal["max_softmax", "entropy"]
CRITERIA: tuple[str, ...] = ("max_softmax", "entropy")

EXIT_RATE_GRID: tuple[float, ...] = tuple(
    [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0]
)
"""Target fractions of the samples reaching an exit that the candidate thresholds let leave."""

MAX_COMBINATIONS = 20_000
"""Most threshold combinations the calibration evaluates."""


def exit_scores(logits: np.ndarray, criterion: Criterion) -> np.ndarray:
    """Confidence score per row, higher = more confident: max-softmax, or minus the entropy (nats).

    Computed in float64 from the logits, the same way for PyTorch and ONNX Runtime outputs.
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if criterion == "max_softmax":
        return np.asarray(p.max(axis=1))
    if criterion == "entropy":
        return np.asarray((p * np.log(np.clip(p, 1e-300, None))).sum(axis=1))
    raise OptionError("criterion", f"unknown criterion {criterion!r}", "use max-softmax or entropy")


@dataclass(frozen=True)
class ExitRule(JsonFields):
    """Exit at the first head whose score passes its threshold; the final stage always answers.

    ``thresholds[i]`` is τ_i (exit if max-softmax ≥ τ_i) for ``"max_softmax"`` and T_i (exit if
    entropy ≤ T_i, in nats) for ``"entropy"``; one per early exit. ``math.inf`` (max-softmax) or
    ``-math.inf`` (entropy) disables an exit; τ > 1 or T < 0 disables it too.
    """

    criterion: Criterion
    thresholds: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise OptionError(
                "criterion",
                f"unknown criterion {self.criterion!r}",
                "use max-softmax or entropy",
            )
        if any(math.isnan(t) for t in self.thresholds):
            raise OptionError("thresholds", f"{self.thresholds} contains NaN", "give numbers")

    def score_thresholds(self) -> np.ndarray:
        """Thresholds on :func:`exit_scores`' scale (exit if score ≥ value)."""
        t = np.asarray(self.thresholds, np.float64)
        return t if self.criterion == "max_softmax" else -t

    def decide(self, early_logits: Sequence[np.ndarray]) -> np.ndarray:
        """Exit index per row given the early exits' logits (``len(thresholds)`` arrays)."""
        if len(early_logits) != len(self.thresholds):
            raise OptionError(
                "thresholds",
                f"{len(self.thresholds)} thresholds for {len(early_logits)} exits",
                "give one threshold per early exit",
            )
        n = early_logits[0].shape[0] if early_logits else 0
        exit_at = np.full(n, len(early_logits), np.int64)
        undecided = np.ones(n, bool)
        for i, (lg, thr) in enumerate(zip(early_logits, self.score_thresholds())):
            go = undecided & (exit_scores(lg, self.criterion) >= thr)
            exit_at[go] = i
            undecided &= ~go
        return exit_at


@dataclass(frozen=True)
class CascadeOutput:
    """Per-sample outcome of a cascade: prediction, exit taken, that exit's logits, latency."""

    pred: np.ndarray
    exit_index: np.ndarray
    logits: np.ndarray
    latency_ms: np.ndarray | None = None


def all_exit_logits(model: EarlyExitModel, x: np.ndarray) -> list[np.ndarray]:
    model.eval()
    parts = batched(model, x)
    return [np.concatenate([p[i].numpy() for p in parts]) for i in range(model.num_exits)]


def cascade_from(all_logits: list[np.ndarray], rule: ExitRule) -> CascadeOutput:
    exit_at = rule.decide(all_logits[:-1])
    stacked = np.stack(all_logits)  # (E, N, K)
    chosen = stacked[exit_at, np.arange(stacked.shape[1])]
    return CascadeOutput(chosen.argmax(1), exit_at, chosen)


def cascade_predict(model: EarlyExitModel, rule: ExitRule, x: np.ndarray) -> CascadeOutput:
    """The PyTorch cascade: every exit is computed, then the rule picks each sample's exit.

    Equal to stopping at the exit (stages are per-sample functions in eval mode).
    """
    return cascade_from(all_exit_logits(model, x), rule)


@dataclass(frozen=True)
class Calibration(JsonFields):
    """Thresholds chosen on calibration data and what they gave there."""

    rule: ExitRule
    max_drop: float
    samples: int
    full_accuracy: float
    cascade_accuracy: float
    exit_rates: tuple[float, ...]
    expected_macs: float
    full_macs: float
    combinations: int
    procedure: str

    @property
    def accuracy_drop(self) -> float:
        return self.full_accuracy - self.cascade_accuracy


_PROCEDURE = (
    "per-exit candidate thresholds at midpoints between distinct calibration scores giving exit "
    "rates {rates} (+ off); exhaustive search over combinations; kept the lowest expected MACs "
    "with cascade accuracy >= full accuracy - max_drop on the calibration data"
)


def _candidate_thresholds(scores: np.ndarray, rates: Sequence[float]) -> list[float]:
    """Score thresholds (exit if score ≥ t) giving ≈ each exit rate, plus +inf (off)."""
    v = np.unique(scores)[::-1]  # distinct, descending
    counts = np.cumsum(np.unique(scores, return_counts=True)[1][::-1])  # samples with score ≥ v[j]
    n = scores.shape[0]
    out: list[float] = [math.inf]
    for r in rates:
        j = int(np.searchsorted(counts, math.ceil(r * n - 1e-9)))
        j = min(j, len(v) - 1)
        t = float((v[j] + v[j + 1]) / 2.0) if j + 1 < len(v) else float(v[j] - 1e-6)
        if t not in out:
            out.append(t)
    return out


def mac_costs(model: EarlyExitModel) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """``(stage_macs, head_macs, backbone_macs)`` per sample, by the footprint check's counter."""

    def total(m: nn.Module, shape: Sequence[int]) -> int:
        return sum(c.macs or 0 for c in count_macs(m, torch.zeros(1, *shape)))

    stage = tuple(total(s, shp) for (_, s), shp in zip(model.stages, model.stage_input_shapes))
    head = tuple(total(h, shp) for h, shp in zip(model.heads, model.stage_input_shapes[1:]))
    return stage, head, total(model.backbone, model.input_shape)


def exit_costs(model: EarlyExitModel) -> np.ndarray:
    """MACs of leaving at each exit (stages 0..i + heads 0..i; the final: all of them)."""
    stage, head, _ = mac_costs(model)
    costs = [sum(stage[: i + 1]) + sum(head[: i + 1]) for i in range(len(head))]
    costs.append(sum(stage) + sum(head))
    return np.asarray(costs, np.float64)


def calibrate_thresholds(
    model: EarlyExitModel,
    data: Dataset,
    *,
    max_drop: float,
    criterion: Criterion = "max_softmax",
    rates: Sequence[float] = EXIT_RATE_GRID,
) -> Calibration:
    """Choose per-exit thresholds meeting the accuracy budget on ``data`` at the lowest MACs.

    The procedure is the one in the module docstring; the cascade accuracy on ``data`` is
    guaranteed ≥ full accuracy − ``max_drop`` (the all-off rule is always feasible).
    """
    if not 0.0 <= max_drop <= 1.0:
        raise OptionError("max_drop", f"{max_drop} is not in [0, 1]", "use e.g. 1%")
    if criterion not in CRITERIA:
        raise OptionError(
            "criterion", f"unknown criterion {criterion!r}", "use max-softmax or entropy"
        )
    if len(data) == 0:
        raise SpecError(f"{data.name}: no records to calibrate the exit thresholds on")
    logits = all_exit_logits(model, data.x)
    y = data.y
    correct = [lg.argmax(1) == y for lg in logits]
    full_acc = float(correct[-1].mean())
    target = full_acc - max_drop - 1e-12
    backbone_macs = mac_costs(model)[2]
    costs = exit_costs(model)
    scores = [exit_scores(lg, criterion) for lg in logits[:-1]]
    grids = [_candidate_thresholds(s, rates) for s in scores]
    e = len(grids)
    per_exit = max(2, int(MAX_COMBINATIONS ** (1.0 / e))) if e else 1
    grids = [
        g if len(g) <= per_exit else [g[round(k)] for k in np.linspace(0, len(g) - 1, per_exit)]
        for g in grids
    ]
    passes = [np.stack([s >= t for t in g]) for s, g in zip(scores, grids)]
    n = y.shape[0]
    correct_mat = np.stack(correct)  # (exits, N)
    cols = np.arange(n)
    best: tuple[float, float, tuple[int, ...]] | None = None
    best_exit = np.full(n, e, np.int64)
    combos = 0
    for combo in itertools.product(*[range(len(g)) for g in grids]):
        combos += 1
        exit_at = np.full(n, e, np.int64)
        undecided = np.ones(n, bool)
        for i, gi in enumerate(combo):
            go = undecided & passes[i][gi]
            exit_at[go] = i
            undecided &= ~go
        acc = float(correct_mat[exit_at, cols].mean())
        if acc < target:
            continue
        macs = float(costs[exit_at].mean())
        key = (macs, -acc, combo)
        if best is None or key < best:
            best, best_exit = key, exit_at
    assert best is not None  # the all-off combination (index 0 everywhere) is feasible
    score_thr = [grids[i][gi] for i, gi in enumerate(best[2])]
    sign = 1.0 if criterion == "max_softmax" else -1.0
    thresholds = tuple(sign * t for t in score_thr)
    rule = ExitRule(criterion, thresholds)
    rates_out = tuple(float((best_exit == i).mean()) for i in range(e + 1))
    return Calibration(
        rule=rule,
        max_drop=max_drop,
        samples=n,
        full_accuracy=full_acc,
        cascade_accuracy=-best[1],
        exit_rates=rates_out,
        expected_macs=best[0],
        full_macs=float(backbone_macs),
        combinations=combos,
        procedure=_PROCEDURE.format(rates=", ".join(f"{r:g}" for r in rates)),
    )
