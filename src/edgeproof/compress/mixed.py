"""Mixed precision: per-layer sensitivity and SigmaQuant-style 4/8-bit allocation (weight-only).

Follows SigmaQuant (Liu, Yu, Zapater, Atienza, arXiv 2602.22136, "Hardware-Aware Heterogeneous
Quantization Method for Edge DNN Inference") in its two phases, as a *post-training* variant:

1. **σ clustering (initial bits).** The standard deviation σ of every quantizable layer's weights
   (BatchNorm folded; an LSTM's input and recurrent matrices together) is clustered into two
   groups by 1-D k-means (Lloyd, initialised at the smallest and largest σ, hence deterministic).
   The high-σ group starts at 8 bits, the low-σ group at 4 bits: with max-scaled symmetric
   quantization the absolute rounding error grows with the spread of the weights.
2. **KL-guided refinement.** Each layer's cost of going from 8 to 4 bits is ``ΔKL = KL₄ − KL₈``,
   the increase of ``KL(p_fp32 ‖ p_q)`` on the calibration data when only that layer is
   quantized (:func:`layer_sensitivity`); its saving ``ΔS`` is the exact byte difference of its
   serialised ONNX initializers. While the size budget fails, the 8-bit layer with the smallest
   ``ΔKL/ΔS`` drops to 4 bits; then 4-bit layers with the largest ``ΔKL/ΔS`` that still fit are
   raised to 8 bits ("fill": the budget is spent where it lowers KL most). With only an accuracy
   budget, layers are raised (largest ``ΔKL/ΔS`` first) until the drop holds, then lowered
   (smallest first) while it still holds. After every move the whole plan is re-measured (KL and
   accuracy of the PyTorch simulation). Where the paper runs short QAT cycles between moves, this
   variant does no training.

Deviations stated: no QAT; bits are {4, 8} (what the ONNX QDQ path executes); the σ→bits direction
is high σ → more bits. Sensitivity per layer (HAWQ-style "quantize only this layer") reports the
accuracy change, ``KL(p_fp32 ‖ p_q)`` and the SQNR of that layer's output; :meth:`by_type`
summarises it by module type (conv / LSTM / linear), the question of Roodi et al. (CNN parts more
sensitive to low bits than LSTM parts) — answered by measurement, whatever it shows.

Quantizer: symmetric weights, 4-bit with per-group scales (``group_size`` consecutive inputs),
8-bit with per-output-channel scales — what :func:`edgeproof.compress.quantize.quantize` executes
for a ``mixed`` plan (the simulation fake-quantizes exactly that). A 4-bit layer is not always
smaller: its group scales (and the ``Reshape`` back to the weight's layout) can outweigh the saved
nibbles on a tiny layer, so the allocator only lowers layers whose saving
(:meth:`SizeModel.saving`) is positive and the smallest plan keeps the others at 8 bits.
The chosen plan is executed for real: ``QuantConfig("mixed",
bits_per_layer=...)`` → ONNX QDQ graph → ONNX Runtime, whose accuracy and serialised size are
reported. Without labels, the fp32 model's own predictions are the labels (accuracy then means
top-1 agreement with fp32).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from onnx import TensorProto
from torch import nn

from edgeproof.compress.onnx_export import weight_qdq_bytes
from edgeproof.compress.quantize import QuantConfig, QuantizedModel, fold_batchnorm, quantize
from edgeproof.compress.weights import fake_quantize_weight
from edgeproof.errors import DataError, InternalError, OptionError, SpecError, param
from edgeproof.results import Table
from edgeproof.runtime.ort import make_session, run_session

__all__ = [
    "Allocation",
    "LayerKind",
    "LayerSensitivity",
    "QuantLayer",
    "RefinementStep",
    "SensitivityReport",
    "SizeModel",
    "TypeSensitivity",
    "allocate",
    "allocate_between",
    "layer_sensitivity",
    "quantizable_layers",
    "sigma_clusters",
]

LayerKind = Literal["conv", "lstm", "linear"]
_BITS = (4, 8)
_EPS = 1e-12
Reason = Literal["size", "fill", "accuracy", "shrink"]


@dataclass(frozen=True)
class QuantLayer:
    """One quantizable layer of the BatchNorm-folded model."""

    name: str
    kind: LayerKind
    params: int
    sigma: float


def _kind(mod: nn.Module) -> LayerKind | None:
    if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
        return "conv"
    if isinstance(mod, nn.LSTM):
        return "lstm"
    if isinstance(mod, nn.Linear):
        return "linear"
    return None


def _weights(mod: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weight tensors the QDQ path quantizes: ``weight`` or an LSTM's ``weight_*``."""
    if isinstance(mod, nn.LSTM):
        return [(n, p) for n, p in mod.named_parameters() if n.startswith("weight_")]
    w = mod.weight
    assert isinstance(w, torch.Tensor)
    return [("weight", w)]


