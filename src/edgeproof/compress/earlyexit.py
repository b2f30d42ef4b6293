"""Early exits: classifier heads at intermediate blocks, a confidence-gated cascade, ONNX Runtime.

Follows BranchyNet (Teerapittayanon, McDanel & Kung, ICPR 2016) in its post-hoc form, as used for
deployed backbones by Fernandez et al. (arXiv 2604.14789): the trained backbone is **frozen**
and only small side branches are trained; at inference a sample leaves at the first branch that
is confident enough.

* **Split points** (:func:`split_backbone`, extensible with :func:`register_splitter`):
  ResNet-8/20/18 after every residual stage but the last; LeNet-5 after each conv block
  (conv-ReLU-pool); the 1-D CNN after each conv block but the last; the CNN-LSTM after each
  conv block (the last one is just before the LSTM); the MLP after its first hidden layer. The
  stages composed are exactly the backbone (checked on a dummy input when exits are attached).
* **Heads** (:class:`ExitHead`): global average pooling over every axis after the channels (none
  for flat features) + one linear layer. They are trained with the backbone in eval mode and no
  gradient (weights *and* BatchNorm statistics unchanged): stage outputs are computed once, pooled,
  and each head is fitted by Adam on cross-entropy against the true labels, seeded
  (initialisation and shuffling from a ``torch.Generator``), deterministic.
* **Exit rule** (:class:`ExitRule`): exit at the first head whose max-softmax ≥ τ_i
  (``"max_softmax"``) or whose softmax entropy (nats) ≤ T_i (``"entropy"``); the final stage
  always answers. τ_i > 1 (or T_i < 0) disables exit i.
* **Threshold calibration** (:func:`calibrate_thresholds`), on held-out calibration data:

  1. run every exit on every calibration sample; score = max-softmax, or −entropy;
  2. per exit, candidate thresholds are midpoints between consecutive *distinct* sorted scores
     chosen so that the exit alone would take ≈ r of the samples, for
     r ∈ :data:`EXIT_RATE_GRID`, plus "off" (so a threshold never equals a calibration score,
     and float-level differences between PyTorch and ONNX Runtime cannot flip a calibration
     sample);
  3. every combination of per-exit candidates is evaluated (exhaustive; the grid is thinned
     evenly when the product would exceed :data:`MAX_COMBINATIONS`);
  4. kept: the combination with the **lowest expected MACs** whose cascade accuracy is
     ≥ (full-model accuracy − ``max_drop``) on the calibration data; ties go to higher
     accuracy. "All exits off" is the full model, so a feasible answer always exists.

* **Costs** — MACs from :func:`edgeproof.runtime.macs.count_macs` per stage and per head;
  leaving at exit i costs stages 0..i plus heads 0..i; the final exit costs every stage and head.
  Expected MACs = mean cost over the data's actual exits.
* **ONNX Runtime** (:func:`export_segments`, :class:`OrtCascade`): one graph per segment —
  stage i + head i with outputs ``features`` and ``logits`` — and the final stage alone. The
  cascade runs the sessions one sample at a time (batch 1), deciding in NumPy between sessions;
  the latency of each sample (sessions + decisions) is measured with ``time.perf_counter``.
  Parity: ORT cascade predictions and exits vs the PyTorch cascade on the same inputs.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx
import torch
from torch import nn

from edgeproof.data.dataset import Dataset
from edgeproof.errors import InternalError, OptionError, SpecError
from edgeproof.methods.stats import wilson_interval
from edgeproof.models.zoo import CNN1D, CNNLSTM, MLP, LeNet5, ResNet
from edgeproof.results import Interval, Table
from edgeproof.runtime.macs import count_macs
from edgeproof.runtime.ort import make_session, per_record_latency_ms

if TYPE_CHECKING:
    from edgeproof.compress.ledger import Candidate
    from edgeproof.compress.search import Built
    from edgeproof.spec import InputSpec

__all__ = [
    "EXIT_RATE_GRID",
    "MAX_COMBINATIONS",
    "Calibration",
    "CascadeOutput",
    "CascadeParity",
    "Criterion",
    "EarlyExitConfig",
    "EarlyExitModel",
    "EarlyExitReport",
    "EarlyExitResult",
    "ExitHead",
    "ExitRule",
    "ExitStats",
    "HeadFit",
    "OrtCascade",
    "attach_exits",
    "build_early_exit",
    "calibrate_thresholds",
    "cascade_predict",
    "early_exit_candidate",
    "evaluate_early_exit",
    "exit_costs",
    "exit_scores",
    "export_all_exits",
    "export_segments",
    "mac_costs",
    "register_splitter",
    "split_backbone",
    "train_exit_heads",
]

Criterion = Literal["max_softmax", "entropy"]
_CRITERIA: tuple[str, ...] = ("max_softmax", "entropy")

EXIT_RATE_GRID: tuple[float, ...] = tuple(
    [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0]
)
"""Target fractions of the samples reaching an exit that the candidate thresholds let leave."""

MAX_COMBINATIONS = 20_000
"""Most threshold combinations the calibration evaluates."""

Stage = tuple[str, nn.Module]
Splitter = Callable[[nn.Module], list[Stage]]

# --------------------------------------------------------------------------------------------
# Split points


class _TimeMean(nn.Module):
    """Mean over the time axis of ``(N, C, T)`` (the 1-D CNN's global pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)


class _LSTMTail(nn.Module):
    """The CNN-LSTM after its conv features: LSTM over time, linear on the last hidden state."""

    def __init__(self, lstm: nn.LSTM, fc: nn.Linear) -> None:
        super().__init__()
        self.lstm = lstm
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x.transpose(1, 2))
        return self.fc(h[-1])


