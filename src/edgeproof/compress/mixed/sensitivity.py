"""Per-layer sensitivity of weight-only 4/8-bit quantization, and SigmaQuant's σ clustering.

A layer's sensitivity at b bits (HAWQ-style "quantize only this layer"): the top-1 accuracy
change, ``KL(p_fp32 ‖ p_q)`` (mean over records, nats) and the SQNR of the layer's own output.
:meth:`SensitivityReport.by_type` summarises it by module type (conv / LSTM / linear), the
question of Roodi et al. (CNN parts more sensitive to low bits than LSTM parts). The quantizer:
symmetric weights, 4-bit with per-group scales, 8-bit per output channel — what the QDQ graph of
a ``mixed`` plan executes. See :mod:`edgeproof.compress.mixed` for the method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgeproof.compress.folding import fold_batchnorm
from edgeproof.compress.weights import fake_quantize_weight
from edgeproof.errors import DataError, OptionError, SpecError, param
from edgeproof.results import Table
from edgeproof.serialize import JsonFields, fields_json

__all__ = [
    "BITS",
    "LayerKind",
    "LayerSensitivity",
    "PlanSimulator",
    "QuantLayer",
    "SensitivityReport",
    "TypeSensitivity",
    "check_group",
    "kl_to",
    "layer_sensitivity",
    "prepare_records",
    "quantizable_layers",
    "sensitivity",
    "sigma_clusters",
    "softmax",
    "weight_tensors",
]

LayerKind = Literal["conv", "lstm", "linear"]
BITS = (4, 8)
_EPS = 1e-12


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


def weight_tensors(mod: nn.Module) -> list[tuple[str, torch.Tensor]]:
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
        flat = np.concatenate([w.detach().numpy().ravel() for _, w in weight_tensors(mod)])
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


class PlanSimulator:
    """The folded fp32 model plus cached fake-quantized weights; runs any 4/8-bit plan."""

    def __init__(self, module: nn.Module, group_size: int) -> None:
        self.model = fold_batchnorm(module)
        self.layers = quantizable_layers(self.model)
        self.group_size = group_size
        self._mods = dict(self.model.named_modules())
        self._fp32: dict[str, list[torch.Tensor]] = {}
        self._q: dict[tuple[str, int], list[torch.Tensor]] = {}
        for layer in self.layers:
            ws = weight_tensors(self._mods[layer.name])
            self._fp32[layer.name] = [w.detach().clone() for _, w in ws]
            for b in BITS:
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
                for (_, w), v in zip(weight_tensors(self._mods[layer.name]), src):
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


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    result: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return result


def kl_to(p: np.ndarray, z_q: np.ndarray) -> float:
    """Mean over records of KL(p ‖ softmax(z_q)) in nats."""
    q = softmax(z_q)
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
class SensitivityReport(JsonFields):
    """:func:`layer_sensitivity`'s result: one row per (layer, bits)."""

    rows: tuple[LayerSensitivity, ...] = field(metadata={"json": False})
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
        # the rows as the two tables have them (by type: derived from the rows)
        return fields_json(
            self,
            extra={"rows": self.table().rows, "by_type": self.type_table().rows},
        )


def prepare_records(
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


def check_group(group_size: int) -> None:
    if group_size < 1:
        raise OptionError("group_size", f"must be >= 1, got {group_size}", "use e.g. 32")


def sensitivity(
    sim: PlanSimulator, x: np.ndarray, y: np.ndarray | None, bits: Sequence[int]
) -> tuple[SensitivityReport, np.ndarray, np.ndarray]:
    xt = torch.from_numpy(np.ascontiguousarray(x))
    z0, _ = sim.logits({}, xt)
    labels: Literal["given", "fp32-predictions"] = "given" if y is not None else "fp32-predictions"
    yy = z0.argmax(1) if y is None else y
    acc0 = float(np.mean(z0.argmax(1) == yy))
    p0 = softmax(z0)
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
                    kl_to(p0, z),
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
    bits: Sequence[int] = BITS,
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
        if b not in BITS:
            raise OptionError("bits", f"{b}-bit sensitivity is not supported", "use 4 or 8")
    check_group(group_size)
    x, y = prepare_records(x, y, None, samples, seed)
    return sensitivity(PlanSimulator(module, group_size), x, y, bits)[0]