def quantizable_layers(folded: nn.Module) -> list[QuantLayer]:
    """Conv1d/Conv2d/Linear/LSTM layers of a (BatchNorm-folded) module, in module order."""
    out = []
    for name, mod in folded.named_modules():
        kind = _kind(mod)
        if kind is None:
            continue
        flat = np.concatenate([w.detach().numpy().ravel() for _, w in _weights(mod)])
        out.append(QuantLayer(name, kind, int(flat.size), float(flat.std())))
    return out


def sigma_clusters(sigmas: Sequence[float], iterations: int = 50) -> tuple[list[int], float]:
    """1-D 2-means of ``sigmas`` (Lloyd, initialised at min and max): labels (1 = high σ) and
    the threshold (midpoint of the two centres)."""
    s = np.asarray(sigmas, dtype=np.float64)
    if s.size == 0:
        return [], 0.0
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= _EPS * max(1.0, abs(hi)):
        return [1] * int(s.size), lo
    for _ in range(iterations):
        thr = (lo + hi) / 2
        high = s > thr
        new_lo, new_hi = float(s[~high].mean()), float(s[high].mean())
        if new_lo == lo and new_hi == hi:
            break
        lo, hi = new_lo, new_hi
    thr = (lo + hi) / 2
    return [int(v > thr) for v in s], thr


# ---------------------------------------------------------------------------------------------
# Simulation of a plan (PyTorch, weights replaced by their dequantized values)