def _split_resnet(m: nn.Module) -> list[Stage]:
    assert isinstance(m, ResNet)
    n = len(m.layers)
    stages: list[Stage] = [("stem+layers.0", nn.Sequential(m.normalize, m.stem, m.layers[0]))]
    stages += [(f"layers.{i}", m.layers[i]) for i in range(1, n - 1)]
    stages.append((f"layers.{n - 1}+fc", nn.Sequential(m.layers[n - 1], m.pool, m.flatten, m.fc)))
    return stages


def _split_lenet5(m: nn.Module) -> list[Stage]:
    assert isinstance(m, LeNet5)
    layers = list(m)
    return [
        ("conv1", nn.Sequential(*layers[0:4])),
        ("conv2", nn.Sequential(*layers[4:7])),
        ("fc", nn.Sequential(*layers[7:])),
    ]


def _split_mlp(m: nn.Module) -> list[Stage]:
    assert isinstance(m, MLP)
    layers = list(m)
    return [("fc1", nn.Sequential(*layers[0:4])), ("fc2+fc3", nn.Sequential(*layers[4:]))]


def _conv_blocks(features: nn.Module) -> list[nn.Sequential]:
    """``features`` cut before every ``Conv1d`` (conv → ReLU → pool blocks)."""
    layers = list(features.children())
    starts = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv1d)]
    if not starts or starts[0] != 0:
        raise InternalError(f"{type(features).__name__}: expected conv blocks starting with Conv1d")
    ends = [*starts[1:], len(layers)]
    return [nn.Sequential(*layers[a:b]) for a, b in zip(starts, ends)]


def _split_cnn1d(m: nn.Module) -> list[Stage]:
    assert isinstance(m, CNN1D)
    blocks = _conv_blocks(m.features)
    stages: list[Stage] = [("conv1", nn.Sequential(m.normalize, blocks[0]))]
    stages += [(f"conv{i + 1}", b) for i, b in enumerate(blocks[1:-1], start=1)]
    stages.append((f"conv{len(blocks)}+fc", nn.Sequential(blocks[-1], _TimeMean(), m.fc)))
    return stages


def _split_cnn_lstm(m: nn.Module) -> list[Stage]:
    assert isinstance(m, CNNLSTM)
    blocks = _conv_blocks(m.features)
    stages: list[Stage] = [("conv1", nn.Sequential(m.normalize, blocks[0]))]
    stages += [(f"conv{i + 1}", b) for i, b in enumerate(blocks[1:], start=1)]
    stages.append(("lstm+fc", _LSTMTail(m.lstm, m.fc)))
    return stages


_SPLITTERS: dict[type[nn.Module], Splitter] = {}


def register_splitter(module_type: type[nn.Module], splitter: Splitter) -> None:
    """Teach :func:`split_backbone` a new architecture.

    ``splitter(module)`` returns ``[(name, stage), ...]`` whose composition equals
    ``module.forward``; the stages must reuse the module's own submodules (not copies), so the
    backbone weights stay one set. An exit is attached after every stage but the last.
    """
    _SPLITTERS[module_type] = splitter


for _t, _s in (
    (ResNet, _split_resnet),
    (LeNet5, _split_lenet5),
    (MLP, _split_mlp),
    (CNN1D, _split_cnn1d),
    (CNNLSTM, _split_cnn_lstm),
):
    register_splitter(_t, _s)


def split_backbone(module: nn.Module) -> list[Stage]:
    """The backbone's stages ``[(name, module), ...]``; exits go after all but the last."""
    for cls in type(module).__mro__:
        splitter = _SPLITTERS.get(cls)
        if splitter is not None:
            return splitter(module)
    raise OptionError(
        "early_exit",
        f"no split points are known for {type(module).__name__}",
        "early exits support the zoo backbones (zoo:resnet8/20/18, lenet5, mlp, cnn1d, cnn-lstm); "
        "register others with edgeproof.compress.earlyexit.register_splitter",
    )


# --------------------------------------------------------------------------------------------
# The model with exits


class ExitHead(nn.Module):
    """Global average pooling over every axis after the channels, then one linear layer."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    @staticmethod
    def pool(h: torch.Tensor) -> torch.Tensor:
        return h.flatten(2).mean(dim=2) if h.dim() > 2 else h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(h))


class EarlyExitModel(nn.Module):
    """A frozen backbone with exit heads; ``forward`` returns the logits of every exit.

    ``backbone`` and ``heads`` are the registered submodules (so ``state_dict()`` is the backbone's
    plus ``heads.<i>.*``); :attr:`stages` are views onto the backbone's own submodules.
    """

    def __init__(self, backbone: nn.Module, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.stages: list[Stage] = split_backbone(self.backbone)
        if len(self.stages) < 2:
            raise InternalError(f"{type(backbone).__name__}: a split needs at least two stages")
        shapes: list[tuple[int, ...]] = []
        widths: list[int] = []
        with torch.no_grad():
            h = torch.zeros(1, *self.input_shape)
            for _, stage in self.stages:
                shapes.append(tuple(int(s) for s in h.shape[1:]))
                h = stage(h)
                widths.append(int(ExitHead.pool(h).shape[1]))
        self.stage_input_shapes = tuple(shapes)
        """The per-sample input shape of each stage (the first is the model's input shape)."""
        with torch.random.fork_rng(devices=[]):  # default init must not move the caller's RNG
            self.heads = nn.ModuleList(ExitHead(w, self.num_classes) for w in widths[:-1])
        self._check_split()

    @property
    def num_exits(self) -> int:
        """Exits including the final one."""
        return len(self.stages)

    @property
    def exit_names(self) -> tuple[str, ...]:
        return tuple(
            [f"after {n}" for n, _ in self.stages[:-1]] + [f"final ({self.stages[-1][0]})"]
        )

    def _check_split(self) -> None:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(2, *self.input_shape, generator=gen)
        with torch.no_grad():
            want = self.backbone(x)
            got = self.forward(x)[-1]
        if not torch.allclose(want, got, rtol=1e-5, atol=1e-5):
            raise InternalError(
                f"{type(self.backbone).__name__}: the split stages do not compose to the backbone "
                f"(max diff {float((want - got).abs().max()):.3g}); the splitter is wrong"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        h = x
        for i, (_, stage) in enumerate(self.stages):
            h = stage(h)
            out.append(self.heads[i](h) if i < len(self.heads) else h)
        return out

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage but the last (the heads' inputs)."""
        out = []
        h = x
        for _, stage in self.stages[:-1]:
            h = stage(h)
            out.append(h)
        return out


def attach_exits(module: nn.Module, input_shape: Sequence[int], num_classes: int) -> EarlyExitModel:
    """A copy of ``module`` (eval mode) with untrained exit heads at its split points.

    The caller's module is never modified: the backbone is deep-copied.
    """
    return EarlyExitModel(copy.deepcopy(module).eval(), input_shape, num_classes)


# --------------------------------------------------------------------------------------------
# Head training


@dataclass(frozen=True)
class HeadFit:
    """How one exit head was trained: settings and its accuracy on the training data."""

    exit_index: int
    name: str
    in_features: int
    epochs: int
    lr: float
    batch_size: int
    seed: int
    final_loss: float
    train_accuracy: float


def _batched(fn: Callable[[torch.Tensor], Any], x: np.ndarray, batch_size: int = 256) -> list[Any]:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(fn(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))))
    return out


def train_exit_heads(
    model: EarlyExitModel,
    data: Dataset,
    *,
    epochs: int = 50,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
    weight_decay: float = 1e-4,
) -> tuple[HeadFit, ...]:
    """Fit every exit head on ``data`` with the backbone frozen; returns one :class:`HeadFit` each.

    The backbone runs in eval mode under ``torch.no_grad`` once over the data; each head is then
    trained on its pooled stage output (Adam, cross-entropy, ``weight_decay``), initialised
    (N(0, 0.01²) weights, zero bias) and shuffled from ``torch.Generator().manual_seed(seed + i)``.
    """
    if epochs < 1:
        raise OptionError("epochs", f"{epochs} is not >= 1", "use e.g. 50")
    if not lr > 0:
        raise OptionError("lr", f"{lr} is not positive", "use e.g. 0.01")
    if len(data) == 0:
        raise SpecError(f"{data.name}: no records to train the exit heads on")
    if tuple(data.sample_shape) != model.input_shape:
        raise SpecError(
            f"{data.name}: sample shape {data.sample_shape} does not fit the model input "
            f"{model.input_shape}; pass data shaped like the model input"
        )
    model.eval()
    parts = _batched(lambda t: [ExitHead.pool(h) for h in model.stage_outputs(t)], data.x)
    pooled = [torch.cat([p[i] for p in parts]) for i in range(len(model.heads))]
    y = torch.from_numpy(data.y)
    fits = []
    for i, (head, feats) in enumerate(zip(model.heads, pooled)):
        assert isinstance(head, ExitHead)
        gen = torch.Generator().manual_seed(seed + i)
        with torch.no_grad():
            head.fc.weight.copy_(torch.randn(head.fc.weight.shape, generator=gen) * 0.01)
            head.fc.bias.zero_()
        opt = torch.optim.Adam(head.fc.parameters(), lr=lr, weight_decay=weight_decay)
        n = feats.shape[0]
        loss = torch.tensor(float("nan"))
        head.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, batch_size):
                idx = order[s : s + batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(head.fc(feats[idx]), y[idx])
                loss.backward()
                opt.step()
        head.eval()
        with torch.no_grad():
            logits = head.fc(feats)
            full_loss = float(nn.functional.cross_entropy(logits, y))
            acc = float((logits.argmax(1) == y).float().mean())
        fits.append(
            HeadFit(
                i,
                model.exit_names[i],
                int(feats.shape[1]),
                epochs,
                lr,
                batch_size,
                seed + i,
                full_loss,
                acc,
            )
        )
    model.eval()
    return tuple(fits)


# --------------------------------------------------------------------------------------------
# Exit rule and calibration


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
class ExitRule:
    """Exit at the first head whose score passes its threshold; the final stage always answers.

    ``thresholds[i]`` is τ_i (exit if max-softmax ≥ τ_i) for ``"max_softmax"`` and T_i (exit if
    entropy ≤ T_i, in nats) for ``"entropy"``; one per early exit. ``math.inf`` (max-softmax) or
    ``-math.inf`` (entropy) disables an exit; τ > 1 or T < 0 disables it too.
    """

    criterion: Criterion
    thresholds: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.criterion not in _CRITERIA:
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

    def to_json(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "thresholds": [t if math.isfinite(t) else None for t in self.thresholds],
        }


@dataclass(frozen=True)
class CascadeOutput:
    """Per-sample outcome of a cascade: prediction, exit taken, that exit's logits, latency."""

    pred: np.ndarray
    exit_index: np.ndarray
    logits: np.ndarray
    latency_ms: np.ndarray | None = None


def _all_exit_logits(model: EarlyExitModel, x: np.ndarray) -> list[np.ndarray]:
    model.eval()
    parts = _batched(model, x)
    return [np.concatenate([p[i].numpy() for p in parts]) for i in range(model.num_exits)]


def _cascade_from(all_logits: list[np.ndarray], rule: ExitRule) -> CascadeOutput:
    exit_at = rule.decide(all_logits[:-1])
    stacked = np.stack(all_logits)  # (E, N, K)
    chosen = stacked[exit_at, np.arange(stacked.shape[1])]
    return CascadeOutput(chosen.argmax(1), exit_at, chosen)


def cascade_predict(model: EarlyExitModel, rule: ExitRule, x: np.ndarray) -> CascadeOutput:
    """The PyTorch cascade: every exit is computed, then the rule picks each sample's exit.

    Equal to stopping at the exit (stages are per-sample functions in eval mode).
    """
    return _cascade_from(_all_exit_logits(model, x), rule)


@dataclass(frozen=True)
class Calibration:
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

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_json(),
            "max_drop": self.max_drop,
            "samples": self.samples,
            "full_accuracy": self.full_accuracy,
            "cascade_accuracy": self.cascade_accuracy,
            "exit_rates": list(self.exit_rates),
            "expected_macs": self.expected_macs,
            "full_macs": self.full_macs,
            "combinations": self.combinations,
            "procedure": self.procedure,
        }


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
    if criterion not in _CRITERIA:
        raise OptionError(
            "criterion", f"unknown criterion {criterion!r}", "use max-softmax or entropy"
        )
    if len(data) == 0:
        raise SpecError(f"{data.name}: no records to calibrate the exit thresholds on")
    logits = _all_exit_logits(model, data.x)
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