class _Simulator:
    """The folded fp32 model plus cached fake-quantized weights; runs any 4/8-bit plan."""

    def __init__(self, module: nn.Module, group_size: int) -> None:
        self.model = fold_batchnorm(module)
        self.layers = quantizable_layers(self.model)
        self.group_size = group_size
        self._mods = dict(self.model.named_modules())
        self._fp32: dict[str, list[torch.Tensor]] = {}
        self._q: dict[tuple[str, int], list[torch.Tensor]] = {}
        for layer in self.layers:
            ws = _weights(self._mods[layer.name])
            self._fp32[layer.name] = [w.detach().clone() for _, w in ws]
            for b in _BITS:
                # 8-bit per channel, 4-bit per group: the layouts the QDQ graph executes
                group = group_size if b == 4 else None
                self._q[(layer.name, b)] = [
                    torch.from_numpy(fake_quantize_weight(w.detach().numpy(), 0, b, group))
                    for _, w in ws
                ]

    def _load(self, plan: Mapping[str, int]) -> None:
        with torch.no_grad():
            for layer in self.layers:
                b = plan.get(layer.name)
                src = self._fp32[layer.name] if b is None else self._q[(layer.name, b)]
                for (_, w), v in zip(_weights(self._mods[layer.name]), src):
                    w.copy_(v)

    def logits(
        self, plan: Mapping[str, int], x: torch.Tensor, capture: str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits under ``plan`` (layers not in it stay fp32) and, optionally, the output of
        layer ``capture`` (an LSTM's output sequence)."""
        self._load(plan)
        seen: list[np.ndarray] = []
        handle = None
        if capture is not None:

            def hook(_m: nn.Module, _i: object, out: object) -> None:
                t = out[0] if isinstance(out, tuple) else out
                assert isinstance(t, torch.Tensor)
                seen.append(t.detach().numpy().copy())

            handle = self._mods[capture].register_forward_hook(hook)
        try:
            with torch.no_grad():
                z = self.model(x).numpy()
        finally:
            if handle is not None:
                handle.remove()
            self._load({})
        return z, (seen[0] if seen else None)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _kl(p: np.ndarray, z_q: np.ndarray) -> float:
    """Mean over records of KL(p ‖ softmax(z_q)) in nats."""
    q = _softmax(z_q)
    return float(np.mean(np.sum(p * (np.log(p + _EPS) - np.log(q + _EPS)), axis=1)))


def _sqnr_db(signal: np.ndarray, noisy: np.ndarray) -> float:
    noise = float(np.sum((signal.astype(np.float64) - noisy) ** 2))
    power = float(np.sum(signal.astype(np.float64) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(power, _EPS) / noise)


# ---------------------------------------------------------------------------------------------
# Per-layer sensitivity


@dataclass(frozen=True)
class LayerSensitivity:
    """What quantizing only ``layer`` to ``bits`` does (all other layers fp32).

    ``accuracy_change`` is quantized − fp32 top-1 accuracy (negative = loss); ``kl`` is the mean
    ``KL(p_fp32 ‖ p_q)`` in nats; ``sqnr_db`` is the SQNR of the layer's own output.
    """

    layer: str
    kind: LayerKind
    bits: int
    params: int
    sigma: float
    accuracy_change: float
    kl: float
    sqnr_db: float


@dataclass(frozen=True)
class TypeSensitivity:
    """Per-layer sensitivity summarised over the layers of one module type at one bit width."""

    kind: LayerKind
    bits: int
    layers: int
    mean_kl: float
    median_kl: float
    mean_accuracy_change: float
    median_accuracy_change: float
    median_sqnr_db: float


@dataclass(frozen=True)
class SensitivityReport:
    """:func:`layer_sensitivity`'s result: one row per (layer, bits)."""

    rows: tuple[LayerSensitivity, ...]
    fp32_accuracy: float
    samples: int
    group_size: int
    labels: Literal["given", "fp32-predictions"]

    def kl(self, layer: str, bits: int) -> float:
        for r in self.rows:
            if r.layer == layer and r.bits == bits:
                return r.kl
        raise KeyError(f"no sensitivity row for layer {layer!r} at {bits} bits")

    def by_type(self) -> tuple[TypeSensitivity, ...]:
        out = []
        for kind in ("conv", "lstm", "linear"):
            for bits in sorted({r.bits for r in self.rows}):
                rs = [r for r in self.rows if r.kind == kind and r.bits == bits]
                if not rs:
                    continue
                kls = np.array([r.kl for r in rs])
                acc = np.array([r.accuracy_change for r in rs])
                sq = np.array([r.sqnr_db for r in rs])
                out.append(
                    TypeSensitivity(
                        rs[0].kind,
                        bits,
                        len(rs),
                        float(kls.mean()),
                        float(np.median(kls)),
                        float(acc.mean()),
                        float(np.median(acc)),
                        float(np.median(sq)),
                    )
                )
        return tuple(out)

    def table(self) -> Table:
        return Table(
            "mixed.sensitivity",
            "Per-layer sensitivity (only this layer quantized)",
            ["layer", "type", "bits", "params", "σ", "Δaccuracy", "KL (nats)", "SQNR (dB)"],
            [
                [r.layer, r.kind, r.bits, r.params, r.sigma, r.accuracy_change, r.kl, r.sqnr_db]
                for r in self.rows
            ],
            f"{self.samples} calibration records, labels: {self.labels}, weight-only, group "
            f"size {self.group_size}; KL(p_fp32 ‖ p_q) averaged over records.",
        )

    def type_table(self) -> Table:
        return Table(
            "mixed.sensitivity_by_type",
            "Sensitivity by module type",
            [
                "type",
                "bits",
                "layers",
                "mean KL",
                "median KL",
                "mean Δaccuracy",
                "median Δaccuracy",
                "median SQNR (dB)",
            ],
            [
                [
                    t.kind,
                    t.bits,
                    t.layers,
                    t.mean_kl,
                    t.median_kl,
                    t.mean_accuracy_change,
                    t.median_accuracy_change,
                    t.median_sqnr_db,
                ]
                for t in self.by_type()
            ],
            "Roodi et al. report CNN parts more sensitive to low bits than LSTM parts; this is "
            "what was measured on this model.",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "fp32_accuracy": self.fp32_accuracy,
            "samples": self.samples,
            "group_size": self.group_size,
            "labels": self.labels,
            "rows": self.table().to_json()["rows"],
            "by_type": self.type_table().to_json()["rows"],
        }


def _prepare(
    x: np.ndarray, y: np.ndarray | None, input_shape: Sequence[int] | None, samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(x, dtype=np.float32)
    if input_shape is not None and (
        x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape)
    ):
        raise SpecError(
            f"{param('x_calib')}: calibration data has sample shape {tuple(x.shape[1:])} but the "
            f"model expects {tuple(input_shape)}; pass calibration records shaped like the "
            "model input"
        )
    if x.shape[0] == 0:
        raise SpecError(f"{param('x_calib')}: calibration data is empty; pass at least one record")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (x.shape[0],):
            raise DataError(
                f"{param('x_calib')}: {y.shape[0] if y.ndim else 0} labels for {x.shape[0]} "
                "records; pass one integer label per calibration record"
            )
    if samples < 1:
        raise OptionError("samples", f"{samples} is not positive", "use e.g. 256")
    if x.shape[0] > samples:
        idx = np.sort(np.random.default_rng(seed).permutation(x.shape[0])[:samples])
        x = x[idx]
        y = None if y is None else y[idx]
    return x, y


def _check_group(group_size: int) -> None:
    if group_size < 1:
        raise OptionError("group_size", f"must be >= 1, got {group_size}", "use e.g. 32")


def _sensitivity(
    sim: _Simulator, x: np.ndarray, y: np.ndarray | None, bits: Sequence[int]
) -> tuple[SensitivityReport, np.ndarray, np.ndarray]:
    xt = torch.from_numpy(np.ascontiguousarray(x))
    z0, _ = sim.logits({}, xt)
    labels: Literal["given", "fp32-predictions"] = "given" if y is not None else "fp32-predictions"
    yy = z0.argmax(1) if y is None else y
    acc0 = float(np.mean(z0.argmax(1) == yy))
    p0 = _softmax(z0)
    rows = []
    for layer in sim.layers:
        _, ref = sim.logits({}, xt, capture=layer.name)
        assert ref is not None
        for b in bits:
            z, out = sim.logits({layer.name: b}, xt, capture=layer.name)
            assert out is not None
            rows.append(
                LayerSensitivity(
                    layer.name,
                    layer.kind,
                    b,
                    layer.params,
                    layer.sigma,
                    float(np.mean(z.argmax(1) == yy)) - acc0,
                    _kl(p0, z),
                    _sqnr_db(ref, out),
                )
            )
    report = SensitivityReport(tuple(rows), acc0, int(x.shape[0]), sim.group_size, labels)
    return report, p0, np.asarray(yy)


def layer_sensitivity(
    module: nn.Module,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    bits: Sequence[int] = _BITS,
    group_size: int = 32,
    samples: int = 256,
    seed: int = 0,
) -> SensitivityReport:
    """Quantize one layer at a time to each of ``bits`` and measure accuracy change, KL and SQNR.

    Args:
        x, y: calibration records (and labels; ``None`` → fp32 predictions are the labels).
        samples: at most this many records are used (a seeded random subset when ``x`` is larger).
    """
    for b in bits:
        if b not in _BITS:
            raise OptionError("bits", f"{b}-bit sensitivity is not supported", "use 4 or 8")
    _check_group(group_size)
    x, y = _prepare(x, y, None, samples, seed)
    return _sensitivity(_Simulator(module, group_size), x, y, bits)[0]


# ---------------------------------------------------------------------------------------------
# Size model


def _tensor_bytes(w: np.ndarray, bits: int, group_size: int, name: str) -> int:
    """Serialised bytes of the initializers and nodes :func:`build_qdq_model` writes for ``w``."""
    return weight_qdq_bytes(name, w, 0, bits, group_size)


@dataclass(frozen=True)
class SizeModel:
    """Serialised ONNX size of a 4/8-bit plan: ``overhead + Σ layer_bytes[layer][bits]``.

    ``layer_bytes`` are the exact byte sizes of each layer's quantized initializers and
    dequantization nodes (:func:`weight_qdq_bytes`: 8-bit per channel, 4-bit per group, INT4
    packed two per byte); ``overhead`` is fitted once against the real all-4-bit graph. A mixed
    graph is opset 21 whatever its plan, so every plan is estimated to within a few bytes.
    """

    layer_bytes: Mapping[str, Mapping[int, int]]
    overhead: int
    group_size: int

    @classmethod
    def fit(
        cls, module: nn.Module, input_shape: Sequence[int], x: np.ndarray, group_size: int = 32
    ) -> SizeModel:
        _check_group(group_size)
        folded = fold_batchnorm(module)
        mods = dict(folded.named_modules())
        layers = quantizable_layers(folded)
        lb: dict[str, dict[int, int]] = {}
        for layer in layers:
            ws = _weights(mods[layer.name])
            lb[layer.name] = {
                b: sum(
                    _tensor_bytes(w.detach().numpy(), b, group_size, f"{layer.name}.{n}")
                    for n, w in ws
                )
                for b in _BITS
            }
        all4 = {layer.name: 4 for layer in layers}
        real = quantize(
            module,
            input_shape,
            np.asarray(x, np.float32)[:4],
            QuantConfig("mixed", bits_per_layer=all4, group_size=group_size),
        )
        _check_applied(real, all4, layers)
        overhead = len(real.onnx_bytes()) - sum(v[4] for v in lb.values())
        return cls(lb, overhead, group_size)

    def estimate(self, plan: Mapping[str, int]) -> int:
        return self.overhead + sum(self.layer_bytes[n][plan.get(n, 8)] for n in self.layer_bytes)

    def saving(self, layer: str) -> int:
        """Bytes saved by taking ``layer`` from 8 to 4 bits (negative when 4-bit is larger)."""
        return self.layer_bytes[layer][8] - self.layer_bytes[layer][4]

    @property
    def smallest_plan(self) -> dict[str, int]:
        """4 bits wherever that saves bytes (``saving > 0``), 8 elsewhere: the smallest plan."""
        return {n: (4 if self.saving(n) > 0 else 8) for n in self.layer_bytes}

    @property
    def smallest(self) -> int:
        """Estimated bytes of :attr:`smallest_plan`."""
        return self.estimate(self.smallest_plan)


def _check_applied(
    q: QuantizedModel, plan: Mapping[str, int], layers: Sequence[QuantLayer]
) -> None:
    """The exported graph really has one INT4 weight per 4-bit layer (two for an LSTM)."""
    kinds = {layer.name: layer.kind for layer in layers}
    want = sum(2 if kinds.get(n) == "lstm" else 1 for n, b in plan.items() if b == 4)
    got = sum(
        1
        for t in q.onnx_model.graph.initializer
        if t.data_type == TensorProto.INT4 and t.name.endswith("__q")
    )
    if got != want:
        raise InternalError(
            f"the mixed-precision plan was not applied to the ONNX graph: {want} 4-bit weights "
            f"planned, {got} found (PyTorch layers could not be matched to ONNX nodes)"
        )


# ---------------------------------------------------------------------------------------------
# Allocation


@dataclass(frozen=True)
class RefinementStep:
    """One move of the KL-guided refinement and the plan's state after it."""

    layer: str
    from_bits: int
    to_bits: int
    reason: Reason
    estimated_size: int
    kl: float
    accuracy: float


@dataclass(frozen=True)
class Allocation:
    """The chosen bit map, executed in ONNX Runtime, and how the budgets fared.

    ``accuracy`` is measured in ONNX Runtime on the evaluation records (``accuracy_on`` says
    which), ``accuracy_sim``/``kl`` on the calibration records by the PyTorch simulation.
    ``met_size``/``met_accuracy`` are judged on the real serialised size and the ONNX Runtime
    accuracy; ``message`` says what held and, if a budget cannot be met, the best found.
    """

    bits: Mapping[str, int]
    initial_bits: Mapping[str, int]
    sigma_threshold: float
    estimated_size: int
    size_bytes: int
    accuracy: float
    fp32_accuracy: float
    accuracy_on: str
    accuracy_sim: float
    kl: float
    met_size: bool
    met_accuracy: bool
    message: str
    steps: tuple[RefinementStep, ...]
    sensitivity: SensitivityReport
    max_size: int | None
    max_drop: float | None
    quantized: QuantizedModel = field(repr=False, compare=False)

    @property
    def met_budget(self) -> bool:
        return self.met_size and self.met_accuracy

    @property
    def low_bit_layers(self) -> tuple[str, ...]:
        return tuple(n for n, b in self.bits.items() if b == 4)

    def settings(self) -> dict[str, object]:
        """Settings for a ledger row."""
        return {
            "scheme": "mixed",
            "allocator": "sigmaquant-ptq",
            "group_size": self.sensitivity.group_size,
            "bits": dict(self.bits),
            "max_size": self.max_size,
            "max_drop": self.max_drop,
        }

    def table(self) -> Table:
        init = self.initial_bits
        return Table(
            "mixed.allocation",
            "Mixed-precision bit map (σ clustering → KL-guided refinement)",
            ["layer", "σ cluster bits", "final bits", "KL₄ − KL₈"],
            [
                [
                    n,
                    init.get(n),
                    b,
                    self.sensitivity.kl(n, 4) - self.sensitivity.kl(n, 8),
                ]
                for n, b in self.bits.items()
            ],
            self.message,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bits": dict(self.bits),
            "initial_bits": dict(self.initial_bits),
            "sigma_threshold": self.sigma_threshold,
            "estimated_size": self.estimated_size,
            "size_bytes": self.size_bytes,
            "accuracy": self.accuracy,
            "fp32_accuracy": self.fp32_accuracy,
            "accuracy_on": self.accuracy_on,
            "accuracy_sim": self.accuracy_sim,
            "kl": self.kl,
            "met_size": self.met_size,
            "met_accuracy": self.met_accuracy,
            "message": self.message,
            "max_size": self.max_size,
            "max_drop": self.max_drop,
            "steps": [
                {
                    "layer": s.layer,
                    "from_bits": s.from_bits,
                    "to_bits": s.to_bits,
                    "reason": s.reason,
                    "estimated_size": s.estimated_size,
                    "kl": s.kl,
                    "accuracy": s.accuracy,
                }
                for s in self.steps
            ],
            "sensitivity": self.sensitivity.to_json(),
        }


class _Refiner:
    def __init__(
        self,
        sim: _Simulator,
        sizes: SizeModel,
        sens: SensitivityReport,
        x: np.ndarray,
        p0: np.ndarray,
        y: np.ndarray,
    ) -> None:
        self.sim, self.sizes, self.sens = sim, sizes, sens
        self.xt = torch.from_numpy(np.ascontiguousarray(x))
        self.p0, self.y = p0, y
        self.steps: list[RefinementStep] = []
        self.names = [layer.name for layer in sim.layers]
        self.dkl = {n: max(sens.kl(n, 4) - sens.kl(n, 8), 0.0) for n in self.names}

    def measure(self, plan: Mapping[str, int]) -> tuple[float, float]:
        z, _ = self.sim.logits(plan, self.xt)
        return _kl(self.p0, z), float(np.mean(z.argmax(1) == self.y))

    def ratio(self, n: str) -> float:
        return self.dkl[n] / max(self.sizes.saving(n), 1)

    def move(self, plan: dict[str, int], n: str, to: int, reason: Reason) -> tuple[float, float]:
        frm = plan[n]
        plan[n] = to
        kl, acc = self.measure(plan)
        self.steps.append(RefinementStep(n, frm, to, reason, self.sizes.estimate(plan), kl, acc))
        return kl, acc

    def lowerable(self, plan: Mapping[str, int]) -> list[str]:
        """8-bit layers whose 4-bit form is smaller: lowering any other one only adds bytes."""
        return [n for n in self.names if plan[n] == 8 and self.sizes.saving(n) > 0]

    def to_size(self, plan: dict[str, int], budget: int) -> None:
        for n in self.names:
            if plan[n] == 4 and self.sizes.saving(n) <= 0:
                self.move(plan, n, 8, "fill")  # free: 8 bits is no larger here
        while self.sizes.estimate(plan) > budget:
            eights = self.lowerable(plan)
            if not eights:
                return
            self.move(plan, min(eights, key=self.ratio), 4, "size")
        while True:
            room = budget - self.sizes.estimate(plan)
            fits = [n for n in self.names if plan[n] == 4 and self.sizes.saving(n) <= room]
            if not fits:
                return
            self.move(plan, max(fits, key=self.ratio), 8, "fill")

    def to_accuracy(self, plan: dict[str, int], floor: float) -> None:
        _, acc = self.measure(plan)
        while acc < floor:
            fours = [n for n in self.names if plan[n] == 4]
            if not fours:
                return
            _, acc = self.move(plan, max(fours, key=self.ratio), 8, "accuracy")
        for n in sorted(self.lowerable(plan), key=self.ratio):
            plan[n] = 4
            _, a = self.measure(plan)
            plan[n] = 8
            if a < floor:
                return
            self.move(plan, n, 4, "shrink")


def allocate(
    module: nn.Module,
    input_shape: Sequence[int],
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    max_size: int | None = None,
    max_drop: float | None = None,
    group_size: int = 32,
    samples: int = 256,
    seed: int = 0,
    x_eval: np.ndarray | None = None,
    y_eval: np.ndarray | None = None,
    size_model: SizeModel | None = None,
    threads: int = 1,
) -> Allocation:
    """SigmaQuant-style 4/8-bit allocation under ``max_size`` (bytes of the ONNX graph) and
    ``max_drop`` (absolute top-1 drop vs fp32), executed in ONNX Runtime.

    Args:
        x, y: calibration records for sensitivity, KL and simulated accuracy (``y=None``: fp32
            predictions are the labels).
        x_eval, y_eval: records on which the executed graph's accuracy is reported and the
            accuracy budget judged (default: the calibration records).
        size_model: a fitted :class:`SizeModel` to reuse (else one is fitted).

    A budget no plan meets does not raise: the result has ``met_size``/``met_accuracy`` False,
    keeps the best plan found and says so in ``message``.

    Raises:
        OptionError: ``max_size`` not positive, ``max_drop`` outside [0, 1], bad group size.
        SpecError: calibration records not shaped like ``input_shape``.
    """
    if max_size is not None and max_size <= 0:
        raise OptionError("max_size", f"{max_size} bytes is not positive", "use e.g. 200KB")
    if max_drop is not None and not 0.0 <= max_drop <= 1.0:
        raise OptionError("max_drop", f"{max_drop} is not in [0, 1]", "use e.g. 1%")
    _check_group(group_size)
    x, y = _prepare(x, y, input_shape, samples, seed)
    module = copy.deepcopy(module).eval()
    sim = _Simulator(module, group_size)
    if not sim.layers:
        raise SpecError(
            "the model has no Conv1d/Conv2d/Linear/LSTM layer: nothing to quantize; mixed "
            "precision needs at least one such layer"
        )
    sens, p0, yy = _sensitivity(sim, x, y, _BITS)
    sizes = (
        size_model if size_model is not None else SizeModel.fit(module, input_shape, x, group_size)
    )
    if sizes.group_size != group_size or set(sizes.layer_bytes) != {ly.name for ly in sim.layers}:
        raise OptionError(
            "size_model",
            "was fitted for another model or group size",
            "fit it with SizeModel.fit on the same module and group_size",
        )
    labels, thr = sigma_clusters([layer.sigma for layer in sim.layers])
    initial = {layer.name: (8 if hi else 4) for layer, hi in zip(sim.layers, labels)}
    plan = dict(initial)
    ref = _Refiner(sim, sizes, sens, x, p0, yy)
    floor = None if max_drop is None else sens.fp32_accuracy - max_drop
    if max_size is not None:
        ref.to_size(plan, max_size)
    elif floor is not None:
        ref.to_accuracy(plan, floor)
    kl, acc_sim = ref.measure(plan)

    # Execute for real.
    xe = x if x_eval is None else np.asarray(x_eval, np.float32)
    ye = yy if x_eval is None else y_eval
    q = quantize(
        module,
        input_shape,
        x,
        QuantConfig("mixed", bits_per_layer=plan, group_size=group_size),
        x_eval=xe[:256],
        threads=threads,
    )
    _check_applied(q, plan, sim.layers)
    z_ort = run_session(make_session(q.onnx_model, threads=threads), xe)[0]
    with torch.no_grad():
        z_fp = sim.logits({}, torch.from_numpy(np.ascontiguousarray(xe)))[0]
    if ye is None:
        ye = z_fp.argmax(1)
        on = "evaluation records, fp32 predictions as labels"
    else:
        on = "evaluation records" if x_eval is not None else "calibration records"
        if y is None and x_eval is None:
            on += ", fp32 predictions as labels"
    acc = float(np.mean(z_ort.argmax(1) == ye))
    acc_fp = float(np.mean(z_fp.argmax(1) == ye))
    size = len(q.onnx_bytes())
    met_size = max_size is None or size <= max_size
    met_acc = max_drop is None or acc_fp - acc <= max_drop + 1e-12
    parts = []
    if max_size is not None:
        if met_size:
            parts.append(f"size {size} B within max_size {max_size} B")
        elif sizes.smallest > max_size:
            parts.append(
                f"max_size {max_size} B cannot be met: the smallest plan (4 bits "
                f"wherever that saves bytes) is {size} B; kept it; raise max_size or "
                "prune/factor first"
            )
        else:
            parts.append(
                f"size {size} B exceeds max_size {max_size} B "
                f"(estimate {sizes.estimate(plan)} B); lower the budget by the difference"
            )
    if max_drop is not None:
        drop = acc_fp - acc
        if met_acc:
            parts.append(f"accuracy drop {drop:.4f} within max_drop {max_drop:.4f}")
        else:
            parts.append(
                f"max_drop {max_drop:.4f} not met: best found drops {drop:.4f} "
                f"({acc:.4f} vs fp32 {acc_fp:.4f}) at {size} B; kept it — raise "
                "max_size or max_drop"
            )
    if not parts:
        parts.append("no budget given: σ-clustering plan")
    n4 = sum(1 for b in plan.values() if b == 4)
    message = f"{n4}/{len(plan)} layers at 4 bits; " + "; ".join(parts)
    return Allocation(
        bits=plan,
        initial_bits=initial,
        sigma_threshold=thr,
        estimated_size=sizes.estimate(plan),
        size_bytes=size,
        accuracy=acc,
        fp32_accuracy=acc_fp,
        accuracy_on=on,
        accuracy_sim=acc_sim,
        kl=kl,
        met_size=met_size,
        met_accuracy=met_acc,
        message=message,
        steps=tuple(ref.steps),
        sensitivity=sens,
        max_size=max_size,
        max_drop=max_drop,
        quantized=q,
    )


def allocate_between(
    module: nn.Module,
    input_shape: Sequence[int],
    x: np.ndarray,
    *,
    size_fraction: float | None = None,
    max_drop: float | None = None,
    x_eval: np.ndarray | None = None,
    group_size: int = 32,
    threads: int = 1,
) -> Allocation:
    """:func:`allocate` with the size budget placed at ``size_fraction`` of the way from the
    smallest plan (:attr:`SizeModel.smallest`) to the all-8-bit size (for the compression
    search, which has no labels: the fp32 predictions are the labels)."""
    if size_fraction is not None and not 0.0 <= size_fraction <= 1.0:
        raise OptionError("size_fraction", f"{size_fraction} is not in [0, 1]", "use e.g. 0.5")
    sizes = SizeModel.fit(module, input_shape, x, group_size)
    max_size = None
    if size_fraction is not None:
        lo, hi = sizes.smallest, sizes.estimate({})
        max_size = int(lo + size_fraction * (hi - lo))
    return allocate(
        module,
        input_shape,
        x,
        max_size=max_size,
        max_drop=max_drop,
        group_size=group_size,
        x_eval=x_eval,
        size_model=sizes,
        threads=threads,
    )