# --------------------------------------------------------------------------------------------
# ONNX export and the ONNX Runtime cascade


class _Segment(nn.Module):
    def __init__(self, stage: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stage = stage
        self.head = head

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.stage(h)
        return f, self.head(f)


class _AllExits(nn.Module):
    def __init__(self, model: EarlyExitModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return (out[-1], *out[:-1])


def _export(module: nn.Module, shape: Sequence[int], outputs: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in ("input", *outputs)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # nn.LSTM's static shape check
        # no h0/c0 inputs: ONNX LSTM starts from zeros at any batch size, which is what we want
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other")
        torch.onnx.export(
            module.eval(),
            (torch.zeros(1, *shape),),
            buf,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=list(outputs),
            dynamic_axes=dynamic,
        )
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    return buf.getvalue()


def export_segments(model: EarlyExitModel) -> tuple[bytes, ...]:
    """One ONNX graph per segment: stage i + head i (outputs ``features``, ``logits``) for each
    early exit, then the final stage (output ``logits``); opset 17, dynamic batch."""
    out = []
    for i, (_, stage) in enumerate(model.stages):
        shape = model.stage_input_shapes[i]
        if i < len(model.heads):
            out.append(_export(_Segment(stage, model.heads[i]), shape, ("features", "logits")))
        else:
            out.append(_export(stage, shape, ("logits",)))
    return tuple(out)


def export_all_exits(model: EarlyExitModel) -> bytes:
    """One graph computing every exit: outputs ``logits`` (final) then ``exit<i>_logits``."""
    names = ("logits", *[f"exit{i}_logits" for i in range(len(model.heads))])
    return _export(_AllExits(model), model.input_shape, names)


class OrtCascade:
    """The cascade in ONNX Runtime: one session per segment, one sample at a time."""

    def __init__(self, segments: Sequence[bytes], rule: ExitRule, *, threads: int = 1) -> None:
        if len(segments) != len(rule.thresholds) + 1:
            raise OptionError(
                "thresholds",
                f"{len(rule.thresholds)} thresholds for {len(segments) - 1} exits",
                "give one threshold per early exit",
            )
        self.rule = rule
        self.threads = threads
        self.sessions = [make_session(s, threads=threads) for s in segments]
        self._inputs = [s.get_inputs()[0].name for s in self.sessions]  # type: ignore[attr-defined]
        self._thr = rule.score_thresholds()

    def run_one(self, x: np.ndarray) -> tuple[int, np.ndarray]:
        """``(exit index, logits)`` of one sample (``x`` shaped ``(1, *input_shape)``)."""
        h = x
        last = len(self.sessions) - 1
        for i, (sess, name) in enumerate(zip(self.sessions, self._inputs)):
            outs = sess.run(None, {name: h})  # type: ignore[attr-defined]
            if i == last:
                return i, outs[0]
            h, logits = outs
            if exit_scores(logits, self.rule.criterion)[0] >= self._thr[i]:
                return i, logits
        raise InternalError("the cascade has no final segment")  # pragma: no cover

    def run(self, x: np.ndarray, *, warmup: int = 5) -> CascadeOutput:
        """Run every sample of ``x`` through the cascade; latency per sample in ms."""
        xs = np.ascontiguousarray(x, np.float32)
        for j in range(min(warmup, len(xs))):
            self.run_one(xs[j : j + 1])
        n = len(xs)
        exits = np.zeros(n, np.int64)
        logits: list[np.ndarray] = []
        lat = np.zeros(n, np.float64)
        for j in range(n):
            t0 = time.perf_counter()
            e, lg = self.run_one(xs[j : j + 1])
            lat[j] = (time.perf_counter() - t0) * 1000.0
            exits[j] = e
            logits.append(lg[0])
        stacked = np.stack(logits) if logits else np.zeros((0, 0), np.float32)
        return CascadeOutput(stacked.argmax(1), exits, stacked, lat)


# --------------------------------------------------------------------------------------------
# Evaluation report


@dataclass(frozen=True)
class CascadeParity:
    """ONNX Runtime cascade vs PyTorch cascade on the same inputs."""

    prediction_agreement: float
    exit_agreement: float
    max_abs_logit_diff: float
    samples: int


@dataclass(frozen=True)
class ExitStats:
    """One exit over the evaluation data (exits measured in the ONNX Runtime cascade)."""

    index: int
    name: str
    threshold: float | None
    exits: int
    exit_rate: float
    accuracy: float | None
    accuracy_ci: Interval | None
    macs: float
    mean_latency_ms: float | None
    p50_latency_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "threshold": self.threshold,
            "exits": self.exits,
            "exit_rate": self.exit_rate,
            "accuracy": self.accuracy,
            "accuracy_ci": None if self.accuracy_ci is None else self.accuracy_ci.to_json(),
            "macs": self.macs,
            "mean_latency_ms": self.mean_latency_ms,
            "p50_latency_ms": self.p50_latency_ms,
        }


@dataclass(frozen=True)
class EarlyExitReport:
    """The cascade on evaluation data: accuracy, exits, expected MACs, per-sample ORT latency."""

    rule: ExitRule
    samples: int
    full_accuracy: float
    accuracy: float
    accuracy_ci: Interval
    exits: tuple[ExitStats, ...]
    expected_macs: float
    full_macs: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_mean_ms: float
    full_latency_p50_ms: float
    full_latency_mean_ms: float
    threads: int
    parity: CascadeParity
    predictions: np.ndarray
    exit_index: np.ndarray

    @property
    def mac_ratio(self) -> float:
        """Expected MACs / full-model MACs."""
        return self.expected_macs / self.full_macs if self.full_macs else float("nan")

    @property
    def latency_ratio(self) -> float:
        """Mean cascade latency / mean full-model latency (both ORT, batch 1, same data)."""
        return self.latency_mean_ms / self.full_latency_mean_ms

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_json(),
            "samples": self.samples,
            "full_accuracy": self.full_accuracy,
            "accuracy": self.accuracy,
            "accuracy_ci": self.accuracy_ci.to_json(),
            "exits": [e.to_json() for e in self.exits],
            "expected_macs": self.expected_macs,
            "full_macs": self.full_macs,
            "mac_ratio": self.mac_ratio,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "latency_mean_ms": self.latency_mean_ms,
            "full_latency_p50_ms": self.full_latency_p50_ms,
            "full_latency_mean_ms": self.full_latency_mean_ms,
            "latency_ratio": self.latency_ratio,
            "threads": self.threads,
            "parity": {
                "prediction_agreement": self.parity.prediction_agreement,
                "exit_agreement": self.parity.exit_agreement,
                "max_abs_logit_diff": self.parity.max_abs_logit_diff,
                "samples": self.parity.samples,
            },
        }

    def table(self) -> Table:
        rows = [
            [
                e.name,
                e.threshold,
                e.exits,
                round(e.exit_rate, 4),
                None if e.accuracy is None else round(e.accuracy, 4),
                int(e.macs),
                None if e.mean_latency_ms is None else round(e.mean_latency_ms, 4),
                None if e.p50_latency_ms is None else round(e.p50_latency_ms, 4),
            ]
            for e in self.exits
        ]
        return Table(
            "early_exits",
            "Early exits",
            ["exit", "threshold", "samples", "exit_rate", "accuracy", "MACs", "mean_ms", "p50_ms"],
            rows,
            f"{self.rule.criterion} rule; ONNX Runtime cascade, batch 1, {self.threads} thread(s); "
            f"expected MACs {self.expected_macs:.0f} of {self.full_macs:.0f}.",
        )


def evaluate_early_exit(
    model: EarlyExitModel,
    rule: ExitRule,
    data: Dataset,
    *,
    threads: int = 1,
    segments: Sequence[bytes] | None = None,
) -> EarlyExitReport:
    """Run the cascade in ONNX Runtime over ``data`` (per-sample latency) and check its parity
    with the PyTorch cascade; the full model's ORT latency is measured on the same samples."""
    from edgeproof.compress.onnx_export import export_onnx

    if len(data) == 0:
        raise SpecError(f"{data.name}: no records to evaluate the early-exit cascade on")
    segments = tuple(segments) if segments is not None else export_segments(model)
    all_logits = _all_exit_logits(model, data.x)
    torch_out = _cascade_from(all_logits, rule)
    ort_out = OrtCascade(segments, rule, threads=threads).run(data.x)
    assert ort_out.latency_ms is not None
    same_exit = ort_out.exit_index == torch_out.exit_index
    diff = (
        float(np.abs(ort_out.logits[same_exit] - torch_out.logits[same_exit]).max())
        if same_exit.any()
        else float("nan")
    )
    parity = CascadeParity(
        float((ort_out.pred == torch_out.pred).mean()), float(same_exit.mean()), diff, len(data)
    )
    with warnings.catch_warnings():  # nn.LSTM without h0/c0: zeros at any batch size (fine)
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other")
        base_onnx = export_onnx(model.backbone, model.input_shape).SerializeToString()
    full_lat = per_record_latency_ms(base_onnx, data.x, threads=threads)
    costs = exit_costs(model)
    y = data.y
    correct = ort_out.pred == y
    stats = []
    thresholds: list[float | None] = [t if math.isfinite(t) else None for t in rule.thresholds]
    for i in range(model.num_exits):
        mask = ort_out.exit_index == i
        k = int(mask.sum())
        stats.append(
            ExitStats(
                index=i,
                name=model.exit_names[i],
                threshold=thresholds[i] if i < len(thresholds) else None,
                exits=k,
                exit_rate=k / len(data),
                accuracy=float(correct[mask].mean()) if k else None,
                accuracy_ci=wilson_interval(int(correct[mask].sum()), k) if k else None,
                macs=float(costs[i]),
                mean_latency_ms=float(ort_out.latency_ms[mask].mean()) if k else None,
                p50_latency_ms=float(np.median(ort_out.latency_ms[mask])) if k else None,
            )
        )
    n_correct = int(correct.sum())
    backbone_macs = mac_costs(model)[2]
    return EarlyExitReport(
        rule=rule,
        samples=len(data),
        full_accuracy=float((all_logits[-1].argmax(1) == y).mean()),
        accuracy=n_correct / len(data),
        accuracy_ci=wilson_interval(n_correct, len(data)),
        exits=tuple(stats),
        expected_macs=float(costs[ort_out.exit_index].mean()),
        full_macs=float(backbone_macs),
        latency_p50_ms=float(np.percentile(ort_out.latency_ms, 50)),
        latency_p95_ms=float(np.percentile(ort_out.latency_ms, 95)),
        latency_mean_ms=float(ort_out.latency_ms.mean()),
        full_latency_p50_ms=float(np.percentile(full_lat, 50)),
        full_latency_mean_ms=float(full_lat.mean()),
        threads=threads,
        parity=parity,
        predictions=ort_out.pred,
        exit_index=ort_out.exit_index,
    )


# --------------------------------------------------------------------------------------------
# End to end, and the compression-ledger row


@dataclass(frozen=True)
class EarlyExitConfig:
    """Settings of the early-exit candidate.

    ``max_drop`` ``None`` = the compression budget's (or 1 % without one); ``fit_fraction`` of
    the calibration records train the heads, the rest calibrate the thresholds.
    """

    criterion: Criterion = "max_softmax"
    max_drop: float | None = None
    epochs: int = 50
    lr: float = 1e-2
    batch_size: int = 64
    fit_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.criterion not in _CRITERIA:
            raise OptionError(
                "criterion",
                f"unknown criterion {self.criterion!r}",
                "use max-softmax or entropy",
            )
        if not 0.0 < self.fit_fraction < 1.0:
            raise OptionError(
                "fit_fraction", f"{self.fit_fraction} is not in (0, 1)", "use e.g. 0.5"
            )


@dataclass
class EarlyExitResult:
    """Everything :func:`build_early_exit` produced."""

    model: EarlyExitModel
    heads: tuple[HeadFit, ...]
    calibration: Calibration
    report: EarlyExitReport
    segments: tuple[bytes, ...]


def build_early_exit(
    module: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    train: Dataset,
    calib: Dataset,
    evaluation: Dataset,
    *,
    max_drop: float = 0.01,
    config: EarlyExitConfig | None = None,
    seed: int = 0,
    threads: int = 1,
) -> EarlyExitResult:
    """Attach exits to a copy of ``module``, train the heads on ``train`` (backbone frozen),
    calibrate thresholds on ``calib`` to ``max_drop``, evaluate the ORT cascade on
    ``evaluation``."""
    cfg = config or EarlyExitConfig()
    model = attach_exits(module, input_shape, num_classes)
    fits = train_exit_heads(
        model, train, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed
    )
    cal = calibrate_thresholds(model, calib, max_drop=max_drop, criterion=cfg.criterion)
    segments = export_segments(model)
    report = evaluate_early_exit(model, cal.rule, evaluation, threads=threads, segments=segments)
    return EarlyExitResult(model, fits, cal, report, segments)


def early_exit_candidate(
    module: nn.Module,
    spec: InputSpec,
    calib: Dataset,
    evaluation: Dataset,
    *,
    max_drop: float,
    baseline_per_class: tuple[float, ...] | None,
    config: EarlyExitConfig | None = None,
    threads: int = 1,
    seed: int = 0,
) -> tuple[Candidate, Built]:
    """The ledger row for ``edgeproof compress``: heads fitted on the first ``fit_fraction`` of
    ``calib``, thresholds on the rest, everything measured on ``evaluation`` in ONNX Runtime.

    The written artefact (``Built.onnx_bytes``) is the all-exits graph (every exit's logits, no
    early stop inside one graph); the cascade itself is the per-segment graphs (settings say so).
    """
    from edgeproof.compress.ledger import Candidate, per_class_accuracy
    from edgeproof.compress.quantize import Parity
    from edgeproof.compress.search import Built
    from edgeproof.runtime.memory import probe_peak_rss_mib

    cfg = config or EarlyExitConfig()
    drop = cfg.max_drop if cfg.max_drop is not None else max_drop
    n = len(calib)
    k = round(n * cfg.fit_fraction)
    if k < 1 or n - k < 1:
        raise OptionError(
            "data",
            f"{calib.name}: {n} calibration records cannot be split to train exit heads "
            "and calibrate thresholds",
            "give at least 2 calibration records",
        )
    num_classes = spec.num_classes or evaluation.num_classes
    res = build_early_exit(
        module,
        spec.shape,
        num_classes,
        calib.subset(np.arange(k)),
        calib.subset(np.arange(k, n)),
        evaluation,
        max_drop=drop,
        config=cfg,
        seed=seed,
        threads=threads,
    )
    rep = res.report
    graph = export_all_exits(res.model)
    pc = per_class_accuracy(rep.predictions, evaluation.y, evaluation.num_classes)
    drift = (
        tuple(a - b for a, b in zip(pc, baseline_per_class))
        if baseline_per_class
        else tuple(0.0 for _ in pc)
    )
    settings: dict[str, object] = {
        **res.calibration.rule.to_json(),
        "max_drop": drop,
        "exits": [e.name for e in rep.exits],
        "exit_rates": [round(e.exit_rate, 4) for e in rep.exits],
        "exit_accuracy": [None if e.accuracy is None else round(e.accuracy, 4) for e in rep.exits],
        "expected_macs": rep.expected_macs,
        "full_macs": rep.full_macs,
        "mac_ratio": round(rep.mac_ratio, 4),
        "full_latency_p50_ms": rep.full_latency_p50_ms,
        "segment_bytes": [len(s) for s in res.segments],
        "head_epochs": cfg.epochs,
        "calibration_records": n - k,
        "head_training_records": k,
    }
    notes = [
        "latency: ONNX Runtime cascade of per-segment graphs, per-sample over the evaluation data",
        "model.onnx is the all-exits graph; the exit decision runs between segment graphs",
        "peak RSS of the all-exits graph (an upper bound for the cascade)",
        "not re-audited: the exit decision is not differentiable; the final exit is the baseline",
    ]
    cand = Candidate(
        name=f"early-exit-{cfg.criterion.replace('_', '-')}",
        technique="early-exit",
        settings=settings,
        accuracy=rep.accuracy,
        accuracy_ci=rep.accuracy_ci,
        per_class_accuracy=pc,
        per_class_drift=drift,
        size_bytes=len(graph),
        latency_p50_ms=rep.latency_p50_ms,
        latency_p95_ms=rep.latency_p95_ms,
        threads=threads,
        peak_rss_mb=probe_peak_rss_mib(graph, evaluation.x, threads=threads),
        parity=Parity(rep.parity.prediction_agreement, rep.parity.max_abs_logit_diff, rep.samples),
        notes=tuple(notes),
        expected_macs=rep.expected_macs,
    )
    return cand, Built(res.model, graph, settings, notes)
